//! The live consistency audit: each instance checks a sample of the fresh answers it served
//! (see [`crate::engine::audit`]) against the version truth and the warehouse's `update_log`.
//!
//! An answer served as fresh is a violation when, for a table it reads, the truth had already
//! moved past it — a higher version, or (when the answer says which batch its data came from) a
//! newer batch — for longer than the bound the design allows (one re-read of the truth plus
//! 100 ms) before it was served. A truth that names a batch the warehouse's `update_log` has
//! not reached is a violation too. Each violation is counted and raised as an incident in the
//! feed; the console shows "audited N · M violations".

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Instance;
use crate::engine::audit::Sample;
use crate::model::versions::VersionVector;
use crate::warehouse::UpdateLogEntry;

/// Slack beyond the re-read interval before an answer behind the truth counts as a violation.
const SLACK: Duration = Duration::from_millis(100);

impl Instance {
    /// Checks the answers sampled since the last audit; returns how many were checked.
    pub(super) async fn audit_answers(&self) -> usize {
        let samples = self.inner.engine.take_audit_samples();
        if samples.is_empty() {
            return 0;
        }
        let Ok(truth) = self.inner.bus.versions().await else {
            // Put off: the answers are checked when the truth can be read (they are not counted).
            return 0;
        };
        // Metadata only; an unreachable warehouse only skips that part of the check.
        let log = self.inner.warehouse.update_log().await.ok();
        let bound = crate::model::num::ms(self.inner.config.poll_interval + SLACK);
        let mut violations = Vec::new();
        for sample in &samples {
            violations.extend(self.check(sample, &truth, log.as_deref(), bound));
        }
        let counters = &self.inner.counters;
        counters
            .audit_checked
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        counters
            .audit_violations
            .fetch_add(violations.len() as u64, Ordering::Relaxed);
        for message in violations.into_iter().take(3) {
            let message = format!("CONSISTENCY VIOLATION: {message}");
            self.incident(tracing::Level::ERROR, message).await;
        }
        samples.len()
    }

    /// What is wrong with one sampled answer, if anything.
    fn check(
        &self,
        sample: &Sample,
        truth: &VersionVector,
        log: Option<&[UpdateLogEntry]>,
        bound_ms: u64,
    ) -> Vec<String> {
        let tables = self.inner.engine.catalog().tables();
        let data_batches = data_batches(&sample.entry.value);
        let mut wrong = Vec::new();
        for (t, version) in sample.entry.versions.iter() {
            let name = tables.name(t);
            let flipped_ms = truth.table_updated_ms(t);
            let long_before = flipped_ms.saturating_add(bound_ms) < sample.served_ms;
            if version < truth.version(t) && long_before {
                wrong.push(format!(
                    "an answer reading {name} at v{version} was served as fresh {} ms after the truth moved to v{}",
                    sample.served_ms - flipped_ms,
                    truth.version(t)
                ));
            }
            let truth_batch = truth.table_batch(t);
            if let Some(batch) = data_batches.as_ref().and_then(|b| b.get(name))
                && batch.as_str() < truth_batch
                && long_before
            {
                wrong.push(format!(
                    "an answer with {name} data of batch {batch} was served as fresh after the truth flipped to batch {truth_batch}"
                ));
            }
            if let Some(log) = log
                && let Some(entry) = log.iter().find(|e| e.table == name)
                && !truth_batch.is_empty()
                && entry.batch.as_str() < truth_batch
            {
                wrong.push(format!(
                    "the truth says {name} is at batch {truth_batch}, but the warehouse's update_log is at {}",
                    entry.batch
                ));
            }
        }
        wrong
    }
}

/// The batch each table's data came from, when the answer says (`"batches"` in its value).
fn data_batches(value: &str) -> Option<std::collections::BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Provenance {
        #[serde(default)]
        batches: std::collections::BTreeMap<String, String>,
    }
    serde_json::from_str::<Provenance>(value)
        .ok()
        .map(|p| p.batches)
        .filter(|b| !b.is_empty())
}
