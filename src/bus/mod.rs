//! The bus: where versions are kept true and events travel.
//!
//! A [`Bus`] owns three things every engine instance shares:
//! * the **version truth** — per table, its version, the last batch applied and when. A bump of
//!   several tables, the seed's `warehouse_version` / `warehouse_last_update`, the event-log entry
//!   and the publish happen as one atomic step;
//! * a **durable, bounded event log** with sequence numbers, so a late reader (a console started
//!   at 10:05) sees history and a reader that missed messages can catch up;
//! * a **live feed** (`tokio::sync::broadcast`): the fast path. A reader that falls behind gets
//!   `Lagged(n)` — how many events it missed — and re-reads the truth.
//!
//! Pub/sub is only the fast path: engines re-read the truth on an interval and after every
//! reconnect, so a lost message costs at most one interval of staleness.
//!
//! Implementations: [`LocalBus`] (embedded: in-process feed over a SQLite state file, or in memory)
//! and the Redis bus (pub/sub, a stream and a hash).
//!
//! # Wire format
//! Channel `warehouse_updated` carries the seed's JSON — `{"timestamp": ISO-8601, "tables": [..]}` —
//! with optional `versions`, `batch` and `test`. [`parse_warehouse_updated`] accepts any publisher's
//! payload (the seed's Python job, `redis-cli PUBLISH`), ignores unknown fields, and turns anything
//! malformed into a [`BadInput`] that is counted and logged, never into a panic or an invalidation.

pub mod local;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::stats::{LatencySummary, StatsSnapshot};
use crate::model::BoxFuture;
use crate::model::clock::{Millis, SharedClock};
use crate::model::entry::TableKeys;
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, Tables, VersionVector};

pub use local::LocalBus;

/// A message from [`CHANNEL`] published by someone else (the seed's job, `redis-cli`): the
/// instance checks it and applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The channel it came on.
    pub channel: String,
    /// Its payload, unchecked.
    pub payload: Vec<u8>,
}

/// Which logged events a process has already put on its feed: every seq at or below `watermark`,
/// and the ones in `above`.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) watermark: u64,
    pub(crate) above: std::collections::BTreeSet<u64>,
}

impl Delivered {
    /// Marks `seq` delivered; false if it already was.
    pub(crate) fn mark(&mut self, seq: u64) -> bool {
        if seq <= self.watermark || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
        // A gap that never fills (events trimmed from the log) must not hold memory forever.
        if self.above.len() > 10_000
            && let Some(&first) = self.above.iter().next()
        {
            self.watermark = first - 1;
            while self.above.remove(&(self.watermark + 1)) {
                self.watermark += 1;
            }
        }
        true
    }

    /// Counts everything up to `seq` as delivered, keeping what was delivered above it.
    pub(crate) fn raise_to(&mut self, seq: u64) {
        if seq <= self.watermark {
            return;
        }
        self.watermark = seq;
        self.above = self.above.split_off(&(seq + 1));
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }
}

/// The pub/sub channel of the seed's protocol.
pub const CHANNEL: &str = "warehouse_updated";

/// Largest payload accepted on [`CHANNEL`].
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// A bus failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// What a bump did.
#[derive(Debug, Clone)]
pub struct BumpOutcome {
    /// The version truth after it.
    pub versions: Arc<VersionVector>,
    /// Tables bumped (none if the batch was already applied to all of them).
    pub bumped: Vec<TableId>,
    /// The `warehouse_updated` event logged and published, if anything was bumped.
    pub event: Option<Event>,
    /// Tables whose reserved number had been overtaken (another bump took a higher one first):
    /// they were bumped to a new number, so what was prepared at the reserved one is never used.
    pub overtaken: Vec<TableId>,
    /// A message applied once ([`BumpRequest::once`]) had been applied already within
    /// [`SEED_MESSAGE_WINDOW`]: nothing was done.
    pub duplicate: bool,
}

/// How long a foreign seed-format message is remembered as applied. Every subscriber receives a
/// message within milliseconds of its publication, so one message seen by N instances bumps once;
/// the same payload published again after the window is a new update and bumps again. (A late
/// delivery past the window bumps twice: a spare reload, never an answer served stale.)
pub const SEED_MESSAGE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// One bump, as [`Bus::bump_with`] takes it.
///
/// # Version numbers are never reused
/// Every number a table's version takes is allocated by the truth, atomically, above both the
/// current version and every number reserved before ([`Bus::reserve`]). A prepare-then-flip
/// reserves its numbers first, loads answers under them, then bumps to them; if that bump never
/// happens (it failed, the process died) the numbers are burned, so answers prepared for one batch
/// can never pass for another. A reserved number overtaken by a bump in between is replaced by a
/// new one ([`BumpOutcome::overtaken`]).
#[derive(Debug, Clone, Copy)]
pub struct BumpRequest<'a> {
    /// The tables to bump.
    pub tables: &'a [TableId],
    /// The batch label.
    pub batch: &'a str,
    /// How.
    pub mode: BumpMode,
    /// The seed's staging flag.
    pub test: bool,
    /// For [`BumpMode::Advance`]: the numbers reserved for `tables` (same order), or empty to
    /// allocate new ones.
    pub reserved: &'a [u64],
    /// Apply at most once per [`SEED_MESSAGE_WINDOW`] for this message id: the dedupe mark and the
    /// bump are one atomic step, so nothing is marked applied unless it was bumped.
    pub once: Option<u64>,
}

impl<'a> BumpRequest<'a> {
    /// A bump of `tables` to `batch` as `mode` says, allocating new numbers.
    pub fn new(tables: &'a [TableId], batch: &'a str, mode: BumpMode) -> Self {
        Self {
            tables,
            batch,
            mode,
            test: false,
            reserved: &[],
            once: None,
        }
    }
}

/// How to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpMode {
    /// Bump only tables whose last applied batch is older than the batch (ETL completions).
    Advance,
    /// Bump every named table (operator invalidation, seed publishers without versions).
    Force,
    /// Bump nothing: record `batch` as the last batch of each named table that has none yet. An
    /// empty truth (a new system) adopts what the warehouse's `update_log` says, so version 0
    /// stands for the data already loaded and an old batch is not mistaken for a new one.
    Adopt,
}

/// An instance silent for longer than this has missed three heartbeats (it reports about once a
/// second): it cannot reach the bus, so it cannot have confirmed the version truth either, and is
/// shown as unverified until it reports again (as lost after [`LOST_AFTER`]).
pub const SILENT_UNVERIFIED: std::time::Duration = std::time::Duration::from_secs(3);
/// An instance silent for longer than this is shown as lost.
pub const LOST_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// What one instance reports about itself, about once a second: its heartbeat, and what the
/// console sums across instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// `host:pid#n`.
    pub id: String,
    /// When it was made (ms since the epoch, the bus's clock: liveness is shared state, whatever
    /// clock the instance's simulation runs on).
    pub at_ms: Millis,
    /// The strategy the instance runs.
    pub strategy: String,
    /// Its counters (cumulative) and latency percentiles (since start).
    pub stats: StatsSnapshot,
    /// User latency over the last report interval.
    pub recent_latency: LatencySummary,
    /// Its live entries per table, current and old versions.
    pub table_keys: Vec<TableKeys>,
    /// Malformed messages it received.
    pub bad_events: u64,
    /// Feed events it missed.
    pub lagged_events: u64,
    /// Whether it runs degraded (its cache store unreachable).
    pub degraded: bool,
    /// Whether it could not confirm the version truth for longer than its `max-unverified`
    /// bound when it reported (its cached answers are then served as stale).
    #[serde(default)]
    pub unverified: bool,
    /// Fresh answers its consistency audit checked.
    #[serde(default)]
    pub audit_checked: u64,
    /// Of those, the ones served as fresh behind the truth.
    #[serde(default)]
    pub audit_violations: u64,
}

/// The shared version truth, event log and live feed.
pub trait Bus: Send + Sync + 'static {
    /// A short, secret-free description ("embedded", "redis://host:6379/0").
    fn describe(&self) -> String;

    /// The clock shared state is stamped with: event times, bump times, heartbeats and the
    /// delivery window. The wall clock in every process that shares this bus (an accelerated
    /// demo clock stays inside its simulation); a manual clock in tests.
    fn clock(&self) -> &SharedClock;

    /// The version truth.
    fn versions(&self) -> BoxFuture<'_, Result<Arc<VersionVector>, BusError>>;

    /// Atomically bumps `tables` to `batch` (see [`BumpMode`]), updates the seed's keys, logs and
    /// publishes `warehouse_updated` — or does nothing at all.
    fn bump<'a>(
        &'a self,
        tables: &'a [TableId],
        batch: &'a str,
        mode: BumpMode,
        test: bool,
    ) -> BoxFuture<'a, Result<BumpOutcome, BusError>> {
        let mut request = BumpRequest::new(tables, batch, mode);
        request.test = test;
        self.bump_with(request)
    }

    /// The one bump primitive (see [`BumpRequest`]): dedupe mark, number allocation, versions,
    /// the seed's keys, the log entry and the publish, as one atomic step or not at all.
    fn bump_with<'a>(
        &'a self,
        request: BumpRequest<'a>,
    ) -> BoxFuture<'a, Result<BumpOutcome, BusError>>;

    /// The highest number reserved so far for each table (table order; 0 where none).
    fn reserved(&self) -> BoxFuture<'_, Result<Vec<u64>, BusError>>;

    /// Reserves the next version number of each of `tables` (same order): above the current
    /// version and above anything reserved before, so no two callers ever get the same number.
    fn reserve<'a>(&'a self, tables: &'a [TableId]) -> BoxFuture<'a, Result<Vec<u64>, BusError>>;

    /// Logs and publishes an event.
    fn publish(&self, kind: EventKind) -> BoxFuture<'_, Result<Event, BusError>>;

    /// The live feed.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// Up to `limit` logged events with `seq > after`, oldest first.
    fn history(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>, BusError>>;

    /// Delivers to this process's subscribers what other instances logged that it has not seen
    /// (after a reconnect, or for buses that only poll); returns how many.
    fn catch_up(&self) -> BoxFuture<'_, Result<usize, BusError>>;

    /// Records an instance's latest report; doubles as its heartbeat.
    fn report<'a>(&'a self, report: &'a InstanceReport) -> BoxFuture<'a, Result<(), BusError>>;

    /// The latest report of every instance heard from within `live_ms` of the bus's clock.
    fn reports(&self, live_ms: u64) -> BoxFuture<'_, Result<Vec<InstanceReport>, BusError>>;

    /// Raises every table's version (and batch) to at least what `versions` holds, without an
    /// event, and records `versions.epoch` as the truth's epoch: how a truth that lost its state
    /// (a Redis restarted empty or restored from an older snapshot) is re-seeded from the highest
    /// versions an engine has seen, so versions never go backwards. Returns how many tables went
    /// up.
    fn raise<'a>(&'a self, versions: &'a VersionVector) -> BoxFuture<'a, Result<usize, BusError>>;

    /// Messages from other publishers on [`CHANNEL`], for the instance to check and apply (a bus
    /// that cannot receive them has none).
    fn raw_messages(&self) -> Option<broadcast::Receiver<RawMessage>> {
        None
    }
}

/// The wire form of [`EventKind::WarehouseUpdated`], as published on [`CHANNEL`].
pub fn warehouse_updated_payload(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::WarehouseUpdated {
            timestamp,
            tables,
            versions,
            batch,
            test,
        } => {
            let mut v = serde_json::json!({
                "timestamp": timestamp,
                "tables": tables,
                "versions": versions,
                "batch": batch,
            });
            if *test && let Some(o) = v.as_object_mut() {
                o.insert("test".into(), true.into());
            }
            Some(v.to_string())
        }
        _ => None,
    }
}

/// Every table's version, by name: the `versions` field of the wire format.
pub fn versions_by_name(v: &VersionVector, tables: &Tables) -> BTreeMap<String, u64> {
    tables
        .ids()
        .map(|t| (tables.name(t).to_string(), v.version(t)))
        .collect()
}

/// A message from [`CHANNEL`], checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Tables named (all tables when the payload names none, as the seed's test trigger does).
    pub tables: Vec<TableId>,
    /// Versions, when the publisher sent them (freshcache does; the seed does not).
    pub versions: Option<Vec<(TableId, u64)>>,
    /// The batch label, if sent.
    pub batch: Option<String>,
    /// The timestamp, if sent.
    pub timestamp: Option<String>,
    /// The seed's staging flag.
    pub test: bool,
    /// A hash of the payload: the identity of the message for exactly-once application.
    pub id: u64,
}

/// A message that was refused, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadInput {
    /// What is wrong.
    pub reason: String,
    /// The payload's first bytes, with control characters escaped.
    pub excerpt: String,
}

/// The first `max` characters of `bytes`, with control and escape characters made visible.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max * 4)]);
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > max || bytes.len() > max * 4 {
        out.push('…');
    }
    out
}

fn clean_label(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Checks a payload from [`CHANNEL`].
pub fn parse_warehouse_updated(payload: &[u8], tables: &Tables) -> Result<Incoming, BadInput> {
    let bad = |reason: String| BadInput {
        reason,
        excerpt: excerpt(payload, 120),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(bad(format!(
            "payload of {} bytes is larger than {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("not JSON: {}", clean_label(&e.to_string()))))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let string_field = |key: &str| -> Result<Option<String>, BadInput> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => {
                if s.len() > 64 || s.chars().any(char::is_control) {
                    Err(bad(format!(
                        "`{key}` must be a short string without control characters"
                    )))
                } else {
                    Ok(Some(s.clone()))
                }
            }
            Some(_) => Err(bad(format!("`{key}` must be a string"))),
        }
    };
    let timestamp = string_field("timestamp")?;
    let batch = string_field("batch")?;
    let test = match obj.get("test") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`test` must be true or false".into())),
    };
    let table_id = |name: &str| tables.id(name).map_err(|e| bad(e.to_string()));
    let named = match obj.get("tables") {
        None | Some(serde_json::Value::Null) => tables.ids().collect(),
        Some(serde_json::Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad("`tables` is empty: it names nothing to update".into()));
            }
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let name = item
                    .as_str()
                    .ok_or_else(|| bad("`tables` must be a list of table names".into()))?;
                let id = table_id(name)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
        Some(_) => return Err(bad("`tables` must be a list of table names".into())),
    };
    let versions = match obj.get("versions") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(map)) => {
            let mut out = Vec::with_capacity(map.len());
            for (name, v) in map {
                let id = table_id(name)?;
                let n = v.as_u64().ok_or_else(|| {
                    bad(format!(
                        "version of `{}` must be a whole number >= 0",
                        clean_label(name)
                    ))
                })?;
                out.push((id, n));
            }
            Some(out)
        }
        Some(_) => return Err(bad("`versions` must be an object of table: version".into())),
    };
    Ok(Incoming {
        tables: named,
        versions,
        batch,
        timestamp,
        test,
        id: xxhash_rust::xxh3::xxh3_64(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        Tables::new(["sales", "inventory", "customers"]).unwrap()
    }

    #[test]
    fn delivered_marks_each_sequence_once_and_raising_keeps_what_is_above() {
        let mut d = Delivered::default();
        assert!(d.mark(1) && d.mark(3) && !d.mark(3) && !d.mark(1));
        assert_eq!(d.watermark, 1);
        assert!(d.mark(2));
        assert_eq!((d.watermark, d.above.len()), (3, 0), "the gap closed");
        assert!(d.mark(7) && d.mark(9));
        d.raise_to(6);
        assert_eq!(d.watermark, 7, "6 raised, 7 was already there");
        assert!(!d.mark(5) && !d.mark(9) && d.mark(8));
        assert_eq!(d.watermark, 9);
        d.raise_to(4);
        assert_eq!(d.watermark, 9, "never lowered");
    }

    #[test]
    fn the_seeds_payload_is_accepted() {
        let t = tables();
        let m = parse_warehouse_updated(
            br#"{"timestamp": "2024-11-02T10:00:03.123456", "tables": ["sales", "inventory", "customers"]}"#,
            &t,
        )
        .unwrap();
        assert_eq!(m.tables.len(), 3);
        assert!(m.versions.is_none());
        // The seed's staging trigger names no tables: all of them.
        let m = parse_warehouse_updated(br#"{"timestamp": "x", "test": true}"#, &t).unwrap();
        assert!(m.test);
        assert_eq!(m.tables.len(), 3);
        // Unknown fields are ignored; versions are read.
        let m = parse_warehouse_updated(
            br#"{"tables": ["sales"], "versions": {"sales": 4, "inventory": 2}, "batch": "b", "extra": [1]}"#,
            &t,
        )
        .unwrap();
        assert_eq!(m.versions.unwrap().len(), 2);
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let t = tables();
        let big = format!(
            "{{\"tables\": [\"sales\"], \"pad\": \"{}\"}}",
            "x".repeat(10 << 20)
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not JSON"),
            (b"[1,2]".to_vec(), "not a JSON object"),
            (br#"{"tables": "sales"}"#.to_vec(), "must be a list"),
            (br#"{"tables": [1]}"#.to_vec(), "must be a list"),
            (br#"{"tables": []}"#.to_vec(), "names nothing"),
            (
                br#"{"tables": ["salez"]}"#.to_vec(),
                "unknown table `salez`",
            ),
            (b"{\"tables\": [\"sa\x1b[2Jles\"]}".to_vec(), "not JSON"),
            (
                br#"{"tables": ["sa\u001b[2Jles"]}"#.to_vec(),
                "unknown table",
            ),
            (br#"{"versions": {"sales": -1}}"#.to_vec(), "whole number"),
            (br#"{"batch": 7}"#.to_vec(), "must be a string"),
            (br#"{"test": "yes"}"#.to_vec(), "true or false"),
            (big.into_bytes(), "larger than"),
        ];
        for (payload, expected) in cases {
            let e = parse_warehouse_updated(&payload, &t).unwrap_err();
            assert!(
                e.reason.contains(expected),
                "{:?}: {}",
                excerpt(&payload, 40),
                e.reason
            );
            assert!(
                !e.reason.contains('\x1b') && !e.excerpt.contains('\x1b'),
                "{e:?}"
            );
            assert!(e.excerpt.chars().count() <= 121);
        }
    }

    #[test]
    fn our_payload_round_trips() {
        let t = tables();
        let kind = EventKind::WarehouseUpdated {
            timestamp: "2026-11-26T10:00:00.000Z".into(),
            tables: vec!["sales".into()],
            versions: [("sales".to_string(), 3), ("inventory".to_string(), 1)].into(),
            batch: "20261126-10:00".into(),
            test: false,
        };
        let wire = warehouse_updated_payload(&kind).unwrap();
        let m = parse_warehouse_updated(wire.as_bytes(), &t).unwrap();
        assert_eq!(m.tables, vec![TableId(0)]);
        assert_eq!(m.batch.as_deref(), Some("20261126-10:00"));
        let e = Event {
            seq: 9,
            at_ms: 1,
            origin: "h:1".into(),
            kind,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"type\":\"warehouse_updated\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
