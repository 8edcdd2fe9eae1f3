//! Operator actions under their guards: refused where they must be, and every one audited.

use super::*;

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

/// Regression (issue 12): the console's warm gauge read the latest refresh of any kind, so the
/// hourly refresh-ahead after an update showed as the warm's progress (46 → 37 → 46).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_progress_counts_only_the_warm() {
    let w = world(Environment::Development, false).await;
    let engine = w.instance.engine().clone();
    for q in ["stock_outs", "latest_batch_sales"] {
        engine.get(&req(&w, q, &[])).await.unwrap();
    }
    w.instance.warm(10).await.unwrap();
    // The warm's own progress, as the console reads it: it follows the warm's receiver through
    // a task of its own, so it is what must have finished (not the receiver `warm` returns).
    let mut progress = w.instance.warm_progress();
    tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|p| p.finished()))
        .await
        .expect("the warm did not finish")
        .unwrap();
    let warmed = *w.instance.warm_progress().borrow();
    assert_eq!(warmed.total, 2, "{warmed:?}");

    // An update's refresh-ahead: the latest refresh, but not a warm.
    w.clock.advance(Duration::from_secs(1));
    w.instance
        .run_etl("20261126-10:00", &EtlPlan::default())
        .await
        .unwrap();
    refreshed(&w).await;
    assert_eq!(*w.instance.warm_progress().borrow(), warmed);
}
