//! Hit path: `Engine::get` on a warm key against `moka::sync::Cache::get` and
//! `quick_cache::sync::Cache::get` on the same 10 000 keys, with 1 and 2 threads, in one run.
//!
//! Run with `cargo bench --bench hit_path`. Prints one JSON line per thread count:
//! `{"bench":"hit_path","threads":T,"engine_ops_per_sec":..,"moka_ops_per_sec":..,"quick_cache_ops_per_sec":..}`
//!
//! The engine's hit does more than a plain cache lookup: it reads the version vector, checks the
//! entry's freshness against the clock, considers XFetch early refresh and counts the hit. The
//! others are keyed by the same stable request fingerprints (read from the same `Request` values
//! the engine gets, so all three start from the same input) and hold `Arc<str>` values.
//! Each figure is the median of five rounds, the three caches interleaved within each round, so
//! that a noisy neighbour on this shared machine hurts all three alike.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use freshcache::engine::Engine;
use freshcache::model::catalog::{Catalog, ParamSpec, Request};
use freshcache::model::policy::Policy;
use freshcache::model::versions::Tables;
use freshcache::warehouse::MemoryWarehouse;

const KEYS: usize = 10_000;
const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_millis(400);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, requests) = runtime.block_on(warm_engine());
    let values: Vec<Arc<str>> = requests
        .iter()
        .map(|r| Arc::from(format!("value of {r}")))
        .collect();
    let moka = moka::sync::Cache::<u128, Arc<str>>::new(100_000);
    let quick = quick_cache::sync::Cache::<u128, Arc<str>>::new(100_000);
    for (r, v) in requests.iter().zip(&values) {
        moka.insert(r.fingerprint(), v.clone());
        quick.insert(r.fingerprint(), v.clone());
    }
    moka.run_pending_tasks();
    // A fixed pseudo-random visiting order, the same for every cache.
    let mut order: Vec<usize> = (0..KEYS).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    rng.shuffle(&mut order);

    // `HIT_PATH_PROFILE=1` runs only the engine, for a profiler.
    // `HIT_PATH_PROFILE=N` runs N engine hits and nothing else, for a profiler.
    if let Some(n) = std::env::var("HIT_PATH_PROFILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let start = Instant::now();
        for k in 0..n {
            let answer = poll_ready(engine.get(&requests[order[k % KEYS]])).expect("hit");
            black_box(answer.value().len());
        }
        println!(
            "engine alone: {:.0} ops/s",
            n as f64 / start.elapsed().as_secs_f64()
        );
        return;
    }
    for threads in [1usize, 2] {
        let mut engine_r = Vec::new();
        let mut moka_r = Vec::new();
        let mut quick_r = Vec::new();
        for _ in 0..ROUNDS {
            engine_r.push(measure(threads, &order, |i| {
                let answer = poll_ready(engine.get(&requests[i])).expect("hit");
                black_box(answer.value().len())
            }));
            moka_r.push(measure(threads, &order, |i| {
                let key = requests[i].fingerprint();
                black_box(moka.get(&key).map(|v| v.len()).unwrap_or(0))
            }));
            quick_r.push(measure(threads, &order, |i| {
                let key = requests[i].fingerprint();
                black_box(quick.get(&key).map(|v| v.len()).unwrap_or(0))
            }));
        }
        let stats = engine.stats();
        assert_eq!(stats.loads as usize, KEYS, "every measured get was a hit");
        println!(
            "{{\"bench\":\"hit_path\",\"threads\":{threads},\"engine_ops_per_sec\":{:.0},\"moka_ops_per_sec\":{:.0},\"quick_cache_ops_per_sec\":{:.0}}}",
            median(engine_r),
            median(moka_r),
            median(quick_r)
        );
    }
}

async fn warm_engine() -> (Engine, Vec<Request>) {
    let tables = Tables::new(["sales"]).expect("tables");
    let mut catalog = Catalog::new(tables);
    catalog
        .add(
            "sales_for_customer",
            "Sales for one customer",
            "SELECT sum(amount) FROM sales WHERE customer = :customer",
            &["sales"],
            vec![ParamSpec::text("customer", None)],
            Policy::default(),
        )
        .expect("catalog");
    let warehouse = Arc::new(MemoryWarehouse::new(1, Duration::ZERO));
    let engine = Engine::builder(Arc::new(catalog), warehouse)
        .build()
        .expect("engine");
    let requests: Vec<Request> = (0..KEYS)
        .map(|i| {
            engine
                .request("sales_for_customer", &[("customer", format!("c{i}"))])
                .expect("request")
        })
        .collect();
    for r in &requests {
        engine.get(r).await.expect("warm");
    }
    (engine, requests)
}

/// Polls a future once; a hit never waits, so anything but `Ready` is a bug in the benchmark.
/// Inlined, as an `.await` is into its caller's state machine.
#[inline(always)]
fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a warm get did not complete at once"),
    }
}

/// Operations per second with `threads` threads each walking `order` for `ROUND_TIME`.
fn measure<F>(threads: usize, order: &[usize], op: F) -> f64
where
    F: Fn(usize) -> usize + Sync,
{
    let barrier = Barrier::new(threads);
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut ops = 0u64;
                    let mut pos = t * 997;
                    while start.elapsed() < ROUND_TIME {
                        for _ in 0..1024 {
                            black_box(op(order[pos % order.len()]));
                            pos += 1;
                        }
                        ops += 1024;
                    }
                    ops as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread") as u64)
            .sum()
    });
    total as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
