//! The invalidation protocol: partial and late batches, refresh-ahead after a bump, failed bumps,
//! batch labels, and prepare-then-flip across the fleet.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_update_refreshes_sales_and_keeps_the_inventory_cache() {
    let w = world(Environment::Staging, false).await;
    let engine = w.instance.engine().clone();
    let sales_q = req(&w, "latest_batch_sales", &[]);
    let region_q = req(
        &w,
        "sales_by_region",
        &[("quarter", "Q4"), ("year", "2026")],
    );
    let stock_q = req(&w, "stock_outs", &[]);
    let before_sales = engine.get(&sales_q).await.unwrap();
    let before_region = engine.get(&region_q).await.unwrap();
    let before_stock = engine.get(&stock_q).await.unwrap();

    w.clock.advance(Duration::from_secs(5));
    let plan = EtlPlan {
        fail: vec!["inventory".into()],
        late: vec![],
    };
    let (run, report) = w.instance.run_etl("20261126-10:00", &plan).await.unwrap();
    assert_eq!(run.loaded(), vec!["sales", "customers"]);
    assert_eq!(report.bumped, vec!["sales", "customers"]);
    assert_eq!(report.behind.len(), 1);
    assert_eq!(report.behind[0].table, "inventory");
    assert!(
        report.behind[0]
            .reason
            .contains("update_log is at 20261126-09:00"),
        "{:?}",
        report.behind
    );

    // Queries that read sales: fresh, computed at the new version, holding the new batch.
    let after_sales = engine.get(&sales_q).await.unwrap();
    assert_eq!(after_sales.freshness, Freshness::Fresh);
    assert!(after_sales.versions().versions()[0] > before_sales.versions().versions()[0]);
    assert_ne!(
        after_sales.value(),
        before_sales.value(),
        "the new batch's rows"
    );
    let after_region = engine.get(&region_q).await.unwrap();
    assert!(after_region.freshness.is_fresh());
    assert_ne!(
        after_region.value(),
        before_region.value(),
        "Q4 2026 gained the batch's sales"
    );
    // The inventory-only query keeps its cache.
    let after_stock = engine.get(&stock_q).await.unwrap();
    assert_eq!(after_stock.source, Source::Cache);
    assert_eq!(after_stock.value(), before_stock.value());
    assert_eq!(after_stock.versions(), before_stock.versions());
    assert_eq!(
        engine.stats().stale_served,
        0,
        "0 stale answers after the bump"
    );

    let events = history(&w).await;
    let partial = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::PartialUpdate {
                behind, verified, ..
            } => Some((behind.clone(), verified.clone())),
            _ => None,
        })
        .expect("a partial_update event");
    assert_eq!(partial.0[0].table, "inventory");
    assert_eq!(partial.1, vec!["sales", "customers"]);
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::WarehouseUpdated { tables, .. } if tables == &vec!["sales".to_string(), "customers".to_string()])));

    // The same etl-complete again, and an older one: nothing more is bumped, and (regression,
    // issue 10 I) no second partial_update is logged for the same batch.
    let v = engine.versions();
    let partials = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::PartialUpdate { .. }))
            .count()
    };
    let before = partials(&history(&w).await);
    let again = w
        .instance
        .etl_complete("20261126-10:00", &[])
        .await
        .unwrap();
    assert!(again.bumped.is_empty());
    let older = w
        .instance
        .etl_complete("20261126-08:00", &[])
        .await
        .unwrap();
    assert!(older.bumped.is_empty());
    assert_eq!(engine.versions().versions(), v.versions());
    assert_eq!(
        partials(&history(&w).await),
        before,
        "a repeated etl-complete logs nothing new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_table_is_bumped_when_it_lands() {
    let w = world(Environment::Development, false).await;
    let plan = EtlPlan {
        fail: vec![],
        late: vec![("inventory".into(), Duration::from_millis(1))],
    };
    let (_, report) = w.instance.run_etl("20261126-10:00", &plan).await.unwrap();
    assert_eq!(report.behind.len(), 1);
    let inventory = table(&w, "inventory");
    eventually("the late table was never bumped", || async {
        w.instance.engine().versions().version(inventory) == 1
    })
    .await;
}

/// An ETL target whose loads of one table always fail.
struct FailsTable(SqliteWarehouse, &'static str);

impl EtlTarget for FailsTable {
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> crate::model::BoxFuture<'a, Result<u64, crate::warehouse::WarehouseError>> {
        self.0
            .load_table(table, batch, at_ms, fail || table == self.1)
    }
}

/// A late table whose load then fails is news in the feed (it used to vanish without a word),
/// and it is not bumped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_load_that_fails_is_shown_in_the_feed() {
    let w = world_with_etl(Environment::Development, false, |wh| {
        Arc::new(FailsTable(wh, "inventory"))
    })
    .await;
    let plan = EtlPlan {
        fail: vec![],
        late: vec![("inventory".into(), Duration::from_millis(1))],
    };
    w.instance.run_etl("20261126-10:00", &plan).await.unwrap();
    eventually("the failed late load never reached the feed", || async {
        history(&w).await.iter().any(|e| {
            matches!(&e.kind, EventKind::EtlRun { failed, loaded, .. }
                if loaded.is_empty() && failed.iter().any(|f| f.table == "inventory"))
        })
    })
    .await;
    let inventory = table(&w, "inventory");
    assert_eq!(w.instance.engine().versions().version(inventory), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_reloads_the_hot_keys_after_an_update() {
    let w = world(Environment::Development, false).await;
    let engine = w.instance.engine().clone();
    let hot = req(
        &w,
        "sales_by_region",
        &[("quarter", "Q4"), ("year", "2026")],
    );
    for _ in 0..64 {
        engine.get(&hot).await.unwrap();
    }
    let loads = engine.stats().loads;
    w.clock.advance(Duration::from_secs(1));
    w.instance
        .run_etl("20261126-10:00", &EtlPlan::default())
        .await
        .unwrap();
    refreshed(&w).await;
    assert!(engine.stats().refresh_ahead >= 1, "{:?}", engine.stats());
    let a = engine.get(&hot).await.unwrap();
    assert_eq!(a.source, Source::Cache, "reloaded before anyone asked");
    assert!(a.freshness.is_fresh());
    assert_eq!(engine.stats().loads, loads + 1);
}

/// Regression (issue 10 F): batch B's bump fails after its hot answers were prepared; batch C
/// must not inherit B's version number, or B's answers would be served as fresh for C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bump_does_not_let_one_batch_pass_for_the_next() {
    let (w, faulty) = faulty_world(InstanceConfig::default()).await;
    let engine = w.instance.engine().clone();
    let hot = req(&w, "latest_batch_sales", &[]);
    engine.get(&hot).await.unwrap();
    let all = EtlPlan {
        fail: vec![],
        late: vec![],
    };
    w.clock.advance(Duration::from_secs(60));
    faulty.fail_bumps.store(true, Ordering::SeqCst);
    assert!(
        w.instance.run_etl("20261126-10:00", &all).await.is_err(),
        "the bump for batch B fails"
    );
    assert!(history(&w).await.iter().any(|e| matches!(
        &e.kind,
        EventKind::Incident { message } if message.contains("20261126-10:00")
    )));
    faulty.fail_bumps.store(false, Ordering::SeqCst);
    w.clock.advance(Duration::from_secs(3600));
    w.instance.run_etl("20261126-11:00", &all).await.unwrap();
    let served = engine.get(&hot).await.unwrap();
    let current = w.instance.warehouse().run(&hot).await.unwrap().to_json();
    assert!(served.freshness.is_fresh());
    assert_eq!(
        served.value(),
        current.as_str(),
        "the answer served as fresh after batch C holds batch C's data"
    );
}

/// Regression (issue 10 I): labels that are not times, or that lie in the future, are refused:
/// either would sort above every real batch and stop them from being applied.
#[test]
fn batch_labels_are_checked_for_format_and_future() {
    for good in [
        "20261126-10:00",
        "20261126-10:00:05",
        "20261126-10:00.1",
        "20261126-10:00:05.1.1",
        "20261126-10:14",
    ] {
        assert!(check_batch_label(good, T1000).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("garbage", "not a date"),
        ("", "not a date"),
        ("20261126-1000", "not a date"),
        ("20261326-10:00", "no such date"),
        ("20261126-24:00", "no such time"),
        ("20261126-10:00x", "unexpected text"),
        ("20261126-10:00:7", "bad seconds"),
        ("20261126-10:00.", "bad sequence"),
        ("20991231-23:00", "in the future"),
        ("20261126-10:16", "in the future"),
        ("2026\u{1b}[2J", "not a date"),
    ] {
        let e = check_batch_label(bad, T1000).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
        assert!(!e.contains('\u{1b}'), "{e:?}");
    }
}

/// Regression (issue 10 G): prepare-then-flip works for the fleet. An `etl-complete` from a
/// process with no hot keys of its own (the CLI) gets the running instance's hot answers loaded
/// under the new versions before the flip: after it, that instance's hot key is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etl_complete_from_elsewhere_prepares_the_running_instances() {
    let w = world(Environment::Staging, false).await;
    let server = w.instance.clone();
    let hot = req(&w, "latest_batch_sales", &[]);
    server.engine().get(&hot).await.unwrap();
    // The running instance is known once it has reported (about a second after start).
    eventually("never reported", || async {
        w.bus
            .reports(5_000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == server.id())
    })
    .await;
    // A one-shot process on the same bus and warehouse: no hot keys.
    let cli_engine = w.second_engine();
    let cli = Instance::new(
        cli_engine,
        Arc::new(w.bus.clone()),
        server.warehouse().clone(),
        server.inner.etl.clone(),
        InstanceConfig::default(),
    );
    cli.start().await.unwrap();
    let etl = server.inner.etl.clone().unwrap();
    etl.load_table("sales", "20261126-10:00", w.clock.now_ms(), false)
        .await
        .unwrap();
    let report = cli.etl_complete("20261126-10:00", &[]).await.unwrap();
    assert_eq!(report.bumped, vec!["sales"]);
    // The running instance applies the flip (feed or re-read) ...
    let sales = server.table_ids(&["sales".into()]).unwrap()[0];
    let target = report.versions["sales"];
    eventually("flip never applied", || async {
        server.engine().versions().version(sales) >= target
    })
    .await;
    // ... and its hot key is already there: no miss.
    let misses = server.engine().stats().misses;
    let answer = server.engine().get(&hot).await.unwrap();
    assert!(answer.freshness.is_fresh());
    assert_eq!(answer.versions().versions()[0], target);
    assert_eq!(
        server.engine().stats().misses,
        misses,
        "the hot key was prepared before the flip"
    );
    // Prepared before the flip: the running instance's `prepared` precedes the bump's event.
    let events = history(&w).await;
    let prepared = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Prepared { instance, done, .. } if instance == server.id() && *done >= 1))
        .expect("the running instance prepared its hot answers");
    let flipped = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::WarehouseUpdated { batch, .. } if batch == "20261126-10:00"))
        .expect("the flip");
    assert!(prepared.seq < flipped.seq, "{events:#?}");
}
