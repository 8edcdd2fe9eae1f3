//! The checks of a chaos run: pure functions over the records, so each rule can be tested on a
//! small hand-made trace.
//!
//! # The rules
//! * **stale_as_fresh** — an answer marked Fresh whose data batch, for a table it reads, is older
//!   than that table's newest batch *flipped in the truth* at least `bound` before the request
//!   started. A flip is a version increase between two truth samples; the batch it exposes is the
//!   truth's batch label when the flip changed it (a batch bump, capped by the newest batch the
//!   warehouse ever held for the table, so a made-up label cannot raise the bar), otherwise (a
//!   forced bump: a plain message, an invalidation) the warehouse's newest batch for the
//!   table in the sample *before* the flip was seen. A flip counts from the sample that first
//!   showed it, which is never earlier than the flip itself, so sampling can only hide
//!   violations, never invent them. `bound` is [`Bounds::resync_ms`] (resync interval + 100 ms),
//!   and [`Bounds::unverified_ms`] for an instance that could not reach Redis within that long
//!   before the request (the one behind the fault proxy, or any while Redis was frozen, down or
//!   restarting, or while it reported itself degraded). When a Fresh answer
//!   that a flip concerns carries no batch (a warehouse that cannot tell), the figure is `None`:
//!   provenance unavailable, nothing claimed.
//! * **duplicate_loads** — warehouse queries beyond the first per (query, parameters, versions).
//!   Each is explained, or counted here: a store emptied or rolled back by a restart since the
//!   earlier load; Redis unreachable for a loader meanwhile (a fault that cuts Redis, or the
//!   instance reporting itself degraded); a lease takeover (the earlier load still running and
//!   older than its loader's lease); a retry after a failed load; an entry past its shortest TTL.
//! * **version_regressions** — a table's version going down between two truth samples (except
//!   across a fault that empties or rolls back Redis on purpose: that instant is the fault, not
//!   the system), or between two consecutive reports of one instance (never excused).
//! * **unanswered** — requests with neither a value nor an error within the maximum wait + 1 s
//!   (the worker records them so).
//! * **max_convergence_ms** — after the last fault ended, the longest any instance took until its
//!   versions equalled the truth.

use std::collections::{BTreeMap, HashMap};

use super::record::{
    AnswerRecord, FaultRecord, Line, LoadRecord, Outcome, ReportRecord, TruthSample, WallMs,
};

/// The shortest fresh TTL of the default policy (`min_ttl`): a reload after this is an expiry.
pub const MIN_TTL_MS: u64 = 60_000;

/// How late a Fresh answer may be to notice a flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Resync interval + 100 ms: how long a connected instance may take to see a flip.
    pub resync_ms: u64,
    /// For the instance behind the fault proxy: the longest it may go unverified
    /// (`--max-unverified`, 2 s by default where it exists).
    pub unverified_ms: u64,
    /// The instance behind the fault proxy.
    pub partitioned: u32,
}

/// What the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Requests made.
    pub answers: u64,
    /// Answered Fresh.
    pub fresh_answers: u64,
    /// Answered stale.
    pub stale_answers: u64,
    /// Answered with an error.
    pub errors: u64,
    /// Fresh answers with old data (`None`: provenance unavailable).
    pub stale_as_fresh: Option<u64>,
    /// Fresh answers a flip concerned that carried no batch.
    pub without_provenance: u64,
    /// Stale answers marked fresh per instance, with the first one in words.
    pub stale_by_instance: BTreeMap<u32, (u64, String)>,
    /// Stale answers marked fresh by what let them pass: a version the truth never had, the
    /// truth's version reused for newer data, or an instance behind the truth.
    pub stale_by_cause: BTreeMap<&'static str, u64>,
    /// Stale answers marked fresh by the kind of the latest fault started before the request (a
    /// hint where to look, not a proof of cause; `none` before the first fault).
    pub stale_after_fault: BTreeMap<String, u64>,
    /// Loads beyond one per (query, versions), all.
    pub duplicate_loads: u64,
    /// Of those, explained, by reason.
    pub explained: BTreeMap<&'static str, u64>,
    /// Version decreases (truth and instances).
    pub version_regressions: u64,
    /// Requests never answered.
    pub unanswered: u64,
    /// After the last fault, the longest time to convergence (ms); `None` when an instance never
    /// converged before the end.
    pub max_convergence_ms: Option<u64>,
    /// A few examples of violations, for the human summary.
    pub examples: Vec<String>,
}

impl Findings {
    /// Duplicate loads nobody explained.
    pub fn unexplained_duplicates(&self) -> u64 {
        self.duplicate_loads - self.explained.values().sum::<u64>()
    }
}

const EXAMPLES: usize = 8;

/// Runs every check.
pub fn check(
    lines: &[Line],
    truth: &[TruthSample],
    faults: &[FaultRecord],
    bounds: Bounds,
) -> Findings {
    let mut f = Findings::default();
    let mut answers = Vec::new();
    let mut loads = Vec::new();
    let mut reports: BTreeMap<u32, Vec<&ReportRecord>> = BTreeMap::new();
    for l in lines {
        match l {
            Line::Answer(a) => answers.push(a),
            Line::Load(l) => loads.push(l),
            Line::Report(r) => reports.entry(r.instance).or_default().push(r),
        }
    }
    for r in reports.values_mut() {
        r.sort_by_key(|r| r.t_ms);
    }
    for a in &answers {
        f.answers += 1;
        match &a.outcome {
            Outcome::Value { fresh: true, .. } => f.fresh_answers += 1,
            Outcome::Value { .. } => f.stale_answers += 1,
            Outcome::Error { .. } => f.errors += 1,
            Outcome::Unanswered => {
                f.unanswered += 1;
                push_example(&mut f.examples, || {
                    format!("unanswered: instance {} {}", a.instance, a.query)
                });
            }
        }
    }
    stale_as_fresh(&answers, truth, faults, &reports, bounds, &mut f);
    duplicate_loads(&loads, &reports, faults, bounds, &mut f);
    f.version_regressions = regressions(truth, &reports, faults, &mut f.examples);
    f.max_convergence_ms = convergence(truth, &reports, faults);
    f
}

fn push_example(examples: &mut Vec<String>, make: impl FnOnce() -> String) {
    if examples.len() < EXAMPLES {
        examples.push(make());
    }
}

/// Per table: (time first seen, batch exposed), in time order.
pub fn flips(truth: &[TruthSample]) -> BTreeMap<String, Vec<(WallMs, String)>> {
    let mut newest_held: BTreeMap<&str, &str> = BTreeMap::new();
    for s in truth {
        for (t, b) in &s.warehouse {
            let e = newest_held.entry(t).or_insert(b);
            if b.as_str() > *e {
                *e = b;
            }
        }
    }
    let mut out: BTreeMap<String, Vec<(WallMs, String)>> = BTreeMap::new();
    let mut top_version: BTreeMap<&str, u64> = BTreeMap::new();
    let mut top_label: BTreeMap<&str, &str> = BTreeMap::new();
    for w in truth.windows(2) {
        let (p, s) = (&w[0], &w[1]);
        for (table, &v) in &s.versions {
            let label = s.labels.get(table).filter(|l| !l.is_empty());
            // A restore after a restart brings back numbers and labels seen before: no flip.
            let new_version = v > top_version.get(table.as_str()).copied().unwrap_or(0);
            let new_label = label
                .is_some_and(|l| l.as_str() > top_label.get(table.as_str()).copied().unwrap_or(""));
            if v > top_version.get(table.as_str()).copied().unwrap_or(0) {
                top_version.insert(table, v);
            }
            if let Some(l) = label.filter(|_| new_label) {
                top_label.insert(table, l);
            }
            if v <= p.versions.get(table).copied().unwrap_or(0) || !(new_version || new_label) {
                continue;
            }
            let batch = match label {
                Some(l) if new_label => {
                    let cap = newest_held.get(table.as_str()).copied().unwrap_or("");
                    l.as_str().min(cap).to_string()
                }
                _ => match p.warehouse.get(table) {
                    Some(b) => b.clone(),
                    None => continue,
                },
            };
            out.entry(table.clone()).or_default().push((s.t_ms, batch));
        }
    }
    out
}

/// Why an answer at version `held` of `table` could pass as fresh at `t`, judged from the truth
/// then: the instance held a number the truth never had; or the truth's own number, reused for
/// newer data; or an older number (the instance behind the truth).
fn cause(truth: &[TruthSample], table: &str, held: u64, t: WallMs) -> &'static str {
    let before = &truth[..truth.partition_point(|s| s.t_ms <= t)];
    let ever = before
        .iter()
        .filter_map(|s| s.versions.get(table))
        .max()
        .copied()
        .unwrap_or(0);
    let now = before
        .last()
        .and_then(|s| s.versions.get(table))
        .copied()
        .unwrap_or(0);
    if held > ever {
        "version the truth never had"
    } else if held >= now {
        "the truth's version, reused for newer data"
    } else {
        "instance behind the truth"
    }
}

/// The newest batch flipped for a table at or before `t`.
fn flipped_by(flips: &[(WallMs, String)], t: WallMs) -> Option<&str> {
    flips
        .iter()
        .take_while(|(at, _)| *at <= t)
        .map(|(_, b)| b.as_str())
        .max()
}

/// Whether `instance` had reported itself degraded (Redis unreachable) between `from` and `to`.
fn degraded_between(
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    instance: u32,
    from: WallMs,
    to: WallMs,
) -> bool {
    reports.get(&instance).is_some_and(|rs| {
        rs.iter()
            .any(|r| r.degraded && r.t_ms + 1_000 >= from && r.t_ms <= to + 1_000)
    })
}

/// Whether `instance` may have been unable to reach the truth between `from` and `to`: a fault
/// that cuts Redis (for everyone, or for it), or its own report of being degraded.
fn cut_off(
    faults: &[FaultRecord],
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    instance: u32,
    from: WallMs,
    to: WallMs,
) -> bool {
    faults.iter().any(|x| {
        x.cuts_redis()
            && (x.instance.is_none() || x.instance == Some(instance))
            && overlaps(x, from, to)
    }) || degraded_between(reports, instance, from, to)
}

fn stale_as_fresh(
    answers: &[&AnswerRecord],
    truth: &[TruthSample],
    faults: &[FaultRecord],
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    b: Bounds,
    f: &mut Findings,
) {
    let flips = flips(truth);
    let mut violations = 0;
    for a in answers {
        let Outcome::Value {
            fresh: true,
            versions,
            batches,
            ..
        } = &a.outcome
        else {
            continue;
        };
        // An instance that could not reach the truth in the last `--max-unverified` (the one
        // behind the proxy, or any while Redis was frozen, down or restarting) is held to the
        // rule it promises then: unverified for at most that long.
        let bound = if a.instance == b.partitioned
            || cut_off(
                faults,
                reports,
                a.instance,
                a.start_ms.saturating_sub(b.unverified_ms),
                a.start_ms,
            ) {
            b.unverified_ms
        } else {
            b.resync_ms
        };
        let cutoff = a.start_ms.saturating_sub(bound);
        let mut bad = None;
        for (table, &held) in versions {
            let Some(due) = flips.get(table).and_then(|fl| flipped_by(fl, cutoff)) else {
                continue;
            };
            match batches.get(table) {
                None => f.without_provenance += 1,
                Some(have) if have.as_str() < due => {
                    let text = format!(
                        "stale as fresh: instance {} {} {:?} at {} served {table} batch {have} at version {held} marked Fresh, {due} flipped more than {bound} ms before",
                        a.instance, a.query, a.params, a.start_ms
                    );
                    bad = Some((text, cause(truth, table, held, a.start_ms)));
                }
                Some(_) => {}
            }
        }
        if let Some((text, cause)) = bad {
            violations += 1;
            *f.stale_by_cause.entry(cause).or_default() += 1;
            f.stale_by_instance.entry(a.instance).or_insert((0, text)).0 += 1;
            let latest = faults
                .iter()
                .filter(|x| x.start_ms <= a.start_ms)
                .max_by_key(|x| x.start_ms)
                .map_or("none", |x| x.kind.as_str());
            *f.stale_after_fault.entry(latest.to_string()).or_default() += 1;
        }
    }
    f.stale_as_fresh = (f.without_provenance == 0).then_some(violations);
}

fn overlaps(fault: &FaultRecord, from: WallMs, to: WallMs) -> bool {
    fault.start_ms <= to && fault.end_ms >= from
}

/// (query, parameters, versions): what one load per version means.
type LoadKey<'a> = (&'a str, &'a [(String, String)], Vec<(&'a String, &'a u64)>);

fn duplicate_loads(
    loads: &[&LoadRecord],
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    faults: &[FaultRecord],
    b: Bounds,
    f: &mut Findings,
) {
    let mut groups: HashMap<LoadKey<'_>, Vec<&LoadRecord>> = HashMap::new();
    for l in loads.iter().filter(|l| !l.versions.is_empty()) {
        let key = (
            l.query.as_str(),
            l.params.as_slice(),
            l.versions.iter().collect(),
        );
        groups.entry(key).or_default().push(l);
    }
    let degraded_between =
        |instance: u32, from: WallMs, to: WallMs| degraded_between(reports, instance, from, to);
    let lease_of = |instance: u32| {
        reports
            .get(&instance)
            .and_then(|rs| rs.first())
            .map_or(10_000, |r| r.lease_ms)
    };
    for group in groups.values_mut() {
        group.sort_by_key(|l| l.start_ms);
        for i in 1..group.len() {
            f.duplicate_loads += 1;
            let l = group[i];
            let earlier = &group[..i];
            let first = earlier[0];
            let reason = if earlier.iter().any(|p| !p.ok) {
                Some("retry after a failed load")
            } else if faults
                .iter()
                .any(|x| x.resets_store() && overlaps(x, first.start_ms, l.start_ms))
            {
                Some("store emptied or rolled back by a restart")
            } else if faults.iter().any(|x| {
                x.cuts_redis()
                    && (x.instance.is_none() || x.instance == Some(l.instance))
                    && overlaps(x, first.start_ms, l.end_ms)
            }) || degraded_between(l.instance, first.start_ms, l.end_ms)
                || earlier
                    .iter()
                    .any(|p| degraded_between(p.instance, p.start_ms, p.end_ms))
                || (l.instance == b.partitioned
                    && faults.iter().any(|x| {
                        x.kind == super::record::PARTITION && overlaps(x, first.start_ms, l.end_ms)
                    }))
            {
                Some("redis unreachable for a loader")
            } else if earlier.iter().any(|p| {
                p.end_ms > l.start_ms
                    && l.start_ms.saturating_sub(p.start_ms) >= lease_of(p.instance)
            }) {
                Some("lease takeover")
            } else if l.start_ms.saturating_sub(first.start_ms) >= MIN_TTL_MS {
                Some("entry expired (TTL)")
            } else {
                None
            };
            match reason {
                Some(r) => *f.explained.entry(r).or_default() += 1,
                None => push_example(&mut f.examples, || {
                    format!(
                        "unexplained duplicate load: instance {} {} {:?} at {:?} started {} ms after instance {}'s",
                        l.instance,
                        l.query,
                        l.params,
                        l.versions,
                        l.start_ms.saturating_sub(first.start_ms),
                        first.instance
                    )
                }),
            }
        }
    }
}

fn decreased(prev: &BTreeMap<String, u64>, next: &BTreeMap<String, u64>) -> Vec<String> {
    prev.iter()
        .filter(|(t, v)| next.get(*t).copied().unwrap_or(0) < **v)
        .map(|(t, _)| t.clone())
        .collect()
}

fn regressions(
    truth: &[TruthSample],
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    faults: &[FaultRecord],
    examples: &mut Vec<String>,
) -> u64 {
    let mut n = 0;
    for w in truth.windows(2) {
        let (p, s) = (&w[0], &w[1]);
        if faults
            .iter()
            .any(|x| x.resets_store() && overlaps(x, p.t_ms, s.t_ms))
        {
            continue;
        }
        for t in decreased(&p.versions, &s.versions) {
            n += 1;
            push_example(examples, || {
                format!(
                    "truth regression: {t} {} -> {} at {}",
                    p.versions[&t],
                    s.versions.get(&t).copied().unwrap_or(0),
                    s.t_ms
                )
            });
        }
    }
    for (instance, rs) in reports {
        for w in rs.windows(2) {
            for t in decreased(&w[0].versions, &w[1].versions) {
                n += 1;
                push_example(examples, || {
                    format!(
                        "instance {instance} regression: {t} {} -> {} at {}",
                        w[0].versions[&t],
                        w[1].versions.get(&t).copied().unwrap_or(0),
                        w[1].t_ms
                    )
                });
            }
        }
    }
    n
}

fn same_versions(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> bool {
    a.keys()
        .chain(b.keys())
        .all(|k| a.get(k).copied().unwrap_or(0) == b.get(k).copied().unwrap_or(0))
}

fn convergence(
    truth: &[TruthSample],
    reports: &BTreeMap<u32, Vec<&ReportRecord>>,
    faults: &[FaultRecord],
) -> Option<u64> {
    let Some(last) = faults.iter().map(|x| x.end_ms).max() else {
        return Some(0);
    };
    let mut worst = 0;
    for rs in reports.values() {
        let converged = rs.iter().filter(|r| r.t_ms >= last).find(|r| {
            let at = truth.partition_point(|s| s.t_ms <= r.t_ms);
            at > 0 && same_versions(&truth[at - 1].versions, &r.versions)
        });
        worst = worst.max(converged?.t_ms - last);
    }
    Some(worst)
}

#[cfg(test)]
mod tests;
