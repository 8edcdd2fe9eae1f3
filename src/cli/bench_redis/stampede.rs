//! `bench stampede --redis URL --processes N`: N real `freshcache` processes sharing one Redis
//! release their requesters at once on the same cold keys, then again after a version bump.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{open, redis_url};
use crate::bus::{BumpMode, Bus};
use crate::cli::stampede::{PhaseResult, StampedeReport, bench_catalog, percentile};
use crate::engine::Engine;
use crate::exit::CliError;
use crate::instance::{Instance, InstanceConfig};
use crate::model::clock::{SystemClock, system_now_ms};
use crate::model::policy::{Policy, Strategy};
use crate::redis::Redis;
use crate::redis::RedisBus;
use crate::settings::Settings;
use crate::store::Store;
use crate::warehouse::MemoryWarehouse;

/// Options of the hidden `bench stampede-worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Requesters in this process.
    #[arg(long)]
    pub requesters: u32,
    /// Distinct keys.
    #[arg(long)]
    pub keys: u32,
    /// Warehouse latency, ms.
    #[arg(long)]
    pub load_ms: u64,
    /// Wall-clock instant (ms since the epoch) at which to release the requesters.
    #[arg(long)]
    pub start_ms: u64,
}

/// What one worker process saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Warehouse queries this process made, by key index.
    pub loads: BTreeMap<u32, u64>,
    /// Latency each requester saw, ms.
    pub latencies_ms: Vec<f64>,
    /// Requests answered with an error.
    pub errors: u64,
    /// Answers not fresh.
    pub stale: u64,
}

/// The worker: one API server's share of the stampede.
pub async fn worker(settings: &Settings, args: WorkerArgs) -> Result<(), CliError> {
    let url = redis_url(settings)?;
    let report = run_worker(&url, settings.redis.lease, &args).await?;
    crate::cli::output::print_json(&report)
}

/// The arguments of one `bench stampede-worker` process: the parent's Redis and lease (the
/// workers load under it, as an API server started with it would), then the worker's share of
/// the stampede.
fn worker_args(
    url: &str,
    settings: &Settings,
    requesters: u32,
    keys: u32,
    load_ms: u64,
    start_ms: u64,
) -> Vec<String> {
    [
        "--redis",
        url,
        "--lease",
        &format!("{}ms", settings.redis.lease.as_millis()),
        "bench",
        "stampede-worker",
        "--requesters",
        &requesters.to_string(),
        "--keys",
        &keys.to_string(),
        "--load-ms",
        &load_ms.to_string(),
        "--start-ms",
        &start_ms.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run_worker(url: &str, lease: Duration, args: &WorkerArgs) -> anyhow::Result<WorkerReport> {
    let catalog = Arc::new(bench_catalog(
        Policy::builder()
            .max_wait(Duration::from_secs(60))
            .build()?,
    )?);
    let tables = catalog.tables().clone();
    let redis = Redis::open(open(url)?, tables.clone(), Arc::new(SystemClock));
    let store: Arc<dyn Store> = Arc::new(redis.store);
    let bus = Arc::new(redis.bus);
    let warehouse = Arc::new(MemoryWarehouse::for_tables(
        &tables,
        Duration::from_millis(args.load_ms),
    ));
    let engine = Engine::builder(catalog, warehouse.clone())
        .shared(store)
        .lease(lease)
        .build()?;
    let instance = Instance::new(
        engine.clone(),
        bus,
        warehouse.clone(),
        None,
        InstanceConfig::default(),
    );
    instance.start().await?;
    let requests: Vec<_> = (0..args.keys.max(1))
        .map(|k| engine.request("sales_by_region", &[("quarter", format!("k{k}"))]))
        .collect::<Result<_, _>>()?;
    // A running API server is warm: connections open, scripts loaded, code paths paged in.
    let warm = engine.request(
        "sales_by_region",
        &[("quarter", format!("warm{}", std::process::id()))],
    )?;
    engine.get(&warm).await?;
    let wait = args.start_ms.saturating_sub(system_now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.requesters)
        .map(|i| {
            let engine = engine.clone();
            let request = requests[(i % args.keys.max(1)) as usize].clone();
            tokio::spawn(async move {
                let answer = engine.get(&request).await;
                (started.elapsed(), answer)
            })
        })
        .collect();
    let mut report = WorkerReport {
        loads: BTreeMap::new(),
        latencies_ms: Vec::with_capacity(tasks.len()),
        errors: 0,
        stale: 0,
    };
    for t in tasks {
        let (took, answer) = t.await.context("a requester failed")?;
        report.latencies_ms.push(took.as_secs_f64() * 1000.0);
        match answer {
            Ok(a) if !a.freshness.is_fresh() => report.stale += 1,
            Ok(_) => {}
            Err(_) => report.errors += 1,
        }
    }
    for ((fp, _), n) in warehouse.queries_by_request() {
        if let Some(k) = requests.iter().position(|r| r.fingerprint() == fp) {
            *report
                .loads
                .entry(crate::model::num::to_u32(k))
                .or_default() += n;
        }
    }
    instance.shutdown();
    Ok(report)
}

async fn run_phase(
    url: &str,
    settings: &Settings,
    processes: u32,
    requesters: u32,
    keys: u32,
    load_ms: u64,
) -> anyhow::Result<(Vec<WorkerReport>, u32)> {
    let exe = std::env::current_exe().context("cannot find the freshcache binary")?;
    let start_ms = system_now_ms() + 2_500;
    let per = requesters.div_ceil(processes.max(1));
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(worker_args(url, settings, per, keys, load_ms, start_ms))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        children.push(cmd.spawn().context("cannot start a worker process")?);
    }
    let mut reports = Vec::new();
    for c in children {
        let out = c.wait_with_output().await?;
        if !out.status.success() {
            bail!("a worker process failed ({})", out.status);
        }
        reports.push(serde_json::from_slice(&out.stdout).context("unreadable worker report")?);
    }
    Ok((reports, per * processes))
}

fn summarize(reports: &[WorkerReport], phase: &'static str, keys: u32) -> (PhaseResult, u64) {
    let mut lat: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut per_key: BTreeMap<u32, u64> = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.loads {
            *per_key.entry(*k).or_default() += n;
        }
    }
    let worst = (0..keys)
        .map(|k| per_key.get(&k).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    (
        PhaseResult {
            strategy: Strategy::Freshcache,
            phase,
            warehouse_queries: per_key.values().sum(),
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: percentile(&lat, 1.0),
            old_data_served: 0,
            stale_answers: reports.iter().map(|r| r.stale).sum(),
            errors: reports.iter().map(|r| r.errors).sum(),
        },
        worst,
    )
}

/// The stampede across processes: cold keys, then the same keys right after a bump.
pub async fn stampede(
    settings: &Settings,
    processes: u32,
    requesters: u32,
    keys: u32,
    load_ms: u64,
) -> Result<(), CliError> {
    let url = redis_url(settings)?;
    let run = async {
        let (cold, total) = run_phase(&url, settings, processes, requesters, keys, load_ms).await?;
        let catalog = bench_catalog(Policy::default())?;
        let bus = RedisBus::start(open(&url)?, catalog.tables().clone(), Arc::new(SystemClock));
        let sales = catalog.tables().id("sales")?;
        bus.bump(&[sales], "bench", BumpMode::Force, false).await?;
        let (after, _) = run_phase(&url, settings, processes, requesters, keys, load_ms).await?;
        let (cold, cold_worst) = summarize(&cold, "cold", keys);
        let (after, after_worst) = summarize(&after, "after_bump", keys);
        anyhow::Ok((total, cold, cold_worst, after, after_worst))
    };
    let (total, cold, cold_worst, after, after_worst) = run.await?;
    let report = StampedeReport {
        requesters: total,
        load_ms,
        results: vec![cold, after],
    };
    if settings.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| CliError::new(crate::exit::EXIT_FAILURE, e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("processes".into(), processes.into());
            o.insert("keys".into(), keys.into());
            o.insert(
                "max_queries_per_key".into(),
                cold_worst.max(after_worst).into(),
            );
        }
        return crate::cli::output::print_json(&v);
    }
    println!(
        "{processes} processes × {} requesters on {keys} keys through one Redis; warehouse {load_ms} ms",
        total / processes.max(1)
    );
    for (p, worst) in [
        (&report.results[0], cold_worst),
        (&report.results[1], after_worst),
    ] {
        println!(
            "{:<10} warehouse queries {:>4} (most for one key: {worst})   p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  errors {}",
            p.phase, p.warehouse_queries, p.p50_ms, p.p99_ms, p.max_ms, p.errors
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse};

    fn parsed(args: &[&str]) -> (Option<Command>, Settings) {
        let argv = ["freshcache", "--config", "/dev/null"].iter().chain(args);
        let (cli, settings, _) = parse(argv.copied()).expect("the arguments parse");
        (cli.command, settings)
    }

    /// Regression (issue 10, J): the worker processes of `bench stampede --redis` get the
    /// parent's `--lease` and load under it.
    #[test]
    fn stampede_workers_get_the_lease() {
        let (_, settings) = parsed(&[
            "--redis",
            "redis://127.0.0.1:1/0",
            "--lease",
            "750ms",
            "bench",
            "stampede",
        ]);
        let args = worker_args("redis://127.0.0.1:1/0", &settings, 50, 5, 100, 42);
        let at = args
            .iter()
            .position(|a| a == "--lease")
            .expect("--lease is passed");
        assert_eq!(args[at + 1], "750ms");
        // The worker parses what it is given, and takes the lease from it.
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (command, worker) = parsed(&args);
        assert!(matches!(
            command,
            Some(Command::Bench(
                crate::cli::bench::BenchCommand::StampedeWorker(_)
            ))
        ));
        assert_eq!(worker.redis.lease, Duration::from_millis(750));
    }
}
