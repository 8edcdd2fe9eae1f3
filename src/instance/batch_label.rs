//! Batch labels: the form every label must have (labels are compared as text, so they must sort
//! in time order), and the next free label for a run now.

use std::time::Duration;

use super::{Instance, InstanceError};
use crate::model::clock::{Millis, format_batch_label};

impl Instance {
    /// A batch label for a run now, later than any batch the warehouse has seen: the minute's
    /// label, with seconds (and then a counter) added when that one is taken.
    pub async fn next_batch_label(&self) -> Result<String, InstanceError> {
        let now = self.inner.engine.clock().now_ms();
        let current = self
            .inner
            .warehouse
            .current_batch()
            .await?
            .unwrap_or_default();
        let minute = format_batch_label(now);
        if minute > current {
            return Ok(minute);
        }
        let secs = format!("{minute}:{:02}", (now / 1000) % 60);
        if secs > current {
            return Ok(secs);
        }
        Ok(format!("{current}.1"))
    }
}

/// How far past the clock a batch label may be (clocks of the ETL host and ours differ a little).
pub const BATCH_LABEL_TOLERANCE: Duration = Duration::from_secs(15 * 60);

/// Batch labels are compared as text, so they must sort in time order: `YYYYMMDD-HH:MM`, with
/// optional seconds (`:SS`) and sequence suffixes (`.1`), as [`Instance::next_batch_label`] makes
/// them. A label later than `now_ms` plus [`BATCH_LABEL_TOLERANCE`] is refused: it would sort
/// above every real batch to come and stop them from ever being applied.
pub fn check_batch_label(batch: &str, now_ms: Millis) -> Result<(), InstanceError> {
    let bad = |why: &str| {
        InstanceError::BadInput(format!(
            "bad batch label `{}`: {why}; use YYYYMMDD-HH:MM (optionally :SS and .N), e.g. 20261126-10:00",
            crate::bus::excerpt(batch.as_bytes(), 40)
        ))
    };
    let b = batch.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) = (
        digits(0..4),
        digits(4..6),
        digits(6..8),
        digits(9..11),
        digits(12..14),
    ) else {
        return Err(bad("not a date and time"));
    };
    if b.get(8) != Some(&b'-') || b.get(11) != Some(&b':') {
        return Err(bad("not a date and time"));
    }
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 {
        return Err(bad("no such time"));
    }
    let mut rest = &batch[14..];
    if let Some(after) = rest.strip_prefix(':') {
        let secs = after
            .get(..2)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()));
        match secs.and_then(|s| s.parse::<u32>().ok()) {
            Some(s) if s <= 59 => rest = &after[2..],
            _ => return Err(bad("bad seconds")),
        }
    }
    while let Some(after) = rest.strip_prefix('.') {
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return Err(bad("bad sequence suffix"));
        }
        rest = &after[n..];
    }
    if !rest.is_empty() {
        return Err(bad("unexpected text after the time"));
    }
    let latest =
        format_batch_label(now_ms.saturating_add(crate::model::num::ms(BATCH_LABEL_TOLERANCE)));
    if batch[..14] > *latest.as_str() {
        return Err(InstanceError::BadInput(format!(
            "batch label `{batch}` is in the future (now {}): a label sorts above every batch to come, so it would stop them from being applied",
            format_batch_label(now_ms)
        )));
    }
    Ok(())
}
