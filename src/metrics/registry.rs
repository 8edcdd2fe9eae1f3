//! The metric list: every family this process exports and what it means ([`render`]), and how a
//! scrape gathers what the instance does not hold itself ([`Exporter`]).

use parking_lot::Mutex;
use std::time::Duration;

use super::exposition::{Buckets, Exposition, Kind, Value};
use crate::engine::stats::RequestOutcomes;
use crate::instance::Instance;
use crate::model::entry::TableKeys;

/// How long a scrape waits for the shared store's key counts before leaving them out.
const SHARED_KEYS_TIMEOUT: Duration = Duration::from_secs(2);

/// Bucket bounds of the request and load durations, in µs: 0.1 ms … 10 s.
pub(super) const DURATION_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Bucket bounds of the invalidation lag, in µs: 1 ms … 5 min (a lost message waits for the
/// next re-read of the truth, a poll interval; a partitioned instance longer).
pub(super) const LAG_BOUNDS_US: &[u64] = &[
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// What a scrape reads besides the instance's own synchronous state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsExtra {
    /// Requests by outcome, never lower than at the previous scrape (see [`Exporter`]).
    pub requests: RequestOutcomes,
    /// Live keys per table (in table order) in the shared store, when there is one and it
    /// answered in time.
    pub shared_keys: Option<Vec<TableKeys>>,
}

/// Scrapes one instance: gathers what [`render`] needs and keeps the derived request counters
/// monotonic from one scrape to the next.
#[derive(Debug)]
pub struct Exporter {
    instance: Instance,
    floor: Mutex<RequestOutcomes>,
}

impl Exporter {
    /// An exporter of `instance`.
    pub fn new(instance: Instance) -> Self {
        Self {
            instance,
            floor: Mutex::new(RequestOutcomes::default()),
        }
    }

    /// Reads the request outcomes and, with a shared store, its key counts (bounded by a
    /// timeout: a slow store leaves them out rather than stalling the scrape).
    pub async fn gather(&self) -> MetricsExtra {
        let engine = self.instance.engine();
        let now = RequestOutcomes::of(&engine.stats());
        let requests = {
            let mut floor = self.floor.lock();
            *floor = now.at_least(*floor);
            *floor
        };
        let shared_keys = match engine.shared_store() {
            Some(store) => {
                let versions = engine.versions();
                match tokio::time::timeout(SHARED_KEYS_TIMEOUT, store.table_keys(&versions)).await {
                    Ok(Ok(keys)) => Some(keys),
                    _ => None,
                }
            }
            None => None,
        };
        MetricsExtra {
            requests,
            shared_keys,
        }
    }

    /// One scrape: the exposition text.
    pub async fn scrape(&self) -> String {
        let extra = self.gather().await;
        render(&self.instance, &extra)
    }
}

/// The metrics of `instance` in the Prometheus text exposition format 0.0.4:
///
/// * counters: `freshcache_requests_total{outcome}`, `freshcache_stale_answers_total`,
///   `freshcache_request_errors_total`, `freshcache_warehouse_queries_total`,
///   `freshcache_warehouse_errors_total`, `freshcache_refreshes_total{reason}`,
///   `freshcache_stampedes_absorbed_total`, `freshcache_evictions_total`,
///   `freshcache_bad_events_total`, `freshcache_lagged_events_total`, `freshcache_resyncs_total`,
///   `freshcache_sync_errors_total`, `freshcache_failed_bumps_total`,
///   `freshcache_task_restarts_total`, `freshcache_audit_checked_total`,
///   `freshcache_audit_violations_total`, `freshcache_corrupt_entries_total`,
///   `freshcache_lease_lost_total`;
/// * histograms (seconds): `freshcache_request_duration_seconds`,
///   `freshcache_load_duration_seconds`, `freshcache_invalidation_lag_seconds`;
/// * gauges: `freshcache_table_version{table}`, `freshcache_keys{table,generation,tier}`,
///   `freshcache_breaker_open`, `freshcache_degraded`, `freshcache_unverified`,
///   `freshcache_loads_in_flight`,
///   `freshcache_refresh_ahead_keys{state}`, `freshcache_info{version,backend,warehouse,strategy,env}`.
pub fn render(instance: &Instance, extra: &MetricsExtra) -> String {
    let engine = instance.engine();
    let stats = engine.stats();
    let counters = instance.counters();
    let tables = engine.catalog().tables();
    let versions = engine.versions();
    let mut x = Exposition::default();

    x.family(
        "freshcache_requests_total",
        Kind::Counter,
        "Requests by outcome; the outcomes add up to every request. fresh: answered fresh from \
         the cache; stale: answered stale, at once (stale-while-revalidate, previous version \
         during an update) or after its load failed or was too slow; miss: waited for a load it \
         led; coalesced: joined a load already in flight.",
    );
    let r = extra.requests;
    for (outcome, n) in [
        ("fresh", r.fresh),
        ("stale", r.stale),
        ("miss", r.miss),
        ("coalesced", r.coalesced),
    ] {
        x.sample(
            "freshcache_requests_total",
            &[("outcome", outcome)],
            Value::Int(n),
        );
    }
    x.counter(
        "freshcache_stale_answers_total",
        "Answers served stale, including those given after a failed or slow load.",
        stats.stale_served,
    );
    x.counter(
        "freshcache_lease_lost_total",
        "Loads whose answer was not written to the shared store because another process had \
         taken their lease over (its answer wins).",
        stats.lease_lost,
    );
    x.counter(
        "freshcache_corrupt_entries_total",
        "Entries read from the shared store that failed validation (unreadable, a stamp that \
         does not match their key, a value that is not JSON); each was treated as a miss.",
        engine.shared_store().map_or(0, |s| s.corrupt_entries()),
    );
    x.counter(
        "freshcache_request_errors_total",
        "Requests answered with an error (warehouse failed or too slow, nothing servable).",
        stats.errors,
    );
    x.counter(
        "freshcache_warehouse_queries_total",
        "Warehouse queries started, for users and in the background.",
        stats.loads,
    );
    x.counter(
        "freshcache_warehouse_errors_total",
        "Warehouse queries that failed (errors, panics, aborts).",
        stats.load_errors,
    );
    x.family(
        "freshcache_refreshes_total",
        Kind::Counter,
        "Background reloads started. early: XFetch early refresh; swr: \
         stale-while-revalidate; ahead: refresh-ahead after an update, warm, serve-previous.",
    );
    for (reason, n) in [
        ("early", stats.early_refreshes),
        ("swr", stats.swr_refreshes),
        ("ahead", stats.refresh_ahead),
    ] {
        x.sample(
            "freshcache_refreshes_total",
            &[("reason", reason)],
            Value::Int(n),
        );
    }
    x.counter(
        "freshcache_stampedes_absorbed_total",
        "Loads that had at least the stampede threshold of requests waiting on them.",
        stats.stampedes_absorbed,
    );
    x.counter(
        "freshcache_evictions_total",
        "Entries evicted from the in-process tier to respect its bounds.",
        stats.evictions,
    );
    x.counter(
        "freshcache_bad_events_total",
        "Malformed warehouse_updated messages received (counted, logged, ignored).",
        counters.bad_events,
    );
    x.counter(
        "freshcache_lagged_events_total",
        "Feed events this instance missed (it re-read the version truth instead).",
        counters.lagged_events,
    );
    x.counter(
        "freshcache_resyncs_total",
        "Re-reads of the version truth that raised a version (a message was lost or late).",
        counters.resyncs,
    );
    x.counter(
        "freshcache_sync_errors_total",
        "Failed attempts to reach the bus.",
        counters.sync_errors,
    );
    x.counter(
        "freshcache_audit_checked_total",
        "Fresh answers the live consistency audit checked against the truth and update_log.",
        counters.audit_checked,
    );
    x.counter(
        "freshcache_audit_violations_total",
        "Of those, answers found served as fresh behind the truth (each an incident in the feed).",
        counters.audit_violations,
    );
    x.counter(
        "freshcache_task_restarts_total",
        "Background tasks (sync, report) restarted after a panic.",
        counters.task_restarts,
    );
    x.counter(
        "freshcache_failed_bumps_total",
        "Bumps that failed (bus unreachable): each is reported; a foreign message's is retried.",
        counters.failed_bumps,
    );

    let (user, load) = engine.latency_histograms();
    x.histogram(
        "freshcache_request_duration_seconds",
        "Time to answer a request. Fresh hits are timed 1 in 16 with weight 16, so _count \
         estimates requests.",
        &Buckets::of(&user, DURATION_BOUNDS_US),
    );
    x.histogram(
        "freshcache_load_duration_seconds",
        "Time a warehouse query took.",
        &Buckets::of(&load, DURATION_BOUNDS_US),
    );
    x.histogram(
        "freshcache_invalidation_lag_seconds",
        "Time from a bump made elsewhere (its event, or the truth's update time when a re-read \
         found it) to this instance applying it.",
        &Buckets::of(&instance.invalidation_lag(), LAG_BOUNDS_US),
    );

    x.family(
        "freshcache_table_version",
        Kind::Gauge,
        "The version of each table this instance serves (only ever goes up).",
    );
    for t in tables.ids() {
        x.sample(
            "freshcache_table_version",
            &[("table", tables.name(t))],
            Value::Int(versions.version(t)),
        );
    }
    x.family(
        "freshcache_keys",
        Kind::Gauge,
        "Live cache entries per table, at its current or an old version. tier=local: this \
         process's in-memory tier; tier=shared: the shared store, the same in every process \
         (aggregate with max, not sum).",
    );
    let local = engine.table_keys();
    let tiers = [
        ("local", Some(&local)),
        ("shared", extra.shared_keys.as_ref()),
    ];
    for (tier, keys) in tiers {
        let Some(keys) = keys else { continue };
        for t in tables.ids() {
            let k = keys.get(t.index()).copied().unwrap_or_default();
            for (generation, n) in [("current", k.current), ("old", k.old)] {
                x.sample(
                    "freshcache_keys",
                    &[
                        ("table", tables.name(t)),
                        ("generation", generation),
                        ("tier", tier),
                    ],
                    Value::Int(n),
                );
            }
        }
    }
    let degraded = engine.degraded().is_some();
    x.gauge(
        "freshcache_breaker_open",
        "1 while the shared store's circuit breaker refuses calls (open or probing), else 0 (also \
         when embedded).",
        engine
            .shared_store()
            .is_some_and(|s| s.degraded().is_some()) as u64,
    );
    x.gauge(
        "freshcache_degraded",
        "1 while requests are answered without the shared store (unreachable), else 0.",
        degraded as u64,
    );
    x.gauge(
        "freshcache_unverified",
        "1 while this instance has not confirmed the version truth for longer than its \
         max-unverified bound (its cached answers are served as stale), else 0.",
        engine.unverified_since().is_some() as u64,
    );
    x.gauge(
        "freshcache_loads_in_flight",
        "Warehouse loads running now.",
        engine.loads_in_flight() as u64,
    );
    x.family(
        "freshcache_refresh_ahead_keys",
        Kind::Gauge,
        "Keys of the latest refresh-ahead or warm: total scheduled, done, failed, skipped \
         (already fresh or loading).",
    );
    let p = *instance.refresh_progress().borrow();
    for (state, n) in [
        ("total", p.total),
        ("done", p.done),
        ("failed", p.failed),
        ("skipped", p.skipped),
    ] {
        x.sample(
            "freshcache_refresh_ahead_keys",
            &[("state", state)],
            Value::Int(u64::from(n)),
        );
    }
    x.family(
        "freshcache_info",
        Kind::Gauge,
        "Always 1; labels say what this process runs (backends without secrets).",
    );
    let strategy = engine.strategy();
    let env = instance.config().env.to_string();
    let backend = instance.bus().describe();
    let warehouse = instance.warehouse().describe();
    x.sample(
        "freshcache_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("backend", &backend),
            ("warehouse", &warehouse),
            ("strategy", strategy.name()),
            ("env", &env),
        ],
        Value::Int(1),
    );
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stats::StatsSnapshot;

    #[test]
    fn request_outcomes_partition_every_request_and_never_go_down() {
        let s = StatsSnapshot {
            requests: 100,
            fresh_hits: 80,
            misses: 15,
            coalesced: 9,
            stale_served: 7, // 5 at once, 2 after a failed load (one of them coalesced)
            waited_stale: 2,
            coalesced_stale: 1,
            ..StatsSnapshot::default()
        };
        let r = RequestOutcomes::of(&s);
        assert_eq!(
            r,
            RequestOutcomes {
                fresh: 80,
                stale: 7,
                miss: 5,
                coalesced: 8
            }
        );
        assert_eq!(r.stale, s.stale_served);
        assert_eq!(r.fresh + r.stale + r.miss + r.coalesced, s.requests);
        // A snapshot caught between two counts of one request shows a stale answer that is
        // really a miss on its way: the floor keeps the next scrape from going down.
        let caught = RequestOutcomes { stale: 8, ..r };
        assert_eq!(r.at_least(caught).stale, 8);
        assert_eq!(r.at_least(caught).miss, 5);
    }
}
