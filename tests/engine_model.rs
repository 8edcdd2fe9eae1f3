//! Property tests of the engine's promises against a simple model.
//!
//! * `sequential_gets_match_the_model`: random sequences of gets, bumps, clock moves, warehouse
//!   failures and purges, each get checked against a model that predicts exactly what the engine
//!   must answer — fresh or stale (with which reason and age), from where, or an error — and how many
//!   warehouse queries it may cost.
//! * `concurrent_gets_load_once_per_key_and_version`: up to 1000 concurrent gets over a few keys,
//!   with bumps landing in the middle; exactly one load per (request, versions), and no fresh answer
//!   older than the versions current when its request began.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use freshcache::engine::{Engine, Freshness, GetError, Source, StaleReason};
use freshcache::model::catalog::{Catalog, ParamSpec, Request};
use freshcache::model::clock::{Clock, ManualClock};
use freshcache::model::policy::{Policy, Strategy as CacheStrategy};
use freshcache::model::versions::{TableId, Tables};
use freshcache::warehouse::MemoryWarehouse;
use proptest::prelude::*;

const T0: u64 = 1_730_538_300_000; // 2024-11-02T09:05:00Z
const QUERIES: [&str; 3] = ["sales", "stock", "top_customers"];

fn policy() -> Policy {
    Policy::builder()
        .beta(0.0)
        .jitter(Duration::ZERO)
        .max_wait(Duration::from_secs(30))
        .build()
        .expect("valid policy")
}

fn catalog() -> Catalog {
    let mut c = Catalog::new(Tables::new(["sales", "inventory", "customers"]).expect("tables"));
    let region = || ParamSpec::text("region", None);
    c.add("sales", "", "", &["sales"], vec![region()], policy())
        .expect("sales");
    c.add("stock", "", "", &["inventory"], vec![region()], policy())
        .expect("stock");
    c.add(
        "top_customers",
        "",
        "",
        &["sales", "customers"],
        vec![region()],
        policy(),
    )
    .expect("top_customers");
    c
}

#[derive(Debug, Clone)]
enum Op {
    Get { query: usize, region: u8 },
    Bump { tables: Vec<u16> },
    Advance { secs: u32 },
    Failing(bool),
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..3u8).prop_map(|(query, region)| Op::Get { query, region }),
        2 => proptest::collection::vec(0..3u16, 1..3).prop_map(|tables| Op::Bump { tables }),
        3 => prop_oneof![1..120u32, 120..4000u32, 4000..9000u32].prop_map(|secs| Op::Advance { secs }),
        1 => any::<bool>().prop_map(Op::Failing),
        1 => Just(Op::Purge),
    ]
}

/// What the model remembers of one stored entry.
#[derive(Debug, Clone, Copy)]
struct Held {
    versions: [u64; 4],
    created: u64,
    fresh_until: u64,
    keep_until: u64,
}

#[derive(Default)]
struct Model {
    /// Per request fingerprint, the versions held (at most three, like the store).
    held: HashMap<u128, Vec<Held>>,
    queries: u64,
}

impl Model {
    fn store(&mut self, fp: u128, h: Held) {
        let list = self.held.entry(fp).or_default();
        list.retain(|x| x.versions != h.versions);
        if list.len() >= 3 {
            let oldest = (0..list.len())
                .min_by_key(|&i| list[i].created)
                .expect("non-empty");
            list.remove(oldest);
        }
        list.push(h);
    }
}

fn key_versions(request: &Request, engine: &Engine) -> [u64; 4] {
    let v = engine.versions();
    let mut out = [0; 4];
    for (i, t) in request.query().tables.iter().enumerate() {
        out[i] = v.version(*t);
    }
    out
}

async fn settle(engine: &Engine, warehouse: &MemoryWarehouse) {
    for _ in 0..10_000 {
        if engine.loads_in_flight() == 0 && warehouse.running() == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("background loads did not settle");
}

async fn run_sequence(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let warehouse = Arc::new(MemoryWarehouse::new(3, Duration::ZERO));
    let clock = ManualClock::new(T0);
    let engine = Engine::builder(Arc::new(catalog()), warehouse.clone())
        .clock(clock.clone())
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let p = policy();
    let (swr, max_stale) = (
        p.swr_window().as_millis() as u64,
        p.max_stale().as_millis() as u64,
    );
    let mut model = Model::default();
    let mut failing = false;

    for op in ops {
        match op {
            Op::Advance { secs } => clock.advance(Duration::from_secs(secs as u64)),
            Op::Failing(f) => {
                failing = f;
                warehouse.set_failing(f);
            }
            Op::Purge => {
                engine.purge_expired(usize::MAX);
                let now = clock.now_ms();
                for list in model.held.values_mut() {
                    list.retain(|h| h.keep_until > now);
                }
            }
            Op::Bump { tables } => {
                let ids: Vec<TableId> = tables.into_iter().map(TableId).collect();
                engine.bump_ids(&ids, "batch");
            }
            Op::Get { query, region } => {
                // Every get happens at a distinct millisecond, so entries never tie on creation.
                clock.advance(Duration::from_millis(1));
                let now = clock.now_ms();
                let request = engine
                    .request(QUERIES[query], &[("region", format!("r{region}"))])
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let fp = request.fingerprint();
                let kv = key_versions(&request, &engine);
                let before = warehouse.queries();
                let answer = engine.get(&request).await;
                settle(&engine, &warehouse).await;

                let held = model.held.get(&fp).cloned().unwrap_or_default();
                let current = held.iter().copied().find(|h| h.versions == kv);
                let loaded_now = Held {
                    versions: kv,
                    created: now,
                    fresh_until: p.fresh_until(now, 0.0),
                    keep_until: p.keep_until(now, p.fresh_until(now, 0.0)),
                };

                match current {
                    Some(h) if now < h.fresh_until => {
                        let a = answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert!(a.freshness.is_fresh());
                        prop_assert_eq!(a.source, Source::Cache);
                        prop_assert_eq!(a.computed_at_ms(), h.created);
                    }
                    Some(h) if now < h.fresh_until + swr && now - h.created <= max_stale => {
                        let a = answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(
                            a.freshness,
                            Freshness::Stale {
                                age: Duration::from_millis(now - h.created),
                                reason: StaleReason::Revalidating
                            }
                        );
                        // One background refresh, which replaces the entry if it succeeds.
                        model.queries += 1;
                        if !failing {
                            model.store(fp, loaded_now);
                        }
                    }
                    _ => {
                        // A miss: one load. On failure, the expired entry at these versions or else
                        // the newest other version, within the stale limit.
                        model.queries += 1;
                        if !failing {
                            let a = answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
                            prop_assert!(a.freshness.is_fresh());
                            prop_assert_eq!(a.source, Source::Warehouse);
                            prop_assert_eq!(
                                a.versions().versions(),
                                &kv[..a.versions().versions().len()]
                            );
                            model.store(fp, loaded_now);
                        } else {
                            let fallback = current.or_else(|| {
                                held.iter()
                                    .filter(|h| h.versions != kv)
                                    .max_by_key(|h| h.created)
                                    .copied()
                            });
                            match fallback.filter(|h| now - h.created <= max_stale) {
                                Some(h) => {
                                    let a =
                                        answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
                                    match a.freshness {
                                        Freshness::Stale {
                                            age,
                                            reason: StaleReason::WarehouseError(_),
                                        } => {
                                            prop_assert_eq!(
                                                age,
                                                Duration::from_millis(now - h.created)
                                            );
                                            prop_assert!(age.as_millis() as u64 <= max_stale);
                                        }
                                        other => {
                                            return Err(TestCaseError::fail(format!(
                                                "expected stale on error, got {other:?}"
                                            )));
                                        }
                                    }
                                    prop_assert_eq!(a.computed_at_ms(), h.created);
                                }
                                None => {
                                    let e = answer.err().ok_or_else(|| {
                                        TestCaseError::fail("expected an error, got an answer")
                                    })?;
                                    prop_assert!(
                                        matches!(e, GetError::Warehouse { .. }),
                                        "unexpected error {e}"
                                    );
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(
                    warehouse.queries(),
                    model.queries,
                    "warehouse queries (this get cost {})",
                    warehouse.queries() - before
                );
            }
        }
    }
    prop_assert_eq!(engine.strategy(), CacheStrategy::Freshcache);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sequential_gets_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run_sequence(ops))?;
    }
}

async fn concurrent_round(
    keys: usize,
    requesters: usize,
    bumps: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let warehouse = Arc::new(MemoryWarehouse::new(3, Duration::from_millis(3)));
    let engine = Engine::builder(Arc::new(catalog()), warehouse.clone())
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let requests: Vec<Request> = (0..keys)
        .map(|i| {
            engine
                .request(QUERIES[i % 3], &[("region", format!("r{}", i / 3))])
                .expect("request")
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tasks = Vec::with_capacity(requesters);
    for _ in 0..requesters {
        let request = requests[rng.usize(..keys)].clone();
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let before = engine.versions();
            let answer = engine.get(&request).await;
            (request, before, answer)
        }));
    }
    let bumper = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for i in 0..bumps {
                tokio::time::sleep(Duration::from_millis(2)).await;
                engine.bump_ids(&[TableId((i % 3) as u16)], "b");
            }
        })
    };
    let mut leaders: HashMap<(u128, Vec<u64>), u32> = HashMap::new();
    for t in tasks {
        let (request, before, answer) = t.await.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let answer = answer.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            answer.freshness.is_fresh(),
            "no failure, so no stale answer"
        );
        for (t, v) in answer.versions().iter() {
            prop_assert!(
                v >= before.version(t),
                "fresh answer at {v} older than the version {} current when it began",
                before.version(t)
            );
        }
        if answer.source == Source::Warehouse {
            *leaders
                .entry((request.fingerprint(), answer.versions().versions().to_vec()))
                .or_default() += 1;
        }
    }
    bumper
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    settle(&engine, &warehouse).await;
    for (key, n) in &leaders {
        prop_assert_eq!(*n, 1, "{:?} was loaded by {} leaders", key, n);
    }
    prop_assert_eq!(warehouse.queries(), leaders.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn concurrent_gets_load_once_per_key_and_version(
        keys in 1..12usize,
        requesters in 50..1000usize,
        bumps in 0..4usize,
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(concurrent_round(keys, requesters, bumps, seed))?;
    }
}
