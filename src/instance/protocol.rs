//! The invalidation protocol (`etl-complete`): checks the warehouse's `update_log`, reserves
//! version numbers for the tables that reached the batch, has the whole fleet load its hot
//! answers under them (prepare), then bumps to exactly them (flip), and reports the tables behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use super::{Instance, InstanceError, check_batch_label};
use crate::bus::{BumpMode, BumpRequest, BusError};
use crate::engine::RefreshProgress;
use crate::model::events::{Behind, EventKind};
use crate::model::ops::Action;
use crate::model::versions::{TableId, VersionVector};

/// Instances heard from within this long take part in a fleet's prepare.
const FLEET_LIVE: Duration = Duration::from_secs(5);
/// An instance that has not answered a prepare within this long is not waited for.
const PREPARE_ACK: Duration = Duration::from_secs(1);

/// What `etl-complete` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct EtlCompleteReport {
    /// The batch checked.
    pub batch: String,
    /// Tables whose `update_log` reached the batch.
    pub verified: Vec<String>,
    /// Of those, the ones bumped now (the others had the batch already).
    pub bumped: Vec<String>,
    /// Tables behind, with why.
    pub behind: Vec<Behind>,
    /// Every table's version afterwards.
    pub versions: BTreeMap<String, u64>,
}

impl Instance {
    /// The invalidation protocol: checks `update_log` for which of `expected` (all tables when
    /// empty) reached `batch`, bumps those — only those, atomically — and reports the rest.
    /// Running it twice, late, or out of order bumps nothing more. Refused in read-only mode
    /// (the bump event records who completed what).
    pub async fn etl_complete(
        &self,
        batch: &str,
        expected: &[TableId],
    ) -> Result<EtlCompleteReport, InstanceError> {
        self.allow(Action::EtlComplete, &[batch.to_string()])
            .await?;
        self.complete_batch(batch, expected).await
    }

    /// [`Instance::etl_complete`] without the guard: the simulated ETL's own step.
    pub(crate) async fn complete_batch(
        &self,
        batch: &str,
        expected: &[TableId],
    ) -> Result<EtlCompleteReport, InstanceError> {
        check_batch_label(batch, self.inner.engine.clock().now_ms())?;
        let tables = self.inner.engine.catalog().tables().clone();
        let expected: Vec<TableId> = if expected.is_empty() {
            tables.ids().collect()
        } else {
            expected.to_vec()
        };
        let log = self.inner.warehouse.update_log().await?;
        let mut verified = Vec::new();
        let mut behind = Vec::new();
        for &t in &expected {
            let name = tables.name(t);
            match log.iter().find(|e| e.table == name) {
                Some(e) if e.batch.as_str() >= batch => verified.push(t),
                Some(e) => behind.push(Behind {
                    table: name.to_string(),
                    reason: format!("update_log is at {}, batch {batch} expected", e.batch),
                }),
                None => behind.push(Behind {
                    table: name.to_string(),
                    reason: "no update_log entry".into(),
                }),
            }
        }
        let engine = &self.inner.engine;
        engine.set_updating(&verified, true);
        let outcome = async {
            if verified.is_empty() {
                return Ok(None);
            }
            // Prepare, then flip: numbers reserved first (never reused, even if this bump
            // fails), the hot answers loaded under them, then the bump to exactly them.
            let truth = self.inner.bus.versions().await?;
            let due: Vec<TableId> = verified
                .iter()
                .copied()
                .filter(|&t| truth.table_batch(t) < batch)
                .collect();
            if due.is_empty() {
                return Ok(None);
            }
            let reserved = self.inner.bus.reserve(&due).await?;
            self.note_reserved(&due, &reserved);
            if !self.inner.config.preload_timeout.is_zero() {
                self.prepare_fleet(&truth, &due, &reserved, batch).await;
            }
            let mut request = BumpRequest::new(&due, batch, BumpMode::Advance);
            request.reserved = &reserved;
            match self.inner.bus.bump_with(request).await {
                Ok(outcome) => Ok(Some(outcome)),
                Err(e) => {
                    self.report_failed_bump(&due, &reserved, batch, &e).await;
                    Err(e.into())
                }
            }
        }
        .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                engine.set_updating(&verified, false);
                return Err(e);
            }
        };
        let truth = match &outcome {
            Some(o) => o.versions.clone(),
            None => match self.inner.bus.versions().await {
                Ok(t) => t,
                Err(e) => {
                    engine.set_updating(&verified, false);
                    return Err(e.into());
                }
            },
        };
        self.apply_local(&truth);
        engine.set_updating(&verified, false);
        let names = |ids: &[TableId]| -> Vec<String> {
            ids.iter().map(|t| tables.name(*t).to_string()).collect()
        };
        let bumped_now = outcome.as_ref().is_some_and(|o| !o.bumped.is_empty());
        if !behind.is_empty() && (bumped_now || !self.reported_behind(batch, &behind).await) {
            self.inner
                .bus
                .publish(EventKind::PartialUpdate {
                    batch: batch.to_string(),
                    verified: names(&verified),
                    behind: behind.clone(),
                })
                .await?;
        }
        Ok(EtlCompleteReport {
            batch: batch.to_string(),
            bumped: outcome.map(|o| names(&o.bumped)).unwrap_or_default(),
            verified: names(&verified),
            behind,
            versions: crate::bus::versions_by_name(&truth, &tables),
        })
    }

    /// Whether the log already says these tables were behind for `batch`: a repeated
    /// `etl-complete` that changes nothing adds no event. (Read only when nothing was bumped,
    /// which is rare; a log that cannot be read counts as not said.)
    async fn reported_behind(&self, batch: &str, behind: &[Behind]) -> bool {
        let tables = |b: &[Behind]| -> Vec<String> {
            let mut t: Vec<String> = b.iter().map(|b| b.table.clone()).collect();
            t.sort();
            t
        };
        let wanted = tables(behind);
        match self
            .inner
            .bus
            .history(
                0,
                usize::try_from(crate::bus::local::LOG_LIMIT).unwrap_or(usize::MAX),
            )
            .await
        {
            Ok(events) => events.iter().rev().any(|e| {
                matches!(&e.kind, EventKind::PartialUpdate { batch: b, behind: was, .. }
                    if b == batch && tables(was) == wanted)
            }),
            Err(e) => {
                tracing::debug!("cannot read the log to dedupe a partial_update: {e}");
                false
            }
        }
    }

    /// Remembers the numbers this instance reserved (see [`super::Inner::reserved_seen`]).
    fn note_reserved(&self, tables: &[TableId], reserved: &[u64]) {
        let mut seen = self.inner.reserved_seen.lock();
        for (t, &v) in tables.iter().zip(reserved) {
            if seen.len() <= t.index() {
                seen.resize(t.index() + 1, 0);
            }
            seen[t.index()] = seen[t.index()].max(v);
        }
    }

    /// A bump that failed after its numbers were reserved: the numbers are burned (what was
    /// prepared under them is never served), and the failure is counted, logged and — when the
    /// bus takes it — shown in the feed. The caller reports it to whoever asked.
    async fn report_failed_bump(
        &self,
        tables: &[TableId],
        reserved: &[u64],
        batch: &str,
        error: &BusError,
    ) {
        self.inner
            .counters
            .failed_bumps
            .fetch_add(1, Ordering::Relaxed);
        let names = self.inner.engine.catalog().tables();
        let list = tables
            .iter()
            .zip(reserved)
            .map(|(t, v)| format!("{} v{v}", names.name(*t)))
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "the bump for batch {batch} failed ({error}); {list} will not be used; run etl-complete for {batch} again"
        );
        self.incident(tracing::Level::ERROR, message).await;
    }

    /// Prepare, then flip, for the whole fleet: asks every running instance (a `prepare` event)
    /// to load its hot answers under the numbers `reserved` for `tables`, loads this instance's
    /// own, and waits until every instance heard from in the last seconds has said `prepared` —
    /// at most `preload_timeout`. A one-shot `etl-complete` from the command line has no hot keys
    /// of its own; the running API servers do.
    async fn prepare_fleet(
        &self,
        truth: &VersionVector,
        tables: &[TableId],
        reserved: &[u64],
        batch: &str,
    ) {
        let names = self.inner.engine.catalog().tables().clone();
        let mut waiting: std::collections::BTreeSet<String> = match self
            .inner
            .bus
            .reports(crate::model::num::ms(FLEET_LIVE))
            .await
        {
            Ok(reports) => reports
                .into_iter()
                .map(|r| r.id)
                .filter(|id| *id != self.inner.id)
                .collect(),
            Err(e) => {
                tracing::warn!("cannot list the running instances to prepare with: {e}");
                Default::default()
            }
        };
        if waiting.is_empty() {
            // Alone (embedded, or nobody else running): prepare this instance only.
            self.preload(truth, tables, reserved, batch).await;
            return;
        }
        // Subscribed before asking, so no answer can come before we listen.
        let mut feed = self.inner.bus.subscribe();
        let asked = self
            .inner
            .bus
            .publish(EventKind::Prepare {
                batch: batch.to_string(),
                versions: tables
                    .iter()
                    .zip(reserved)
                    .map(|(t, v)| (names.name(*t).to_string(), *v))
                    .collect(),
                requester: self.inner.id.clone(),
            })
            .await;
        if let Err(e) = asked {
            tracing::warn!("could not ask the fleet to prepare batch {batch}: {e}");
            waiting.clear();
        }
        let others = async {
            let mut poll = tokio::time::interval(Duration::from_millis(50));
            // An instance that has not answered at all by then (partitioned, frozen, an older
            // version) is not waited for: it cannot serve the flip as fresh anyway (it goes
            // unverified), and it must not hold every update up for the whole preload timeout.
            let ack_by = tokio::time::sleep(PREPARE_ACK);
            tokio::pin!(ack_by);
            let mut acked = std::collections::BTreeSet::new();
            let mut ack_passed = false;
            while !waiting.is_empty() {
                tokio::select! {
                    received = feed.recv() => match received {
                        Ok(crate::model::events::Event {
                            kind: EventKind::Prepared { batch: b, instance, finished, .. },
                            ..
                        }) if b == batch => {
                            if finished {
                                waiting.remove(&instance);
                            } else {
                                acked.insert(instance);
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = &mut ack_by, if !ack_passed => {
                        ack_passed = true;
                        let silent: Vec<String> =
                            waiting.iter().filter(|i| !acked.contains(*i)).cloned().collect();
                        if !silent.is_empty() {
                            tracing::warn!(
                                batch,
                                instances = %silent.join(", "),
                                "not waiting for instances that did not answer the prepare"
                            );
                            waiting.retain(|i| acked.contains(i));
                        }
                    }
                    // A bus that only polls (the embedded one shared through a file) delivers
                    // what other processes logged when asked.
                    _ = poll.tick() => {
                        if let Err(e) = self.inner.bus.catch_up().await {
                            tracing::debug!("catching up while preparing: {e}");
                        }
                    }
                }
            }
        };
        let own = self.preload(truth, tables, reserved, batch);
        // Bounded: whatever is not ready by then is loaded by refresh-ahead after the flip.
        if tokio::time::timeout(self.inner.config.preload_timeout, async {
            tokio::join!(own, others)
        })
        .await
        .is_err()
        {
            tracing::info!(
                batch,
                "preparing took longer than the preload timeout: flipping"
            );
        }
    }

    /// Another instance asks this one to prepare a coming bump (see
    /// [`Instance::prepare_fleet`]). The numbers must have been reserved by the truth and not
    /// used yet — anything else (a forged or replayed message) is refused as bad input: loading
    /// answers under a number the truth may later give to other data would serve that data
    /// stale.
    pub(super) async fn answer_prepare(self, batch: String, versions: BTreeMap<String, u64>) {
        let engine = &self.inner.engine;
        let names = engine.catalog().tables().clone();
        let (truth, reserved) =
            match tokio::try_join!(self.inner.bus.versions(), self.inner.bus.reserved()) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(batch, "cannot check a prepare request: {e}");
                    return;
                }
            };
        let mut tables = Vec::new();
        let mut numbers = Vec::new();
        for (name, &v) in &versions {
            let Ok(t) = names.id(name) else {
                self.refuse(
                    "freshcache:events",
                    format!(
                        "prepare names an unknown table `{}`",
                        crate::bus::excerpt(name.as_bytes(), 40)
                    ),
                    String::new(),
                )
                .await;
                return;
            };
            let highest = reserved.get(t.index()).copied().unwrap_or(0);
            if v <= truth.version(t) {
                // Late: that bump has happened (or a later one); nothing to prepare.
                tracing::debug!(
                    batch,
                    table = name.as_str(),
                    "prepare request arrived after its flip"
                );
                return;
            }
            if v > highest {
                self.refuse(
                    "freshcache:events",
                    format!(
                        "prepare of {name}={v} refused: the truth is at {} and has reserved up to {highest}",
                        truth.version(t)
                    ),
                    String::new(),
                )
                .await;
                return;
            }
            tables.push(t);
            numbers.push(v);
        }
        // Prepared under these numbers: a truth restored later must go above them (the flip may
        // never come, and then the data loaded under them must never pass for later data).
        self.note_reserved(&tables, &numbers);
        // Say at once that this instance is at work, so the flip waits for it.
        let keys = crate::model::num::to_u32(
            engine
                .hot_requests(&tables, self.inner.config.refresh_top)
                .len(),
        );
        if keys > 0 {
            let at_work = self
                .inner
                .bus
                .publish(EventKind::Prepared {
                    batch: batch.clone(),
                    instance: self.inner.id.clone(),
                    finished: false,
                    keys,
                    done: 0,
                    failed: 0,
                })
                .await;
            if let Err(e) = at_work {
                tracing::warn!(batch, "could not say the batch is being prepared: {e}");
            }
        }
        let progress = self.preload(&truth, &tables, &numbers, &batch).await;
        let answered = self
            .inner
            .bus
            .publish(EventKind::Prepared {
                batch: batch.clone(),
                instance: self.inner.id.clone(),
                finished: true,
                keys: progress.total,
                done: progress.done,
                failed: progress.failed,
            })
            .await;
        if let Err(e) = answered {
            tracing::warn!(batch, "could not say the batch is prepared: {e}");
        }
    }

    /// Loads the hot keys of `tables` under the numbers `reserved` for them (the warehouse
    /// already holds the new data), before the bump is published: prepare, then flip. Bounded by
    /// `preload_timeout`; whatever is not loaded by then is left to refresh-ahead after the bump.
    async fn preload(
        &self,
        truth: &VersionVector,
        tables: &[TableId],
        reserved: &[u64],
        batch: &str,
    ) -> RefreshProgress {
        let mut next = truth.clone();
        for (t, &v) in tables.iter().zip(reserved) {
            next.set_version(*t, v);
        }
        let requests = self
            .inner
            .engine
            .hot_requests(tables, self.inner.config.refresh_top);
        if requests.is_empty() {
            return RefreshProgress::default();
        }
        let mut progress = self.inner.engine.refresh_at(requests, Some(Arc::new(next)));
        // A preload that runs out of time is not an error: the bump goes ahead and refresh-ahead
        // loads the rest.
        let _ = tokio::time::timeout(
            self.inner.config.preload_timeout,
            progress.wait_for(RefreshProgress::finished),
        )
        .await;
        let p = *progress.borrow();
        self.inner.last_refresh.send_replace(p);
        if p.done + p.failed > 0 {
            let names = self.inner.engine.catalog().tables();
            let logged = self
                .inner
                .bus
                .publish(EventKind::RefreshAhead {
                    tables: tables.iter().map(|t| names.name(*t).to_string()).collect(),
                    keys: p.total,
                    done: p.done,
                    failed: p.failed,
                })
                .await;
            if let Err(e) = logged {
                tracing::warn!(batch, "could not log the preload: {e}");
            }
        }
        p
    }
}
