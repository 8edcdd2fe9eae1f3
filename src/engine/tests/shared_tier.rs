//! The shared tier alone (no in-process tier) and a new process: stale-while-revalidate and
//! stale-if-error from the shared tier.

use super::*;

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
            let reach = crate::model::num::f64_to_u64(load_ms.saturating_mul(40) as f64 * beta);
            proptest::prop_assert!(beta <= 0.0 || now.saturating_add(reach) < entry.fresh_until);
        }
    }
}
