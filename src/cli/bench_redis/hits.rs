//! `bench redis-hits`: engine hits through Redis, in-process tier off and on, beside
//! `redis-benchmark -t get -c 50` against the same server in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::{open, redis_url};
use crate::cli::stampede::bench_catalog;
use crate::engine::{Engine, Source};
use crate::exit::CliError;
use crate::model::policy::Policy;
use crate::redis::RedisStore;
use crate::settings::Settings;
use crate::store::Store;
use crate::warehouse::MemoryWarehouse;

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
pub async fn hits(settings: &Settings, keys: u32, seconds: u64) -> Result<(), CliError> {
    let url = redis_url(settings)?;
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
    if settings.json {
        return crate::cli::output::print_json(&report);
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
