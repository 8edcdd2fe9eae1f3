//! The checks on small hand-made traces; one of each kind must report a violation.

use super::*;
use crate::bench::chaos::record::REDIS_STOP as REDIS_STOP_KIND;

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn sample(t: u64, v: u64, label: &str, wh: &str) -> TruthSample {
    TruthSample {
        t_ms: t,
        versions: map(&[("sales", v)]),
        labels: map(&[("sales", label.to_string())]),
        warehouse: map(&[("sales", wh.to_string())]),
    }
}

fn answer(instance: u32, start: u64, fresh: bool, v: u64, batch: &str) -> Line {
    Line::Answer(AnswerRecord {
        instance,
        query: "sales_by_region".into(),
        params: vec![("quarter".into(), "Q1".into())],
        start_ms: start,
        end_ms: start + 5,
        outcome: Outcome::Value {
            fresh,
            stale_reason: None,
            source: "cache".into(),
            versions: map(&[("sales", v)]),
            batches: if batch.is_empty() {
                BTreeMap::new()
            } else {
                map(&[("sales", batch.to_string())])
            },
        },
    })
}

const B: Bounds = Bounds {
    resync_ms: 1_100,
    unverified_ms: 2_000,
    partitioned: 0,
};

/// Batch B2 flips at t=1000 (seen by the sample at 1000).
fn truth() -> Vec<TruthSample> {
    vec![
        sample(0, 1, "B1", "B1"),
        sample(500, 1, "B1", "B2"),
        sample(1_000, 2, "B2", "B2"),
        sample(9_000, 2, "B2", "B2"),
    ]
}

#[test]
fn old_data_marked_fresh_after_the_bound_is_a_violation() {
    let lines = vec![
        answer(1, 900, true, 1, "B1"),    // before the flip: fine
        answer(1, 2_000, true, 1, "B1"),  // within 1.1 s of it: fine
        answer(1, 2_200, true, 1, "B1"),  // later: a violation
        answer(1, 2_300, false, 1, "B1"), // marked stale: fine
        answer(1, 2_400, true, 2, "B2"),  // new data: fine
        answer(0, 2_900, true, 1, "B1"),  // partitioned, within 2 s: fine
        answer(0, 3_100, true, 1, "B1"),  // partitioned, later: a violation
    ];
    let f = check(&lines, &truth(), &[], B);
    assert_eq!(f.stale_as_fresh, Some(2), "{:?}", f.stale_by_instance);
    assert_eq!((f.answers, f.fresh_answers, f.stale_answers), (7, 6, 1));
    let (n, first) = &f.stale_by_instance[&1];
    assert_eq!(*n, 1);
    assert!(first.contains("at 2200 served sales batch B1"), "{first}");
    assert_eq!(f.stale_by_instance[&0].0, 1);
    assert_eq!(
        f.stale_by_cause.get("instance behind the truth"),
        Some(&2),
        "{:?}",
        f.stale_by_cause
    );
}

#[test]
fn a_forced_bump_exposes_what_the_warehouse_held_before_it() {
    // A plain message bumps sales without a label; the warehouse had B2 (loaded, its
    // etl-complete not run yet): answers with B1 data after it are old.
    let truth = vec![
        sample(0, 1, "B1", "B1"),
        sample(100, 1, "B1", "B2"),
        sample(200, 2, "B1", "B2"),
    ];
    let f = check(&[answer(2, 5_000, true, 1, "B1")], &truth, &[], B);
    assert_eq!(f.stale_as_fresh, Some(1));
    // A made-up label above anything the warehouse held raises the bar only to what it held.
    let truth = vec![sample(0, 1, "B1", "B1"), sample(100, 2, "Z9", "B1")];
    let f = check(&[answer(2, 5_000, true, 2, "B1")], &truth, &[], B);
    assert_eq!(f.stale_as_fresh, Some(0));
}

#[test]
fn violations_say_what_let_them_pass() {
    let truth = vec![
        sample(0, 1, "B1", "B1"),
        sample(100, 2, "B2", "B2"),
        sample(5_000, 2, "B2", "B2"),
    ];
    let lines = vec![
        answer(1, 4_000, true, 99, "B1"), // a number the truth never had
        answer(1, 4_000, true, 2, "B1"),  // the truth's number, with older data
    ];
    let f = check(&lines, &truth, &[], B);
    assert_eq!(f.stale_as_fresh, Some(2));
    assert_eq!(
        f.stale_by_cause.get("version the truth never had"),
        Some(&1)
    );
    assert_eq!(
        f.stale_by_cause
            .get("the truth's version, reused for newer data"),
        Some(&1)
    );
}

#[test]
fn a_restore_after_a_restart_is_not_a_flip() {
    // Redis emptied at 200 and restored at 300 while the warehouse already held B3 (loaded,
    // its bump not done): version 2 is B2's, as before.
    let truth = vec![
        sample(0, 1, "B1", "B1"),
        sample(100, 2, "B2", "B3"),
        sample(200, 0, "", "B3"),
        sample(300, 2, "B2", "B3"),
    ];
    let f = check(&[answer(1, 5_000, true, 2, "B2")], &truth, &[], B);
    assert_eq!(f.stale_as_fresh, Some(0));
}

#[test]
fn missing_provenance_is_said_not_passed() {
    let f = check(&[answer(1, 5_000, true, 2, "")], &truth(), &[], B);
    assert_eq!(f.stale_as_fresh, None);
    assert_eq!(f.without_provenance, 1);
}

fn load(instance: u32, start: u64, end: u64, v: u64) -> Line {
    Line::Load(LoadRecord {
        instance,
        query: "q".into(),
        params: vec![],
        versions: map(&[("sales", v)]),
        start_ms: start,
        end_ms: end,
        ok: true,
    })
}

fn report(instance: u32, t: u64, v: u64, degraded: bool) -> Line {
    Line::Report(ReportRecord {
        instance,
        t_ms: t,
        versions: map(&[("sales", v)]),
        degraded,
        lease_ms: 300,
    })
}

fn fault(kind: &str, start: u64, end: u64) -> FaultRecord {
    FaultRecord {
        kind: kind.into(),
        start_ms: start,
        end_ms: end,
        instance: None,
        detail: String::new(),
    }
}

/// While Redis cannot be reached nobody can confirm the truth: every instance is then held to
/// `--max-unverified`, as the partitioned one always is.
#[test]
fn while_redis_is_cut_off_every_instance_gets_the_unverified_bound() {
    let lines = vec![
        answer(1, 2_200, true, 1, "B1"), // Redis frozen in the last 2 s: within the bound
        answer(1, 3_100, true, 1, "B1"), // more than 2 s after the flip: a violation
    ];
    let frozen = [fault(REDIS_STOP_KIND, 1_100, 1_900)];
    let f = check(&lines, &truth(), &frozen, B);
    assert_eq!(f.stale_as_fresh, Some(1), "{:?}", f.stale_by_instance);
    assert!(f.stale_by_instance[&1].1.contains("at 3100"));
    // The same answers with Redis reachable: both are past the resync bound.
    let f = check(&lines, &truth(), &[], B);
    assert_eq!(f.stale_as_fresh, Some(2), "{:?}", f.stale_by_instance);
    // A degraded report counts as cut off too.
    let mut degraded = lines.clone();
    degraded.push(report(1, 1_500, 1, true));
    let f = check(&degraded, &truth(), &[], B);
    assert_eq!(f.stale_as_fresh, Some(1), "{:?}", f.stale_by_instance);
}

#[test]
fn duplicate_loads_are_explained_or_counted() {
    let lines = vec![
        report(1, 0, 1, false),
        report(2, 0, 1, false),
        load(1, 1_000, 1_200, 1),
        load(2, 1_100, 1_300, 1), // unexplained
        load(1, 5_000, 5_900, 2),
        load(2, 5_500, 5_600, 2), // the first ran past its 300 ms lease: takeover
        load(1, 10_000, 10_100, 3),
        load(2, 12_000, 12_100, 3), // Redis was emptied in between
    ];
    let faults = [fault(super::super::record::KILL_EMPTY, 11_000, 11_500)];
    let f = check(&lines, &[], &faults, B);
    assert_eq!(f.duplicate_loads, 3);
    assert_eq!(f.unexplained_duplicates(), 1, "{:?}", f.explained);
    assert_eq!(f.explained.get("lease takeover"), Some(&1));
}

#[test]
fn versions_going_down_are_regressions_except_at_a_deliberate_reset() {
    let truth = vec![
        sample(0, 5, "", ""),
        sample(100, 3, "", ""), // a regression
        sample(200, 4, "", ""),
        sample(300, 0, "", ""), // emptied on purpose
        sample(400, 6, "", ""),
    ];
    let faults = [fault(super::super::record::KILL_EMPTY, 250, 280)];
    let lines = vec![report(1, 0, 5, false), report(1, 50, 4, false)];
    let f = check(&lines, &truth, &faults, B);
    assert_eq!(f.version_regressions, 2, "{:?}", f.examples);
}

#[test]
fn convergence_is_measured_from_the_last_fault() {
    let truth = vec![sample(0, 1, "", ""), sample(1_000, 2, "", "")];
    let lines = vec![
        report(1, 1_100, 1, false),
        report(1, 1_600, 2, false),
        report(2, 1_200, 2, false),
    ];
    let faults = [fault(super::super::record::REDIS_STOP, 500, 1_050)];
    assert_eq!(
        check(&lines, &truth, &faults, B).max_convergence_ms,
        Some(550)
    );
    let never = vec![report(1, 1_100, 1, false)];
    assert_eq!(check(&never, &truth, &faults, B).max_convergence_ms, None);
}
