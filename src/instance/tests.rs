//! The invalidation protocol end to end: a real (in-memory SQLite) warehouse with demo data, the
//! ETL, the embedded bus, and an engine on a manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::*;
use crate::bus::{BumpMode, BumpRequest, Event, EventKind, LocalBus};
use crate::engine::catalog::{Catalog, Request};
use crate::engine::clock::{Clock, ManualClock};
use crate::engine::versions::{TableId, VersionVector};
use crate::engine::{Freshness, Source};
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::EtlPlan;
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
    bus.bump(&[sales], "b2", BumpMode::Force, false)
        .await
        .unwrap();
    instance.hint(&to(1), Some(now - 2_500), "test").await;
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 2);
    assert!(near(lags[0], 2_500_000), "{lags:?}");

    // The same event again (and an older one) raises nothing: no sample.
    instance.hint(&to(1), Some(now - 2_500), "test").await;
    instance.hint(&to(0), Some(now - 9_000), "test").await;
    assert_eq!(lag_us(&instance).len(), 2);

    // Another publisher's message: its bump time is unknown, so it is applied but not sampled.
    bus.bump(&[sales], "b3", BumpMode::Force, false)
        .await
        .unwrap();
    instance.hint(&to(2), None, "test").await;
    assert_eq!(instance.engine().versions().version(sales), 2);
    assert_eq!(lag_us(&instance).len(), 2);

    // A clock skewed behind the bumper's: the lag counts as (almost) nothing, never negative.
    bus.bump(&[sales], "b4", BumpMode::Force, false)
        .await
        .unwrap();
    instance.hint(&to(3), Some(now + 60_000), "test").await;
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 3);
    assert!(lags[0] <= 1, "{lags:?}");
}

#[tokio::test]
async fn invalidation_lag_is_in_real_time_under_an_accelerated_clock() {
    // An hour a minute: 60 clock seconds pass per real second.
    let clock = crate::engine::clock::ScaledClock::new(T1000, 60.0);
    let (instance, bus) = unstarted(clock.clone());
    let bumped = clock.now_ms() - 30_000;
    let sales = instance.engine().catalog().tables().id("sales").unwrap();
    bus.bump(&[sales], "b1", BumpMode::Force, false)
        .await
        .unwrap();
    instance
        .hint(
            &BTreeMap::from([("sales".to_string(), 1)]),
            Some(bumped),
            "test",
        )
        .await;
    let lags = lag_us(&instance);
    assert_eq!(lags.len(), 1);
    // 30 clock seconds are half a real second (plus the little real time this test took).
    assert!((495_000..1_000_000).contains(&lags[0]), "{lags:?}");
}

/// The embedded bus with faults switched on and off by the test: bumps or reads that fail, and
/// a hook run right after the truth was read (as if something landed while the reply travelled).
struct FaultyBus {
    bus: LocalBus,
    fail_bumps: std::sync::atomic::AtomicBool,
    fail_reads: std::sync::atomic::AtomicBool,
    panic_reads: std::sync::atomic::AtomicBool,
    /// Subscribers get a feed nobody publishes on (every message lost).
    deaf: std::sync::atomic::AtomicBool,
    /// Read once instead of the truth (a truth another instance has just put back).
    next_read: std::sync::Mutex<Option<VersionVector>>,
    /// Read every time instead of the truth (a truth that lost its state).
    every_read: std::sync::Mutex<Option<VersionVector>>,
    /// Raises (restores) fail.
    fail_raise: std::sync::atomic::AtomicBool,
    after_read: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FaultyBus {
    fn new(bus: LocalBus) -> Arc<Self> {
        Arc::new(Self {
            bus,
            fail_bumps: false.into(),
            fail_reads: false.into(),
            panic_reads: false.into(),
            deaf: false.into(),
            next_read: std::sync::Mutex::new(None),
            every_read: std::sync::Mutex::new(None),
            fail_raise: false.into(),
            after_read: std::sync::Mutex::new(None),
        })
    }
}

impl Bus for FaultyBus {
    fn describe(&self) -> String {
        "faulty".into()
    }
    fn clock(&self) -> &crate::engine::clock::SharedClock {
        self.bus.clock()
    }
    fn versions(&self) -> crate::store::BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move {
            if self.fail_reads.load(Ordering::SeqCst) {
                return Err(BusError("unreachable (test)".into()));
            }
            assert!(
                !self.panic_reads.swap(false, Ordering::SeqCst),
                "a bug in the sync path (test)"
            );
            if let Some(v) = self.next_read.lock().unwrap().take() {
                return Ok(Arc::new(v));
            }
            if let Some(v) = self.every_read.lock().unwrap().clone() {
                return Ok(Arc::new(v));
            }
            let truth = self.bus.versions().await;
            let hook = self.after_read.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
            truth
        })
    }
    fn bump_with<'a>(
        &'a self,
        request: BumpRequest<'a>,
    ) -> crate::store::BoxFuture<'a, Result<crate::bus::BumpOutcome, BusError>> {
        Box::pin(async move {
            if self.fail_bumps.load(Ordering::SeqCst) {
                return Err(BusError("frozen (test)".into()));
            }
            self.bus.bump_with(request).await
        })
    }
    fn reserved(&self) -> crate::store::BoxFuture<'_, Result<Vec<u64>, BusError>> {
        self.bus.reserved()
    }
    fn reserve<'a>(
        &'a self,
        tables: &'a [TableId],
    ) -> crate::store::BoxFuture<'a, Result<Vec<u64>, BusError>> {
        self.bus.reserve(tables)
    }
    fn publish(&self, kind: EventKind) -> crate::store::BoxFuture<'_, Result<Event, BusError>> {
        self.bus.publish(kind)
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        if self.deaf.load(Ordering::SeqCst) {
            // The sender is dropped at once: a closed feed, as if every message were lost.
            return broadcast::channel(1).1;
        }
        self.bus.subscribe()
    }
    fn history(
        &self,
        after: u64,
        limit: usize,
    ) -> crate::store::BoxFuture<'_, Result<Vec<Event>, BusError>> {
        self.bus.history(after, limit)
    }
    fn catch_up(&self) -> crate::store::BoxFuture<'_, Result<usize, BusError>> {
        self.bus.catch_up()
    }
    fn report<'a>(
        &'a self,
        report: &'a crate::bus::InstanceReport,
    ) -> crate::store::BoxFuture<'a, Result<(), BusError>> {
        self.bus.report(report)
    }
    fn reports(
        &self,
        live_ms: u64,
    ) -> crate::store::BoxFuture<'_, Result<Vec<crate::bus::InstanceReport>, BusError>> {
        self.bus.reports(live_ms)
    }
    fn raise<'a>(
        &'a self,
        versions: &'a VersionVector,
    ) -> crate::store::BoxFuture<'a, Result<usize, BusError>> {
        if self.fail_raise.load(Ordering::SeqCst) {
            return Box::pin(async { Err(BusError("unreachable (test)".into())) });
        }
        self.bus.raise(versions)
    }
}

/// A world like [`world`] whose instance talks to a [`FaultyBus`].
async fn faulty_world(config: InstanceConfig) -> (World, Arc<FaultyBus>) {
    let w = world(Environment::Staging, false).await;
    w.instance.shutdown();
    let faulty = FaultyBus::new(w.bus.clone());
    let engine = Engine::builder(
        w.instance.engine().catalog().clone(),
        w.instance.warehouse().clone(),
    )
    .clock(w.clock.clone())
    .build()
    .unwrap();
    let etl = w.instance.inner.etl.clone();
    let instance = Instance::new(
        engine,
        faulty.clone(),
        w.instance.warehouse().clone(),
        etl,
        config,
    );
    instance.start().await.unwrap();
    (
        World {
            instance,
            clock: w.clock,
            bus: w.bus,
        },
        faulty,
    )
}

/// Regression (issue 10 A): a message claiming versions the truth never had is refused, counted
/// and shown, and no instance holds them; the next real update is applied as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_above_the_truth_are_refused_and_the_next_update_still_applies() {
    let w = world(Environment::Staging, false).await;
    let forged = br#"{"timestamp":"2026-11-30T01:00:00","tables":["sales"],"versions":{"sales":18446744073709551615}}"#;
    w.instance
        .ingest("warehouse_updated", forged)
        .await
        .unwrap();
    let truth = w.bus.versions().await.unwrap();
    assert_eq!(truth.versions(), &[0, 0, 0]);
    assert_eq!(w.instance.engine().versions().versions(), truth.versions());
    assert_eq!(w.instance.counters().bad_events, 1);
    assert!(history(&w).await.iter().any(|e| matches!(
        &e.kind,
        EventKind::BadInput { reason, .. } if reason.contains("above the truth")
    )));
    // The next real update: applied, and answers are computed at it.
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    w.bus
        .bump(&sales, "b1", BumpMode::Force, false)
        .await
        .unwrap();
    w.instance.resync().await;
    assert_eq!(w.instance.engine().versions().version(sales[0]), 1);
    let answer = w
        .instance
        .engine()
        .get(&req(&w, "latest_batch_sales", &[]))
        .await
        .unwrap();
    assert_eq!(answer.versions().versions()[0], 1);
}

/// Regression (issue 10 B): a seed message whose bump fails (the bus frozen) is not lost: it
/// is kept and applied on a later sync tick, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_message_whose_bump_failed_is_applied_later() {
    let (w, faulty) = faulty_world(InstanceConfig {
        poll_interval: Duration::from_millis(20),
        ..InstanceConfig::default()
    })
    .await;
    faulty.fail_bumps.store(true, Ordering::SeqCst);
    let payload = br#"{"timestamp": "2026-11-30T01:00:00.5", "tables": ["inventory"]}"#;
    assert!(
        w.instance
            .ingest("warehouse_updated", payload)
            .await
            .is_err()
    );
    assert_eq!(w.bus.versions().await.unwrap().versions(), &[0, 0, 0]);
    assert_eq!(w.instance.counters().failed_bumps, 1);
    faulty.fail_bumps.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.bus.versions().await.unwrap().versions() != [0, 1, 0] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed update was never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once: further ticks do not bump it again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.bus.versions().await.unwrap().versions(), &[0, 1, 0]);
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

/// Regression (issue 10 C): an instance that cannot confirm the truth for longer than
/// `max_unverified` stops presenting cached answers as fresh, and does again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_not_fresh_while_the_truth_cannot_be_confirmed() {
    let (w, faulty) = faulty_world(InstanceConfig {
        poll_interval: Duration::from_millis(20),
        max_unverified: Duration::from_millis(150),
        ..InstanceConfig::default()
    })
    .await;
    let engine = w.instance.engine().clone();
    let q = req(&w, "stock_outs", &[]);
    engine.get(&q).await.unwrap();
    assert!(engine.get(&q).await.unwrap().freshness.is_fresh());
    faulty.fail_reads.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = engine.get(&q).await.unwrap();
        if let Freshness::Stale { reason, .. } = &answer.freshness {
            assert_eq!(*reason, crate::engine::StaleReason::VersionsUnverified);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still fresh");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(engine.unverified_since().is_some());
    faulty.fail_reads.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.get(&q).await.unwrap().freshness.is_fresh() {
        assert!(tokio::time::Instant::now() < deadline, "never fresh again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Regression (code reading, issue 10): a bump of this instance landing between the read of the
/// truth and the comparison with the engine's versions is not a truth that lost its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_landing_during_a_read_does_not_look_like_a_lost_truth() {
    let (w, faulty) = faulty_world(InstanceConfig::default()).await;
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    let bus = w.bus.clone();
    let engine = w.instance.engine().clone();
    *faulty.after_read.lock().unwrap() = Some(Box::new(move || {
        // This instance's own bump lands while the reply is on its way.
        let outcome =
            futures_util::FutureExt::now_or_never(bus.bump(&sales, "op", BumpMode::Force, false))
                .expect("the in-memory bus answers at once")
                .unwrap();
        engine.apply_versions(&outcome.versions);
    }));
    w.instance.resync().await;
    assert_eq!(w.instance.counters().reseeds, 0, "no false restore");
    assert_eq!(w.bus.versions().await.unwrap().versions(), &[1, 0, 0]);
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !w
        .bus
        .reports(5_000)
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == server.id())
    {
        assert!(tokio::time::Instant::now() < deadline, "never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A one-shot process on the same bus and warehouse: no hot keys.
    let cli_engine = Engine::builder(
        server.engine().catalog().clone(),
        server.warehouse().clone(),
    )
    .clock(w.clock.clone())
    .build()
    .unwrap();
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
    while server.engine().versions().version(sales) < target {
        assert!(tokio::time::Instant::now() < deadline, "flip never applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// Regression (issue 10, supervised tasks): a panic in the sync loop used to stop syncing for
/// good. It is restarted, counted and shown, and the next update still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_sync_loop_restarts_it() {
    let (w, faulty) = faulty_world(InstanceConfig {
        poll_interval: Duration::from_millis(20),
        ..InstanceConfig::default()
    })
    .await;
    faulty.panic_reads.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.instance.counters().task_restarts == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    w.bus
        .bump(&sales, "op", BumpMode::Force, false)
        .await
        .unwrap();
    while w.instance.engine().versions().version(sales[0]) != 1 {
        assert!(tokio::time::Instant::now() < deadline, "sync never resumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(history(&w).await.iter().any(|e| matches!(
        &e.kind,
        EventKind::Incident { message } if message.contains("`sync` failed and was restarted")
    )));
}

/// The consistency audit (issue 10, deliverable 3): answers served as fresh are sampled and
/// checked against the truth; none is a violation while the instance follows the truth, and
/// answers served behind it (here: an instance that hears nothing and never re-reads) are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_counts_fresh_answers_served_behind_the_truth() {
    let w = world(Environment::Staging, false).await;
    w.instance.shutdown();
    let faulty = FaultyBus::new(w.bus.clone());
    faulty.deaf.store(true, Ordering::SeqCst);
    let engine = Engine::builder(
        w.instance.engine().catalog().clone(),
        w.instance.warehouse().clone(),
    )
    .clock(w.clock.clone())
    .build()
    .unwrap();
    let instance = Instance::new(
        engine.clone(),
        faulty.clone(),
        w.instance.warehouse().clone(),
        None,
        InstanceConfig {
            // Never re-reads the truth within the test (and never turns unverified).
            poll_interval: Duration::from_secs(3600),
            max_unverified: Duration::from_secs(3600),
            ..InstanceConfig::default()
        },
    );
    instance.start().await.unwrap();
    let q = req(&w, "stock_outs", &[]);
    let serve_until_audited = |want_violations: bool| {
        let (engine, instance, q) = (engine.clone(), instance.clone(), q.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                for _ in 0..5_000 {
                    assert!(engine.get(&q).await.unwrap().freshness.is_fresh());
                }
                let c = instance.counters();
                if c.audit_checked > 0 && (!want_violations || c.audit_violations > 0) {
                    return c;
                }
                assert!(tokio::time::Instant::now() < deadline, "{c:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let healthy = serve_until_audited(false).await;
    assert_eq!(healthy.audit_violations, 0, "{healthy:?}");
    // The truth moves on; this instance never hears of it and keeps serving v0 as fresh.
    let inventory = instance.table_ids(&["inventory".into()]).unwrap();
    w.bus
        .bump(&inventory, "op", BumpMode::Force, false)
        .await
        .unwrap();
    let behind = serve_until_audited(true).await;
    assert!(behind.audit_violations > 0, "{behind:?}");
    assert!(history(&w).await.iter().any(|e| matches!(
        &e.kind,
        EventKind::Incident { message } if message.starts_with("CONSISTENCY VIOLATION")
    )));
}

/// Regression (found by bench chaos): after the truth lost its state, another instance put it
/// back from a shorter memory — to the very number this instance serves, for older data. The new
/// epoch makes this instance put it back above that number, so its answers never pass for the
/// data the restored number stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truth_restored_elsewhere_to_a_number_in_use_is_put_above_it() {
    let (w, faulty) = faulty_world(InstanceConfig::default()).await;
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    w.bus
        .bump(&sales, "20261126-10:00", BumpMode::Advance, false)
        .await
        .unwrap();
    w.instance.resync().await;
    let local = w.instance.engine().versions();
    assert_eq!(local.version(sales[0]), 1);
    // Restored elsewhere: sales at 1 again, but from an instance that knew batch 09:00 there.
    let mut elsewhere = (*w.bus.versions().await.unwrap()).clone();
    let mut parts: Vec<(u64, Arc<str>, u64)> = Vec::new();
    for t in w.instance.engine().catalog().tables().ids() {
        let batch = if t == sales[0] {
            Arc::from("20261126-09:00")
        } else {
            Arc::from(elsewhere.table_batch(t))
        };
        parts.push((elsewhere.version(t), batch, 0));
    }
    elsewhere = VersionVector::from_parts(parts, Arc::from(""), 0, 0);
    elsewhere.epoch = 42;
    *faulty.next_read.lock().unwrap() = Some(elsewhere);
    w.instance.resync().await;
    assert_eq!(
        w.instance.counters().reseeds,
        1,
        "put back above the number in use"
    );
    let truth = w.bus.versions().await.unwrap();
    assert_eq!(truth.version(sales[0]), 2);
    assert_ne!(truth.epoch, 42);
    // Settled: the next read changes nothing.
    w.instance.resync().await;
    assert_eq!(w.instance.counters().reseeds, 1);
}

/// Regression (found by bench chaos, seed 12): a truth found to have lost its state, which this
/// instance could not put back (the raise failed), confirmed the instance's old versions all the
/// same, so it kept serving them as fresh while the fleet moved on. A truth known to be broken
/// confirms nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truth_that_cannot_be_restored_confirms_nothing() {
    let (w, faulty) = faulty_world(InstanceConfig {
        poll_interval: Duration::from_millis(20),
        max_unverified: Duration::from_millis(150),
        ..InstanceConfig::default()
    })
    .await;
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    w.bus
        .bump(&sales, "20261126-10:00", BumpMode::Advance, false)
        .await
        .unwrap();
    w.instance.resync().await;
    let engine = w.instance.engine().clone();
    let q = req(&w, "latest_batch_sales", &[]);
    assert!(engine.get(&q).await.unwrap().freshness.is_fresh());
    // The truth restarts empty, and putting it back fails.
    *faulty.every_read.lock().unwrap() =
        Some(VersionVector::initial(engine.catalog().tables().len()));
    faulty.fail_raise.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = engine.get(&q).await.unwrap();
        if let Freshness::Stale { reason, .. } = &answer.freshness {
            assert_eq!(*reason, crate::engine::StaleReason::VersionsUnverified);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still presented as fresh"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
