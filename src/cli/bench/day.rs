//! `bench day`: a compressed simulated day of hourly updates (one partial) and virtual users, for
//! every strategy.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::engine::Engine;
use crate::model::catalog::Catalog;
use crate::model::policy::Strategy;

/// How `bench day` runs.
#[derive(Debug, Clone)]
pub struct DayPlan {
    /// Virtual users.
    pub users: usize,
    /// Simulated hours.
    pub hours: u32,
    /// Real time per simulated hour.
    pub hour_real: Duration,
    /// Added warehouse latency per query.
    pub warehouse_ms: u64,
    /// Mean think time (clock).
    pub think: Duration,
    /// Strategies to run.
    pub strategies: Vec<Strategy>,
    /// Print progress to stderr.
    pub progress: bool,
}

/// One strategy's simulated day.
#[derive(Debug, Clone, Serialize)]
pub struct DayResult {
    /// The strategy.
    pub strategy: Strategy,
    /// Warehouse queries over the day (background refreshes included).
    pub warehouse_queries: u64,
    /// Warehouse queries before the first update, then in each hour after an update.
    pub queries_per_hour: Vec<u64>,
    /// Answers given as fresh although computed before the latest completed update of a table
    /// they read (as of when the question was asked).
    pub stale_after_update: u64,
    /// Fresh answers from the cache over questions asked.
    pub hit_ratio: f64,
    /// Median user latency.
    pub user_p50_ms: f64,
    /// 99th percentile user latency.
    pub user_p99_ms: f64,
    /// Questions asked.
    pub requests: u64,
    /// Distinct questions asked.
    pub distinct_questions: usize,
    /// Answers labelled stale.
    pub stale: u64,
    /// Errors.
    pub errors: u64,
    /// Where the warehouse queries came from: user misses, refresh-ahead and preloads, XFetch
    /// early refreshes, stale-while-revalidate refreshes (the engine's counters, warm-up included).
    pub loads_by_cause: LoadCauses,
}

/// Warehouse queries by what started them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadCauses {
    /// Requests that missed and waited.
    pub misses: u64,
    /// Refresh-ahead, preloads and warm.
    pub refresh_ahead: u64,
    /// XFetch.
    pub early: u64,
    /// Stale-while-revalidate.
    pub swr: u64,
}

/// The `bench day` report.
#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    /// Added warehouse latency per query.
    pub warehouse_ms: u64,
    /// Virtual users.
    pub users: usize,
    /// Simulated hours.
    pub hours: u32,
    /// Real seconds per simulated hour.
    pub hour_real_s: f64,
    /// Hours whose update was partial (`inventory` failed).
    pub partial_hours: Vec<u32>,
    /// One row per strategy.
    pub results: Vec<DayResult>,
}

/// 2026-11-26T09:30:00Z: half an hour before the first update.
const DAY_START_MS: u64 = 1_795_681_800_000;

/// Runs the compressed day for each strategy: a fresh embedded SQLite warehouse with the demo
/// data, every question asked once before the day starts (not counted), an ETL batch at every
/// clock hour (the second one fails `inventory`), and virtual users.
pub async fn day(plan: &DayPlan) -> anyhow::Result<DayReport> {
    use crate::bus::LocalBus;
    use crate::instance::{Instance, InstanceConfig};
    use crate::model::clock::{Clock, ScaledClock};
    use crate::traffic::{self, TrafficConfig};
    use crate::warehouse::etl::EtlPlan;
    use crate::warehouse::{Latency, SqliteWarehouse};

    let speed = 3600.0 / plan.hour_real.as_secs_f64().max(0.001);
    let partial_run = 1u64; // the second update
    let mut results = Vec::new();
    for &strategy in &plan.strategies {
        if plan.progress {
            eprintln!("bench day: {strategy} …");
        }
        let catalog = Arc::new(Catalog::bundled()?);
        let sqlite =
            SqliteWarehouse::temporary(Latency::fixed(Duration::from_millis(plan.warehouse_ms)))?;
        sqlite
            .init_demo(
                Default::default(),
                "20261126-09:00",
                DAY_START_MS - 1_800_000,
            )
            .await?;
        let clock = ScaledClock::new(DAY_START_MS, speed);
        let bus = Arc::new(LocalBus::in_memory(
            catalog.tables().clone(),
            clock.clone(),
        )?);
        let engine = Engine::builder(catalog, Arc::new(sqlite.clone()))
            .clock(clock.clone())
            .strategy(strategy)
            .build()?;
        let instance = Instance::new(
            engine.clone(),
            bus,
            Arc::new(sqlite.clone()),
            Some(Arc::new(sqlite.clone())),
            InstanceConfig::default(),
        );
        instance.start().await?;
        // The day starts in the middle of operation: every question has been asked before.
        let warm: Vec<_> = traffic::questions(engine.catalog(), TrafficConfig::default().seed)
            .into_iter()
            .map(|q| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    // Warming: an error is counted by the engine's statistics like any other.
                    let _ = engine.get(&q).await;
                })
            })
            .collect();
        for w in warm {
            // A warm task cannot panic short of a bug, which the counts would show.
            let _ = w.await;
        }
        let warm_loads = engine.stats().loads;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let loads_at_updates = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let etl = {
            let marks = loads_at_updates.clone();
            let engine = engine.clone();
            crate::instance::schedule::spawn_etl(
                instance.clone(),
                Duration::from_secs(3600),
                Box::new(move |run| {
                    marks.lock().push(engine.stats().loads);
                    if run == partial_run {
                        EtlPlan::failing(["inventory"])
                    } else {
                        EtlPlan::default()
                    }
                }),
                stop_rx.clone(),
            )
        };
        // From now (09:3x) to the end of the last hour.
        let now = clock.now_ms();
        // The day ends a minute before the next update would land.
        let end_ms = DAY_START_MS + 1_800_000 + plan.hours as u64 * 3_600_000 - 60_000;
        let total = Duration::from_millis(end_ms.saturating_sub(now)).div_f64(speed);
        let report = traffic::run(
            engine.clone(),
            TrafficConfig {
                users: plan.users,
                think: plan.think,
                ..TrafficConfig::default()
            },
            Some(total),
            stop_rx,
        )
        .await;
        stop.send_replace(true);
        // The ETL stops at the signal; a batch still running past 35 s is dropped with the run.
        let _ = tokio::time::timeout(Duration::from_secs(35), etl).await;
        instance.shutdown();
        // Let the background refreshes started near the end land before counting.
        for _ in 0..200 {
            if engine.loads_in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let end = engine.stats().loads;
        let marks = loads_at_updates.lock().clone();
        let mut per_hour = Vec::new();
        let mut prev = warm_loads;
        for m in marks.iter().chain(std::iter::once(&end)) {
            per_hour.push(m - prev);
            prev = *m;
        }
        // The baseline recipes can leave thousands of refreshes queued: drop them, not wait.
        sqlite.close();
        results.push(DayResult {
            strategy,
            warehouse_queries: end - warm_loads,
            queries_per_hour: per_hour,
            stale_after_update: report.stale_after_update,
            hit_ratio: report.hit_ratio,
            user_p50_ms: report.user_p50_ms,
            user_p99_ms: report.user_p99_ms,
            requests: report.requests,
            distinct_questions: report.distinct_questions,
            stale: report.stale,
            errors: report.errors,
            loads_by_cause: {
                let st = engine.stats();
                LoadCauses {
                    misses: st.misses,
                    refresh_ahead: st.refresh_ahead,
                    early: st.early_refreshes,
                    swr: st.swr_refreshes,
                }
            },
        });
    }
    Ok(DayReport {
        warehouse_ms: plan.warehouse_ms,
        users: plan.users,
        hours: plan.hours,
        hour_real_s: plan.hour_real.as_secs_f64(),
        partial_hours: vec![
            u32::try_from(partial_run)
                .unwrap_or(u32::MAX)
                .saturating_add(1),
        ],
        results,
    })
}

pub(super) fn print_day(r: &DayReport) {
    println!(
        "{} users, {} simulated hours ({:.0} s each), warehouse {} ms per query; update {} partial (inventory failed)\n",
        r.users,
        r.hours,
        r.hour_real_s,
        r.warehouse_ms,
        r.partial_hours
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "{:<11} {:>9} {:>18} {:>10} {:>8} {:>9} {:>9} {:>8} {:>6}",
        "strategy",
        "wh queries",
        "per hour",
        "stale aft",
        "hit %",
        "p50 ms",
        "p99 ms",
        "asked",
        "errors"
    );
    for x in &r.results {
        println!(
            "{:<11} {:>9} {:>18} {:>10} {:>7.1}% {:>9.1} {:>9.1} {:>8} {:>6}",
            x.strategy.name(),
            x.warehouse_queries,
            x.queries_per_hour
                .iter()
                .map(|q| q.to_string())
                .collect::<Vec<_>>()
                .join("/"),
            x.stale_after_update,
            x.hit_ratio * 100.0,
            x.user_p50_ms,
            x.user_p99_ms,
            x.distinct_questions,
            x.errors
        );
    }
}
