//! Samples of the fresh answers an engine serves, for a live consistency audit.
//!
//! Checking every answer against the truth would cost a round trip per request; checking none
//! leaves operators to trust. The engine keeps a handful of the fresh answers it served (about
//! one hit in [`HIT_ODDS`] × [`HIT_SAMPLE`](super::stats::HIT_SAMPLE), one slower answer in [`SLOW_ODDS`]), and the instance checks
//! them against the version truth and the warehouse's `update_log` about once a second —
//! metadata only, never re-running a query (the idea of Meta's Polaris, made cheap). The hot
//! path pays one random draw on the hits it already samples for timing, and never waits: a
//! sample that meets the lock taken is dropped.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::clock::{Millis, coarse_now_ms};
use crate::model::entry::Entry;

/// Of the hits already sampled for timing (1 in [`HIT_SAMPLE`](super::stats::HIT_SAMPLE)), one in
/// this many is audited.
pub const HIT_ODDS: u32 = 16;
/// Of the fresh answers that took the slow path (shared-tier hits, loads), one in this many.
pub const SLOW_ODDS: u32 = 16;
/// Samples kept between two audits, at most.
const CAPACITY: usize = 32;

/// One fresh answer as it was served.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The entry served (its versions and value).
    pub entry: Arc<Entry>,
    /// When it was served (wall clock, ms since the epoch).
    pub served_ms: Millis,
}

/// The samples waiting for the next audit.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    waiting: Mutex<Vec<Sample>>,
}

impl Samples {
    /// Keeps `entry` with a chance of one in `odds`, unless the buffer is full or busy.
    #[inline]
    pub(crate) fn offer(&self, entry: &Arc<Entry>, odds: u32) {
        if fastrand::u32(..odds) != 0 {
            return;
        }
        if let Some(mut waiting) = self.waiting.try_lock()
            && waiting.len() < CAPACITY
        {
            waiting.push(Sample {
                entry: entry.clone(),
                served_ms: coarse_now_ms(),
            });
        }
    }

    /// Takes every sample waiting.
    pub(crate) fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.waiting.lock())
    }
}
