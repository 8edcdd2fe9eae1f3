//! Loads: one query per key however many wait, and every load ends — panics, hangs and
//! deadlines release their waiters and their lease.

use super::*;

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
    let (w, r) = cached_then_bumped().await;
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
    taken: parking_lot::Mutex<Vec<u64>>,
    released: parking_lot::Mutex<Vec<u64>>,
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
        self.taken.lock().push(token);
        Box::pin(std::future::ready(Ok(true)))
    }
    fn release_lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        token: u64,
    ) -> crate::model::BoxFuture<'a, Result<(), crate::store::StoreError>> {
        self.released.lock().push(token);
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
        taken: parking_lot::Mutex::default(),
        released: parking_lot::Mutex::default(),
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
    let taken = shared.taken.lock().clone();
    assert_eq!(taken.len(), 1, "one lease for the one load");
    // The flight completes after put_and_release returns, so the release is already logged.
    assert_eq!(*shared.released.lock(), taken);
    assert_eq!(w.warehouse.running(), 0);
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let tables = crate::model::versions::Tables::new(["sales"]).unwrap();
    let c = Catalog::new(tables);
    let w = Arc::new(MemoryWarehouse::new(1, Duration::ZERO));
    let e = Engine::builder(Arc::new(c), w).build().unwrap_err();
    assert!(e.to_string().contains("tokio runtime"));
}
