//! The consistency audit, against an instance that hears nothing of the truth moving on.

use std::sync::atomic::Ordering;

use super::*;

/// The consistency audit (issue 10, deliverable 3): answers served as fresh are sampled and
/// checked against the truth; none is a violation while the instance follows the truth, and
/// answers served behind it (here: an instance that hears nothing and never re-reads) are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_counts_fresh_answers_served_behind_the_truth() {
    let w = world(Environment::Staging, false).await;
    w.instance.shutdown();
    let faulty = FaultyBus::new(w.bus.clone());
    faulty.deaf.store(true, Ordering::SeqCst);
    let engine = w.second_engine();
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
