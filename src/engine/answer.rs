//! What `get` returns: the value, how fresh it is, the versions it was computed at, and where it
//! came from — everything a chatbot needs to say "figures as of 10:00".

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::model::entry::{Entry, Stamp};

/// Why an answer is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum StaleReason {
    /// Its fresh TTL ended; a refresh is running (stale-while-revalidate).
    Revalidating,
    /// A newer version of a table it reads exists and is loading (`on_update = serve-stale`).
    Updating,
    /// The warehouse failed; this is the last good answer within the stale-if-error limit.
    /// (A boxed `str`: every `get` moves an `Answer`, and this keeps it small.)
    WarehouseError(Box<str>),
    /// The warehouse did not answer within the maximum wait.
    WarehouseSlow,
    /// This instance has not confirmed the version truth for longer than its `max-unverified`
    /// bound (its link to the truth is down or partitioned): a newer version may exist.
    VersionsUnverified,
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::Revalidating => f.write_str("expired, refreshing"),
            StaleReason::Updating => f.write_str("new data loading"),
            StaleReason::WarehouseError(e) => write!(f, "warehouse error: {e}"),
            StaleReason::WarehouseSlow => f.write_str("warehouse slow"),
            StaleReason::VersionsUnverified => f.write_str("versions unverified"),
        }
    }
}

/// How fresh an answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Computed at the current versions of every table it reads, within its TTL.
    Fresh,
    /// Older than that; `age` is the time since it was computed.
    Stale {
        /// Time since the answer was computed.
        age: Duration,
        /// Why an older answer was served.
        reason: StaleReason,
    },
}

impl Freshness {
    /// Whether it is [`Freshness::Fresh`].
    pub fn is_fresh(&self) -> bool {
        matches!(self, Freshness::Fresh)
    }
}

/// Where an answer came from.
///
/// A whole word rather than a byte: an [`Answer`] is built in place and then moved, and the move
/// reads this field's word back at once; a byte stored there cannot be forwarded to that read,
/// which stalled every hit for about a dozen cycles (perf: a tenth of a hit's samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u64)]
pub enum Source {
    /// The cache.
    Cache,
    /// A warehouse query this request started.
    Warehouse,
    /// Another caller's warehouse query, which this request joined.
    Coalesced,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Cache => "cache",
            Source::Warehouse => "warehouse",
            Source::Coalesced => "coalesced",
        })
    }
}

/// An answer to a `get`.
#[derive(Debug, Clone)]
pub struct Answer {
    entry: Arc<Entry>,
    /// How fresh it is.
    pub freshness: Freshness,
    /// Where it came from.
    pub source: Source,
}

impl Answer {
    pub(crate) fn new(entry: Arc<Entry>, freshness: Freshness, source: Source) -> Self {
        Self {
            entry,
            freshness,
            source,
        }
    }

    /// The answer as JSON text.
    pub fn value(&self) -> &str {
        &self.entry.value
    }

    /// The table versions it was computed at.
    pub fn versions(&self) -> &Stamp {
        &self.entry.versions
    }

    /// When it was computed (ms since the epoch).
    pub fn computed_at_ms(&self) -> u64 {
        self.entry.created_ms
    }

    /// How long the warehouse took to compute it.
    pub fn load_time(&self) -> Duration {
        Duration::from_millis(self.entry.load_ms)
    }

    /// The underlying entry.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}
