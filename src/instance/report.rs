//! What this instance tells the fleet: its report (the heartbeat) about once a second, incidents
//! and unreadable shared-store entries in the feed — and, from the same loop, housekeeping.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::Instance;
use crate::model::events::EventKind;

/// Housekeeping runs every this many report ticks (seconds).
const HOUSEKEEPING_EVERY: u32 = 5;
/// How long one instance keeps the fleet's housekeeping turn.
const HOUSEKEEPING_LEASE: Duration = Duration::from_secs(5);
/// Entries purged per housekeeping round, at most.
const PURGE_BUDGET: usize = 10_000;

impl Instance {
    /// This instance's report: counters, recent latency, live keys per table.
    pub fn report(
        &self,
        recent_latency: crate::engine::stats::LatencySummary,
    ) -> crate::bus::InstanceReport {
        let engine = &self.inner.engine;
        let c = self.counters();
        crate::bus::InstanceReport {
            id: self.inner.id.clone(),
            at_ms: self.inner.bus.clock().now_ms(),
            strategy: engine.strategy().name().to_string(),
            stats: engine.stats(),
            recent_latency,
            table_keys: engine.table_keys(),
            bad_events: c.bad_events,
            lagged_events: c.lagged_events,
            degraded: engine.degraded().is_some(),
            unverified: engine.unverified_since().is_some(),
            audit_checked: c.audit_checked,
            audit_violations: c.audit_violations,
            role: self.inner.config.role.name().to_string(),
            versions: engine.versions().versions().to_vec(),
            loads_in_flight: crate::model::num::len_u64(engine.loads_in_flight()),
        }
    }

    /// Reports about once a second (the heartbeat other consoles and `stats` read).
    pub(super) async fn report_loop(self, mut shutdown: watch::Receiver<bool>) {
        // The first report after a second, not at once: a one-shot command (`invalidate`,
        // `stats`) that is done by then never shows up as a live instance.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = crate::engine::stats::histogram();
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.audit_answers().await;
            self.show_corrupt_entries().await;
            let (user, _) = self.inner.engine.latency_histograms();
            let mut recent = user.clone();
            // `previous` is an earlier copy of the same, only-growing histogram: every count in it
            // is in `user`, so the subtraction cannot come out negative.
            let _ = recent.subtract(&previous);
            previous = user;
            let report = self.report(crate::engine::stats::LatencySummary::of(&recent));
            if self.inner.bus.report(&report).await.is_err() {
                self.inner
                    .counters
                    .sync_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            ticks += 1;
            if ticks % HOUSEKEEPING_EVERY == 0 {
                self.housekeeping().await;
            }
        }
    }

    /// Logs an incident at `level` and shows it in the feed (when the bus takes it; a bus that
    /// cannot is already why many incidents happen, so that failure is only logged).
    pub(super) async fn incident(&self, level: tracing::Level, message: String) {
        if level == tracing::Level::ERROR {
            tracing::error!("{message}");
        } else {
            tracing::info!("{message}");
        }
        if let Err(e) = self
            .inner
            .bus
            .publish(EventKind::Incident { message })
            .await
        {
            tracing::warn!("could not show an incident in the feed: {e}");
        }
    }

    /// Logs `kind` to the event feed; a feed that cannot take it is a warning in the log, never a
    /// failure of what is being reported.
    pub(super) async fn log_event(&self, kind: EventKind) {
        let name = kind.name();
        if let Err(e) = self.inner.bus.publish(kind).await {
            tracing::warn!("could not log a {name} event to the feed: {e}");
        }
    }

    /// Entries of the shared store that could not be read (corrupt, or written in another format)
    /// are misses, counted by the store; here they are shown in the feed as bad input, once per
    /// report tick in which new ones were met.
    async fn show_corrupt_entries(&self) {
        let Some(shared) = self.inner.engine.shared_store() else {
            return;
        };
        let total = shared.corrupt_entries();
        let shown = self.inner.corrupt_shown.swap(total, Ordering::Relaxed);
        if total <= shown {
            return;
        }
        let reason = format!(
            "{} cache entr{} in the shared store could not be read (corrupt or another format): served as misses, reloaded; {total} so far",
            total - shown,
            if total - shown == 1 { "y" } else { "ies" }
        );
        if let Err(e) = self
            .inner
            .bus
            .publish(EventKind::BadInput {
                source: "shared store".into(),
                reason,
                excerpt: String::new(),
            })
            .await
        {
            tracing::warn!("could not show corrupt entries in the feed: {e}");
        }
    }

    /// Off the request path, every few seconds: entries past their keep-until leave this
    /// process's tier, and — by one instance of the fleet at a time — entries of versions no rule
    /// can serve any more leave the shared store, in bounded batches.
    async fn housekeeping(&self) {
        let engine = &self.inner.engine;
        engine.purge_expired(PURGE_BUDGET);
        let Some(shared) = engine.shared_store() else {
            return;
        };
        if !matches!(shared.housekeeping_lock(HOUSEKEEPING_LEASE).await, Ok(true)) {
            return;
        }
        match shared.purge(&engine.versions(), PURGE_BUDGET).await {
            Ok(0) => {}
            Ok(n) => {
                self.inner
                    .counters
                    .purged
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(entries = n, "purged old versions from the shared store");
            }
            Err(e) => tracing::warn!("purge of old versions failed (retried later): {e}"),
        }
    }
}
