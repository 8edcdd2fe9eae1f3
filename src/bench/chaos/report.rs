//! What a chaos run reports: the JSON figures and the human summary.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check;

/// What `bench chaos --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Seconds of requests.
    pub duration_s: u64,
    /// Instance processes.
    pub instances: u32,
    /// Requests made.
    pub answers: u64,
    /// Answered Fresh.
    pub fresh_answers: u64,
    /// Answered stale.
    pub stale_answers: u64,
    /// Answered with an error.
    pub errors: u64,
    /// Fresh answers with data older than the truth allowed; null when the warehouse cannot tell
    /// where its data came from (provenance unavailable).
    pub stale_as_fresh: Option<u64>,
    /// Warehouse queries beyond one per (query, versions) that nothing explains (see
    /// [`check`]; the explained ones are in the text summary).
    pub duplicate_loads: u64,
    /// Versions that went down, in the truth or in an instance.
    pub version_regressions: u64,
    /// Requests with neither value nor error within the maximum wait + 1 s.
    pub unanswered: u64,
    /// Instance processes that panicked.
    pub panics: u64,
    /// After the last fault, the longest time until an instance's versions equalled the truth;
    /// null when one never did before the end.
    pub max_convergence_ms: Option<u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
}

impl ChaosReport {
    /// What broke the promise, in words (empty when nothing did).
    pub fn violations(&self, unexplained_duplicates: u64) -> Vec<String> {
        let mut v = Vec::new();
        match self.stale_as_fresh {
            None => v.push("provenance unavailable: stale_as_fresh not checked".to_string()),
            Some(n) if n > 0 => v.push(format!("{n} stale answers marked fresh")),
            Some(_) => {}
        }
        for (n, what) in [
            (self.version_regressions, "version regressions"),
            (self.unanswered, "unanswered requests"),
            (self.panics, "panicked instances"),
            (unexplained_duplicates, "unexplained duplicate loads"),
        ] {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        }
        v
    }
}

pub(super) fn print_summary(r: &ChaosReport, f: &check::Findings) {
    println!(
        "chaos seed {}: {} instances, {} s, faults: {}",
        r.seed,
        r.instances,
        r.duration_s,
        r.faults
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "answers {}: fresh {}, stale {}, errors {}",
        r.answers, r.fresh_answers, r.stale_answers, r.errors
    );
    let opt = |v: Option<u64>, none: &str| v.map_or(none.to_string(), |n| n.to_string());
    println!(
        "stale as fresh      {}",
        opt(
            r.stale_as_fresh,
            "not checked: the warehouse does not say which batch its data came from"
        )
    );
    for (instance, (n, first)) in &f.stale_by_instance {
        println!("  instance {instance}: {n}, the first: {first}");
    }
    if !f.stale_by_cause.is_empty() {
        println!("  by cause: {}", counts(&f.stale_by_cause));
    }
    if !f.stale_after_fault.is_empty() {
        println!(
            "  by the latest fault before the request: {}",
            counts(&f.stale_after_fault)
        );
    }
    println!(
        "duplicate loads     {} unexplained of {} ({})",
        r.duplicate_loads,
        f.duplicate_loads,
        f.explained
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("version regressions {}", r.version_regressions);
    println!("unanswered          {}", r.unanswered);
    println!("panics              {}", r.panics);
    println!(
        "convergence         {}",
        match r.max_convergence_ms {
            Some(ms) => format!("{ms} ms after the last fault"),
            None => "never: an instance stayed apart from the truth".to_string(),
        }
    );
    for e in &f.examples {
        println!("  e.g. {e}");
    }
}

/// `name n, name n, …` in the map's order.
fn counts<K: std::fmt::Display, N: std::fmt::Display>(
    map: &std::collections::BTreeMap<K, N>,
) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
