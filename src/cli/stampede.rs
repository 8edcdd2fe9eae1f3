//! What the stampede benchmarks share, in-process (`bench stampede`) and across processes on
//! Redis (`bench stampede --redis`, its workers): the one-query catalog they load, the report rows,
//! and nearest-rank percentiles.

use serde::Serialize;

use crate::model::catalog::{Catalog, ParamSpec};
use crate::model::policy::{Policy, Strategy};
use crate::model::versions::Tables;

/// One phase of one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// The strategy.
    pub strategy: Strategy,
    /// `cold` or `after_bump`.
    pub phase: &'static str,
    /// Warehouse queries the phase caused (background refreshes included).
    pub warehouse_queries: u64,
    /// Median latency a requester saw.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Worst latency.
    pub max_ms: f64,
    /// Answers presented as fresh although computed before the update.
    pub old_data_served: u64,
    /// Answers presented as stale (with their age).
    pub stale_answers: u64,
    /// Requests that got an error.
    pub errors: u64,
}

/// The whole `bench stampede` report.
#[derive(Debug, Clone, Serialize)]
pub struct StampedeReport {
    /// Concurrent requesters per phase.
    pub requesters: u32,
    /// Warehouse latency per query.
    pub load_ms: u64,
    /// One row per strategy and phase.
    pub results: Vec<PhaseResult>,
}

/// A one-query catalog over the baseline's three tables, for scenarios.
pub fn bench_catalog(policy: Policy) -> anyhow::Result<Catalog> {
    let tables = Tables::new(["sales", "inventory", "customers"]).map_err(anyhow::Error::msg)?;
    let mut c = Catalog::new(tables);
    c.add(
        "sales_by_region",
        "Sales by region for a quarter",
        "SELECT region, sum(amount) FROM sales WHERE quarter = :quarter GROUP BY region",
        &["sales"],
        vec![ParamSpec::text("quarter", Some("Q1"))],
        policy,
    )?;
    Ok(c)
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = crate::model::num::to_usize(crate::model::num::f64_to_u64(
        (q * sorted.len() as f64).ceil(),
    ))
    .clamp(1, sorted.len());
    (sorted[rank - 1] * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }
}
