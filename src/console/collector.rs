//! The collector: samples this instance and the bus four times a second into a [`Snapshot`] —
//! the fleet's counters summed, chart rates, table states from the feed, the instances one by
//! one — and keeps the last figures it read through an outage.

use std::collections::BTreeMap;
use std::sync::Arc;

use hdrhistogram::Histogram;
use tokio::sync::{broadcast, watch};

use super::fleet::FleetTracker;
use super::snapshot::{Sample, Snapshot, TableRow, TableState, query_tables};
use super::source::SAMPLE_EVERY;
use crate::bus::InstanceReport;
use crate::engine::stats::{LatencySummary, StatsSnapshot, histogram};
use crate::instance::Instance;
use crate::model::clock::Millis;
use crate::model::entry::TableKeys;
use crate::model::events::{Event, EventKind};
use crate::model::versions::VersionVector;
use crate::traffic::Shadow;

/// Instances heard from within this long are live (their figures are summed).
const LIVE_MS: u64 = 5_000;
/// Instances silent for longer, but heard from within this long, are shown as silent.
const SILENT_SHOWN_MS: u64 = 60_000;

/// Samples the instance and the bus, computes chart rates, tracks table states from events.
pub(super) struct Collector {
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
    pub(super) shadow: Option<Arc<Shadow>>,
    /// The instances one by one (rates need the previous report of each).
    fleet: FleetTracker,
    /// The tables each catalog query reads: fixed for the catalog, worked out once.
    query_tables: Vec<Vec<String>>,
    /// The other instances' reports as last read, and when (wall clock): kept through an outage
    /// so the figures do not drop to this process's own.
    last_reports: Option<(Millis, Vec<InstanceReport>)>,
}

impl Collector {
    pub(super) fn new(instance: Instance, price: f64, history: &[Event]) -> Self {
        let feed = instance.bus().subscribe();
        let query_tables = query_tables(instance.engine().catalog());
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
            fleet: FleetTracker::default(),
            query_tables,
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

    pub(super) async fn run(mut self, tx: watch::Sender<Snapshot>) {
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

    pub(super) async fn snapshot(&mut self) -> Snapshot {
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
        let fleet = {
            // This process, as its own report would say (without the per-table counts it does
            // not need here), beside every other instance heard from lately.
            let mut all = known.clone();
            all.push(InstanceReport {
                id: instance.id().to_string(),
                at_ms: now,
                strategy: engine.strategy().name().to_string(),
                stats: own.clone(),
                recent_latency: LatencySummary::default(),
                table_keys: Vec::new(),
                bad_events: 0,
                lagged_events: 0,
                degraded: engine.degraded().is_some(),
                unverified: engine.unverified_since().is_some(),
                audit_checked: 0,
                audit_violations: 0,
                role: instance.config().role.name().to_string(),
                versions: versions.versions().to_vec(),
                loads_in_flight: crate::model::num::len_u64(engine.loads_in_flight()),
            });
            self.fleet.rows(&all, seen_at.max(now), LIVE_MS)
        };
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
            query_tables: self.query_tables.clone(),
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
            fleet,
        }
    }
}
