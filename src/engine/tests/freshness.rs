//! Freshness: a bump misses only the keys that read the table; stale-while-revalidate, XFetch
//! early refresh, stale-if-error and serve-stale-on-update each answer once and refresh once.

use super::*;

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
                    crate::model::num::ms(*age),
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
            + crate::model::num::ms(w.engine.catalog().queries()[0].policy.swr_window()),
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

#[tokio::test]
async fn serve_stale_on_update_answers_at_once_and_loads_in_the_background() {
    let (w, r) = cached_then_bumped_with(
        Policy::builder()
            .beta(0.0)
            .on_update(OnUpdate::ServeStale)
            .build()
            .unwrap(),
        5,
    )
    .await;
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
    let (w, r) = cached_then_bumped().await;
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
