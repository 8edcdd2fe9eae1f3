//! Sync: how this instance keeps its versions equal to the truth's. It reads the truth at start,
//! takes every `warehouse_updated` as a hint to re-read it, re-reads it every `poll_interval` and
//! after a lagged feed (the lost-message guard), puts back a truth that lost its state, and
//! reloads the hottest keys of every table whose version went up (refresh-ahead).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::{Instance, InstanceError};
use crate::bus::BumpMode;
use crate::engine::RefreshProgress;
use crate::model::clock::Millis;
use crate::model::events::EventKind;
use crate::model::versions::{TableId, VersionVector};

/// A bump event younger than this is live news (older ones come from a catch-up).
const RECENT_EVENT: Duration = Duration::from_secs(10);

/// What [`Instance::restore_truth`] found and did.
enum Restore {
    /// The truth is whole.
    NotNeeded,
    /// It had lost its state and was put back: the truth after.
    Done(Arc<VersionVector>),
    /// It had lost its state and could not be put back now.
    Failed,
}

impl Instance {
    /// Reads the version truth once (a new truth first adopts the batches the warehouse's
    /// `update_log` holds) and starts the sync loop in the background.
    pub async fn start(&self) -> Result<(), InstanceError> {
        let read_began = crate::model::clock::coarse_now_ms();
        let mut truth = match self.inner.bus.versions().await {
            Ok(truth) => truth,
            Err(e) => {
                // Redis down is no reason not to answer: the engine starts at the versions it
                // has (loads go to the warehouse, so what it serves meanwhile is current) and
                // the sync loop applies the truth as soon as the bus answers.
                tracing::warn!(bus = %self.inner.bus.describe(), "starting without the version truth: {e}");
                self.inner
                    .counters
                    .sync_errors
                    .fetch_add(1, Ordering::Relaxed);
                *self.inner.start_error.lock() = Some(e.to_string());
                // Nothing confirmed yet: cached answers are not presented as fresh until the
                // truth is read.
                self.inner.engine.distrust_versions();
                self.spawn_loops();
                return Ok(());
            }
        };
        let tables = self.inner.engine.catalog().tables().clone();
        if tables.ids().any(|t| truth.table_batch(t).is_empty()) {
            // An unreachable warehouse is no reason not to start: adopt on the next start.
            if let Ok(log) = self.inner.warehouse.update_log().await {
                for entry in log {
                    if let Ok(t) = tables.id(&entry.table)
                        && truth.table_batch(t).is_empty()
                    {
                        truth = self
                            .inner
                            .bus
                            .bump(&[t], &entry.batch, BumpMode::Adopt, false)
                            .await?
                            .versions;
                    }
                }
            }
        }
        self.inner.engine.apply_versions(&truth);
        self.inner
            .engine
            .confirm_versions(read_began, self.inner.config.max_unverified);
        tracing::info!(
            instance = %self.inner.id,
            bus = %self.inner.bus.describe(),
            warehouse = %self.inner.warehouse.describe(),
            env = %self.inner.config.env,
            "instance started"
        );
        self.spawn_loops();
        Ok(())
    }

    /// Records that a bump made at `bumped_ms` (engine clock) was applied now.
    fn record_lag(&self, bumped_ms: Millis) {
        let clock = self.inner.bus.clock();
        let clock_ms = clock.now_ms().saturating_sub(bumped_ms);
        let real_us = crate::model::num::f64_to_u64(
            (clock_ms as f64 * 1000.0 / clock.speed().max(1e-9)).round(),
        );
        self.inner.lag.lock().saturating_record(real_us.max(1));
    }

    pub(super) async fn sync_loop(
        self,
        mut feed: broadcast::Receiver<crate::model::events::Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.inner.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut raw = self.inner.bus.raw_messages();
        loop {
            tokio::select! {
                message = async {
                    match raw.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    Ok(m) => {
                        // Applied exactly once; a refusal was counted, logged and shown in the
                        // feed by `ingest` itself, so there is nothing left to do with it here.
                        let _ = self.ingest(&m.channel, &m.payload).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.inner.counters.lagged_events.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => raw = None,
                },
                received = feed.recv() => match received {
                    Ok(event) => match event.kind {
                        EventKind::WarehouseUpdated { versions, .. } => {
                            self.hint(&versions, Some(event.at_ms), "freshcache:events").await;
                        }
                        EventKind::Prepare { batch, versions, requester }
                            if requester != self.inner.id =>
                        {
                            // Off the sync loop: preparing takes as long as the loads do.
                            tokio::spawn(self.clone().answer_prepare(batch, versions));
                        }
                        _ => {}
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.inner.counters.lagged_events.fetch_add(n, Ordering::Relaxed);
                        self.resync().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    self.retry_pending_plain().await;
                    self.resync().await;
                    if let Err(_e) = self.inner.bus.catch_up().await {
                        self.inner.counters.sync_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// A message says tables were bumped to `claimed` (at `bumped_at`, when known). A message is
    /// only a hint: anyone can publish one, so the truth is re-read and only the truth is applied.
    /// Versions above the truth are refused, counted and shown as bad input: no instance ever
    /// holds a version the truth never had.
    pub(super) async fn hint(
        &self,
        claimed: &BTreeMap<String, u64>,
        bumped_at: Option<Millis>,
        source: &str,
    ) {
        let engine = &self.inner.engine;
        let tables = engine.catalog().tables().clone();
        let local = engine.versions();
        let news = claimed
            .iter()
            .any(|(name, &v)| tables.id(name).is_ok_and(|t| v > local.version(t)));
        // A fresh bump to a number below what this engine holds: the truth went back (Redis
        // restored from an older snapshot) and someone bumped it since. Re-read now — the
        // re-read restores it — rather than at the next poll, while the engine serves what it
        // holds as fresh. (Old events delivered again by a catch-up are not news.)
        let recent = bumped_at.is_some_and(|at| {
            self.inner.bus.clock().now_ms().saturating_sub(at) < crate::model::num::ms(RECENT_EVENT)
        });
        let went_back = recent
            && claimed
                .iter()
                .any(|(name, &v)| tables.id(name).is_ok_and(|t| v < local.version(t)));
        if !news && !went_back {
            // Nothing this engine does not hold already (its own bump, a duplicate, a late one).
            return;
        }
        let Some((truth, read_began)) = self.read_truth().await else {
            return;
        };
        let above: Vec<String> = claimed
            .iter()
            .filter_map(|(name, &v)| {
                let t = tables.id(name).ok()?;
                (v > truth.version(t)).then(|| format!("{name}={v} > {}", truth.version(t)))
            })
            .collect();
        if !above.is_empty() {
            self.refuse(
                source,
                format!(
                    "versions above the truth ({}): ignored; the truth decides",
                    above.join(", ")
                ),
                String::new(),
            )
            .await;
        }
        let raised = engine.apply_versions(&truth);
        self.confirmed(read_began);
        if !raised.is_empty() {
            if let Some(at) = bumped_at.filter(|_| above.is_empty()) {
                self.record_lag(at);
            }
            self.inner
                .counters
                .applied_updates
                .fetch_add(1, Ordering::Relaxed);
            self.refresh_ahead(&raised);
        }
    }

    /// Reads the version truth and repairs it if it lost its state; with it, when the read began
    /// (wall clock), for [`crate::engine::Engine::confirm_versions`] once it is applied. `None`
    /// (counted) when the bus cannot be reached.
    async fn read_truth(&self) -> Option<(Arc<VersionVector>, Millis)> {
        let began = crate::model::clock::coarse_now_ms();
        // Taken before the read: every version this engine held then came from a truth at most
        // as high as the one read next, unless the truth lost its state. (Taken after, a bump of
        // this instance landing in between would look like a truth gone back.)
        let before = self.inner.engine.versions();
        let truth = match self.inner.bus.versions().await {
            Ok(truth) => truth,
            Err(_) => {
                self.inner
                    .counters
                    .sync_errors
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let truth = match self.restore_truth(&before, &truth).await {
            Restore::NotNeeded => truth,
            Restore::Done(restored) => restored,
            // A truth known to be broken confirms nothing: the engine stays unverified until a
            // read finds the truth whole (restored by this instance or another).
            Restore::Failed => {
                self.inner
                    .counters
                    .sync_errors
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        Some((truth, began))
    }

    /// The truth read at `read_began` is applied: this engine's versions count as confirmed.
    fn confirmed(&self, read_began: Millis) {
        self.inner
            .engine
            .confirm_versions(read_began, self.inner.config.max_unverified);
    }

    /// Re-reads the version truth and applies it (the lost-message guard). Returns the tables it
    /// raised.
    pub async fn resync(&self) -> Vec<TableId> {
        let Some((truth, read_began)) = self.read_truth().await else {
            return Vec::new();
        };
        let raised = self.inner.engine.apply_versions(&truth);
        self.confirmed(read_began);
        if !raised.is_empty() {
            // The truth keeps only each table's latest bump time, so this is a lower bound of how
            // long the oldest missed bump waited; 0 (never stamped) says nothing.
            if let Some(oldest) = raised
                .iter()
                .map(|&t| truth.table_updated_ms(t))
                .filter(|&ms| ms > 0)
                .min()
            {
                self.record_lag(oldest);
            }
            self.inner.counters.resyncs.fetch_add(1, Ordering::Relaxed);
            self.refresh_ahead(&raised);
        }
        raised
    }

    /// A truth behind what this engine has served lost its state (a Redis restarted empty, or
    /// restored from an older snapshot). What happened in between is unknowable — an ETL may
    /// already have bumped the emptied truth to a number this engine used for older data — so
    /// each such table is put back one above every number this engine knew: answers cached under
    /// the old numbers can never pass for data loaded since, at the price of reloading them once.
    ///
    /// The truth may also have gone back and been bumped since (restored from an older snapshot,
    /// or put back first by an instance with a shorter memory) to the very number this engine
    /// holds, for another batch: such a table is put back above it too (each such raise goes strictly up, so the fleet
    /// settles above every number any of its instances used). Returns the truth after the repair.
    async fn restore_truth(&self, local: &VersionVector, truth: &VersionVector) -> Restore {
        let engine = &self.inner.engine;
        let tables = engine.catalog().tables().clone();
        let behind: Vec<TableId> = tables
            .ids()
            .filter(|&t| {
                truth.version(t) < local.version(t)
                    // The same number for another batch: the truth went back (restored from an
                    // older snapshot, or put back from a shorter memory) and was bumped since to
                    // a number this engine used for other data.
                    || (local.version(t) > 0
                        && truth.version(t) == local.version(t)
                        && !local.table_batch(t).is_empty()
                        && truth.table_batch(t) != local.table_batch(t))
            })
            .collect();
        if behind.is_empty() {
            return Restore::NotNeeded;
        }
        // Above every number this instance held or reserved or prepared under, and every number
        // the truth still knows it handed out (answers may have been prepared under any of them,
        // here or in the shared store, for a flip that never came).
        let handed_out = self.inner.bus.reserved().await.unwrap_or_default();
        let mut restored = local.clone();
        restored.epoch = fastrand::u64(1..);
        {
            let reserved = self.inner.reserved_seen.lock();
            for &t in &behind {
                let seen = reserved.get(t.index()).copied().unwrap_or(0);
                let truth_seen = handed_out.get(t.index()).copied().unwrap_or(0);
                restored.set_version(t, local.version(t).max(seen).max(truth_seen) + 1);
            }
        }
        // Several instances may do this at once: the raise keeps the highest, so they agree.
        let Ok(raised) = self.inner.bus.raise(&restored).await else {
            return Restore::Failed;
        };
        if raised > 0 {
            self.inner.counters.reseeds.fetch_add(1, Ordering::Relaxed);
            let list = behind
                .iter()
                .map(|&t| format!("{} v{}", tables.name(t), restored.version(t)))
                .collect::<Vec<_>>()
                .join(", ");
            self.log_event(EventKind::Incident {
                message: format!(
                    "version truth was behind this instance (store restarted empty?): restored {list}; answers cached before reload"
                ),
            })
            .await;
        }
        let Ok(after) = self.inner.bus.versions().await else {
            return Restore::Failed;
        };
        Restore::Done(after)
    }

    /// Applies a bump's outcome to this instance's engine at once (the bus delivers it to others).
    pub(super) fn apply_local(&self, truth: &VersionVector) -> Vec<TableId> {
        let raised = self.inner.engine.apply_versions(truth);
        if !raised.is_empty() {
            self.refresh_ahead(&raised);
        }
        raised
    }

    /// Reloads the hottest keys of `tables` in the background and logs the outcome.
    fn refresh_ahead(&self, tables: &[TableId]) -> watch::Receiver<RefreshProgress> {
        let engine = &self.inner.engine;
        let requests = engine.hot_requests(tables, self.inner.config.refresh_top);
        let names: Vec<String> = tables
            .iter()
            .map(|t| engine.catalog().tables().name(*t).to_string())
            .collect();
        self.track_refresh(requests, names, false)
    }

    pub(super) fn track_refresh(
        &self,
        requests: Vec<crate::model::catalog::Request>,
        tables: Vec<String>,
        warm: bool,
    ) -> watch::Receiver<RefreshProgress> {
        let mut progress = self.inner.engine.refresh_ahead(requests);
        let out = progress.clone();
        if warm {
            self.inner.last_warm.send_replace(*progress.borrow());
        }
        if progress.borrow().total == 0 {
            return out;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let p = *progress.borrow_and_update();
                this.inner.last_refresh.send_replace(p);
                if warm {
                    this.inner.last_warm.send_replace(p);
                }
                if p.finished() {
                    // Only work done is news: keys already fresh (preloaded) are not.
                    if p.done + p.failed > 0 {
                        this.log_event(EventKind::RefreshAhead {
                            tables,
                            keys: p.total,
                            done: p.done,
                            failed: p.failed,
                        })
                        .await;
                    }
                    break;
                }
                if progress.changed().await.is_err() {
                    break;
                }
            }
        });
        out
    }
}
