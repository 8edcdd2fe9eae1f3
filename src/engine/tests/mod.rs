//! Engine behaviour, one promise per test, on a manual clock. The world the tests share is here;
//! the tests are grouped by subject beside it.

mod freshness;
mod loads;
mod recipes;
mod shared_tier;

use std::sync::Arc;
use std::time::Duration;

use super::get::xfetch_out_of_reach;
use super::*;
use crate::model::catalog::ParamSpec;
use crate::model::clock::{Clock, ManualClock};
use crate::warehouse::MemoryWarehouse;

// 2024-11-02T09:05:00Z
const T0905: u64 = 1_730_538_300_000;
const MIN: u64 = 60_000;

struct World {
    engine: Engine,
    warehouse: Arc<MemoryWarehouse>,
    clock: Arc<ManualClock>,
}

fn world_with(policy: Policy, latency_ms: u64, strategy: Strategy) -> World {
    let tables = crate::model::versions::Tables::new(["sales", "inventory", "customers"]).unwrap();
    let mut c = Catalog::new(tables);
    let p = || ParamSpec::text("quarter", Some("Q1"));
    c.add("sales", "", "", &["sales"], vec![p()], policy.clone())
        .unwrap();
    c.add("stock", "", "", &["inventory"], vec![], policy.clone())
        .unwrap();
    c.add(
        "top_customers",
        "",
        "",
        &["sales", "customers"],
        vec![p()],
        policy,
    )
    .unwrap();
    let warehouse = Arc::new(MemoryWarehouse::new(3, Duration::from_millis(latency_ms)));
    let clock = ManualClock::new(T0905);
    let engine = Engine::builder(Arc::new(c), warehouse.clone())
        .clock(clock.clone())
        .strategy(strategy)
        .build()
        .unwrap();
    World {
        engine,
        warehouse,
        clock,
    }
}

fn world() -> World {
    world_with(
        Policy::builder()
            .beta(0.0)
            .jitter(Duration::ZERO)
            .build()
            .unwrap(),
        5,
        Strategy::Freshcache,
    )
}

fn req(w: &World, q: &str) -> Request {
    w.engine.request::<&str, &str>(q, &[]).unwrap()
}

async fn settle(w: &World) {
    for _ in 0..2000 {
        if w.engine.loads_in_flight() == 0 && w.warehouse.running() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("loads did not settle");
}

fn data_versions(a: &Answer) -> Vec<u64> {
    MemoryWarehouse::versions_in(a.value()).unwrap()
}

/// A world whose engine has `shared` as its second tier (an in-process store standing in for
/// Redis: same trait, same engine paths) and, when `local_tier` is off, no in-process tier.
fn world_shared(policy: Policy, latency_ms: u64, local_tier: bool) -> (World, Arc<MemoryStore>) {
    let w = world_with(policy, latency_ms, Strategy::Freshcache);
    let shared = Arc::new(MemoryStore::new(MemoryStoreConfig::default()));
    let engine = Engine::builder(w.engine.catalog().clone(), w.warehouse.clone())
        .clock(w.clock.clone())
        .shared(shared.clone())
        .local_tier(local_tier)
        .build()
        .unwrap();
    (World { engine, ..w }, shared)
}

fn quick_policy() -> Policy {
    Policy::builder()
        .beta(0.0)
        .jitter(Duration::ZERO)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// A world that waits 50 ms at most, with `sales` cached and then bumped: the next request
/// loads, and what it gets depends on the warehouse.
async fn cached_then_bumped() -> (World, Request) {
    cached_then_bumped_with(
        Policy::builder()
            .beta(0.0)
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap(),
        1,
    )
    .await
}

/// [`cached_then_bumped`] with `policy` and a warehouse taking `latency_ms`.
async fn cached_then_bumped_with(policy: Policy, latency_ms: u64) -> (World, Request) {
    let w = world_with(policy, latency_ms, Strategy::Freshcache);
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    (w, r)
}
