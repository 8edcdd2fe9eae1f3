//! What the chaos run writes down: every answer, load and version report of the instance
//! processes (one JSON line each), and what the checker process saw of the truth, the ETL and the
//! faults. The checks in [`super::check`] are pure functions over these records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the epoch, wall clock (every process of a run shares the machine's clock).
pub type WallMs = u64;

/// One line of an instance's record file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// A request and what came of it.
    Answer(AnswerRecord),
    /// A warehouse query the instance made.
    Load(LoadRecord),
    /// The instance's own version vector and state, sampled.
    Report(ReportRecord),
}

/// A request and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Which instance (0 is the one behind the fault proxy).
    pub instance: u32,
    /// The catalog query.
    pub query: String,
    /// Its parameters, in the query's order.
    pub params: Vec<(String, String)>,
    /// When the request started (wall ms).
    pub start_ms: WallMs,
    /// When it ended, answered or not.
    pub end_ms: WallMs,
    /// What it got.
    pub outcome: Outcome,
}

/// What a request got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A value.
    Value {
        /// Marked fresh.
        fresh: bool,
        /// Why not fresh, when stale.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stale_reason: Option<String>,
        /// cache, warehouse or coalesced.
        source: String,
        /// The versions it was computed at, per table it reads.
        versions: BTreeMap<String, u64>,
        /// The batch its data came from, per table it reads (empty when the warehouse cannot
        /// tell).
        batches: BTreeMap<String, String>,
    },
    /// A clear error.
    Error {
        /// The error, one line.
        message: String,
    },
    /// Neither within the maximum wait + 1 s.
    Unanswered,
}

/// A warehouse query an instance made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// Which instance.
    pub instance: u32,
    /// The catalog query.
    pub query: String,
    /// Its parameters.
    pub params: Vec<(String, String)>,
    /// The versions the engine loads at (empty if the engine did not say).
    pub versions: BTreeMap<String, u64>,
    /// When the query started.
    pub start_ms: WallMs,
    /// When it ended.
    pub end_ms: WallMs,
    /// Whether it succeeded.
    pub ok: bool,
}

/// An instance's view of the versions, sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRecord {
    /// Which instance.
    pub instance: u32,
    /// When sampled.
    pub t_ms: WallMs,
    /// Its version vector.
    pub versions: BTreeMap<String, u64>,
    /// Whether it ran degraded (its shared store unreachable).
    pub degraded: bool,
    /// Its lease on the shared tier, ms.
    pub lease_ms: u64,
}

/// The truth and the warehouse, sampled by the checker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthSample {
    /// When the truth was read (the warehouse was read just before).
    pub t_ms: WallMs,
    /// The versions hash.
    pub versions: BTreeMap<String, u64>,
    /// The batch label per table (set by batch bumps only).
    pub labels: BTreeMap<String, String>,
    /// The newest batch per table in the warehouse's `update_log`.
    pub warehouse: BTreeMap<String, String>,
}

/// One injected fault, with the window it was in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Its kind (a key of the report's `faults`).
    pub kind: String,
    /// When it started.
    pub start_ms: WallMs,
    /// When it was over (the server back, the partition healed, ...).
    pub end_ms: WallMs,
    /// The instance it targeted, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// What was done, for the human summary.
    pub detail: String,
}

impl FaultRecord {
    /// Whether the fault left the shared store (Redis) emptied or rolled back.
    pub fn resets_store(&self) -> bool {
        matches!(self.kind.as_str(), KILL_EMPTY | RESTART_SNAPSHOT)
    }

    /// Whether, while it lasted, instances could not reach Redis (some or all). A proxy delay
    /// counts: it can exceed the instance's Redis timeout (300 ms).
    pub fn cuts_redis(&self) -> bool {
        matches!(
            self.kind.as_str(),
            KILL_EMPTY
                | RESTART_SNAPSHOT
                | REDIS_STOP
                | BUMP_FAILS
                | PARTITION
                | PROXY_RESET
                | PROXY_DELAY
        )
    }
}

/// Fault kinds, as counted in the report.
pub const KILL_EMPTY: &str = "redis_kill_restart_empty";
/// Restart from an older snapshot.
pub const RESTART_SNAPSHOT: &str = "redis_restart_old_snapshot";
/// SIGSTOP / SIGCONT.
pub const REDIS_STOP: &str = "redis_sigstop";
/// `CLIENT KILL TYPE pubsub`.
pub const PUBSUB_KILL: &str = "client_kill_pubsub";
/// Instance 0 behind a blackholed proxy.
pub const PARTITION: &str = "partition";
/// Instance 0's proxy adds latency.
pub const PROXY_DELAY: &str = "proxy_delay";
/// Instance 0's connections reset.
pub const PROXY_RESET: &str = "proxy_reset";
/// A plain update from a foreign publisher.
pub const MSG_FORGED: &str = "msg_forged";
/// The same payload twice at once.
pub const MSG_DUPLICATE: &str = "msg_duplicate";
/// A payload seen earlier, again.
pub const MSG_REPLAYED: &str = "msg_replayed";
/// Not a valid message.
pub const MSG_GARBAGE: &str = "msg_garbage";
/// Versions far above the truth.
pub const MSG_HUGE_VERSION: &str = "msg_huge_version";
/// Redis frozen while an etl-complete prepares.
pub const BUMP_FAILS: &str = "bump_fails_after_preload";
/// Two etl-completes of different batches at once.
pub const CONCURRENT_ETL: &str = "concurrent_etl_complete";
/// One instance's warehouse loads hang.
pub const HUNG_LOAD: &str = "hung_load";
/// Loads longer than the (short) lease of the instance making them.
pub const LEASE_SHORTER: &str = "lease_shorter_than_load";

/// Every kind, in report order.
pub const ALL_KINDS: &[&str] = &[
    KILL_EMPTY,
    RESTART_SNAPSHOT,
    REDIS_STOP,
    PUBSUB_KILL,
    PARTITION,
    PROXY_DELAY,
    PROXY_RESET,
    MSG_FORGED,
    MSG_DUPLICATE,
    MSG_REPLAYED,
    MSG_GARBAGE,
    MSG_HUGE_VERSION,
    BUMP_FAILS,
    CONCURRENT_ETL,
    HUNG_LOAD,
    LEASE_SHORTER,
];

/// One `etl-complete` the checker's ETL driver ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlRecord {
    /// The batch label.
    pub batch: String,
    /// Tables whose load failed (a partial batch).
    pub failed: Vec<String>,
    /// When the run started.
    pub start_ms: WallMs,
    /// When etl-complete returned.
    pub end_ms: WallMs,
    /// Tables bumped, or the error.
    pub result: Result<Vec<String>, String>,
}
