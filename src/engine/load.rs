//! Loads: one warehouse query per key, run on its own task with a deadline, through the shared
//! tier's lease when there is one, and its answer stored for every waiter.

use super::*;

/// How long a load took in clock milliseconds (XFetch's delta): the clock's own measure, or the
/// real time scaled by the clock's speed when the clock did not move (a manual clock in tests).
pub(super) fn load_ms(inner: &Inner, began_ms: Millis, began: Instant, now: Millis) -> u64 {
    let by_clock = now.saturating_sub(began_ms);
    let by_timer =
        crate::model::num::f64_to_u64(began.elapsed().as_secs_f64() * 1000.0 * inner.clock.speed());
    by_clock.max(by_timer)
}

impl Engine {
    /// Starts a load of `key` in the background unless one is in flight. Returns whether it started.
    pub(crate) fn refresh_in_background(
        &self,
        request: &Request,
        key: EntryKey,
        why: Counter,
    ) -> bool {
        match self.inner.flights.try_lead(key) {
            Some(lead) => {
                self.inner.stats.incr(why);
                self.spawn_load(request.clone(), key, lead);
                true
            }
            None => false,
        }
    }

    /// Runs one warehouse load on the runtime, so that a caller that gives up (or is cancelled)
    /// never cancels the load the other waiters depend on. Every outcome completes the flight.
    pub(super) fn spawn_load(&self, request: Request, key: EntryKey, lead: Lead) {
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            Engine::load_and_complete(&inner, &request, key, lead, false).await;
        });
    }

    /// [`Engine::spawn_load`] once the shared tier was found without a fresh entry.
    pub(super) fn spawn_load_after_probe(&self, request: Request, key: EntryKey, lead: Lead) {
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            Engine::load_and_complete(&inner, &request, key, lead, true).await;
        });
    }

    /// Loads `key`, stores the entry, and completes the flight `lead` leads. Returns whether the
    /// load succeeded.
    pub(super) async fn load_and_complete(
        inner: &Inner,
        request: &Request,
        key: EntryKey,
        lead: Lead,
        probed: bool,
    ) -> bool {
        let policy = &request.query().policy;
        // The key carries the versions of the query's tables, in the query's table order.
        let stamp = Stamp::from_fn(&request.query().tables, {
            let mut versions = key.versions.iter().copied();
            move |_| versions.next().unwrap_or(0)
        });
        let shared = match &inner.shared {
            Some(s) => lease::load(inner, s, request, key, stamp, probed).await,
            None => lease::Outcome::Unavailable,
        };
        let result = match shared {
            lease::Outcome::Found(entry) => {
                lead.mark_found_shared();
                Ok(entry)
            }
            lease::Outcome::Loaded(entry) => Ok(entry),
            lease::Outcome::Failed(e) => Err(e),
            // Embedded, or the shared store is down: load here (still one load per key in this
            // process: this is the flight's leader).
            lease::Outcome::Unavailable => {
                if inner.shared.is_some() {
                    inner.stats.incr(Counter::Degraded);
                }
                Engine::load(inner, request, stamp, policy).await
            }
        };
        Engine::complete(inner, policy, key, lead, result)
    }

    /// Keeps a loaded entry in this process's tier and hands it to the flight's waiters.
    pub(super) fn complete(
        inner: &Inner,
        policy: &Policy,
        key: EntryKey,
        lead: Lead,
        result: Result<Arc<Entry>, LoadError>,
    ) -> bool {
        match result {
            Ok(entry) => {
                if inner.local_tier
                    && let PutOutcome::TooLarge =
                        inner.store.put(key, entry.clone(), entry.created_ms)
                {
                    inner.stats.incr(Counter::TooLarge);
                }
                let waiters = lead.complete(Ok(entry));
                if waiters >= policy.stampede_threshold {
                    inner.stats.incr(Counter::StampedesAbsorbed);
                }
                true
            }
            Err(error) => {
                lead.complete(Err(error));
                false
            }
        }
    }

    /// One warehouse query, timed, with panics turned into errors and a deadline. Builds the entry.
    ///
    /// Every load ends: at the load timeout the warehouse's future is dropped, which cancels the
    /// query (PostgreSQL sends a cancel request, SQLite interrupts its connection), and the load
    /// fails with [`LoadError::Deadline`]. The caller then completes the flight and releases its
    /// lease as for any other failure, so waiters get stale-if-error or the error at once and the
    /// next request starts a new load.
    pub(super) async fn load(
        inner: &Inner,
        request: &Request,
        stamp: Stamp,
        policy: &Policy,
    ) -> Result<Arc<Entry>, LoadError> {
        inner.stats.incr(Counter::Loads);
        let began_ms = inner.now_ms();
        let began = Instant::now();
        if let Some(observe) = &inner.on_load {
            observe(request, &stamp);
        }
        let run = CatchUnwind(Box::pin(inner.warehouse.run(request)));
        let result = tokio::time::timeout(inner.load_timeout, run).await;
        inner.stats.record_load(began.elapsed());
        let rows = match result {
            Ok(Ok(Ok(rows))) => rows,
            Ok(Ok(Err(e))) => {
                inner.stats.incr(Counter::LoadErrors);
                return Err(LoadError::Warehouse(e));
            }
            Ok(Err(panic)) => {
                inner.stats.incr(Counter::LoadErrors);
                return Err(LoadError::Panicked(panic));
            }
            Err(_elapsed) => {
                inner.stats.incr(Counter::LoadErrors);
                // The query's future is gone; see it cancelled at the server before anyone is
                // told, so a caller that exits on this answer leaves nothing running.
                inner.warehouse.settle_cancelled().await;
                tracing::warn!(
                    query = %request,
                    timeout = ?inner.load_timeout,
                    "warehouse load exceeded its deadline; cancelled"
                );
                return Err(LoadError::Deadline(inner.load_timeout));
            }
        };
        let now = inner.now_ms();
        let fresh_until = policy.fresh_until(now, fastrand::f64());
        Ok(Arc::new(Entry {
            value: Arc::from(rows.to_json()),
            versions: stamp,
            created_ms: now,
            load_ms: load_ms(inner, began_ms, began, now),
            fresh_until,
            keep_until: policy.keep_until(now, fresh_until),
        }))
    }
}
