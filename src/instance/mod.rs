//! An engine instance wired to the world: the warehouse it loads from, the bus it shares versions
//! and events through, and the background work that keeps it fresh. One `Instance` is what one API
//! server runs; the console and every headless command act through it.
//!
//! What it does, and where:
//! * **Sync** ([`Instance::start`]): treats every `warehouse_updated` as a hint to re-read the
//!   version truth, re-reads it every `poll_interval` and after a lagged feed (the lost-message
//!   guard), and reloads the hottest keys of every table whose version went up (refresh-ahead).
//!   How long updates made elsewhere took to arrive is kept in [`Instance::invalidation_lag`].
//! * **The invalidation protocol** ([`Instance::etl_complete`]): checks the warehouse's
//!   `update_log`, reserves version numbers for the tables that reached the batch, has the whole
//!   fleet load its hot answers under them (prepare), then bumps to exactly them — atomically, on
//!   the bus (flip) — and reports the tables behind in a `partial_update` event.
//! * **Incoming messages** ([`Instance::ingest`]): any publisher's payload on `warehouse_updated`,
//!   checked; malformed ones are counted and shown as bad input and change nothing.
//! * **Operator actions** ([`Instance::invalidate`], [`Instance::warm`],
//!   [`Instance::simulate_partial`], [`Instance::set_strategy`]): guarded — read-only mode refuses
//!   the dangerous ones here, below any UI; production refuses simulations — and every executed or
//!   refused action is written to the event log with who, where, when and what came of it.
//! * **The consistency audit** (`audit`): a sample of the fresh answers served is checked against
//!   the truth and `update_log` about once a second.
//!
//! # The rules that keep the promise under faults
//! Each is enforced here or in the bus, and `freshcache bench chaos` searches for breaks.
//! * **The truth decides.** The bus's version truth is the only authority on versions. A message
//!   — ours, the seed's, or a forgery — is a hint to re-read it; versions in a message above the
//!   truth are refused, counted and shown. No instance holds a version the
//!   truth never had.
//! * **Nothing applied is lost.** A seed-format message is deduplicated and bumped in one atomic
//!   step on the bus ([`crate::bus::BumpRequest::once`]), for a short delivery window; a bump
//!   that fails is kept and retried on every sync tick until it lands.
//! * **Numbers are never reused.** A bump's numbers are reserved before anything is prepared
//!   under them; a failed bump burns them and is reported in the feed; a truth restored after it
//!   lost its state is put above every number this instance held or reserved.
//! * **Prepare, then flip — for the fleet.** Whoever runs `etl-complete`, the running instances
//!   load their hot answers under the reserved numbers before the flip, within the preload
//!   timeout (`prepare` / `prepared` events).
//! * **Unverified is not fresh.** Past `max_unverified` without confirming the truth, answers
//!   from this process's tier are served as `Stale { versions unverified }`, and the instance
//!   reports itself unverified.
//! * **Wall time in shared state.** Event times, heartbeats and foreign batch labels come from the
//!   bus's clock (the wall clock); an accelerated demo clock stays inside its simulation.
//! * **Supervised tasks.** The sync and report loops are restarted if they panic; each restart
//!   is counted and shown.

mod audit;
mod guard;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::bus::{BumpMode, BumpRequest, Bus, BusError, parse_warehouse_updated};
use crate::engine::{Engine, RefreshProgress};
use crate::model::clock::{Millis, format_batch_label};
use crate::model::environment::Environment;
use crate::model::events::{Behind, EventKind};
use crate::model::ops::Action;
use crate::model::policy::Strategy;
use crate::model::versions::{TableId, VersionVector};
use crate::warehouse::etl::{self, EtlPlan, EtlRun, TableLoad};
use crate::warehouse::{EtlTarget, Warehouse, WarehouseError};

pub use guard::{Operator, refusal};

/// Housekeeping runs every this many report ticks (seconds).
const HOUSEKEEPING_EVERY: u32 = 5;
/// How long one instance keeps the fleet's housekeeping turn.
const HOUSEKEEPING_LEASE: Duration = Duration::from_secs(5);
/// Entries purged per housekeeping round, at most.
const PURGE_BUDGET: usize = 10_000;
/// Instances heard from within this long take part in a fleet's prepare.
const FLEET_LIVE: Duration = Duration::from_secs(5);
/// A bump event younger than this is live news (older ones come from a catch-up).
const RECENT_EVENT: Duration = Duration::from_secs(10);
/// An instance that has not answered a prepare within this long is not waited for.
const PREPARE_ACK: Duration = Duration::from_secs(1);

/// How an instance behaves.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The environment it runs in.
    pub env: Environment,
    /// Refuse every dangerous action.
    pub read_only: bool,
    /// Hot keys reloaded per bumped table set (refresh-ahead).
    pub refresh_top: usize,
    /// How often the version truth is re-read.
    pub poll_interval: Duration,
    /// Before publishing a bump, load the hot keys at the new versions (the warehouse already has
    /// the data), so users never meet a miss on them; wait at most this long. Zero: don't.
    pub preload_timeout: Duration,
    /// Past this long without confirming the version truth, answers from this process's tier
    /// are no longer presented as fresh (`Stale { versions unverified }`) and the instance
    /// reports itself UNVERIFIED.
    pub max_unverified: Duration,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            read_only: false,
            refresh_top: 50,
            poll_interval: Duration::from_secs(1),
            preload_timeout: Duration::from_secs(30),
            max_unverified: Duration::from_secs(2),
        }
    }
}

/// Why an instance refused or failed an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// Read-only mode: dangerous actions are disabled.
    #[error("refused: `{0}` is disabled in read-only mode")]
    ReadOnly(String),
    /// The environment forbids it.
    #[error("refused: {0}")]
    Refused(String),
    /// A name, label or value given is wrong.
    #[error("{0}")]
    BadInput(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// This instance has no ETL to run batches with.
    #[error("this warehouse cannot be loaded from here (no ETL target)")]
    NoEtl,
}

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

/// Counters of the instance's own machinery.
#[derive(Debug, Default)]
struct Counters {
    bad_events: AtomicU64,
    lagged_events: AtomicU64,
    resyncs: AtomicU64,
    sync_errors: AtomicU64,
    applied_updates: AtomicU64,
    reseeds: AtomicU64,
    purged: AtomicU64,
    failed_bumps: AtomicU64,
    task_restarts: AtomicU64,
    audit_checked: AtomicU64,
    audit_violations: AtomicU64,
}

/// A copy of the instance counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InstanceCounters {
    /// Malformed messages received (counted, logged, ignored).
    pub bad_events: u64,
    /// Events this instance's feed missed (it re-read the truth instead).
    pub lagged_events: u64,
    /// Re-reads of the version truth that raised a version (a message was lost or late).
    pub resyncs: u64,
    /// Failed attempts to reach the bus.
    pub sync_errors: u64,
    /// Version raises applied from events.
    pub applied_updates: u64,
    /// Times the version truth was found behind this engine and raised back.
    pub reseeds: u64,
    /// Entries of old versions this instance purged from the shared store.
    pub purged: u64,
    /// Bumps that failed (the bus was unreachable): each is reported, and a foreign message's
    /// bump is retried until it lands.
    pub failed_bumps: u64,
    /// Background tasks restarted after a panic (each also an incident in the feed).
    pub task_restarts: u64,
    /// Fresh answers checked by the consistency audit.
    pub audit_checked: u64,
    /// Of those, the ones found served as fresh behind the truth (each an incident).
    pub audit_violations: u64,
}

struct Inner {
    id: String,
    engine: Engine,
    bus: Arc<dyn Bus>,
    warehouse: Arc<dyn Warehouse>,
    etl: Option<Arc<dyn EtlTarget>>,
    config: InstanceConfig,
    operator: Operator,
    counters: Counters,
    shutdown: watch::Sender<bool>,
    last_refresh: watch::Sender<RefreshProgress>,
    /// Invalidation lag in real microseconds (see [`Instance::invalidation_lag`]). Written once
    /// per applied update, read per scrape: an uncontended mutex.
    lag: Mutex<Histogram<u64>>,
    /// Why the version truth could not be read at start, if it could not.
    start_error: Mutex<Option<String>>,
    /// Foreign seed-format messages whose bump failed: retried on every sync tick until they
    /// land, each under its own id (so one retried by several instances is still one bump).
    pending_seed: Mutex<Vec<PendingSeed>>,
    /// Per table, the highest version number this instance reserved: a truth restored after it
    /// lost its state is put above these too, so a number is never handed out twice.
    reserved_seen: Mutex<Vec<u64>>,
    /// Corrupt shared-store entries already shown in the feed.
    corrupt_shown: AtomicU64,
}

/// What [`Instance::restore_truth`] found and did.
enum Restore {
    /// The truth is whole.
    NotNeeded,
    /// It had lost its state and was put back: the truth after.
    Done(Arc<VersionVector>),
    /// It had lost its state and could not be put back now.
    Failed,
}

/// Foreign messages not applied yet because their bump failed.
#[derive(Debug, Clone)]
struct PendingSeed {
    tables: Vec<TableId>,
    label: String,
    test: bool,
    /// The message's id (merged ids once too many wait: a spare bump, never a lost one).
    id: u64,
}

/// Foreign messages kept for retry, at most; past that the oldest two are merged into one.
const PENDING_SEED_LIMIT: usize = 256;

/// One engine instance and its background work. Cheap to clone.
#[derive(Clone)]
pub struct Instance {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("bus", &self.inner.bus.describe())
            .field("warehouse", &self.inner.warehouse.describe())
            .field("env", &self.inner.config.env)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Wires an engine to its bus and warehouse (and, where this process may load the warehouse,
    /// its ETL target). Call [`Instance::start`] to begin syncing.
    pub fn new(
        engine: Engine,
        bus: Arc<dyn Bus>,
        warehouse: Arc<dyn Warehouse>,
        etl: Option<Arc<dyn EtlTarget>>,
        config: InstanceConfig,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (last_refresh, _) = watch::channel(RefreshProgress::default());
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            inner: Arc::new(Inner {
                id: format!(
                    "{}#{}",
                    crate::model::events::origin(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ),
                engine,
                bus,
                warehouse,
                etl,
                config,
                operator: Operator::current(),
                counters: Counters::default(),
                shutdown,
                last_refresh,
                lag: Mutex::new(crate::engine::stats::histogram()),
                start_error: Mutex::new(None),
                pending_seed: Mutex::new(Vec::new()),
                reserved_seen: Mutex::new(Vec::new()),
                corrupt_shown: AtomicU64::new(0),
            }),
        }
    }

    /// This instance's id on the bus (`host:pid#n`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Arc<dyn Warehouse> {
        &self.inner.warehouse
    }

    /// The configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.inner.config
    }

    /// Who acts through this instance.
    pub fn operator(&self) -> &Operator {
        &self.inner.operator
    }

    /// The instance's own counters.
    pub fn counters(&self) -> InstanceCounters {
        let c = &self.inner.counters;
        InstanceCounters {
            bad_events: c.bad_events.load(Ordering::Relaxed),
            lagged_events: c.lagged_events.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            sync_errors: c.sync_errors.load(Ordering::Relaxed),
            applied_updates: c.applied_updates.load(Ordering::Relaxed),
            reseeds: c.reseeds.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
            failed_bumps: c.failed_bumps.load(Ordering::Relaxed),
            task_restarts: c.task_restarts.load(Ordering::Relaxed),
            audit_checked: c.audit_checked.load(Ordering::Relaxed),
            audit_violations: c.audit_violations.load(Ordering::Relaxed),
        }
    }

    /// How long updates made elsewhere took to reach this instance, in real microseconds: from
    /// the bump (the time of its `warehouse_updated` event, or — when a re-read of the version
    /// truth found it because the message was lost or late — the truth's last update time of the
    /// tables it raised) to this engine applying it. One sample per application that raised a
    /// version; bumps made by this instance itself are applied at once and not sampled, nor are
    /// raw messages from other publishers (their bump time is unknown). Accelerated demo clocks
    /// are scaled back to real time; a bump stamped in the future (clock skew) counts as 0.
    pub fn invalidation_lag(&self) -> Histogram<u64> {
        self.inner
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that a bump made at `bumped_ms` (engine clock) was applied now.
    fn record_lag(&self, bumped_ms: Millis) {
        let clock = self.inner.bus.clock();
        let clock_ms = clock.now_ms().saturating_sub(bumped_ms);
        let real_us = (clock_ms as f64 * 1000.0 / clock.speed().max(1e-9)).round() as u64;
        self.inner
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(real_us.max(1));
    }

    /// Why the version truth could not be read when this instance started (it then runs on the
    /// versions it has until the bus answers), if it could not.
    pub fn start_error(&self) -> Option<String> {
        self.inner
            .start_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Progress of the latest refresh-ahead or warm.
    pub fn refresh_progress(&self) -> watch::Receiver<RefreshProgress> {
        self.inner.last_refresh.subscribe()
    }

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
                *self
                    .inner
                    .start_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
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

    fn spawn_loops(&self) {
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
        }
    }

    /// Reports about once a second (the heartbeat other consoles and `stats` read).
    async fn report_loop(self, mut shutdown: watch::Receiver<bool>) {
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
    async fn incident(&self, level: tracing::Level, message: String) {
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

    /// Stops the background work.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    async fn sync_loop(
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
                        // Counted and logged when malformed; applied exactly once otherwise.
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
                    self.retry_pending_seed().await;
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
    async fn hint(&self, claimed: &BTreeMap<String, u64>, bumped_at: Option<Millis>, source: &str) {
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
            self.inner.bus.clock().now_ms().saturating_sub(at) < RECENT_EVENT.as_millis() as u64
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

    /// Counts and logs a message refused as bad input, and shows it in the feed.
    async fn refuse(&self, source: &str, reason: String, excerpt: String) {
        self.inner
            .counters
            .bad_events
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source, "refused a message: {reason}");
        let source: String = source
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        if let Err(e) = self
            .inner
            .bus
            .publish(EventKind::BadInput {
                source,
                reason,
                excerpt,
            })
            .await
        {
            tracing::warn!("could not log a refused message: {e}");
        }
    }

    /// Reads the version truth and repairs it if it lost its state; with it, when the read began
    /// (wall clock), for [`Engine::confirm_versions`] once it is applied. `None` (counted) when
    /// the bus cannot be reached.
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
            let reserved = self
                .inner
                .reserved_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
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
            let _ = self
                .inner
                .bus
                .publish(EventKind::Incident {
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
    fn apply_local(&self, truth: &VersionVector) -> Vec<TableId> {
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
        self.track_refresh(requests, names)
    }

    fn track_refresh(
        &self,
        requests: Vec<crate::model::catalog::Request>,
        tables: Vec<String>,
    ) -> watch::Receiver<RefreshProgress> {
        let mut progress = self.inner.engine.refresh_ahead(requests);
        let out = progress.clone();
        if progress.borrow().total == 0 {
            return out;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let p = *progress.borrow_and_update();
                this.inner.last_refresh.send_replace(p);
                if p.finished() {
                    // Only work done is news: keys already fresh (preloaded) are not.
                    if p.done + p.failed > 0 {
                        let _ = this
                            .inner
                            .bus
                            .publish(EventKind::RefreshAhead {
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

    /// A raw message from the `warehouse_updated` channel, from any publisher. Malformed ones are
    /// counted and shown as bad input and change nothing. One with versions (ours, or a
    /// forgery) is a hint to re-read the truth. The seed's messages (no
    /// versions) bump their tables once however many instances receive them: the dedupe mark
    /// and the bump are one atomic step on the bus, and a bump that fails is retried until it
    /// lands, so an update is never marked applied without being applied.
    pub async fn ingest(&self, source: &str, payload: &[u8]) -> Result<(), InstanceError> {
        let tables = self.inner.engine.catalog().tables().clone();
        let message = match parse_warehouse_updated(payload, &tables) {
            Ok(m) => m,
            Err(bad) => {
                self.refuse(source, bad.reason.clone(), bad.excerpt).await;
                return Err(InstanceError::BadInput(bad.reason));
            }
        };
        if let Some(versions) = &message.versions {
            let by_name = versions
                .iter()
                .map(|(t, v)| (tables.name(*t).to_string(), *v))
                .collect();
            // Another publisher's message: when it bumped is not known.
            self.hint(&by_name, None, source).await;
            return Ok(());
        }
        let label = match &message.batch {
            Some(batch) => match check_batch_label(batch, self.inner.engine.clock().now_ms()) {
                Ok(()) => batch.clone(),
                Err(e) => {
                    let reason = format!("{e}");
                    self.refuse(source, reason.clone(), crate::bus::excerpt(payload, 120))
                        .await;
                    return Err(InstanceError::BadInput(reason));
                }
            },
            // Labelled by the bus's (wall) clock: the label lands in shared state.
            None => format_batch_label(self.inner.bus.clock().now_ms()),
        };
        let pending = PendingSeed {
            tables: message.tables.clone(),
            label,
            test: message.test,
            id: message.id,
        };
        self.apply_seed(pending).await
    }

    /// Bumps a foreign message's tables once (see [`Instance::ingest`]); on failure keeps it
    /// for the next sync tick, merged with any other waiting.
    async fn apply_seed(&self, seed: PendingSeed) -> Result<(), InstanceError> {
        let mut request = BumpRequest::new(&seed.tables, &seed.label, BumpMode::Force);
        request.test = seed.test;
        request.once = Some(seed.id);
        match self.inner.bus.bump_with(request).await {
            Ok(outcome) => {
                self.apply_local(&outcome.versions);
                Ok(())
            }
            Err(e) => {
                self.inner
                    .counters
                    .failed_bumps
                    .fetch_add(1, Ordering::Relaxed);
                let names: Vec<&str> = seed
                    .tables
                    .iter()
                    .map(|t| self.inner.engine.catalog().tables().name(*t))
                    .collect();
                tracing::warn!(
                    tables = %names.join(", "),
                    "the bump for a warehouse_updated message failed; retrying: {e}"
                );
                let mut pending = self
                    .inner
                    .pending_seed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                pending.push(seed);
                if pending.len() > PENDING_SEED_LIMIT {
                    // A bump of a table covers every update of it before: merging two loses no
                    // update (it may cost a spare bump, under a new id).
                    let second = pending.remove(1);
                    let first = &mut pending[0];
                    for t in second.tables {
                        if !first.tables.contains(&t) {
                            first.tables.push(t);
                        }
                    }
                    first.label = first.label.clone().max(second.label);
                    first.test &= second.test;
                    first.id = first.id.rotate_left(1) ^ second.id;
                }
                Err(e.into())
            }
        }
    }

    /// Retries the bump of foreign messages that failed, and says so in the feed once it lands.
    async fn retry_pending_seed(&self) {
        let waiting = std::mem::take(
            &mut *self
                .inner
                .pending_seed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut waiting = waiting.into_iter();
        while let Some(seed) = waiting.next() {
            let tables: Vec<String> = seed
                .tables
                .iter()
                .map(|t| self.inner.engine.catalog().tables().name(*t).to_string())
                .collect();
            if self.apply_seed(seed).await.is_err() {
                // Still unreachable (apply_seed kept it): keep the rest, in order, after it.
                self.inner
                    .pending_seed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(waiting);
                return;
            }
            let message = format!(
                "a warehouse_updated message for {} was applied late: its first bump failed",
                tables.join(", ")
            );
            self.incident(tracing::Level::INFO, message).await;
        }
    }

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
            .history(0, crate::bus::local::LOG_LIMIT as usize)
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

    /// Remembers the numbers this instance reserved (see [`Inner::reserved_seen`]).
    fn note_reserved(&self, tables: &[TableId], reserved: &[u64]) {
        let mut seen = self
            .inner
            .reserved_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
        let mut waiting: std::collections::BTreeSet<String> =
            match self.inner.bus.reports(FLEET_LIVE.as_millis() as u64).await {
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
    async fn answer_prepare(self, batch: String, versions: BTreeMap<String, u64>) {
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
        let keys = engine
            .hot_requests(&tables, self.inner.config.refresh_top)
            .len() as u32;
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

    /// Runs one simulated ETL batch into the warehouse (failing or deferring tables as `plan`
    /// says), logs it, then runs the invalidation protocol for it. Late tables are loaded when
    /// their time comes, followed by another `etl-complete` for the same batch. The simulator
    /// writes made-up data: refused in production and in read-only mode.
    pub async fn run_etl(
        &self,
        batch: &str,
        plan: &EtlPlan,
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        self.allow(Action::RunEtl, &[batch.to_string()]).await?;
        self.load_batch(batch, plan).await
    }

    /// [`Instance::run_etl`] without the guard: the demo's scheduled ETL (part of the simulated
    /// world, not an operator's action) and `simulate-partial` (guarded by its own action).
    pub(crate) async fn load_batch(
        &self,
        batch: &str,
        plan: &EtlPlan,
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        check_batch_label(batch, self.inner.engine.clock().now_ms())?;
        let target = self.inner.etl.clone().ok_or(InstanceError::NoEtl)?;
        let tables = self.inner.engine.catalog().tables().clone();
        let names: Vec<&str> = tables.names().iter().map(String::as_str).collect();
        let now = self.inner.engine.clock().now_ms();
        // The tables are being loaded: no background refresh should load them under the keys the
        // coming bump retires (etl-complete clears the mark).
        let all: Vec<TableId> = tables.ids().collect();
        self.inner.engine.set_updating(&all, true);
        let run = etl::run_batch(target.as_ref(), &names, batch, now, plan).await;
        let mut failed = Vec::new();
        let mut late = Vec::new();
        for t in &run.tables {
            match t {
                TableLoad::Failed { table, reason } => failed.push(Behind {
                    table: table.clone(),
                    reason: reason.clone(),
                }),
                TableLoad::Late { table, after_ms } => {
                    late.push(table.clone());
                    self.load_late(table.clone(), batch.to_string(), *after_ms);
                }
                TableLoad::Loaded { .. } => {}
            }
        }
        let logged = self
            .inner
            .bus
            .publish(EventKind::EtlRun {
                batch: batch.to_string(),
                loaded: run.loaded().iter().map(|s| s.to_string()).collect(),
                failed,
                late,
            })
            .await;
        if let Err(e) = logged {
            self.inner.engine.set_updating(&all, false);
            return Err(e.into());
        }
        let report = self.complete_batch(batch, &[]).await;
        self.inner.engine.set_updating(&all, false);
        Ok((run, report?))
    }

    fn load_late(&self, table: String, batch: String, after_ms: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            let clock = this.inner.engine.clock().clone();
            let real = Duration::from_millis(after_ms).div_f64(clock.speed().max(1e-9));
            tokio::time::sleep(real).await;
            let Some(target) = this.inner.etl.clone() else {
                return;
            };
            let _ = etl::load_late(target.as_ref(), &table, &batch, clock.now_ms()).await;
            let _ = this.complete_batch(&batch, &[]).await;
        });
    }

    /// Writes an operator action to the event log.
    async fn audit(&self, action: Action, targets: Vec<String>, result: &str) {
        let op = &self.inner.operator;
        let _ = self
            .inner
            .bus
            .publish(EventKind::OperatorAction {
                action: action.name().to_string(),
                operator: op.user.clone(),
                host: op.host.clone(),
                env: self.inner.config.env.to_string(),
                targets,
                result: result.to_string(),
            })
            .await;
    }

    /// Refuses `action` if read-only mode or the environment forbids it, logging the refusal.
    /// The guarded methods call it themselves; a caller that starts guarded work of its own (the
    /// ETL simulator on a schedule, `traffic --with-etl`) asks first.
    pub async fn allow(&self, action: Action, targets: &[String]) -> Result<(), InstanceError> {
        let refusal = guard::refusal(action, self.inner.config.env, self.inner.config.read_only);
        if let Some(e) = refusal {
            self.audit(action, targets.to_vec(), &e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    /// Resolves table names, refusing unknown ones with the list of known ones.
    pub fn table_ids(&self, names: &[String]) -> Result<Vec<TableId>, InstanceError> {
        let tables = self.inner.engine.catalog().tables();
        names
            .iter()
            .map(|n| {
                tables
                    .id(n)
                    .map_err(|e| InstanceError::BadInput(e.to_string()))
            })
            .collect()
    }

    /// Invalidates `tables` (all when empty): their versions go up by one, so every answer that
    /// reads them misses once. O(1) whatever the number of entries; old entries age out.
    pub async fn invalidate(&self, tables: &[TableId]) -> Result<EtlCompleteReport, InstanceError> {
        let catalog_tables = self.inner.engine.catalog().tables().clone();
        let ids: Vec<TableId> = if tables.is_empty() {
            catalog_tables.ids().collect()
        } else {
            tables.to_vec()
        };
        let targets: Vec<String> = ids
            .iter()
            .map(|t| catalog_tables.name(*t).to_string())
            .collect();
        self.allow(Action::Invalidate, &targets).await?;
        let label = self.inner.engine.versions().batch.to_string();
        let outcome = match self
            .inner
            .bus
            .bump(&ids, &label, BumpMode::Force, false)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.audit(Action::Invalidate, targets, &format!("failed: {e}"))
                    .await;
                return Err(e.into());
            }
        };
        self.apply_local(&outcome.versions);
        self.audit(Action::Invalidate, targets.clone(), "ok").await;
        Ok(EtlCompleteReport {
            batch: label,
            verified: targets.clone(),
            bumped: targets,
            behind: Vec::new(),
            versions: crate::bus::versions_by_name(&outcome.versions, &catalog_tables),
        })
    }

    /// Loads the `top` hottest keys (of all tables) that are not fresh, in the background; the
    /// receiver reports progress.
    pub async fn warm(
        &self,
        top: usize,
    ) -> Result<watch::Receiver<RefreshProgress>, InstanceError> {
        let requests = self.inner.engine.hot_requests(&[], top);
        self.warm_requests(requests).await
    }

    /// Loads the given requests that are not fresh, in the background, as `warm` does.
    pub async fn warm_requests(
        &self,
        requests: Vec<crate::model::catalog::Request>,
    ) -> Result<watch::Receiver<RefreshProgress>, InstanceError> {
        let targets = vec![format!("{} keys", requests.len())];
        self.allow(Action::Warm, &targets).await?;
        let progress = self.track_refresh(requests, Vec::new());
        self.audit(Action::Warm, targets, "ok").await;
        Ok(progress)
    }

    /// Simulates a partial update: an ETL batch in which `fail` tables fail to load, followed by
    /// `etl-complete`. Staging and development only.
    pub async fn simulate_partial(
        &self,
        fail: &[TableId],
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        let tables = self.inner.engine.catalog().tables().clone();
        let targets: Vec<String> = fail.iter().map(|t| tables.name(*t).to_string()).collect();
        self.allow(Action::SimulatePartial, &targets).await?;
        if fail.is_empty() {
            return Err(InstanceError::BadInput(
                "name at least one table to fail (--fail TABLE)".into(),
            ));
        }
        let batch = self.next_batch_label().await?;
        let plan = EtlPlan {
            fail: targets.clone(),
            late: Vec::new(),
        };
        let result = self.load_batch(&batch, &plan).await;
        let summary = match &result {
            Ok((_, report)) => format!(
                "ok: batch {batch}; bumped {}; behind {}",
                list_or_none(&report.bumped),
                list_or_none(
                    &report
                        .behind
                        .iter()
                        .map(|b| b.table.clone())
                        .collect::<Vec<_>>()
                )
            ),
            Err(e) => format!("failed: {e}"),
        };
        self.audit(Action::SimulatePartial, targets, &summary).await;
        result
    }

    /// Switches the engine's strategy (demo).
    pub async fn set_strategy(&self, strategy: Strategy) -> Result<(), InstanceError> {
        let targets = vec![strategy.name().to_string()];
        self.allow(Action::SwitchStrategy, &targets).await?;
        self.inner.engine.set_strategy(strategy);
        self.audit(Action::SwitchStrategy, targets, "ok").await;
        Ok(())
    }

    /// A batch label for a run now, later than any batch the warehouse has seen: the minute's
    /// label, with seconds (and then a counter) added when that one is taken.
    pub async fn next_batch_label(&self) -> Result<String, InstanceError> {
        let now = self.inner.engine.clock().now_ms();
        let current = self
            .inner
            .warehouse
            .current_batch()
            .await?
            .unwrap_or_default();
        let minute = format_batch_label(now);
        if minute > current {
            return Ok(minute);
        }
        let secs = format!("{minute}:{:02}", (now / 1000) % 60);
        if secs > current {
            return Ok(secs);
        }
        Ok(format!("{current}.1"))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// How far past the clock a batch label may be (clocks of the ETL host and ours differ a little).
pub const BATCH_LABEL_TOLERANCE: Duration = Duration::from_secs(15 * 60);

/// Batch labels are compared as text, so they must sort in time order: `YYYYMMDD-HH:MM`, with
/// optional seconds (`:SS`) and sequence suffixes (`.1`), as [`Instance::next_batch_label`] makes
/// them. A label later than `now_ms` plus [`BATCH_LABEL_TOLERANCE`] is refused: it would sort
/// above every real batch to come and stop them from ever being applied.
pub fn check_batch_label(batch: &str, now_ms: Millis) -> Result<(), InstanceError> {
    let bad = |why: &str| {
        InstanceError::BadInput(format!(
            "bad batch label `{}`: {why}; use YYYYMMDD-HH:MM (optionally :SS and .N), e.g. 20261126-10:00",
            crate::bus::excerpt(batch.as_bytes(), 40)
        ))
    };
    let b = batch.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) = (
        digits(0..4),
        digits(4..6),
        digits(6..8),
        digits(9..11),
        digits(12..14),
    ) else {
        return Err(bad("not a date and time"));
    };
    if b.get(8) != Some(&b'-') || b.get(11) != Some(&b':') {
        return Err(bad("not a date and time"));
    }
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 {
        return Err(bad("no such time"));
    }
    let mut rest = &batch[14..];
    if let Some(after) = rest.strip_prefix(':') {
        let secs = after
            .get(..2)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()));
        match secs.and_then(|s| s.parse::<u32>().ok()) {
            Some(s) if s <= 59 => rest = &after[2..],
            _ => return Err(bad("bad seconds")),
        }
    }
    while let Some(after) = rest.strip_prefix('.') {
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return Err(bad("bad sequence suffix"));
        }
        rest = &after[n..];
    }
    if !rest.is_empty() {
        return Err(bad("unexpected text after the time"));
    }
    let latest =
        format_batch_label(now_ms.saturating_add(BATCH_LABEL_TOLERANCE.as_millis() as u64));
    if batch[..14] > *latest.as_str() {
        return Err(InstanceError::BadInput(format!(
            "batch label `{batch}` is in the future (now {}): a label sorts above every batch to come, so it would stop them from being applied",
            format_batch_label(now_ms)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
