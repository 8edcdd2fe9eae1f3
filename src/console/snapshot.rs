//! What the console draws: one [`Snapshot`] of the fleet at an instant (tables, counters, chart
//! sample, instances, the baseline's shadow), and a fixed sample of one for tests and benches.

use serde::Serialize;

use super::fleet::{InstanceRow, InstanceState};
use crate::engine::RefreshProgress;
use crate::engine::stats::{LatencySummary, StatsSnapshot};
use crate::model::clock::Millis;
use crate::model::environment::Environment;
use crate::model::policy::Strategy;
use crate::traffic::ShadowFigures;

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
    /// The instances one by one, worst first.
    pub fleet: Vec<InstanceRow>,
}

/// The tables each query of `catalog` reads, by name.
pub(super) fn query_tables(catalog: &crate::model::catalog::Catalog) -> Vec<Vec<String>> {
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
        // Shared times are wall-clock: at ×60, 2.5 s after the update is 2 m 30 s on the clock.
        shared_now_ms: t0 + 2_500,
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
                updated_ms: t0 - 60_000,
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
        fleet: vec![
            InstanceRow {
                id: "api-2:4187#1".into(),
                role: "traffic".into(),
                state: InstanceState::Behind,
                behind: 1,
                behind_since_ms: Some(t0 + 500),
                requests_per_s: 1_180.0,
                hit_ratio: Some(0.97),
                loads_in_flight: 2,
                last_seen_ms: t0 + 2_100,
            },
            InstanceRow {
                id: "api-1:3921#1".into(),
                role: "traffic".into(),
                state: InstanceState::Ok,
                behind: 0,
                behind_since_ms: None,
                requests_per_s: 1_220.0,
                hit_ratio: Some(0.99),
                loads_in_flight: 0,
                last_seen_ms: t0 + 2_300,
            },
            InstanceRow {
                id: "ops-1:977#1".into(),
                role: "console".into(),
                state: InstanceState::Ok,
                behind: 0,
                behind_since_ms: None,
                requests_per_s: 0.0,
                hit_ratio: None,
                loads_in_flight: 0,
                last_seen_ms: t0 + 2_500,
            },
        ],
    }
}
