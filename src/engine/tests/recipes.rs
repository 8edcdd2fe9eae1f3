//! The baseline recipes beside freshcache: the TTL recipe stampedes, the lock recipe serves old
//! data, and strategies switch at run time without sharing entries.

use super::*;

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
