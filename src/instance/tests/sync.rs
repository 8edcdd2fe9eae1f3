//! Sync: the invalidation lag, unverified versions, a truth that lost its state, and a sync
//! loop that panics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::*;
use crate::model::versions::VersionVector;

/// Serves `q` until it comes back stale, which must be for versions unverified.
async fn served_unverified(engine: &Engine, q: &Request, what: &str) {
    eventually(what, || async {
        match engine.get(q).await.unwrap().freshness {
            Freshness::Stale { reason, .. } => {
                assert_eq!(reason, crate::engine::StaleReason::VersionsUnverified);
                true
            }
            _ => false,
        }
    })
    .await;
}

/// An instance that is not started (no sync loop), so a test alone decides what it applies.
fn unstarted(clock: crate::model::clock::SharedClock) -> (Instance, LocalBus) {
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
                crate::model::num::to_usize(v.count_since_last_iteration()),
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
    let clock = crate::model::clock::ScaledClock::new(T1000, 60.0);
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

/// Regression (issue 10 C): an instance that cannot confirm the truth for longer than
/// `max_unverified` stops presenting cached answers as fresh, and does again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_not_fresh_while_the_truth_cannot_be_confirmed() {
    let (w, faulty) = faulty_world(quick_to_distrust()).await;
    let engine = w.instance.engine().clone();
    let q = req(&w, "stock_outs", &[]);
    engine.get(&q).await.unwrap();
    assert!(engine.get(&q).await.unwrap().freshness.is_fresh());
    faulty.fail_reads.store(true, Ordering::SeqCst);
    served_unverified(&engine, &q, "still fresh").await;
    assert!(engine.unverified_since().is_some());
    faulty.fail_reads.store(false, Ordering::SeqCst);
    eventually("never fresh again", || async {
        engine.get(&q).await.unwrap().freshness.is_fresh()
    })
    .await;
}

/// Regression (code reading, issue 10): a bump of this instance landing between the read of the
/// truth and the comparison with the engine's versions is not a truth that lost its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_landing_during_a_read_does_not_look_like_a_lost_truth() {
    // No periodic read of its own: the hook below must run in the read this test makes (a
    // periodic read taking it first ran the bump on the sync task instead).
    let (w, faulty) = faulty_world(InstanceConfig {
        poll_interval: Duration::from_secs(3600),
        ..InstanceConfig::default()
    })
    .await;
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    let bus = w.bus.clone();
    let engine = w.instance.engine().clone();
    *faulty.after_read.lock() = Some(Box::new(move || {
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
    eventually("never restarted", || async {
        w.instance.counters().task_restarts > 0
    })
    .await;
    let sales = w.instance.table_ids(&["sales".into()]).unwrap();
    w.bus
        .bump(&sales, "op", BumpMode::Force, false)
        .await
        .unwrap();
    eventually("sync never resumed", || async {
        w.instance.engine().versions().version(sales[0]) == 1
    })
    .await;
    assert!(history(&w).await.iter().any(|e| matches!(
        &e.kind,
        EventKind::Incident { message } if message.contains("`sync` failed and was restarted")
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
    *faulty.next_read.lock() = Some(elsewhere);
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
    let (w, faulty) = faulty_world(quick_to_distrust()).await;
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
    *faulty.every_read.lock() = Some(VersionVector::initial(engine.catalog().tables().len()));
    faulty.fail_raise.store(true, Ordering::SeqCst);
    served_unverified(&engine, &q, "still presented as fresh").await;
}
