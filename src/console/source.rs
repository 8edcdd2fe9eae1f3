//! What the console watches and acts through: a [`Channels`] of snapshots (a `watch` with the latest
//! one), events (a `broadcast` feed; a lagging console is told how many it missed) and commands
//! (a bounded `mpsc` with a `oneshot` reply).
//!
//! [`Channels::attach`] builds one over an [`Instance`] — embedded or on Redis alike — with a
//! collector task that samples the instance four times a second and sums the reports of every
//! live instance on the bus, so a console attached to many API servers shows their totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::bus::InstanceReport;
use crate::engine::RefreshProgress;
use crate::engine::stats::{LatencySummary, StatsSnapshot, histogram};
use crate::model::clock::Millis;
use crate::model::events::{Event, EventKind};
use crate::model::policy::Strategy;

/// Instances heard from within this long are live (their figures are summed).
const LIVE_MS: u64 = 5_000;
/// Instances silent for longer, but heard from within this long, are shown as silent.
const SILENT_SHOWN_MS: u64 = 60_000;
use crate::instance::Instance;
use crate::model::entry::TableKeys;
use crate::model::environment::Environment;
use crate::model::versions::VersionVector;
use crate::traffic::{Shadow, ShadowFigures};

/// How a table is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TableState {
    /// Its version matches the warehouse's latest batch for it.
    Fresh,
    /// A bump of it is being prepared.
    Updating,
    /// The latest update left it behind, with the reason.
    Partial(String),
}

/// One row of the tables panel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableRow {
    /// The table.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// The last batch applied to it.
    pub batch: String,
    /// When it was last bumped (ms since the epoch, clock).
    pub updated_ms: Millis,
    /// Entries at its current version (all instances).
    pub live: u64,
    /// Entries at older versions still held.
    pub old: u64,
    /// Catalog queries that read it.
    pub queries: usize,
    /// Fresh, updating or partial.
    pub state: TableState,
}

/// One sample of the charts: rates over the last sampling interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Fresh hits over requests (0..1); `None` when there were no requests.
    pub hit_ratio: Option<f64>,
    /// Warehouse queries per second.
    pub warehouse_qps: f64,
    /// User latency median, ms.
    pub p50_ms: f64,
    /// User latency 99th percentile, ms.
    pub p99_ms: f64,
    /// Stale answers per second.
    pub stale_per_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
}

/// Everything the console draws, at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The clock's now (the simulation's, in a demo).
    pub now_ms: Millis,
    /// The now of the clock shared state is stamped with (the wall clock): what bump times and
    /// event times are measured against.
    pub shared_now_ms: Millis,
    /// The environment.
    pub env: Environment,
    /// Read-only mode.
    pub read_only: bool,
    /// The bus, secret-free ("embedded (in memory)", "redis://host:6379/0").
    pub backend: String,
    /// The warehouse, secret-free.
    pub warehouse: String,
    /// The strategy.
    pub strategy: Strategy,
    /// Clock speed (1 outside demos).
    pub clock_speed: f64,
    /// The latest batch label.
    pub batch: String,
    /// When the versions were last bumped.
    pub last_update_ms: Millis,
    /// Per table.
    pub tables: Vec<TableRow>,
    /// Catalog queries.
    pub queries: usize,
    /// The tables each catalog query reads, by name (what an invalidation's blast radius is
    /// counted from).
    pub query_tables: Vec<Vec<String>>,
    /// Counters summed over live instances.
    pub stats: StatsSnapshot,
    /// Live instances.
    pub instances: usize,
    /// Malformed messages received (all instances).
    pub bad_events: u64,
    /// Fresh answers the consistency audit checked, and violations found (all instances).
    pub audit: (u64, u64),
    /// Why the cache runs degraded, when it does.
    pub degraded: Option<String>,
    /// Since when (wall clock, ms) this instance has not confirmed the version truth, when it
    /// has not for longer than its bound.
    pub unverified_since_ms: Option<u64>,
    /// Other instances silent for longer than [`crate::bus::SILENT_UNVERIFIED`] (they cannot
    /// confirm the truth through this bus either): shown, not dropped.
    pub silent_instances: usize,
    /// The latest refresh-ahead or warm.
    pub refresh: RefreshProgress,
    /// The latest operator warm alone.
    pub warm: RefreshProgress,
    /// The latest chart sample.
    pub sample: Sample,
    /// Estimated cost of one warehouse query, in dollars.
    pub price_per_query: f64,
    /// What the baseline recipe would have done with the same questions, when a shadow runs
    /// beside the traffic (the demo).
    pub shadow: Option<ShadowFigures>,
    /// Set while the other instances' reports cannot be read: the figures shown are the last
    /// ones read, from this time (wall clock, ms), and this is why.
    pub figures_as_of: Option<(Millis, String)>,
}

/// An action the console asks the instance to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Invalidate tables (empty: all).
    Invalidate(Vec<String>),
    /// Warm the `n` hottest keys.
    Warm(usize),
    /// Run an ETL batch in which these tables fail.
    SimulatePartial(Vec<String>),
    /// Switch strategy.
    SetStrategy(Strategy),
}

/// A command and where its answer goes: `Ok(summary)` or `Err(why)`.
pub type CommandAndReply = (Command, oneshot::Sender<Result<String, String>>);

/// The console's three channels.
pub struct Channels {
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Snapshot>,
    /// The event feed.
    pub events: broadcast::Receiver<Event>,
    /// Events logged before the console started, oldest first.
    pub history: Vec<Event>,
    /// Where commands go.
    pub commands: mpsc::Sender<CommandAndReply>,
}

/// How often the collector samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

impl Channels {
    /// A source over `instance`: starts the collector and the command task on the current
    /// runtime. `price_per_query` feeds the money view.
    pub async fn attach(instance: Instance, price_per_query: f64) -> Channels {
        Self::attach_with_shadow(instance, price_per_query, None).await
    }

    /// [`Channels::attach`], with the figures of a [`Shadow`] run by the traffic beside it.
    pub async fn attach_with_shadow(
        instance: Instance,
        price_per_query: f64,
        shadow: Option<Arc<Shadow>>,
    ) -> Channels {
        let history = instance
            .bus()
            .history(0, usize::MAX >> 1)
            .await
            .map(|all| {
                let skip = all.len().saturating_sub(500);
                all.into_iter().skip(skip).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let events = instance.bus().subscribe();
        let mut collector = Collector::new(instance.clone(), price_per_query, &history);
        collector.shadow = shadow;
        let first = collector.snapshot().await;
        let (tx, snapshots) = watch::channel(first);
        let (commands, rx) = mpsc::channel(16);
        tokio::spawn(collector.run(tx));
        tokio::spawn(serve_commands(instance, rx));
        Channels {
            snapshots,
            events,
            history,
            commands,
        }
    }
}

async fn serve_commands(instance: Instance, mut rx: mpsc::Receiver<CommandAndReply>) {
    while let Some((command, reply)) = rx.recv().await {
        let instance = instance.clone();
        // Each command runs on its own task so a long one (a simulated ETL) never blocks the next.
        tokio::spawn(async move {
            // Fails only when the console has quit and no longer waits for the reply.
            let _ = reply.send(execute(&instance, command).await);
        });
    }
}

async fn execute(instance: &Instance, command: Command) -> Result<String, String> {
    match command {
        Command::Invalidate(tables) => {
            let ids = instance.table_ids(&tables).map_err(|e| e.to_string())?;
            let r = instance.invalidate(&ids).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "invalidated {}; versions {}",
                r.bumped.join(", "),
                r.versions
                    .iter()
                    .map(|(t, v)| format!("{t}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }
        Command::Warm(n) => {
            let mut progress = instance.warm(n).await.map_err(|e| e.to_string())?;
            let p = *progress.borrow_and_update();
            Ok(format!("warming {} hot keys", p.total))
        }
        Command::SimulatePartial(tables) => {
            let ids = instance.table_ids(&tables).map_err(|e| e.to_string())?;
            let (_, r) = instance
                .simulate_partial(&ids)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "batch {}: bumped {}; behind {}",
                r.batch,
                if r.bumped.is_empty() {
                    "none".into()
                } else {
                    r.bumped.join(", ")
                },
                r.behind
                    .iter()
                    .map(|b| b.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Command::SetStrategy(s) => {
            instance.set_strategy(s).await.map_err(|e| e.to_string())?;
            Ok(format!("strategy is now {s}"))
        }
    }
}

/// Samples the instance and the bus, computes chart rates, tracks table states from events.
struct Collector {
    instance: Instance,
    price: f64,
    feed: broadcast::Receiver<Event>,
    partial: BTreeMap<String, String>,
    previous: Option<(std::time::Instant, StatsSnapshot)>,
    user_hist: Histogram<u64>,
    last_sample: Sample,
    /// The shared store's per-table counts and when they were read (they cost a few Redis calls:
    /// read every couple of seconds, not every frame).
    shared_keys: Option<(std::time::Instant, Vec<TableKeys>)>,
    /// The baseline recipe's shadow, when the traffic runs one.
    shadow: Option<Arc<Shadow>>,
    /// The other instances' reports as last read, and when (wall clock): kept through an outage
    /// so the figures do not drop to this process's own.
    last_reports: Option<(Millis, Vec<InstanceReport>)>,
}

impl Collector {
    fn new(instance: Instance, price: f64, history: &[Event]) -> Self {
        let feed = instance.bus().subscribe();
        let mut c = Self {
            instance,
            price,
            feed,
            partial: BTreeMap::new(),
            previous: None,
            user_hist: histogram(),
            last_sample: Sample::default(),
            shared_keys: None,
            shadow: None,
            last_reports: None,
        };
        for e in history {
            c.note(e);
        }
        c
    }

    fn note(&mut self, e: &Event) {
        match &e.kind {
            EventKind::PartialUpdate { behind, .. } => {
                for b in behind {
                    self.partial.insert(b.table.clone(), b.reason.clone());
                }
            }
            EventKind::WarehouseUpdated { tables, .. } => {
                for t in tables {
                    self.partial.remove(t);
                }
            }
            _ => {}
        }
    }

    async fn run(mut self, tx: watch::Sender<Snapshot>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                match self.feed.try_recv() {
                    Ok(e) => self.note(&e),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            let snap = self.snapshot().await;
            if tx.send(snap).is_err() {
                return;
            }
        }
    }

    /// The shared store's per-table counts, read at most every two seconds; `None` when there is
    /// no shared store or it does not answer (the in-process counts are shown then).
    async fn shared_table_keys(&mut self, versions: &VersionVector) -> Option<Vec<TableKeys>> {
        let shared = self.instance.engine().shared_store()?.clone();
        let stale = self
            .shared_keys
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= std::time::Duration::from_secs(2));
        if stale {
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                shared.table_keys(versions),
            )
            .await;
            match read {
                Ok(Ok(keys)) => self.shared_keys = Some((std::time::Instant::now(), keys)),
                // Keep the last counts a little longer rather than flicker to the local ones.
                _ => {
                    if self
                        .shared_keys
                        .as_ref()
                        .is_some_and(|(at, _)| at.elapsed() > std::time::Duration::from_secs(10))
                    {
                        self.shared_keys = None;
                    }
                }
            }
        }
        self.shared_keys.as_ref().map(|(_, k)| k.clone())
    }

    async fn snapshot(&mut self) -> Snapshot {
        let versions = self.instance.engine().versions();
        let shared = self.shared_table_keys(&versions).await;
        let instance = &self.instance;
        let engine = instance.engine();
        let catalog = engine.catalog().clone();
        let tables = catalog.tables();
        let own = engine.stats();
        let own_keys = engine.table_keys();
        // Other instances' latest reports (their counters are up to a second old); while they
        // cannot be read, the last ones read, said to be so.
        let now = instance.bus().clock().now_ms();
        let (known, figures_as_of) = match instance.bus().reports(SILENT_SHOWN_MS).await {
            Ok(reports) => {
                let others: Vec<_> = reports
                    .into_iter()
                    .filter(|r| r.id != instance.id())
                    .collect();
                self.last_reports = Some((now, others.clone()));
                (others, None)
            }
            Err(e) => match &self.last_reports {
                Some((at, reports)) => (
                    reports.clone(),
                    Some((*at, format!("other instances cannot be read: {e}"))),
                ),
                None => (
                    Vec::new(),
                    Some((now, format!("no instance could be read yet: {e}"))),
                ),
            },
        };
        // Frozen figures keep their instances: liveness is judged at the time they were read.
        let seen_at = figures_as_of.as_ref().map_or(now, |(at, _)| *at);
        let silent = known
            .iter()
            .filter(|r| now > r.at_ms + crate::model::num::ms(crate::bus::SILENT_UNVERIFIED))
            .count();
        let others: Vec<_> = known
            .into_iter()
            .filter(|r| r.at_ms + LIVE_MS >= seen_at)
            .collect();
        let mut stats = own.clone();
        let mut keys = own_keys.clone();
        let mut bad_events = instance.counters().bad_events;
        let own = instance.counters();
        let mut audit = (own.audit_checked, own.audit_violations);
        let mut recent_p99_us = 0u64;
        for r in &others {
            stats = stats.plus(&r.stats);
            for (k, rk) in keys.iter_mut().zip(&r.table_keys) {
                k.current += rk.current;
                k.old += rk.old;
            }
            bad_events += r.bad_events;
            audit.0 += r.audit_checked;
            audit.1 += r.audit_violations;
            recent_p99_us = recent_p99_us.max(r.recent_latency.p99_us);
        }
        // Rates over the interval since the previous sample.
        let now = std::time::Instant::now();
        let (user, _) = engine.latency_histograms();
        let mut recent = user.clone();
        // `user_hist` is an earlier copy of the same, only-growing histogram: the subtraction
        // cannot come out negative.
        let _ = recent.subtract(&self.user_hist);
        self.user_hist = user;
        let recent = LatencySummary::of(&recent);
        let sample = match &self.previous {
            Some((at, prev)) => {
                let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
                let requests = stats.requests.saturating_sub(prev.requests);
                Sample {
                    hit_ratio: (requests > 0).then(|| {
                        stats.fresh_hits.saturating_sub(prev.fresh_hits) as f64 / requests as f64
                    }),
                    warehouse_qps: stats.loads.saturating_sub(prev.loads) as f64 / dt,
                    p50_ms: recent.p50_us as f64 / 1000.0,
                    p99_ms: recent.p99_us.max(recent_p99_us) as f64 / 1000.0,
                    stale_per_s: stats.stale_served.saturating_sub(prev.stale_served) as f64 / dt,
                    requests_per_s: requests as f64 / dt,
                }
            }
            None => Sample::default(),
        };
        self.previous = Some((now, stats.clone()));
        self.last_sample = sample;
        // On Redis the cache is the shared store: its counts, not the sum of the processes'
        // in-process tiers (which hold copies of the same entries).
        if let Some(shared) = shared {
            keys = shared;
        }
        let rows = tables
            .ids()
            .map(|t| {
                let name = tables.name(t).to_string();
                let state = if engine.is_updating(&[t]) {
                    TableState::Updating
                } else if let Some(reason) = self.partial.get(&name) {
                    TableState::Partial(reason.clone())
                } else {
                    TableState::Fresh
                };
                let k = keys.get(t.index()).copied().unwrap_or_default();
                TableRow {
                    version: versions.version(t),
                    batch: versions.table_batch(t).to_string(),
                    updated_ms: versions.table_updated_ms(t),
                    live: k.current,
                    old: k.old,
                    queries: catalog.queries_reading(t).count(),
                    state,
                    name,
                }
            })
            .collect();
        let config = instance.config();
        Snapshot {
            now_ms: engine.clock().now_ms(),
            shared_now_ms: instance.bus().clock().now_ms(),
            env: config.env,
            read_only: config.read_only,
            backend: instance.bus().describe(),
            warehouse: instance.warehouse().describe(),
            strategy: engine.strategy(),
            clock_speed: engine.clock().speed(),
            batch: versions.batch.to_string(),
            last_update_ms: versions.last_updated_ms,
            tables: rows,
            queries: catalog.queries().len(),
            query_tables: query_tables(&catalog),
            stats,
            instances: 1 + others.len(),
            bad_events,
            audit,
            degraded: engine.degraded(),
            unverified_since_ms: engine.unverified_since(),
            silent_instances: silent,
            refresh: *instance.refresh_progress().borrow(),
            warm: *instance.warm_progress().borrow(),
            sample,
            price_per_query: self.price,
            shadow: self.shadow.as_ref().map(|s| s.figures()),
            figures_as_of,
        }
    }
}

/// The tables each query of `catalog` reads, by name.
fn query_tables(catalog: &crate::model::catalog::Catalog) -> Vec<Vec<String>> {
    let tables = catalog.tables();
    catalog
        .queries()
        .iter()
        .map(|q| {
            q.tables
                .iter()
                .map(|&t| tables.name(t).to_string())
                .collect()
        })
        .collect()
}

/// A snapshot with made-up, fixed contents (tests, snapshots of the screen, the render bench).
pub fn sample_snapshot(env: Environment, read_only: bool) -> Snapshot {
    let t0: Millis = 1_795_687_230_000; // 2026-11-26T10:00:30Z
    let stats = StatsSnapshot {
        requests: 182_340,
        fresh_hits: 179_880,
        stale_served: 12,
        misses: 2_448,
        coalesced: 2_301,
        loads: 147,
        early_refreshes: 9,
        swr_refreshes: 4,
        refresh_ahead: 88,
        stampedes_absorbed: 31,
        user_latency: LatencySummary {
            count: 182_340,
            p50_us: 1,
            p99_us: 180,
            max_us: 3_400_000,
        },
        ..StatsSnapshot::default()
    };
    Snapshot {
        now_ms: t0 + 150_000,
        shared_now_ms: t0 + 150_000,
        env,
        read_only,
        backend: "embedded (in memory)".into(),
        warehouse: "sqlite (temporary)".into(),
        strategy: Strategy::Freshcache,
        clock_speed: 60.0,
        batch: "20261126-10:00".into(),
        last_update_ms: t0,
        tables: vec![
            TableRow {
                name: "sales".into(),
                version: 12,
                batch: "20261126-10:00".into(),
                updated_ms: t0,
                live: 38,
                old: 35,
                queries: 9,
                state: TableState::Fresh,
            },
            TableRow {
                name: "inventory".into(),
                version: 11,
                batch: "20261126-09:00".into(),
                updated_ms: t0 - 3_600_000,
                live: 11,
                old: 0,
                queries: 4,
                state: TableState::Partial(
                    "update_log is at 20261126-09:00, batch 20261126-10:00 expected".into(),
                ),
            },
            TableRow {
                name: "customers".into(),
                version: 12,
                batch: "20261126-10:00".into(),
                updated_ms: t0,
                live: 9,
                old: 9,
                queries: 4,
                state: TableState::Fresh,
            },
        ],
        queries: 12,
        // The bundled catalog's, as the demo has them.
        query_tables: crate::model::catalog::Catalog::bundled()
            .map(|c| query_tables(&c))
            .unwrap_or_default(),
        stats,
        instances: 1,
        bad_events: 2,
        audit: (120, 0),
        degraded: None,
        unverified_since_ms: None,
        silent_instances: 0,
        refresh: RefreshProgress {
            total: 35,
            done: 35,
            failed: 0,
            skipped: 0,
        },
        warm: RefreshProgress {
            total: 46,
            done: 40,
            failed: 0,
            skipped: 6,
        },
        sample: Sample {
            hit_ratio: Some(0.991),
            warehouse_qps: 0.8,
            p50_ms: 0.001,
            p99_ms: 0.21,
            stale_per_s: 0.0,
            requests_per_s: 2400.0,
        },
        price_per_query: 0.05,
        shadow: Some(ShadowFigures {
            questions: 182_340,
            baseline_queries: 5_213,
            baseline_old_as_fresh: 1_877,
            baseline_stampede_queries: 412,
            freshcache_old_as_fresh: 0,
            freshcache_joined_a_load: 2_301,
            freshcache_stampede_queries: 0,
        }),
        figures_as_of: None,
    }
}
