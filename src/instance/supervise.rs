//! Supervised background tasks: the sync and report loops are started here, and run again if
//! they panic; each restart is counted and shown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Instance;

impl Instance {
    pub(super) fn spawn_loops(&self) {
        self.supervise("sync", |this| async move {
            let feed = this.inner.bus.subscribe();
            let shutdown = this.inner.shutdown.subscribe();
            this.sync_loop(feed, shutdown).await;
        });
        self.supervise("report", |this| async move {
            let shutdown = this.inner.shutdown.subscribe();
            this.report_loop(shutdown).await;
        });
    }

    /// Runs a background task, and runs it again if it panics: a panic is a bug, but it must not
    /// stop this instance from syncing for good. Each restart is counted, logged and shown in the
    /// feed. A task that returns (shutdown) is not restarted.
    fn supervise<F, Fut>(&self, name: &'static str, task: F)
    where
        F: Fn(Instance) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let run = tokio::spawn(task(this.clone())).await;
                let panic = match run {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => e.into_panic(),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => return,
                };
                if *this.inner.shutdown.borrow() {
                    return;
                }
                this.inner
                    .counters
                    .task_restarts
                    .fetch_add(1, Ordering::Relaxed);
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                let message = format!(
                    "background task `{name}` failed and was restarted: {}",
                    crate::bus::excerpt(why.as_bytes(), 200)
                );
                this.incident(tracing::Level::ERROR, message).await;
                // A task that fails at once must not spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}
