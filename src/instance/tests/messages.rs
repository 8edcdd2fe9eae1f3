//! Incoming messages: malformed ones refused, the baseline's bumped once, forged versions refused,
//! and a failed bump retried until it lands.

use std::sync::atomic::Ordering;

use super::*;

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
async fn a_plain_message_bumps_once_however_many_instances_receive_it() {
    let w = world(Environment::Development, false).await;
    // A second instance on the same bus (another API server).
    let engine2 = w.second_engine();
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
    eventually("the second instance never caught up", || async {
        other.engine().versions().versions() == truth.versions()
    })
    .await;
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

/// Regression (issue 10 B): a plain message whose bump fails (the bus frozen) is not lost: it
/// is kept and applied on a later sync tick, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_message_whose_bump_failed_is_applied_later() {
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
    eventually("the failed update was never applied", || async {
        w.bus.versions().await.unwrap().versions() == [0, 1, 0]
    })
    .await;
    // Once: further ticks do not bump it again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.bus.versions().await.unwrap().versions(), &[0, 1, 0]);
}
