//! Benchmark scenarios on Redis.
//!
//! * `bench stampede --redis URL --processes 4`: N real `freshcache` processes (API servers) sharing
//!   one Redis each release their requesters at the same instant on the same cold keys, then again
//!   right after a version bump. Every process has its own in-memory warehouse, so the sum of their
//!   queries per key is the number of warehouse queries the fleet made for it.
//! * `bench redis-hits --redis URL`: engine hits through Redis with the in-process tier off and on,
//!   beside `redis-benchmark -t get -c 50` against the same server in the same run.
//! * `bench redis-invalidation --redis URL --keys N`: with N entries cached, how long a bump takes
//!   and the worst GET latency another client sees during the bump and during the purge of the old
//!   version, next to the seed's `KEYS` + `DEL` on the same data.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::stampede::{PhaseResult, StampedeReport, bench_catalog, percentile};
use crate::bus::{BumpMode, Bus};
use crate::engine::{Engine, Source};
use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::instance::{Instance, InstanceConfig};
use crate::model::clock::{SystemClock, system_now_ms};
use crate::model::entry::{Entry, EntryKey, Stamp};
use crate::model::policy::{Policy, Strategy};
use crate::redis::Redis;
use crate::redis::RedisBus;
use crate::redis::RedisLink;
use crate::redis::RedisStore;
use crate::settings::GlobalArgs;
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

fn redis_url(g: &GlobalArgs) -> Result<String, CliError> {
    g.redis
        .clone()
        .ok_or_else(|| CliError::new(EXIT_BAD_INPUT, "this benchmark needs --redis URL"))
}

fn open(url: &str) -> anyhow::Result<Arc<RedisLink>> {
    let link = RedisLink::open(url, Duration::from_secs(1), Duration::from_secs(2))?;
    Ok(Arc::new(link))
}

/// The worker: one API server's share of the stampede.
pub async fn worker(g: &GlobalArgs, args: WorkerArgs) -> Result<(), CliError> {
    let url = redis_url(g)?;
    let lease = lease_of(g)?;
    let report = run_worker(&url, lease, &args).await?;
    super::output::print_json(&report)
}

/// `--lease`, checked: the workers load under it, as an API server started with it would.
fn lease_of(g: &GlobalArgs) -> Result<Duration, CliError> {
    crate::model::clock::parse_duration(&g.lease)
        .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--lease: {e}")))
}

/// The arguments of one `bench stampede-worker` process: the parent's Redis settings and lease,
/// then the worker's share of the stampede.
fn worker_args(
    url: &str,
    g: &GlobalArgs,
    requesters: u32,
    keys: u32,
    load_ms: u64,
    start_ms: u64,
) -> Vec<String> {
    [
        "--redis",
        url,
        "--redis-timeout",
        &g.redis_timeout,
        "--lease",
        &g.lease,
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
            *report.loads.entry(k as u32).or_default() += n;
        }
    }
    instance.shutdown();
    Ok(report)
}

async fn run_phase(
    url: &str,
    g: &GlobalArgs,
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
        cmd.args(worker_args(url, g, per, keys, load_ms, start_ms))
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
    g: &GlobalArgs,
    processes: u32,
    requesters: u32,
    keys: u32,
    load_ms: u64,
) -> Result<(), CliError> {
    let url = redis_url(g)?;
    let run = async {
        let (cold, total) = run_phase(&url, g, processes, requesters, keys, load_ms).await?;
        let catalog = bench_catalog(Policy::default())?;
        let bus = RedisBus::start(open(&url)?, catalog.tables().clone(), Arc::new(SystemClock));
        let sales = catalog.tables().id("sales")?;
        bus.bump(&[sales], "bench", BumpMode::Force, false).await?;
        let (after, _) = run_phase(&url, g, processes, requesters, keys, load_ms).await?;
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
    if g.json {
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
        return super::output::print_json(&v);
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

/// The `bench redis-hits` report.
#[derive(Debug, Clone, Serialize)]
pub struct HitsReport {
    /// Always `redis_hits`.
    pub bench: &'static str,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Engine hits per second with no in-process tier (every hit is a Redis GET).
    pub tier_off_ops_per_sec: f64,
    /// Engine hits per second with the in-process tier.
    pub tier_on_ops_per_sec: f64,
    /// `redis-benchmark -t get -c 50 -P 1` on the same server, same run.
    pub redis_benchmark_get_ops_per_sec: f64,
    /// Tier off over redis-benchmark.
    pub tier_off_ratio: f64,
    /// Tier on over redis-benchmark.
    pub tier_on_ratio: f64,
}

async fn hits_per_sec(
    engine: &Engine,
    requests: &[crate::model::catalog::Request],
    concurrency: usize,
    for_: Duration,
) -> f64 {
    let stop = Instant::now() + for_;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let engine = engine.clone();
            let requests = requests.to_vec();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = c * 7;
                while Instant::now() < stop {
                    for _ in 0..64 {
                        if let Ok(a) = engine.get(&requests[i % requests.len()]).await
                            && a.source == Source::Cache
                        {
                            n += 1;
                        }
                        i += 1;
                    }
                }
                n
            })
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Runs `redis-benchmark -t get -c 50` against the server of `url`; returns GETs per second.
async fn redis_benchmark(url: &str) -> anyhow::Result<f64> {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h", host, "-p", port, "-t", "get", "-c", "50", "-n", "300000", "-q",
        ])
        .output()
        .await
        .context("redis-benchmark is not installed (apt-get install redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "GET: 123456.78 requests per second, p50=0.191 msec"
    let line = text.lines().rev().find(|l| l.contains("GET")).unwrap_or("");
    let rate = line
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok())
        .context("unreadable redis-benchmark output")?;
    Ok(rate)
}

/// Hits through Redis, tier off and on, beside redis-benchmark.
pub async fn hits(g: &GlobalArgs, keys: u32, seconds: u64) -> Result<(), CliError> {
    let url = redis_url(g)?;
    let run = async {
        let catalog = Arc::new(bench_catalog(Policy::default())?);
        let tables = catalog.tables().clone();
        let store: Arc<dyn Store> = Arc::new(RedisStore::new(open(&url)?, tables.clone()));
        let warehouse = Arc::new(MemoryWarehouse::for_tables(&tables, Duration::ZERO));
        let build = |tier: bool| {
            Engine::builder(catalog.clone(), warehouse.clone())
                .shared(store.clone())
                .local_tier(tier)
                .build()
        };
        let off = build(false)?;
        let requests: Vec<_> = (0..keys.max(1))
            .map(|k| off.request("sales_by_region", &[("quarter", format!("h{k}"))]))
            .collect::<Result<_, _>>()?;
        for r in &requests {
            off.get(r).await?;
        }
        let on = build(true)?;
        for r in &requests {
            on.get(r).await?;
        }
        let for_ = Duration::from_secs(seconds.max(1));
        let tier_off = hits_per_sec(&off, &requests, 50, for_).await;
        let baseline = redis_benchmark(&url).await?;
        let tier_on = hits_per_sec(&on, &requests, 50, for_).await;
        anyhow::Ok(HitsReport {
            bench: "redis_hits",
            concurrency: 50,
            tier_off_ops_per_sec: tier_off.round(),
            tier_on_ops_per_sec: tier_on.round(),
            redis_benchmark_get_ops_per_sec: baseline.round(),
            tier_off_ratio: (tier_off / baseline * 100.0).round() / 100.0,
            tier_on_ratio: (tier_on / baseline * 10.0).round() / 10.0,
        })
    };
    let report = run.await?;
    if g.json {
        return super::output::print_json(&report);
    }
    println!(
        "engine hits, 50 concurrent callers: tier off {:.0}/s ({:.2}× redis-benchmark), tier on {:.0}/s ({:.1}×); redis-benchmark -t get -c 50: {:.0}/s",
        report.tier_off_ops_per_sec,
        report.tier_off_ratio,
        report.tier_on_ops_per_sec,
        report.tier_on_ratio,
        report.redis_benchmark_get_ops_per_sec
    );
    Ok(())
}

/// The `bench redis-invalidation` report.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidationReport {
    /// Always `redis_invalidation`.
    pub bench: &'static str,
    /// Entries cached.
    pub keys: u64,
    /// GET latency another client saw with nothing else running (the machine's noise floor).
    pub idle: Probe,
    /// A bump with no entry cached, ms.
    pub bump_empty_ms: f64,
    /// A bump with every entry cached, ms.
    pub bump_ms: f64,
    /// GET latency another client saw during the bump.
    pub during_bump: Probe,
    /// Purging the old version in bounded batches, seconds.
    pub purge_s: f64,
    /// GET latency another client saw during the purge.
    pub during_purge: Probe,
    /// The seed's `KEYS fc:*`, ms.
    pub seed_keys_ms: f64,
    /// The seed's `DEL` of what KEYS returned, in batches of 1000, seconds.
    pub seed_del_s: f64,
    /// GET latency another client saw during the seed's KEYS + DEL.
    pub during_seed: Probe,
}

/// Another client's view: GETs in a loop on its own connection, from its own thread (so this
/// process's async workers do not delay it), until `stop` turns true.
fn probe(url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<Probe> {
    tokio::task::spawn_blocking(move || {
        let mut seen = Probe::default();
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return seen;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
            return seen;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
        let mut all = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let _: redis::RedisResult<Option<Vec<u8>>> =
                redis::cmd("GET").arg("probe:key").query(&mut c);
            all.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_micros(200));
        }
        all.sort_by(f64::total_cmp);
        seen.gets = all.len() as u64;
        seen.p99_ms = percentile(&all, 0.99);
        seen.p999_ms = percentile(&all, 0.999);
        seen.max_ms = percentile(&all, 1.0);
        seen.over_5ms = all.iter().filter(|&&x| x > 5.0).count() as u64;
        seen
    })
}

/// Probes for `d` with nothing else running: the machine's own noise.
async fn probe_idle(url: &str, d: Duration) -> Probe {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p = probe(url.to_string(), stop.clone());
    tokio::time::sleep(d).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    p.await.unwrap_or_default()
}

/// What the probing client saw.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Probe {
    /// GETs made.
    pub gets: u64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile latency, ms.
    pub p999_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
    /// GETs slower than 5 ms.
    pub over_5ms: u64,
}

async fn fill(
    store: &RedisStore,
    catalog: &crate::model::catalog::Catalog,
    n: u64,
    version: u64,
) -> anyhow::Result<()> {
    let q = catalog.query("sales_by_region")?.clone();
    let sales = catalog.tables().id("sales")?;
    let vv = crate::model::versions::VersionVector::from_parts(
        vec![
            (version, Arc::from(""), 0),
            (0, Arc::from(""), 0),
            (0, Arc::from(""), 0),
        ],
        Arc::from(""),
        0,
        0,
    );
    let now = system_now_ms();
    let entry = Entry {
        fresh_until: now + 3_600_000,
        created_ms: now,
        load_ms: 1,
        keep_until: now + 7_200_000,
        value: Arc::from(
            "{\"columns\":[\"region\",\"revenue_cents\"],\"rows\":[[\"Europe\",123456]]}",
        ),
        versions: Stamp::of(&q.tables, &vv),
    };
    let body = serde_json::to_vec(&entry)?;
    let index = format!("fc:{{{}}}:i:{version}", catalog.tables().name(sales));
    let iv = format!("fc:{{{}}}:iv", catalog.tables().name(sales));
    let mut done = 0u64;
    while done < n {
        let batch = (n - done).min(5_000);
        let mut p = redis::pipe();
        for i in done..done + batch {
            let request = catalog.request("sales_by_region", &[("quarter", format!("f{i}"))])?;
            let mut kv = [0; 4];
            kv[0] = version;
            let key = store.entry_key(&request, &EntryKey::new(request.fingerprint(), kv));
            p.cmd("SET")
                .arg(&key)
                .arg(&body)
                .arg("PX")
                .arg(7_200_000u64)
                .ignore();
            p.cmd("ZADD")
                .arg(&index)
                .arg(entry.keep_until)
                .arg(&key)
                .ignore();
        }
        p.cmd("SADD").arg(&iv).arg(version).ignore();
        store
            .link()
            .call_within(Duration::from_secs(60), |mut c| async move {
                p.exec_async(&mut c).await
            })
            .await?;
        done += batch;
    }
    Ok(())
}

/// The invalidation bench fills its Redis and runs the seed's `KEYS` there: it refuses a Redis
/// that holds anything, which may be shared with others.
async fn require_empty(url: &str) -> Result<(), CliError> {
    let link = open(url)?;
    let held: u64 = link
        .call(|mut c| async move { redis::cmd("DBSIZE").query_async(&mut c).await })
        .await
        .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
    if held > 0 {
        return Err(CliError::new(
            crate::exit::EXIT_REFUSED,
            format!(
                "{} holds {held} keys: this bench fills the database and runs KEYS on it, so give it an empty Redis of its own",
                link.describe()
            ),
        ));
    }
    Ok(())
}

/// Bump and purge with `keys` entries cached, beside the seed's KEYS + DEL.
pub async fn invalidation(g: &GlobalArgs, keys: u64) -> Result<(), CliError> {
    let url = redis_url(g)?;
    require_empty(&url).await?;
    let run = async {
        let catalog = bench_catalog(Policy::default())?;
        let tables = catalog.tables().clone();
        let sales = tables.id("sales")?;
        let link = open(&url)?;
        let Redis { store, bus } = Redis::open(link.clone(), tables.clone(), Arc::new(SystemClock));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

        let idle = probe_idle(&url, Duration::from_secs(3)).await;
        // The first call loads the script into Redis: not part of a bump's cost.
        bus.bump(&[sales], "bench", BumpMode::Force, false).await?;
        let t = Instant::now();
        bus.bump(&[sales], "bench", BumpMode::Force, false).await?;
        let bump_empty_ms = t.elapsed().as_secs_f64() * 1000.0;

        let v = bus.versions().await?.version(sales);
        eprintln!("filling {keys} entries at sales version {v}…");
        fill(&store, &catalog, keys, v).await?;

        let p = probe(url.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        bus.bump(&[sales], "bench", BumpMode::Force, false).await?;
        let bump_ms = t.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during_bump = p.await.unwrap_or_default();

        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        let p = probe(url.clone(), stop.clone());
        let t = Instant::now();
        let mut purged = 0;
        loop {
            let n = store.purge_all_below(sales, v + 1, 20_000).await?;
            purged += n;
            if n == 0 {
                break;
            }
            // Rate limit: the purge yields between batches of work.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let purge_s = t.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during_purge = p.await.unwrap_or_default();
        eprintln!("purged {purged} entries in {purge_s:.1} s");

        fill(&store, &catalog, keys, v).await?;
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        let p = probe(url.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let found: Vec<String> = link
            .call_within(Duration::from_secs(120), |mut c| async move {
                redis::cmd("KEYS").arg("fc:*:e:*").query_async(&mut c).await
            })
            .await?;
        let seed_keys_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        for chunk in found.chunks(1000) {
            let chunk = chunk.to_vec();
            link.call_within(Duration::from_secs(60), |mut c| async move {
                redis::cmd("DEL").arg(chunk).exec_async(&mut c).await
            })
            .await?;
        }
        let seed_del_s = t.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during_seed = p.await.unwrap_or_default();
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        anyhow::Ok(InvalidationReport {
            bench: "redis_invalidation",
            keys,
            idle,
            bump_empty_ms: r3(bump_empty_ms),
            bump_ms: r3(bump_ms),
            during_bump,
            purge_s: r3(purge_s),
            during_purge,
            seed_keys_ms: r3(seed_keys_ms),
            seed_del_s: r3(seed_del_s),
            during_seed,
        })
    };
    let r = run.await?;
    if g.json {
        return super::output::print_json(&r);
    }
    println!("{} entries cached", r.keys);
    let seen = |p: &Probe| {
        format!(
            "another client's GETs: p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, {} of {} over 5 ms",
            p.p99_ms, p.p999_ms, p.max_ms, p.over_5ms, p.gets
        )
    };
    println!("nothing running: {}", seen(&r.idle));
    println!(
        "freshcache bump: {:.3} ms (empty cache: {:.3} ms); {}",
        r.bump_ms,
        r.bump_empty_ms,
        seen(&r.during_bump)
    );
    println!(
        "freshcache purge of the old version (bounded batches, off the request path): {:.1} s; {}",
        r.purge_s,
        seen(&r.during_purge)
    );
    println!(
        "seed KEYS + DEL: KEYS {:.1} ms + DEL {:.1} s; {}",
        r.seed_keys_ms,
        r.seed_del_s,
        seen(&r.during_seed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// Regression (issue 10, J): the worker processes of `bench stampede --redis` get the
    /// parent's `--lease` and load under it.
    #[test]
    fn stampede_workers_get_the_lease() {
        let g = GlobalArgs {
            lease: "750ms".into(),
            redis_timeout: "300ms".into(),
            ..GlobalArgs::default()
        };
        let args = worker_args("redis://127.0.0.1:1/0", &g, 50, 5, 100, 42);
        let at = args
            .iter()
            .position(|a| a == "--lease")
            .expect("--lease is passed");
        assert_eq!(args[at + 1], "750ms");
        // The worker parses what it is given, and takes the lease from it.
        let cli = Cli::try_parse_from(std::iter::once("freshcache".to_string()).chain(args))
            .expect("the worker's arguments parse");
        assert!(matches!(
            cli.command,
            Some(Command::Bench(
                crate::cli::bench::BenchCommand::StampedeWorker(_)
            ))
        ));
        assert_eq!(lease_of(&cli.global).ok(), Some(Duration::from_millis(750)));
        let bad = GlobalArgs {
            lease: "soon".into(),
            ..GlobalArgs::default()
        };
        assert!(lease_of(&bad).is_err());
    }
}
