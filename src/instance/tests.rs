//! The invalidation protocol end to end: a real (in-memory SQLite) warehouse with demo data, the
//! ETL, the embedded bus, and an engine on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bus::{Event, LocalBus};
use crate::engine::catalog::{Catalog, Request};
use crate::engine::clock::{Clock, ManualClock};
use crate::engine::{Freshness, Source};
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::{Latency, SqliteWarehouse};

/// 2026-11-26T10:00:30Z
const T1000: u64 = 1_795_687_230_000;

struct World {
    instance: Instance,
    clock: Arc<ManualClock>,
    bus: LocalBus,
}

async fn world(env: Environment, read_only: bool) -> World {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let warehouse = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    let size = DemoSize {
        customers: 300,
        sales: 5_000,
    };
    warehouse
        .init_demo(size, "20261126-09:00", T1000 - 3_600_000)
        .await
        .unwrap();
    let clock = ManualClock::new(T1000);
    let bus = LocalBus::in_memory(catalog.tables().clone(), clock.clone()).unwrap();
    let engine = Engine::builder(catalog, Arc::new(warehouse.clone()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let instance = Instance::new(
        engine,
        Arc::new(bus.clone()),
        Arc::new(warehouse.clone()),
        Some(Arc::new(warehouse)),
        InstanceConfig {
            env,
            read_only,
            ..InstanceConfig::default()
        },
    );
    instance.start().await.unwrap();
    World {
        instance,
        clock,
        bus,
    }
}

fn req(w: &World, q: &str, params: &[(&str, &str)]) -> Request {
    w.instance.engine().request(q, params).unwrap()
}

async fn history(w: &World) -> Vec<Event> {
    w.bus.history(0, 1000).await.unwrap()
}

/// Waits until the latest refresh-ahead has finished.
async fn refreshed(w: &World) {
    let mut progress = w.instance.refresh_progress();
    let done = progress.wait_for(|p| p.total > 0 && p.finished());
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("refresh-ahead did not finish")
        .unwrap();
}

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

    // The same etl-complete again, and an older one: nothing more is bumped.
    let v = engine.versions();
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
    let inventory = w
        .instance
        .engine()
        .catalog()
        .tables()
        .id("inventory")
        .unwrap();
    for _ in 0..2_000 {
        if w.instance.engine().versions().version(inventory) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the late table was never bumped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_logged_and_change_nothing() {
    let w = world(Environment::Staging, false).await;
    let before = w.instance.engine().versions();
    let ten_mb = format!(
        "{{\"tables\":[\"sales\"],\"x\":\"{}\"}}",
        "a".repeat(10 << 20)
    );
    let payloads: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        br#"{"tables": "sales"}"#.to_vec(),
        br#"{"tables": ["sales", "nope"]}"#.to_vec(),
        ten_mb.into_bytes(),
        b"\x1b[2J\x1b[31mred\x07".to_vec(),
        br#"{"tables": ["sales\u001b[2J"]}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
    ];
    for p in &payloads {
        let e = w.instance.ingest("warehouse_updated", p).await.unwrap_err();
        assert!(matches!(e, InstanceError::BadInput(_)), "{e}");
    }
    assert_eq!(w.instance.counters().bad_events, payloads.len() as u64);
    assert_eq!(w.instance.engine().versions().versions(), before.versions());
    assert_eq!(
        w.bus.versions().await.unwrap().versions(),
        before.versions()
    );
    let bad: Vec<_> = history(&w)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::BadInput {
                reason, excerpt, ..
            } => Some((reason, excerpt)),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), payloads.len());
    for (reason, excerpt) in &bad {
        assert!(!reason.chars().any(|c| c.is_control()), "{reason:?}");
        assert!(!excerpt.chars().any(|c| c.is_control()), "{excerpt:?}");
        assert!(excerpt.chars().count() <= 121);
    }
    assert!(bad.iter().any(|(r, _)| r.contains("larger than")));
    assert!(bad.iter().any(|(r, _)| r.contains("unknown table `nope`")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_message_bumps_once_however_many_instances_receive_it() {
    let w = world(Environment::Development, false).await;
    // A second instance on the same bus (another API server).
    let engine2 = Engine::builder(
        w.instance.engine().catalog().clone(),
        w.instance.warehouse().clone(),
    )
    .clock(w.clock.clone())
    .build()
    .unwrap();
    let other = Instance::new(
        engine2,
        Arc::new(w.bus.clone()),
        w.instance.warehouse().clone(),
        None,
        InstanceConfig::default(),
    );
    other.start().await.unwrap();
    let payload =
        br#"{"timestamp": "2026-11-26T10:00:03.120000", "tables": ["sales", "inventory"]}"#;
    w.instance
        .ingest("warehouse_updated", payload)
        .await
        .unwrap();
    other.ingest("warehouse_updated", payload).await.unwrap();
    w.instance
        .ingest("warehouse_updated", payload)
        .await
        .unwrap();
    let truth = w.bus.versions().await.unwrap();
    assert_eq!(truth.versions(), &[1, 1, 0]);
    // The other instance learns it from the feed or its next re-read.
    for _ in 0..2_000 {
        if other.engine().versions().versions() == truth.versions() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the second instance never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_refuse_and_audit() {
    let prod = world(Environment::Production, false).await;
    let inventory = prod.instance.table_ids(&["inventory".into()]).unwrap();
    let before = prod.instance.engine().versions();
    let e = prod
        .instance
        .simulate_partial(&inventory)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not in production"), "{e}");
    assert_eq!(
        prod.instance.engine().versions().versions(),
        before.versions(),
        "nothing changed"
    );
    assert!(
        prod.instance
            .warehouse()
            .update_log()
            .await
            .unwrap()
            .iter()
            .all(|e| e.batch == "20261126-09:00")
    );
    let audit: Vec<_> = history(&prod)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::OperatorAction {
                action,
                result,
                env,
                operator,
                ..
            } => Some((action, result, env, operator)),
            _ => None,
        })
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, "simulate-partial");
    assert!(audit[0].1.starts_with("refused"));
    assert_eq!(audit[0].2, "production");
    assert!(!audit[0].3.is_empty());

    let ro = world(Environment::Staging, true).await;
    let e = ro.instance.invalidate(&[]).await.unwrap_err();
    assert!(matches!(e, InstanceError::ReadOnly(_)), "{e}");
    assert!(ro.instance.warm(10).await.is_err());
    assert_eq!(ro.instance.engine().versions().versions(), &[0, 0, 0]);

    let staging = world(Environment::Staging, false).await;
    let r = staging
        .instance
        .invalidate(&staging.instance.table_ids(&["sales".into()]).unwrap())
        .await
        .unwrap();
    assert_eq!(r.versions["sales"], 1);
    assert_eq!(staging.instance.engine().versions().versions(), &[1, 0, 0]);
    let (run, report) = staging.instance.simulate_partial(&inventory).await.unwrap();
    assert!(run.loaded().contains(&"sales"));
    assert_eq!(report.behind[0].table, "inventory");
    assert!(
        staging
            .instance
            .table_ids(&["nope".into()])
            .unwrap_err()
            .to_string()
            .contains("known tables")
    );
    let e = staging
        .instance
        .etl_complete("bad label", &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad batch label"), "{e}");
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
    let _ = w.clock.now_ms();
}

/// An instance that is not started (no sync loop), so a test alone decides what it applies.
fn unstarted(clock: crate::engine::clock::SharedClock) -> (Instance, LocalBus) {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let warehouse = Arc::new(crate::warehouse::MemoryWarehouse::for_tables(
        catalog.tables(),
        Duration::ZERO,
    ));
    let bus = LocalBus::in_memory(catalog.tables().clone(), clock.clone()).unwrap();
    let engine = Engine::builder(catalog, warehouse.clone())
        .clock(clock)
        .build()
        .unwrap();
    let instance = Instance::new(
        engine,
        Arc::new(bus.clone()),
        warehouse,
        None,
        InstanceConfig::default(),
    );
    (instance, bus)
}

fn lag_us(instance: &Instance) -> Vec<u64> {
    let h = instance.invalidation_lag();
    h.iter_recorded()
        .flat_map(|v| {
            std::iter::repeat_n(
                h.median_equivalent(v.value_iterated_to()),
                v.count_since_last_iteration() as usize,
            )
        })
        .collect()
}

fn near(actual: u64, expected: u64) -> bool {
    actual.abs_diff(expected) * 100 <= expected
}

#[tokio::test]
async fn invalidation_lag_is_measured_from_the_bump_to_its_application() {
    let clock = ManualClock::new(T1000);
    let (instance, bus) = unstarted(clock.clone());
    let tables = instance.engine().catalog().tables().clone();
    let (sales, inventory) = (tables.id("sales").unwrap(), tables.id("inventory").unwrap());

    // A bump whose message was lost: found by the re-read of the truth 3 s later.
    bus.bump(&[inventory], "b1", BumpMode::Force, false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(instance.resync().await, vec![inventory]);
    assert_eq!(lag_us(&instance).len(), 1);
    assert!(
        near(lag_us(&instance)[0], 3_000_000),
        "{:?}",
        lag_us(&instance)
    );
    // Nothing new to apply: no sample.
    assert!(instance.resync().await.is_empty());
    assert_eq!(lag_us(&instance).len(), 1);

    // An event stamped 2.5 s ago raises sales: one sample of 2.5 s.
    let now = clock.now_ms();
    let to = |v: u64| BTreeMap::from([("sales".to_string(), v)]);
    instance.apply_remote(&to(1), "b2", Some(now - 2_500));
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 2);
    assert!(near(lags[0], 2_500_000), "{lags:?}");

    // The same event again (and an older one) raises nothing: no sample.
    instance.apply_remote(&to(1), "b2", Some(now - 2_500));
    instance.apply_remote(&to(0), "b0", Some(now - 9_000));
    assert_eq!(lag_us(&instance).len(), 2);

    // Another publisher's message: its bump time is unknown, so it is applied but not sampled.
    instance.apply_remote(&to(2), "b3", None);
    assert_eq!(instance.engine().versions().version(sales), 2);
    assert_eq!(lag_us(&instance).len(), 2);

    // A clock skewed behind the bumper's: the lag counts as (almost) nothing, never negative.
    instance.apply_remote(&to(3), "b4", Some(now + 60_000));
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 3);
    assert!(lags[0] <= 1, "{lags:?}");
}

#[tokio::test]
async fn invalidation_lag_is_in_real_time_under_an_accelerated_clock() {
    // An hour a minute: 60 clock seconds pass per real second.
    let clock = crate::engine::clock::ScaledClock::new(T1000, 60.0);
    let (instance, _bus) = unstarted(clock.clone());
    let bumped = clock.now_ms() - 30_000;
    instance.apply_remote(
        &BTreeMap::from([("sales".to_string(), 1)]),
        "b1",
        Some(bumped),
    );
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 1);
    // 30 clock seconds are half a real second (plus the little real time this test took).
    assert!((495_000..1_000_000).contains(&lags[0]), "{lags:?}");
}
