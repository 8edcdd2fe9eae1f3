//! `bench redis-invalidation`: with N entries cached, how long a bump takes and the worst GET
//! latency another client sees during the bump and the purge, beside the baseline's `KEYS` + `DEL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{open, redis_url};
use crate::bus::{BumpMode, Bus};
use crate::cli::stampede::{bench_catalog, percentile};
use crate::exit::CliError;
use crate::model::clock::{SystemClock, system_now_ms};
use crate::model::entry::{Entry, EntryKey, Stamp};
use crate::model::policy::Policy;
use crate::redis::Redis;
use crate::redis::RedisStore;
use crate::settings::Settings;

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
    /// The baseline's `KEYS fc:*`, ms.
    pub baseline_keys_ms: f64,
    /// The baseline's `DEL` of what KEYS returned, in batches of 1000, seconds.
    pub baseline_del_s: f64,
    /// GET latency another client saw during the baseline's KEYS + DEL.
    pub during_baseline: Probe,
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
        // Fails only for a zero duration, which this is not.
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

/// The invalidation bench fills its Redis and runs the baseline's `KEYS` there: it refuses a Redis
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

/// Bump and purge with `keys` entries cached, beside the baseline's KEYS + DEL.
pub async fn invalidation(settings: &Settings, keys: u64) -> Result<(), CliError> {
    let url = redis_url(settings)?;
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
        let baseline_keys_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        for chunk in found.chunks(1000) {
            let chunk = chunk.to_vec();
            link.call_within(Duration::from_secs(60), |mut c| async move {
                redis::cmd("DEL").arg(chunk).exec_async(&mut c).await
            })
            .await?;
        }
        let baseline_del_s = t.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during_baseline = p.await.unwrap_or_default();
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
            baseline_keys_ms: r3(baseline_keys_ms),
            baseline_del_s: r3(baseline_del_s),
            during_baseline,
        })
    };
    let r = run.await?;
    if settings.json {
        return crate::cli::output::print_json(&r);
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
        "baseline KEYS + DEL: KEYS {:.1} ms + DEL {:.1} s; {}",
        r.baseline_keys_ms,
        r.baseline_del_s,
        seen(&r.during_baseline)
    );
    Ok(())
}
