//! The instances, one by one: what each process sharing the bus does, whether it serves at the
//! versions the fleet has reached, and how it is doing. Built by the collector from the
//! instances' reports; instances that stop reporting stay listed as lost for a minute.

use std::collections::HashMap;

use serde::Serialize;

use crate::bus::InstanceReport;
use crate::model::clock::Millis;

/// How an instance is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// It stopped reporting (crashed, partitioned, or shut down).
    Lost,
    /// Its cache store is unreachable: it answers from the warehouse or serves stale.
    Degraded,
    /// It could not confirm the version truth within its bound: it serves its tier as stale.
    Unverified,
    /// Some table is at an older version than the newest any instance serves at.
    Behind,
    /// Reporting, verified, at the newest versions.
    Ok,
}

impl InstanceState {
    /// Its word on screen.
    pub fn label(self) -> &'static str {
        match self {
            InstanceState::Lost => "LOST",
            InstanceState::Degraded => "DEGRADED",
            InstanceState::Unverified => "UNVERIFIED",
            InstanceState::Behind => "BEHIND",
            InstanceState::Ok => "ok",
        }
    }
}

/// One instance, as the console's instances view and `stats --json` list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRow {
    /// `host:pid#n`.
    pub id: String,
    /// `traffic`, `console`, `serve`, `cli` (empty from older versions).
    pub role: String,
    /// How it is doing.
    pub state: InstanceState,
    /// Versions it is behind the newest any instance serves at, summed over tables.
    pub behind: u64,
    /// Since when (bus clock, ms) it has been behind, when it is.
    pub behind_since_ms: Option<Millis>,
    /// Requests per second over its last two reports.
    pub requests_per_s: f64,
    /// Fresh hits over requests over its last two reports; `None` without requests.
    pub hit_ratio: Option<f64>,
    /// Warehouse loads in flight.
    pub loads_in_flight: u64,
    /// Its last report (bus clock, ms).
    pub last_seen_ms: Millis,
}

/// Rates need two reports of the same instance: what the last one said.
#[derive(Debug, Default)]
pub struct FleetTracker {
    last: HashMap<String, (Millis, u64, u64)>,
    rates: HashMap<String, (f64, Option<f64>)>,
    behind_since: HashMap<String, Millis>,
}

impl FleetTracker {
    /// The rows for `reports` (every instance heard from lately, this one included), at `now`
    /// on the bus clock; an instance silent for longer than `live_ms` is lost.
    pub fn rows(
        &mut self,
        reports: &[InstanceReport],
        now: Millis,
        live_ms: u64,
    ) -> Vec<InstanceRow> {
        let width = reports.iter().map(|r| r.versions.len()).max().unwrap_or(0);
        let newest: Vec<u64> = (0..width)
            .map(|t| {
                reports
                    .iter()
                    .filter_map(|r| r.versions.get(t))
                    .max()
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let mut rows: Vec<InstanceRow> = reports
            .iter()
            .map(|r| {
                let rates = self.rates_of(r);
                let behind: u64 = if r.versions.is_empty() {
                    0
                } else {
                    newest
                        .iter()
                        .zip(r.versions.iter().chain(std::iter::repeat(&0)))
                        .map(|(n, v)| n.saturating_sub(*v))
                        .sum()
                };
                let behind_since_ms = if behind > 0 {
                    Some(*self.behind_since.entry(r.id.clone()).or_insert(r.at_ms))
                } else {
                    self.behind_since.remove(&r.id);
                    None
                };
                let state = if r.at_ms + live_ms < now {
                    InstanceState::Lost
                } else if r.degraded {
                    InstanceState::Degraded
                } else if r.unverified {
                    InstanceState::Unverified
                } else if behind > 0 {
                    InstanceState::Behind
                } else {
                    InstanceState::Ok
                };
                InstanceRow {
                    id: r.id.clone(),
                    role: r.role.clone(),
                    state,
                    behind,
                    behind_since_ms,
                    requests_per_s: rates.0,
                    hit_ratio: rates.1,
                    loads_in_flight: r.loads_in_flight,
                    last_seen_ms: r.at_ms,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.state.cmp(&b.state).then_with(|| a.id.cmp(&b.id)));
        // Forget instances no longer listed.
        self.last
            .retain(|id, _| reports.iter().any(|r| &r.id == id));
        self.rates
            .retain(|id, _| reports.iter().any(|r| &r.id == id));
        self.behind_since
            .retain(|id, _| reports.iter().any(|r| &r.id == id));
        rows
    }

    /// Requests per second and hit ratio between this report and the previous one of the same
    /// instance (the last known rates when the report has not changed).
    fn rates_of(&mut self, r: &InstanceReport) -> (f64, Option<f64>) {
        let now = (r.at_ms, r.stats.requests, r.stats.fresh_hits);
        match self.last.insert(r.id.clone(), now) {
            Some((at, requests, hits)) if r.at_ms > at => {
                let dt = (r.at_ms - at) as f64 / 1000.0;
                let n = r.stats.requests.saturating_sub(requests);
                let h = r.stats.fresh_hits.saturating_sub(hits);
                let rates = (n as f64 / dt, (n > 0).then(|| h as f64 / n as f64));
                self.rates.insert(r.id.clone(), rates);
                rates
            }
            _ => self.rates.get(&r.id).copied().unwrap_or((0.0, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, at_ms: Millis, versions: Vec<u64>, requests: u64) -> InstanceReport {
        let stats = crate::engine::stats::StatsSnapshot {
            requests,
            fresh_hits: requests / 2,
            ..Default::default()
        };
        InstanceReport {
            id: id.into(),
            at_ms,
            strategy: "freshcache".into(),
            stats,
            recent_latency: Default::default(),
            table_keys: vec![],
            bad_events: 0,
            lagged_events: 0,
            degraded: false,
            unverified: false,
            audit_checked: 0,
            audit_violations: 0,
            role: "traffic".into(),
            versions,
            loads_in_flight: 0,
        }
    }

    #[test]
    fn an_instance_behind_lost_or_degraded_is_named_and_sorted_first() {
        let mut fleet = FleetTracker::default();
        let t = 1_000_000;
        let reports = vec![
            report("a:1#1", t, vec![3, 2], 100),
            report("b:2#1", t, vec![2, 2], 100),
            report("c:3#1", t - 10_000, vec![3, 2], 100),
        ];
        fleet.rows(&reports, t, 5_000);
        let later = vec![
            report("a:1#1", t + 1_000, vec![3, 2], 300),
            report("b:2#1", t + 1_000, vec![2, 2], 100),
            report("c:3#1", t - 10_000, vec![3, 2], 100),
        ];
        let rows = fleet.rows(&later, t + 1_000, 5_000);
        let view: Vec<_> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.state, r.behind))
            .collect();
        assert_eq!(
            view,
            vec![
                ("c:3#1", InstanceState::Lost, 0),
                ("b:2#1", InstanceState::Behind, 1),
                ("a:1#1", InstanceState::Ok, 0),
            ]
        );
        assert_eq!(
            rows[1].behind_since_ms,
            Some(t),
            "behind since its first report said so"
        );
        assert_eq!(rows[2].requests_per_s, 200.0);
        assert_eq!(rows[2].hit_ratio, Some(0.5));
    }
}
