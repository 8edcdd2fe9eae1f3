//! `bench stampede` in one process: N users ask the same question at the same instant, twice per
//! strategy — on a cold key at 09:05, and right after the 10:00 update (the ETL lands at 10:00:30,
//! when the baseline's TTL-to-the-hour entries have also just expired). It counts warehouse queries,
//! the latency every user saw, and how many answers were old data presented as fresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::Engine;
use crate::model::catalog::Request;
use crate::model::clock::ManualClock;
use crate::model::policy::{Policy, Strategy};
use crate::warehouse::MemoryWarehouse;

use super::{T_0905_MS, T_1000_MS};
use crate::cli::stampede::{PhaseResult, StampedeReport, bench_catalog, percentile};

pub(super) fn print_stampede(r: &StampedeReport) {
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
            // An error means the starter is gone: ask at once.
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
    // Set once, here: nothing else sets it.
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
    // Background refreshes (the baseline's threads, our early refreshes) count too: let them land.
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
