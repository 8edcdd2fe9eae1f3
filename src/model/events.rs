//! What the bus carries: the [`Event`]s of the log and the live feed (updates, partial batches,
//! ETL runs, operator actions, refusals, incidents), and the `host:pid` [`origin`] that names who
//! logged one. Plain data, serialised as the event log's and the feed's JSON (a contract).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clock::Millis;

mod summary;
pub use summary::Summary;

/// A table that an update left behind, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    /// The table.
    pub table: String,
    /// Why it was not bumped ("update_log is at 20261126-09:00, batch 20261126-10:00 expected").
    pub reason: String,
}

fn yes() -> bool {
    true
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Tables were bumped: the baseline's `warehouse_updated`, with versions and batch.
    WarehouseUpdated {
        /// ISO-8601, as the baseline sends it.
        timestamp: String,
        /// Tables bumped.
        tables: Vec<String>,
        /// Their versions after the bump (every table's, so receivers can merge).
        versions: BTreeMap<String, u64>,
        /// The batch label.
        batch: String,
        /// A staging test trigger, as the baseline's admin endpoint sends.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        test: bool,
    },
    /// An ETL batch reached only some tables; those behind were not bumped.
    PartialUpdate {
        /// The batch.
        batch: String,
        /// Tables verified in `update_log` and bumped.
        verified: Vec<String>,
        /// Tables behind, each with its reason.
        behind: Vec<Behind>,
    },
    /// The ETL ran a batch.
    EtlRun {
        /// The batch.
        batch: String,
        /// Tables loaded.
        loaded: Vec<String>,
        /// Tables whose load failed, with the reason.
        failed: Vec<Behind>,
        /// Tables deferred.
        late: Vec<String>,
    },
    /// Hot keys of bumped tables were reloaded in the background (or `warm` ran).
    RefreshAhead {
        /// Tables concerned (empty: all).
        tables: Vec<String>,
        /// Keys scheduled.
        keys: u32,
        /// Keys reloaded.
        done: u32,
        /// Keys that failed.
        failed: u32,
    },
    /// Prepare, then flip, for the fleet: the numbers of a coming bump were reserved, and every
    /// running instance is asked to load its hot answers under them before the flip.
    Prepare {
        /// The batch.
        batch: String,
        /// The numbers reserved, by table.
        versions: BTreeMap<String, u64>,
        /// The instance that will flip (it waits for the others' [`EventKind::Prepared`]).
        requester: String,
    },
    /// One instance is loading (`finished` false: it heard the request and has keys to load)
    /// or has loaded its hot answers for a coming bump (see [`EventKind::Prepare`]).
    Prepared {
        /// The batch.
        batch: String,
        /// The instance.
        instance: String,
        /// Whether it is done; an unfinished one says it is at work, so the flip waits for it.
        #[serde(default = "yes")]
        finished: bool,
        /// Keys scheduled.
        keys: u32,
        /// Keys loaded.
        done: u32,
        /// Keys that failed.
        failed: u32,
    },
    /// An operator acted (invalidate, warm, simulate a partial update, switch strategy).
    OperatorAction {
        /// The action's name.
        action: String,
        /// Who (OS user).
        operator: String,
        /// From which host.
        host: String,
        /// The environment it ran in.
        env: String,
        /// What it targeted.
        targets: Vec<String>,
        /// `ok`, or why it was refused or failed.
        result: String,
    },
    /// A malformed message was received and ignored.
    BadInput {
        /// Where it came from (a channel).
        source: String,
        /// What is wrong with it.
        reason: String,
        /// Its first bytes, escaped.
        excerpt: String,
    },
    /// Something went wrong in the cache's own machinery (store down, bus gap, ...).
    Incident {
        /// What.
        message: String,
    },
}

impl EventKind {
    /// The event's type name (`warehouse_updated`, `partial_update`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::WarehouseUpdated { .. } => "warehouse_updated",
            EventKind::PartialUpdate { .. } => "partial_update",
            EventKind::EtlRun { .. } => "etl_run",
            EventKind::RefreshAhead { .. } => "refresh_ahead",
            EventKind::Prepare { .. } => "prepare",
            EventKind::Prepared { .. } => "prepared",
            EventKind::OperatorAction { .. } => "operator_action",
            EventKind::BadInput { .. } => "bad_input",
            EventKind::Incident { .. } => "incident",
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log; strictly increasing.
    pub seq: u64,
    /// When it was logged (ms since the epoch).
    pub at_ms: Millis,
    /// The instance that logged it (`host:pid`).
    pub origin: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// This process, as events name it: `host:pid`.
pub fn origin() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// The machine's host name (`unknown` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length and gethostname writes at most that many
    // bytes; a name that fills the buffer without a NUL is cut at the buffer's end below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_printable() {
        let h = hostname();
        assert!(!h.is_empty() && !h.chars().any(char::is_control));
    }
}
