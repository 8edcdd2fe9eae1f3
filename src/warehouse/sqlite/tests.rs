//! The embedded SQLite warehouse: queries, the update log, interrupts, concurrency.
use super::*;
use crate::model::catalog::Catalog;
use std::time::Duration;

fn small() -> DemoSize {
    DemoSize {
        customers: 300,
        sales: 5_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_query_runs_on_demo_data() {
    let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    assert!(!w.is_initialised().await.unwrap());
    assert!(w.init_demo(small(), "20261101-00:00", 1).await.unwrap());
    assert!(
        !w.init_demo(small(), "20261101-00:00", 1).await.unwrap(),
        "loads once"
    );
    let catalog = Catalog::bundled().unwrap();
    for q in catalog.queries() {
        let r = catalog.request::<&str, &str>(&q.name, &[]).unwrap();
        let rows = w
            .run(&r)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.name));
        assert!(!rows.columns.is_empty(), "{}", q.name);
    }
    let r = catalog
        .request("sales_by_region", &[("quarter", "Q1"), ("year", "2025")])
        .unwrap();
    let rows = w.run(&r).await.unwrap();
    assert_eq!(rows.rows.len(), 5, "one row per region");
    assert!(rows.rows.iter().all(|r| r[1].as_i64().unwrap() > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_appends_in_its_own_transaction_and_is_logged() {
    let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    w.init_demo(small(), "20261101-00:00", 1).await.unwrap();
    let n = w
        .load_table("sales", "20261126-10:00", 1_795_687_200_000, false)
        .await
        .unwrap();
    assert!(n > 0);
    assert_eq!(
        w.load_table("sales", "20261126-10:00", 1_795_687_200_000, false)
            .await
            .unwrap(),
        n,
        "loading the same batch twice is one load"
    );
    let e = w
        .load_table("inventory", "20261126-10:00", 1_795_687_200_000, true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("simulated failure"), "{e}");
    let log = w.update_log().await.unwrap();
    let batch_of = |t: &str| log.iter().find(|e| e.table == t).unwrap().batch.clone();
    assert_eq!(batch_of("sales"), "20261126-10:00");
    assert_eq!(
        batch_of("inventory"),
        "20261101-00:00",
        "the failed load left no trace"
    );
    assert_eq!(
        w.current_batch().await.unwrap().as_deref(),
        Some("20261126-10:00")
    );
    // The rolled-back inventory rows are not visible.
    let catalog = Catalog::bundled().unwrap();
    let r = catalog
        .request::<&str, &str>("latest_batch_sales", &[])
        .unwrap();
    let rows = w.run(&r).await.unwrap();
    let orders: i64 = rows.rows.iter().map(|r| r[2].as_i64().unwrap()).sum();
    assert_eq!(u64::try_from(orders).unwrap(), n);
    // The rows say which batch each table was at in the snapshot they were read from.
    assert_eq!(rows.batches["sales"], "20261126-10:00");
    assert_eq!(rows.batches["inventory"], "20261101-00:00");
    assert!(rows.to_json().contains("\"batches\""));
}

/// Regression (issue 10, D): a read dropped at its deadline used to go on running on its
/// blocking thread until the query finished by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_is_interrupted_and_its_connection_serves_the_next() {
    use crate::model::policy::Policy;
    use crate::model::versions::Tables;
    let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    // The schema (a read takes its provenance from update_log in the same transaction).
    w.init_demo(small(), "20261101-00:00", 1).await.unwrap();
    let mut catalog = Catalog::new(Tables::new(["sales"]).unwrap());
    // About a minute of work (a debug build, a busy machine), with no row before the end;
    // without the interrupt, this test fails and then waits for it (runtime shutdown).
    let spin = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                WHERE x < 100000000) SELECT COUNT(*) FROM c";
    catalog
        .add("spin", "", spin, &["sales"], vec![], Policy::default())
        .unwrap();
    catalog
        .add(
            "one",
            "",
            "SELECT 1 AS one",
            &["sales"],
            vec![],
            Policy::default(),
        )
        .unwrap();
    let spin = catalog.request::<&str, &str>("spin", &[]).unwrap();
    let one = catalog.request::<&str, &str>("one", &[]).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), w.run(&spin)).await;
    assert!(
        r.is_err(),
        "the spinning query cannot finish in 300 ms: {:?}",
        r.map(|rows| rows.map(|r| r.rows))
    );
    // The blocking thread stops and returns its connection to the pool.
    let pooled = || w.shared.readers.lock().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pooled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned query still runs 10 s after its caller gave up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The interrupted connection answers the next query.
    let rows = w.run(&one).await.unwrap();
    assert_eq!(rows.rows, vec![vec![serde_json::json!(1)]]);
}

#[tokio::test]
async fn an_empty_warehouse_says_how_to_initialise_it() {
    let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    let catalog = Catalog::bundled().unwrap();
    let r = catalog.request::<&str, &str>("stock_outs", &[]).unwrap();
    let e = w.run(&r).await.unwrap_err();
    assert!(e.to_string().contains("freshcache warehouse init"), "{e}");
}
