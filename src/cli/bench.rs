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

use super::stampede::{PhaseResult, StampedeReport, bench_catalog, percentile};
use crate::engine::Engine;
use crate::model::catalog::{Catalog, Request};
use crate::model::clock::ManualClock;
use crate::model::policy::{Policy, Strategy};
use crate::warehouse::MemoryWarehouse;

/// 2024-11-02T09:05:00Z, the seed's "user asks at 9:05".
pub const T_0905_MS: u64 = 1_730_538_300_000;
/// 2024-11-02T10:00:00Z, the seed's hourly update.
pub const T_1000_MS: u64 = 1_730_541_600_000;

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N users ask one question at once: on a cold key, and right after a version bump.
    #[command(
        after_help = "Examples:\n  freshcache bench stampede --requesters 1000 --load-ms 200\n  freshcache bench stampede --strategies lock,freshcache\n  freshcache --redis redis://127.0.0.1:6379 --json bench stampede --processes 4 --keys 20"
    )]
    Stampede(StampedeArgs),
    /// Invalidation lag: from `etl-complete` to the first fresh answer in another task.
    #[command(after_help = "Example:\n  freshcache --json bench lag --rounds 500")]
    Lag(LagArgs),
    /// A compressed simulated day: hourly updates (one partial), virtual users, every strategy.
    #[command(
        after_help = "Examples:\n  freshcache bench day\n  freshcache --json bench day --users 1000 --hours 3 --hour-real 30s --strategies ttl,freshcache"
    )]
    Day(DayArgs),
    /// Engine hits through Redis, in-process tier off and on, beside `redis-benchmark` (needs --redis).
    #[command(
        after_help = "Example:\n  freshcache --redis redis://127.0.0.1:6391 bench redis-hits --seconds 5"
    )]
    RedisHits(RedisHitsArgs),
    /// Bump and purge with many entries cached, beside the seed's KEYS + DEL (needs --redis; use a
    /// Redis of its own: it fills it and runs KEYS there).
    #[command(
        after_help = "Example:\n  freshcache --redis redis://127.0.0.1:6391 bench redis-invalidation --keys 1000000"
    )]
    RedisInvalidation(RedisInvalidationArgs),
    /// One process of a multi-process stampede (started by `bench stampede --redis`).
    #[command(hide = true)]
    StampedeWorker(super::bench_redis::WorkerArgs),
    /// Searches for violations of the promise under faults: a private Redis, N instance
    /// processes, an ETL, and a seeded fault injector; counts stale answers marked fresh,
    /// duplicate loads, version regressions, unanswered requests and panics.
    #[command(
        after_help = "Examples:\n  freshcache bench chaos --seed 1 --duration 60\n  freshcache --json bench chaos --seed 7 --duration 120 --instances 4\n  freshcache --warehouse postgres://postgres@127.0.0.1/chaos --json bench chaos --seed 3 --duration 30"
    )]
    Chaos(crate::bench::chaos::ChaosArgs),
    /// One instance of a chaos run (started by `bench chaos`).
    #[command(hide = true)]
    ChaosWorker(crate::bench::chaos::worker::WorkerArgs),
}

/// Options of `bench redis-hits`.
#[derive(Debug, Args)]
pub struct RedisHitsArgs {
    /// Distinct cached keys the callers cycle through.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Seconds each side is measured.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Options of `bench redis-invalidation`.
#[derive(Debug, Args)]
pub struct RedisInvalidationArgs {
    /// Entries cached before the bump.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
}

/// Options of `bench lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// Updates measured.
    #[arg(long, default_value_t = 500)]
    pub rounds: usize,
}

/// Options of `bench day`.
#[derive(Debug, Args)]
pub struct DayArgs {
    /// Virtual users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Simulated hours (an update at the start of each).
    #[arg(long, default_value_t = 3)]
    pub hours: u32,
    /// Real time one simulated hour takes.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub hour_real: String,
    /// Warehouse latency per query (real time, added to the query's own time).
    #[arg(long, default_value_t = 200)]
    pub warehouse_ms: u64,
    /// Mean think time of a user between questions (clock time).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub think: String,
    /// Strategies to run (all when omitted).
    #[arg(long = "strategies", value_name = "S,S", value_delimiter = ',')]
    pub strategies: Vec<Strategy>,
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
    /// Strategies to run (all when omitted; ignored with --redis).
    #[arg(long = "strategies", value_name = "S,S", value_delimiter = ',')]
    pub strategies: Vec<Strategy>,
    /// With --redis: API-server processes sharing the Redis, requesters split among them.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub processes: u32,
    /// With --redis: distinct cold keys the requesters ask for.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub keys: u32,
}

/// Runs a benchmark command.
pub async fn run(
    g: &crate::settings::GlobalArgs,
    cmd: BenchCommand,
) -> Result<(), crate::exit::CliError> {
    match cmd {
        BenchCommand::Stampede(args) if g.redis.is_some() => {
            super::bench_redis::stampede(
                g,
                args.processes,
                args.requesters,
                args.keys,
                args.load_ms,
            )
            .await
        }
        BenchCommand::StampedeWorker(args) => super::bench_redis::worker(g, args).await,
        BenchCommand::Chaos(args) => crate::bench::chaos::run(g, args).await,
        BenchCommand::ChaosWorker(args) => Ok(crate::bench::chaos::worker::run(g, args).await?),
        BenchCommand::RedisHits(args) => super::bench_redis::hits(g, args.keys, args.seconds).await,
        BenchCommand::RedisInvalidation(args) => {
            super::bench_redis::invalidation(g, args.keys).await
        }
        BenchCommand::Stampede(args) => {
            let strategies = if args.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                args.strategies.clone()
            };
            let report = stampede(args.requesters, args.load_ms, &strategies).await?;
            if g.json {
                super::output::print_json(&report)?;
            } else {
                print_stampede(&report);
            }
            Ok(())
        }
        BenchCommand::Lag(args) => {
            let report = lag(args.rounds).await?;
            if g.json {
                super::output::print_json(&report)?;
            } else {
                println!(
                    "etl-complete to first fresh answer in another task, {} updates: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    report.rounds, report.p50_ms, report.p99_ms, report.max_ms
                );
            }
            Ok(())
        }
        BenchCommand::Day(args) => {
            let strategies = if args.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                args.strategies.clone()
            };
            let hour_real = crate::model::clock::parse_duration(&args.hour_real).map_err(|e| {
                crate::exit::CliError::new(crate::exit::EXIT_BAD_INPUT, format!("--hour-real: {e}"))
            })?;
            let think = crate::model::clock::parse_duration(&args.think).map_err(|e| {
                crate::exit::CliError::new(crate::exit::EXIT_BAD_INPUT, format!("--think: {e}"))
            })?;
            let report = day(&DayPlan {
                users: args.users,
                hours: args.hours.max(1),
                hour_real,
                warehouse_ms: args.warehouse_ms,
                think,
                strategies,
                progress: !g.json,
            })
            .await?;
            if g.json {
                super::output::print_json(&report)?;
            } else {
                print_day(&report);
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

/// The `bench lag` report.
#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// Updates measured.
    pub rounds: usize,
    /// Median lag.
    pub p50_ms: f64,
    /// 99th percentile lag.
    pub p99_ms: f64,
    /// Worst lag.
    pub max_ms: f64,
}

/// Measures, `rounds` times, the time from the start of `etl-complete` (an update of `sales` whose
/// batch is already in the warehouse) to the first fresh answer at the new version seen by a
/// reader task that asks continuously. Embedded: in-memory warehouse (no added latency), bus and
/// store; the answer needs one load.
pub async fn lag(rounds: usize) -> anyhow::Result<LagReport> {
    use std::sync::atomic::AtomicU64;

    use crate::bus::LocalBus;
    use crate::instance::{Instance, InstanceConfig};
    use crate::warehouse::EtlTarget;

    let catalog = Arc::new(Catalog::bundled()?);
    let tables = catalog.tables().clone();
    let warehouse = Arc::new(MemoryWarehouse::for_tables(&tables, Duration::ZERO));
    let clock: crate::model::clock::SharedClock = Arc::new(crate::model::clock::SystemClock);
    let bus = Arc::new(LocalBus::in_memory(tables.clone(), clock.clone())?);
    let engine = Engine::builder(catalog.clone(), warehouse.clone()).build()?;
    let instance = Instance::new(
        engine.clone(),
        bus,
        warehouse.clone(),
        Some(warehouse.clone()),
        InstanceConfig::default(),
    );
    instance.start().await?;
    let sales = tables.id("sales")?;
    let request = engine.request("sales_by_region", &[("quarter", "Q1")])?;
    engine.get(&request).await?;

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = {
        let (engine, request, target) = (engine.clone(), request.clone(), target.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(a) = engine.get(&request).await {
                    let v = a.versions().versions()[0];
                    let want = target.load(Ordering::Acquire);
                    if a.freshness.is_fresh() && v >= want {
                        target.store(u64::MAX, Ordering::Release);
                        if seen_tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut lags = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let batch = format!(
            "20261126-{:02}:{:02}:{:02}",
            10 + i / 3600,
            (i / 60) % 60,
            i % 60
        );
        warehouse.load_table("sales", &batch, 0, false).await?;
        let next = engine.versions().version(sales) + 1;
        target.store(next, Ordering::Release);
        let started = Instant::now();
        instance.etl_complete(&batch, &[sales]).await?;
        let seen = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .context("no fresh answer within 10 s")?
            .context("the reader stopped")?;
        lags.push(seen.saturating_duration_since(started).as_secs_f64() * 1000.0);
    }
    reader.abort();
    instance.shutdown();
    lags.sort_by(f64::total_cmp);
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(LagReport {
        rounds,
        p50_ms: round3(percentile_raw(&lags, 0.5)),
        p99_ms: round3(percentile_raw(&lags, 0.99)),
        max_ms: round3(percentile_raw(&lags, 1.0)),
    })
}

fn percentile_raw(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

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
                    let _ = engine.get(&q).await;
                })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }
        let warm_loads = engine.stats().loads;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let loads_at_updates = Arc::new(std::sync::Mutex::new(Vec::new()));
        let etl = {
            let marks = loads_at_updates.clone();
            let engine = engine.clone();
            crate::instance::schedule::spawn_etl(
                instance.clone(),
                Duration::from_secs(3600),
                Box::new(move |run| {
                    marks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(engine.stats().loads);
                    if run == partial_run {
                        EtlPlan {
                            fail: vec!["inventory".into()],
                            late: Vec::new(),
                        }
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
        let marks = loads_at_updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut per_hour = Vec::new();
        let mut prev = warm_loads;
        for m in marks.iter().chain(std::iter::once(&end)) {
            per_hour.push(m - prev);
            prev = *m;
        }
        // The seed's recipes can leave thousands of refreshes queued: drop them, not wait.
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
        partial_hours: vec![partial_run as u32 + 1],
        results,
    })
}

fn print_day(r: &DayReport) {
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
