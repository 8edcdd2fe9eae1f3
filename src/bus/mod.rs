//! The bus: where versions are kept true and events travel.
//!
//! A [`Bus`] owns three things every engine instance shares:
//! * the **version truth** — per table, its version, the last batch applied and when. A bump of
//!   several tables, the baseline's `warehouse_version` / `warehouse_last_update`, the event-log entry
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
//! and the Redis bus (pub/sub, a stream and a hash). This file holds the [`Bus`] trait and what it
//! takes and returns; the events are in `event`, and what a process has already put on its feed
//! (so a catch-up delivers each event once) in `delivered`.
//!
//! # Wire format (`wire`)
//! Channel [`CHANNEL`] carries the baseline's JSON, with optional `versions`, `batch` and `test`.
//! [`parse_warehouse_updated`] accepts any publisher's payload and turns anything malformed into a
//! [`BadInput`] that is counted and logged, never into a panic or an invalidation.

mod delivered;
pub mod local;
mod wire;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::stats::{LatencySummary, StatsSnapshot};
use crate::model::BoxFuture;
use crate::model::clock::{Millis, SharedClock};
use crate::model::entry::TableKeys;
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, VersionVector};

pub(crate) use delivered::Delivered;
pub use local::LocalBus;
pub use wire::{
    BadInput, CHANNEL, Incoming, MAX_PAYLOAD, RawMessage, excerpt, parse_warehouse_updated,
    versions_by_name, warehouse_updated_payload,
};

/// A bus failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// An event about to be logged — its number (`seq`) is given by the log — and the JSON body the
/// log keeps. Both buses log exactly this, so an event reads the same whichever wrote it.
pub(crate) fn draft_event(
    at_ms: Millis,
    origin: &str,
    kind: EventKind,
) -> Result<(Event, String), BusError> {
    let event = Event {
        seq: 0,
        at_ms,
        origin: origin.to_string(),
        kind,
    };
    let body = serde_json::to_string(&event).map_err(|e| BusError(e.to_string()))?;
    Ok((event, body))
}

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
    /// [`PLAIN_MESSAGE_WINDOW`]: nothing was done.
    pub duplicate: bool,
}

/// How long a foreign plain message is remembered as applied. Every subscriber receives a
/// message within milliseconds of its publication, so one message seen by N instances bumps once;
/// the same payload published again after the window is a new update and bumps again. (A late
/// delivery past the window bumps twice: a spare reload, never an answer served stale.)
pub const PLAIN_MESSAGE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// The baseline's staging flag.
    pub test: bool,
    /// For [`BumpMode::Advance`]: the numbers reserved for `tables` (same order), or empty to
    /// allocate new ones.
    pub reserved: &'a [u64],
    /// Apply at most once per [`PLAIN_MESSAGE_WINDOW`] for this message id: the dedupe mark and the
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
    /// Bump every named table (operator invalidation, plain publishers without versions).
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
    /// What the process does (`traffic`, `console`, `serve`, `cli`); empty from older versions.
    #[serde(default)]
    pub role: String,
    /// The table versions it serves at, in catalog order (empty from older versions).
    #[serde(default)]
    pub versions: Vec<u64>,
    /// Warehouse loads it has in flight.
    #[serde(default)]
    pub loads_in_flight: u64,
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

    /// Atomically bumps `tables` to `batch` (see [`BumpMode`]), updates the baseline's keys, logs and
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
    /// the baseline's keys, the log entry and the publish, as one atomic step or not at all.
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

    /// Forgets instance `id`'s report: it left (a graceful shutdown), so it is not listed as
    /// lost.
    fn leave<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BusError>>;

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
