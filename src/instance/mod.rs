//! An engine instance wired to the world: the warehouse it loads from, the bus it shares versions
//! and events through, and the background work that keeps it fresh. One `Instance` is what one API
//! server runs; the console and every headless command act through it.
//!
//! This file holds the `Instance` type and its construction; what it does lives beside it:
//! * **Sync** (`sync`, [`Instance::start`]): treats every `warehouse_updated` as a hint to re-read
//!   the version truth, re-reads it every `poll_interval` and after a lagged feed (the lost-message
//!   guard), and reloads the hottest keys of every table whose version went up (refresh-ahead).
//!   How long updates made elsewhere took to arrive is kept in [`Instance::invalidation_lag`].
//! * **The invalidation protocol** (`protocol`, [`Instance::etl_complete`]): checks the
//!   warehouse's `update_log`, reserves version numbers for the tables that reached the batch, has
//!   the whole fleet load its hot answers under them (prepare), then bumps to exactly them —
//!   atomically, on the bus (flip) — and reports the tables behind in a `partial_update` event.
//!   The simulated ETL that feeds it runs through `etl` ([`Instance::run_etl`]); batch labels are
//!   checked in `batch_label`.
//! * **Incoming messages** (`ingest`, [`Instance::ingest`]): any publisher's payload on
//!   `warehouse_updated`, checked; malformed ones are counted and shown as bad input and change
//!   nothing.
//! * **Operator actions** (`actions`: [`Instance::invalidate`], [`Instance::warm`],
//!   [`Instance::simulate_partial`], [`Instance::set_strategy`]): guarded (`guard`) — read-only
//!   mode refuses the dangerous ones here, below any UI; production refuses simulations — and
//!   every executed or refused action is written to the event log with who, where, when and what
//!   came of it.
//! * **Reports** (`report`): the heartbeat about once a second, incidents in the feed, and
//!   housekeeping of old entries; the loops run supervised (`supervise`).
//! * **The consistency audit** (`audit`): a sample of the fresh answers served is checked against
//!   the truth and `update_log` about once a second.
//!
//! # The rules that keep the promise under faults
//! Each is enforced here or in the bus, and `freshcache bench chaos` searches for breaks.
//! * **The truth decides.** The bus's version truth is the only authority on versions. A message
//!   — ours, the baseline's, or a forgery — is a hint to re-read it; versions in a message above the
//!   truth are refused, counted and shown. No instance holds a version the
//!   truth never had.
//! * **Nothing applied is lost.** A plain message is deduplicated and bumped in one atomic
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

mod actions;
mod audit;
mod batch_label;
mod etl;
mod guard;
mod ingest;
mod protocol;
mod report;
pub mod schedule;
mod supervise;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

use crate::bus::{Bus, BusError};
use crate::engine::{Engine, RefreshProgress};
use crate::model::environment::Environment;
use crate::warehouse::{EtlTarget, Warehouse, WarehouseError};

pub use batch_label::{BATCH_LABEL_TOLERANCE, check_batch_label};
pub use guard::{Operator, acting_as, refusal};
pub use protocol::EtlCompleteReport;

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
    /// What the process does, as the fleet's instance lists show it.
    pub role: Role,
}

/// What a process running an instance does, as the console's and `stats`' instance lists show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Simulated users (`freshcache traffic`, the demo's users).
    Traffic,
    /// The operations console.
    Console,
    /// The HTTP sidecar.
    Serve,
    /// A one-shot command.
    #[default]
    Cli,
}

impl Role {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Traffic => "traffic",
            Role::Console => "console",
            Role::Serve => "serve",
            Role::Cli => "cli",
        }
    }
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
            role: Role::default(),
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
    /// Progress of the latest operator warm alone (the console's warm dialog counts only it).
    last_warm: watch::Sender<RefreshProgress>,
    /// Invalidation lag in real microseconds (see [`Instance::invalidation_lag`]). Written once
    /// per applied update, read per scrape: an uncontended mutex.
    lag: Mutex<Histogram<u64>>,
    /// Why the version truth could not be read at start, if it could not.
    start_error: Mutex<Option<String>>,
    /// Foreign plain messages whose bump failed: retried on every sync tick until they
    /// land, each under its own id (so one retried by several instances is still one bump).
    pending_plain: Mutex<Vec<ingest::PendingPlain>>,
    /// Per table, the highest version number this instance reserved: a truth restored after it
    /// lost its state is put above these too, so a number is never handed out twice.
    reserved_seen: Mutex<Vec<u64>>,
    /// Corrupt shared-store entries already shown in the feed.
    corrupt_shown: AtomicU64,
}

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
        let (last_warm, _) = watch::channel(RefreshProgress::default());
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
                last_warm,
                lag: Mutex::new(crate::engine::stats::histogram()),
                start_error: Mutex::new(None),
                pending_plain: Mutex::new(Vec::new()),
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
        self.inner.lag.lock().clone()
    }

    /// Why the version truth could not be read when this instance started (it then runs on the
    /// versions it has until the bus answers), if it could not.
    pub fn start_error(&self) -> Option<String> {
        self.inner.start_error.lock().clone()
    }

    /// Progress of the latest refresh-ahead or warm.
    pub fn refresh_progress(&self) -> watch::Receiver<RefreshProgress> {
        self.inner.last_refresh.subscribe()
    }

    /// Progress of the latest operator warm, and of nothing else.
    pub fn warm_progress(&self) -> watch::Receiver<RefreshProgress> {
        self.inner.last_warm.subscribe()
    }

    /// Stops the background work.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Stops, as [`Instance::shutdown`] does, and leaves the fleet: its report is removed, so
    /// `stats` and the console stop listing it instead of showing it lost.
    pub async fn leave(&self) {
        self.shutdown();
        if let Err(e) = self.inner.bus.leave(&self.inner.id).await {
            tracing::warn!(
                "could not leave the fleet (it will be listed as lost for a while): {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests;
