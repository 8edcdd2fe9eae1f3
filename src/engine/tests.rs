//! Engine behaviour, one promise per test, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_gets_make_one_query() {
    let w = world();
    let r = req(&w, "sales");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (e, r) = (w.engine.clone(), r.clone());
            tokio::spawn(async move { e.get(&r).await })
        })
        .collect();
    let mut sources = std::collections::HashMap::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert!(a.freshness.is_fresh());
        *sources.entry(a.source).or_insert(0) += 1;
    }
    assert_eq!(w.warehouse.queries(), 1);
    assert_eq!(sources.get(&Source::Warehouse), Some(&1));
    let s = w.engine.stats();
    assert_eq!(s.requests, 1000);
    assert_eq!(s.loads, 1);
    assert_eq!(s.fresh_hits + s.misses, 1000);
    // Every miss but the leader joined its load, or found the entry landed when it joined.
    assert!(s.coalesced < s.misses, "{s:?}");
    assert!(s.stampedes_absorbed <= 1);
}

#[tokio::test]
async fn a_bump_changes_only_the_keys_that_read_the_table() {
    let w = world();
    let (sales, stock, top) = (req(&w, "sales"), req(&w, "stock"), req(&w, "top_customers"));
    for r in [&sales, &stock, &top] {
        w.engine.get(r).await.unwrap();
    }
    assert_eq!(w.warehouse.queries(), 3);
    let sales_id = w.engine.catalog().tables().id("sales").unwrap();
    w.warehouse.load_batch(&[sales_id]);
    w.engine.bump(&["sales"], "b1").unwrap();

    let a = w.engine.get(&stock).await.unwrap();
    assert_eq!(
        a.source,
        Source::Cache,
        "inventory-only query keeps its cache"
    );
    let a = w.engine.get(&sales).await.unwrap();
    assert_eq!(a.source, Source::Warehouse);
    assert!(a.freshness.is_fresh());
    assert_eq!(a.versions().versions(), &[1]);
    assert_eq!(
        data_versions(&a),
        vec![1],
        "the fresh answer holds the new data"
    );
    let a = w.engine.get(&top).await.unwrap();
    assert_eq!(a.source, Source::Warehouse);
    assert_eq!(a.versions().versions(), &[1, 0]);
    assert_eq!(w.warehouse.queries(), 5);

    let keys = w.engine.table_keys();
    assert_eq!(keys[0], TableKeys { current: 2, old: 2 });
    assert_eq!(keys[1], TableKeys { current: 1, old: 0 });
    // Counted per table: the old `top_customers` entry holds the current `customers` version
    // (it is old only for `sales`).
    assert_eq!(keys[2], TableKeys { current: 2, old: 0 });
}

#[tokio::test]
async fn after_ttl_stale_while_revalidate_serves_once_and_refreshes_once() {
    let w = world();
    let r = req(&w, "sales");
    let first = w.engine.get(&r).await.unwrap();
    // Fresh until 10:00 + 10 min grace.
    w.clock.set(first.entry().fresh_until + MIN);
    for _ in 0..50 {
        let a = w.engine.get(&r).await.unwrap();
        match &a.freshness {
            Freshness::Stale { age, reason } => {
                assert_eq!(*reason, StaleReason::Revalidating);
                assert_eq!(
                    age.as_millis() as u64,
                    w.clock.now_ms() - first.computed_at_ms()
                );
            }
            Freshness::Fresh => assert!(a.computed_at_ms() > first.computed_at_ms()),
        }
    }
    settle(&w).await;
    assert_eq!(
        w.warehouse.queries(),
        2,
        "one refresh for fifty stale reads"
    );
    let a = w.engine.get(&r).await.unwrap();
    assert!(a.freshness.is_fresh());
    assert_eq!(w.engine.stats().swr_refreshes, 1);
}

#[tokio::test]
async fn past_the_swr_window_a_request_waits_for_fresh_data() {
    let w = world();
    let r = req(&w, "sales");
    let first = w.engine.get(&r).await.unwrap();
    w.clock.set(
        first.entry().fresh_until
            + w.engine.catalog().queries()[0]
                .policy
                .swr_window()
                .as_millis() as u64,
    );
    let a = w.engine.get(&r).await.unwrap();
    assert!(a.freshness.is_fresh());
    assert_eq!(a.source, Source::Warehouse);
}

#[tokio::test]
async fn xfetch_refreshes_early_once_per_key() {
    let w = world_with(
        Policy::builder()
            .beta(1.0)
            .jitter(Duration::ZERO)
            .build()
            .unwrap(),
        30,
        Strategy::Freshcache,
    );
    let r = req(&w, "sales");
    let first = w.engine.get(&r).await.unwrap();
    assert!(first.entry().load_ms >= 30);
    // 1 ms before expiry, with a 30 ms load: the refresh is almost certain, and must be single.
    w.clock.set(first.entry().fresh_until - 1);
    for _ in 0..100 {
        let a = w.engine.get(&r).await.unwrap();
        assert!(a.freshness.is_fresh());
    }
    settle(&w).await;
    let s = w.engine.stats();
    assert_eq!(s.early_refreshes, 1, "{s:?}");
    assert_eq!(w.warehouse.queries(), 2);
    // An hour before expiry, XFetch never fires.
    let a = w.engine.get(&r).await.unwrap();
    w.clock.set(a.entry().fresh_until - 3_600_000);
    for _ in 0..1000 {
        w.engine.get(&r).await.unwrap();
    }
    assert_eq!(w.engine.stats().early_refreshes, 1);
}

#[tokio::test]
async fn warehouse_error_serves_the_last_good_answer_within_the_limit() {
    let w = world();
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    w.clock.advance(Duration::from_secs(60));
    w.warehouse.set_failing(true);
    let a = w.engine.get(&r).await.unwrap();
    match a.freshness {
        Freshness::Stale {
            age,
            reason: StaleReason::WarehouseError(msg),
        } => {
            assert_eq!(age, Duration::from_secs(60));
            assert!(msg.contains("injected failure"), "{msg}");
        }
        other => panic!("expected stale on error, got {other:?}"),
    }
    // Beyond the stale limit: a clear error instead.
    w.clock.advance(Duration::from_secs(3 * 3600));
    let e = w.engine.get(&r).await.unwrap_err();
    assert!(matches!(e, GetError::Warehouse { .. }), "{e}");
    assert!(e.to_string().contains("injected failure"), "{e}");
    // Never anything stale on a key never loaded.
    let e = w.engine.get(&req(&w, "stock")).await.unwrap_err();
    assert!(e.to_string().contains("no earlier answer"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_releases_every_waiter() {
    let w = world();
    let r = req(&w, "sales");
    w.warehouse.panic_next(1);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (e, r) = (w.engine.clone(), r.clone());
            tokio::spawn(async move { e.get(&r).await })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(GetError::Warehouse {
                error: LoadError::Panicked(m),
                ..
            }) => {
                assert!(m.contains("injected panic"), "{m}");
                errors += 1;
            }
            Ok(a) => assert!(a.freshness.is_fresh()),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(errors >= 1);
    assert_eq!(w.engine.loads_in_flight(), 0);
    // The next request leads a new load, which succeeds.
    assert!(w.engine.get(&r).await.unwrap().freshness.is_fresh());
}

#[tokio::test]
async fn a_hanging_warehouse_is_bounded_by_max_wait() {
    let w = world_with(
        Policy::builder()
            .beta(0.0)
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap(),
        1,
        Strategy::Freshcache,
    );
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    w.warehouse.set_hanging(true);
    let a = w.engine.get(&r).await.unwrap();
    assert!(matches!(
        a.freshness,
        Freshness::Stale {
            reason: StaleReason::WarehouseSlow,
            ..
        }
    ));
    let e = w.engine.get(&req(&w, "stock")).await.unwrap_err();
    assert!(matches!(e, GetError::Timeout { .. }), "{e}");
    assert_eq!(w.engine.stats().wait_timeouts, 2);
}

/// An engine over `w`'s catalog, clock and warehouse whose loads end after `timeout`.
fn with_load_timeout(w: &World, timeout: Duration) -> Engine {
    Engine::builder(w.engine.catalog().clone(), w.warehouse.clone())
        .clock(w.clock.clone())
        .load_timeout(timeout)
        .build()
        .unwrap()
}

/// Every load ends (issue 10, D): a hung load used to stay in flight for good — its waiters gave
/// up after the maximum wait, the query kept running, and every later request joined it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_load_ends_at_its_deadline_and_the_next_request_loads_again() {
    let w = world_with(
        Policy::builder()
            .beta(0.0)
            .jitter(Duration::ZERO)
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap(),
        1,
        Strategy::Freshcache,
    );
    let timeout = Duration::from_millis(200);
    let engine = with_load_timeout(&w, timeout);
    let r = req(&w, "sales");
    engine.get(&r).await.unwrap();
    engine.bump(&["sales"], "b1").unwrap();
    w.clock.advance(Duration::from_secs(60));
    w.warehouse.set_hanging(true);
    let started = std::time::Instant::now();
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (e, r) = (engine.clone(), r.clone());
            tokio::spawn(async move { e.get(&r).await })
        })
        .collect();
    for t in waiters {
        // Stale-if-error: the answer from before the bump, saying why.
        match t.await.unwrap().unwrap().freshness {
            Freshness::Stale {
                age,
                reason: StaleReason::WarehouseError(why),
            } => {
                assert_eq!(age, Duration::from_secs(60));
                assert!(why.contains("exceeded its deadline of 200ms"), "{why}");
            }
            other => panic!("expected stale at the deadline, got {other:?}"),
        }
    }
    // At the deadline, not at the 60 s maximum wait (generous bound: a busy machine).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The query was dropped (cancelled), not left running, and the flight is gone.
    assert_eq!(w.warehouse.running(), 0);
    assert_eq!(engine.loads_in_flight(), 0);
    // Nothing earlier to serve: the clear error.
    match engine.get(&req(&w, "stock")).await.unwrap_err() {
        GetError::Warehouse {
            error: LoadError::Deadline(d),
            ..
        } => assert_eq!(d, timeout),
        other => panic!("expected the deadline error, got {other}"),
    }
    // The next request starts a new load, which answers.
    w.warehouse.set_hanging(false);
    let queries = w.warehouse.queries();
    assert!(engine.get(&r).await.unwrap().freshness.is_fresh());
    assert_eq!(w.warehouse.queries(), queries + 1);
    assert_eq!(engine.stats().load_errors, 2);
}

/// A shared store that logs what happens to leases (the in-process store grants every lease).
struct LeaseLog {
    store: crate::store::MemoryStore,
    taken: std::sync::Mutex<Vec<u64>>,
    released: std::sync::Mutex<Vec<u64>>,
}

impl crate::store::Store for LeaseLog {
    fn describe(&self) -> String {
        "lease log".into()
    }
    fn get<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> crate::model::BoxFuture<'a, Result<Option<Arc<Entry>>, crate::store::StoreError>> {
        crate::store::Store::get(&self.store, request, key)
    }
    fn previous<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> crate::model::BoxFuture<'a, Result<Option<Arc<Entry>>, crate::store::StoreError>> {
        crate::store::Store::previous(&self.store, request, key)
    }
    fn put<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Arc<Entry>,
    ) -> crate::model::BoxFuture<'a, Result<PutOutcome, crate::store::StoreError>> {
        crate::store::Store::put(&self.store, request, key, entry)
    }
    fn table_keys<'a>(
        &'a self,
        current: &'a VersionVector,
    ) -> crate::model::BoxFuture<'a, Result<Vec<TableKeys>, crate::store::StoreError>> {
        crate::store::Store::table_keys(&self.store, current)
    }
    fn purge<'a>(
        &'a self,
        current: &'a VersionVector,
        budget: usize,
    ) -> crate::model::BoxFuture<'a, Result<usize, crate::store::StoreError>> {
        crate::store::Store::purge(&self.store, current, budget)
    }
    fn lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        token: u64,
        _ttl: Duration,
    ) -> crate::model::BoxFuture<'a, Result<bool, crate::store::StoreError>> {
        self.taken.lock().unwrap().push(token);
        Box::pin(std::future::ready(Ok(true)))
    }
    fn release_lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        token: u64,
    ) -> crate::model::BoxFuture<'a, Result<(), crate::store::StoreError>> {
        self.released.lock().unwrap().push(token);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Every load ends, across processes too: the lease of a load cancelled at its deadline is
/// released then, so another process takes the key over at once instead of after the lease.
#[tokio::test]
async fn a_load_cancelled_at_its_deadline_releases_its_lease() {
    let w = world();
    let shared = Arc::new(LeaseLog {
        store: MemoryStore::new(MemoryStoreConfig::default()),
        taken: std::sync::Mutex::default(),
        released: std::sync::Mutex::default(),
    });
    let engine = Engine::builder(w.engine.catalog().clone(), w.warehouse.clone())
        .clock(w.clock.clone())
        .shared(shared.clone())
        .load_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    w.warehouse.set_hanging(true);
    let e = engine.get(&req(&w, "stock")).await.unwrap_err();
    assert!(
        matches!(
            e,
            GetError::Warehouse {
                error: LoadError::Deadline(_),
                ..
            }
        ),
        "{e}"
    );
    let taken = shared.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 1, "one lease for the one load");
    // The flight completes after put_and_release returns, so the release is already logged.
    assert_eq!(*shared.released.lock().unwrap(), taken);
    assert_eq!(w.warehouse.running(), 0);
}

#[tokio::test]
async fn serve_stale_on_update_answers_at_once_and_loads_in_the_background() {
    let w = world_with(
        Policy::builder()
            .beta(0.0)
            .on_update(OnUpdate::ServeStale)
            .build()
            .unwrap(),
        5,
        Strategy::Freshcache,
    );
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    w.clock.advance(Duration::from_secs(10));
    let a = w.engine.get(&r).await.unwrap();
    assert_eq!(
        a.freshness,
        Freshness::Stale {
            age: Duration::from_secs(10),
            reason: StaleReason::Updating
        }
    );
    assert_eq!(a.versions().versions(), &[0]);
    settle(&w).await;
    let a = w.engine.get(&r).await.unwrap();
    assert!(a.freshness.is_fresh());
    assert_eq!(a.versions().versions(), &[1]);
    assert_eq!(w.warehouse.queries(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_recipe_stampedes_and_freshcache_does_not() {
    for (strategy, expected) in [
        (Strategy::Ttl, 100),
        (Strategy::Versioned, 100),
        (Strategy::Freshcache, 1),
    ] {
        let w = world_with(Policy::default(), 20, strategy);
        let r = req(&w, "sales");
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (e, r) = (w.engine.clone(), r.clone());
                tokio::spawn(async move { e.get(&r).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(w.warehouse.queries(), expected, "{strategy}");
    }
}

#[tokio::test]
async fn the_lock_recipe_keeps_serving_old_data_after_an_update() {
    let w = world_with(Policy::default(), 1, Strategy::Lock);
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    let sales = w.engine.catalog().tables().id("sales").unwrap();
    w.warehouse.load_batch(&[sales]);
    w.engine.bump(&["sales"], "b1").unwrap();
    let a = w.engine.get(&r).await.unwrap();
    assert!(a.freshness.is_fresh(), "the recipe presents it as fresh");
    assert!(
        a.versions().is_behind(&w.engine.versions()),
        "but it is old data"
    );
    assert_eq!(data_versions(&a), vec![0]);
}

#[tokio::test]
async fn strategies_switch_at_run_time_without_sharing_entries() {
    let w = world();
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.set_strategy(Strategy::Ttl);
    assert_eq!(w.engine.strategy(), Strategy::Ttl);
    let a = w.engine.get(&r).await.unwrap();
    assert_eq!(
        a.source,
        Source::Warehouse,
        "recipes keep keys of their own"
    );
    w.engine.set_strategy(Strategy::Freshcache);
    assert_eq!(w.engine.get(&r).await.unwrap().source, Source::Cache);
}

#[tokio::test]
async fn purge_drops_only_what_no_rule_can_serve() {
    let w = world();
    w.engine.get(&req(&w, "sales")).await.unwrap();
    w.engine.get(&req(&w, "stock")).await.unwrap();
    assert_eq!(w.engine.purge_expired(100), 0);
    w.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(w.engine.purge_expired(100), 2);
    assert!(w.engine.store().is_empty());
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let tables = crate::model::versions::Tables::new(["sales"]).unwrap();
    let c = Catalog::new(tables);
    let w = Arc::new(MemoryWarehouse::new(1, Duration::ZERO));
    let e = Engine::builder(Arc::new(c), w).build().unwrap_err();
    assert!(e.to_string().contains("tokio runtime"));
}

/// Regression (issue 10): the "updating" mark works for every table a catalog may hold, not only
/// the first 64.
#[tokio::test]
async fn the_updating_mark_covers_every_table() {
    let names: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    let tables = crate::model::versions::Tables::new(names.iter().map(String::as_str)).unwrap();
    let catalog = Catalog::new(tables);
    let warehouse = Arc::new(MemoryWarehouse::new(200, Duration::from_millis(1)));
    let engine = Engine::builder(Arc::new(catalog), warehouse)
        .build()
        .unwrap();
    let (t6, t70, t199) = (TableId(6), TableId(70), TableId(199));
    engine.set_updating(&[t70], true);
    assert!(engine.is_updating(&[t70]));
    assert!(engine.is_updating(&[t6, t70]));
    assert!(
        !engine.is_updating(&[t6]),
        "table 70 must not alias table 6"
    );
    assert!(!engine.is_updating(&[t199]));
    engine.set_updating(&[t199, t6], true);
    engine.set_updating(&[t70], false);
    assert!(!engine.is_updating(&[t70]));
    assert!(engine.is_updating(&[t199]) && engine.is_updating(&[t6]));
    // An id beyond the catalog is simply never updating (and does not panic).
    engine.set_updating(&[TableId(5000)], true);
    assert!(!engine.is_updating(&[TableId(5000)]));
}

/// Regression (issue 10, J): a request that waited for a load and was answered stale (the load
/// was too slow, or failed) is a stale answer in `freshcache_requests_total{outcome}`, not a miss.
#[tokio::test]
async fn stale_answers_after_a_wait_count_as_stale_outcomes() {
    let w = world_with(
        Policy::builder()
            .beta(0.0)
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap(),
        1,
        Strategy::Freshcache,
    );
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    let before = crate::engine::stats::RequestOutcomes::of(&w.engine.stats());
    w.warehouse.set_hanging(true);
    let a = w.engine.get(&r).await.unwrap();
    assert!(!a.freshness.is_fresh());
    w.warehouse.set_hanging(false);
    w.warehouse.set_failing(true);
    w.engine.bump(&["sales"], "b2").unwrap();
    let a = w.engine.get(&r).await.unwrap();
    assert!(!a.freshness.is_fresh());
    let s = w.engine.stats();
    let after = crate::engine::stats::RequestOutcomes::of(&s);
    assert_eq!(after.stale - before.stale, 2, "{before:?} -> {after:?}");
    assert_eq!(after.miss, before.miss, "{before:?} -> {after:?}");
    assert_eq!(
        after.fresh + after.stale + after.miss + after.coalesced,
        s.requests
    );
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

/// Regression (issue 10): with no in-process tier, an expired answer in the shared tier is
/// served stale while one refresh runs, as it is with the in-process tier.
#[tokio::test]
async fn without_a_local_tier_the_shared_tier_serves_stale_while_revalidating() {
    let (w, _shared) = world_shared(quick_policy(), 5, false);
    let r = req(&w, "sales");
    let first = w.engine.get(&r).await.unwrap();
    w.clock.set(first.entry().fresh_until + MIN);
    let a = w.engine.get(&r).await.unwrap();
    assert_eq!(
        a.freshness,
        Freshness::Stale {
            age: Duration::from_millis(w.clock.now_ms() - first.computed_at_ms()),
            reason: StaleReason::Revalidating
        }
    );
    settle(&w).await;
    assert_eq!(w.warehouse.queries(), 2, "one refresh in the background");
    let a = w.engine.get(&r).await.unwrap();
    assert!(a.freshness.is_fresh());
    assert!(a.computed_at_ms() > first.computed_at_ms());
}

/// Regression (issue 10): with no in-process tier, a failed or slow load after an update is
/// answered with the previous version held by the shared tier (stale-if-error), not an error.
#[tokio::test]
async fn without_a_local_tier_the_shared_tier_supplies_stale_if_error() {
    let (w, _shared) = world_shared(quick_policy(), 1, false);
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    w.clock.advance(Duration::from_secs(60));
    w.warehouse.set_failing(true);
    let a = w
        .engine
        .get(&r)
        .await
        .expect("stale-if-error from the shared tier");
    match &a.freshness {
        Freshness::Stale {
            age,
            reason: StaleReason::WarehouseError(_),
        } => assert_eq!(*age, Duration::from_secs(60)),
        other => panic!("expected stale on error, got {other:?}"),
    }
    assert_eq!(a.versions().versions(), &[0]);
    w.warehouse.set_failing(false);
    w.warehouse.set_hanging(true);
    w.engine.bump(&["sales"], "b2").unwrap();
    let a = w.engine.get(&r).await.expect("stale after a slow load");
    assert!(
        matches!(
            a.freshness,
            Freshness::Stale {
                reason: StaleReason::WarehouseSlow,
                ..
            }
        ),
        "{:?}",
        a.freshness
    );
    // Never anything stale on a key never loaded.
    let e = w.engine.get(&req(&w, "stock")).await.unwrap_err();
    assert!(matches!(e, GetError::Timeout { .. }), "{e}");
}

/// Regression (issue 10): a new process (its in-process tier empty) answers a failed load with
/// the shared tier's previous answer.
#[tokio::test]
async fn a_new_process_gets_stale_if_error_from_the_shared_tier() {
    let (w, shared) = world_shared(quick_policy(), 1, true);
    let r = req(&w, "sales");
    w.engine.get(&r).await.unwrap();
    w.engine.bump(&["sales"], "b1").unwrap();
    // A second process on the same shared tier, with the same versions, knowing nothing yet.
    let fresh_process = Engine::builder(w.engine.catalog().clone(), w.warehouse.clone())
        .clock(w.clock.clone())
        .shared(shared.clone())
        .build()
        .unwrap();
    fresh_process.apply_versions(&w.engine.versions());
    w.warehouse.set_failing(true);
    let r2 = fresh_process.request::<&str, &str>("sales", &[]).unwrap();
    let a = fresh_process.get(&r2).await.expect("stale-if-error");
    assert!(
        matches!(
            a.freshness,
            Freshness::Stale {
                reason: StaleReason::WarehouseError(_),
                ..
            }
        ),
        "{:?}",
        a.freshness
    );
    assert_eq!(a.versions().versions(), &[0]);
}

proptest::proptest! {
    /// The integer pre-check of XFetch decides "not due" only where the exact rule's own bound
    /// (`now + 40 * load * beta < fresh_until`, in floating point) does too, so it changes no
    /// outcome.
    #[test]
    fn the_xfetch_pre_check_never_contradicts_the_rule(
        now in 0u64..4_000_000_000_000,
        ahead in 0u64..u64::MAX / 2,
        load_ms in proptest::prop_oneof![0u64..100_000, 0u64..u64::MAX],
        beta in proptest::prop_oneof![0.0f64..4.0, 0.0f64..1e13],
    ) {
        let policy = Policy::builder().beta(beta).build().unwrap();
        let entry = Entry {
            value: Arc::from("1"),
            versions: crate::model::entry::Stamp::default(),
            created_ms: now,
            load_ms,
            fresh_until: now.saturating_add(ahead),
            keep_until: u64::MAX,
        };
        if xfetch_out_of_reach(now, &entry, &policy) {
            let reach = (load_ms.saturating_mul(40) as f64 * beta) as u64;
            proptest::prop_assert!(beta <= 0.0 || now.saturating_add(reach) < entry.fresh_until);
        }
    }
}
