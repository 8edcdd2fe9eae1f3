//! Benchmark scenarios run by `freshcache bench ...`.
//!
//! `stampede`: N users ask the same question at the same instant, twice per strategy — on a cold key
//! at 09:05, and right after the 10:00 update (the ETL lands at 10:00:30, when the seed's
//! TTL-to-the-hour entries have also just expired). It counts warehouse queries, the latency every
//! user saw, and how many answers were old data presented as fresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::engine::Engine;
use crate::engine::catalog::{Catalog, ParamSpec, Request};
use crate::engine::clock::ManualClock;
use crate::engine::policy::{Policy, Strategy};
use crate::engine::versions::Tables;
use crate::warehouse::MemoryWarehouse;

/// 2024-11-02T09:05:00Z, the seed's "user asks at 9:05".
pub const T_0905_MS: u64 = 1_730_538_300_000;
/// 2024-11-02T10:00:00Z, the seed's hourly update.
pub const T_1000_MS: u64 = 1_730_541_600_000;

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N users ask one question at once: on a cold key, and right after a version bump.
    Stampede(StampedeArgs),
}

/// Options of `bench stampede`.
#[derive(Debug, Args)]
pub struct StampedeArgs {
    /// Concurrent requesters per phase.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub requesters: u32,
    /// Warehouse latency of each query, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub load_ms: u64,
    /// Strategies to run (all when omitted).
    #[arg(long = "strategy", value_name = "S")]
    pub strategies: Vec<Strategy>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

/// Runs a benchmark command.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Stampede(args) => {
            let strategies = if args.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                args.strategies.clone()
            };
            let report = stampede(args.requesters, args.load_ms, &strategies).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_stampede(&report);
            }
            Ok(())
        }
    }
}

fn print_stampede(r: &StampedeReport) {
    println!(
        "{} requesters, warehouse latency {} ms per query\n",
        r.requesters, r.load_ms
    );
    println!(
        "{:<11} {:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}",
        "strategy",
        "phase",
        "wh queries",
        "p50 ms",
        "p99 ms",
        "max ms",
        "old data",
        "stale",
        "errors"
    );
    for p in &r.results {
        println!(
            "{:<11} {:<10} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>6} {:>6}",
            p.strategy.name(),
            p.phase,
            p.warehouse_queries,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.old_data_served,
            p.stale_answers,
            p.errors
        );
    }
}

/// A one-query catalog over the seed's three tables, for scenarios.
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

/// Runs the stampede scenario for each strategy.
pub async fn stampede(
    requesters: u32,
    load_ms: u64,
    strategies: &[Strategy],
) -> anyhow::Result<StampedeReport> {
    let mut results = Vec::new();
    for &strategy in strategies {
        let catalog = Arc::new(bench_catalog(
            Policy::builder()
                .max_wait(Duration::from_millis(load_ms.saturating_mul(4).max(10_000)))
                .build()?,
        )?);
        let warehouse = Arc::new(MemoryWarehouse::new(3, Duration::from_millis(load_ms)));
        let clock = ManualClock::new(T_0905_MS);
        let engine = Engine::builder(catalog, warehouse.clone())
            .clock(clock.clone())
            .strategy(strategy)
            .build()?;
        let request = engine.request("sales_by_region", &[("quarter", "Q1")])?;

        results.push(phase(&engine, &warehouse, &request, requesters, strategy, "cold").await?);

        clock.set(T_1000_MS + 30_000);
        let sales = engine.catalog().tables().id("sales")?;
        warehouse.load_batch(&[sales]);
        engine.bump_ids(&[sales], "20241102-10:00");
        results.push(
            phase(
                &engine,
                &warehouse,
                &request,
                requesters,
                strategy,
                "after_bump",
            )
            .await?,
        );
    }
    Ok(StampedeReport {
        requesters,
        load_ms,
        results,
    })
}

async fn phase(
    engine: &Engine,
    warehouse: &Arc<MemoryWarehouse>,
    request: &Request,
    requesters: u32,
    strategy: Strategy,
    name: &'static str,
) -> anyhow::Result<PhaseResult> {
    let before = warehouse.queries();
    let versions = engine.versions();
    let ready = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (go, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(requesters as usize);
    for _ in 0..requesters {
        let (engine, request, ready, start) = (
            engine.clone(),
            request.clone(),
            ready.clone(),
            start.clone(),
        );
        let mut go = go.subscribe();
        let versions = versions.clone();
        tasks.push(tokio::spawn(async move {
            ready.fetch_add(1, Ordering::SeqCst);
            let _ = go.wait_for(|g| *g).await;
            let answer = engine.get(&request).await;
            let took = start.get().map(Instant::elapsed).unwrap_or_default();
            let (old, stale) = match &answer {
                Ok(a) if a.freshness.is_fresh() => (a.versions().is_behind(&versions), false),
                Ok(_) => (false, true),
                Err(_) => (false, false),
            };
            (took, old, stale, answer.is_err())
        }));
    }
    while ready.load(Ordering::SeqCst) < requesters as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = start.set(Instant::now());
    go.send_replace(true);
    let mut latencies = Vec::with_capacity(requesters as usize);
    let (mut old, mut stale, mut errors) = (0, 0, 0);
    for t in tasks {
        let (took, o, s, e) = t.await.context("a requester task failed")?;
        latencies.push(took.as_secs_f64() * 1000.0);
        old += o as u64;
        stale += s as u64;
        errors += e as u64;
    }
    // Background refreshes (the seed's threads, our early refreshes) count too: let them land.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (warehouse.running() > 0 || engine.loads_in_flight() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(PhaseResult {
        strategy,
        phase: name,
        warehouse_queries: warehouse.queries() - before,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        old_data_served: old,
        stale_answers: stale,
        errors,
    })
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
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
