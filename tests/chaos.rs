//! `freshcache --json bench chaos`: the checker runs end to end with the real binary — its own
//! redis-server, instance processes, fault proxy, ETL and faults — and reports every figure.
//!
//! The run is bounded (30 s of requests, a 21 s fault window) to keep CI time in check, and the
//! promise must hold in it: no stale answer marked fresh, no version going back, none unanswered,
//! no panic, every duplicate load explained.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod common;

use common::{TempDir, freshcache_in, redis_tools_missing, skip};

const FIELDS: &[&str] = &[
    "seed",
    "duration_s",
    "instances",
    "answers",
    "fresh_answers",
    "stale_answers",
    "errors",
    "stale_as_fresh",
    "duplicate_loads",
    "version_regressions",
    "unanswered",
    "panics",
    "max_convergence_ms",
    "faults",
];

#[test]
fn bench_chaos_reports_every_figure_for_a_seeded_run() {
    if let Some(why) = redis_tools_missing() {
        skip("bench_chaos_reports_every_figure_for_a_seeded_run", &why);
        return;
    }
    let dir = TempDir::new("chaos");
    let out = freshcache_in(
        dir.path(),
        &[
            "--json",
            "bench",
            "chaos",
            "--seed",
            "1",
            "--duration",
            "30",
        ],
    )
    .output()
    .expect("freshcache runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    let o = report.as_object().expect("a JSON object");
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    let mut expected = FIELDS.to_vec();
    expected.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "exactly these fields");
    assert_eq!(report["seed"], 1);
    assert_eq!(report["duration_s"], 30);
    assert_eq!(report["instances"], 3);
    assert!(
        report["answers"].as_u64().unwrap_or(0) > 0,
        "no answers: {report}"
    );
    let injected: u64 = report["faults"]
        .as_object()
        .expect("faults by kind")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(injected > 0, "no fault injected: {report}");
    // The exit status says whether the promise held: 0 exactly when no violation was counted.
    let violations = [
        "version_regressions",
        "unanswered",
        "panics",
        "duplicate_loads",
    ]
    .iter()
    .any(|k| report[*k].as_u64() != Some(0))
        || report["stale_as_fresh"].as_u64() != Some(0);
    assert_eq!(
        out.status.success(),
        !violations,
        "{report}\nstderr: {stderr}"
    );
    // The promise itself.
    for k in [
        "stale_as_fresh",
        "version_regressions",
        "unanswered",
        "panics",
        "duplicate_loads",
    ] {
        assert_eq!(report[k], 0, "{k}: {report}\nstderr: {stderr}");
    }
    assert!(out.status.success(), "{report}\nstderr: {stderr}");
}
