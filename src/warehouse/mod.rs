//! Where answers come from: the expensive warehouse, behind the [`Warehouse`] trait.
//!
//! Implementations: [`SqliteWarehouse`] (embedded, the default, with generated demo data),
//! [`PostgresWarehouse`] (Redshift speaks the PostgreSQL protocol) and [`MemoryWarehouse`] (tests
//! and benchmarks). The engine only calls [`Warehouse::run`] from a load it owns (one per key and
//! version), so an implementation never coalesces or caches anything itself.
//!
//! The ETL side — appending a batch to a table in its own transaction and recording it in
//! `update_log` — is the [`EtlTarget`] trait, used by the simulator in [`etl`].
//!
//! # Every load ends
//! A query's future may be dropped at any await point — the engine drops it at the load timeout
//! ([`DEFAULT_LOAD_TIMEOUT`], `--load-timeout`) — and an implementation must then stop the query
//! where it runs, not only stop waiting for it: PostgreSQL sends the server a cancel request
//! (and sets `statement_timeout` just past the same deadline, so the server ends it even if this
//! process is gone), SQLite interrupts the connection its blocking thread runs on. Reads that do not go
//! through the engine (`update_log`, the ETL's writes) carry the same deadline themselves.

pub mod demo_data;
pub mod etl;
pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::BoxFuture;
use crate::model::catalog::Request;

pub use memory::MemoryWarehouse;
pub use postgres::PostgresWarehouse;
pub use sqlite::SqliteWarehouse;

/// How long one warehouse load may take by default before it is cancelled (`--load-timeout`):
/// four times the baseline's slowest query (5 s), and shorter than the default maximum wait (30 s), so
/// that the waiters of a hung load hear why rather than only that they waited too long.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A query result: column names and rows of JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Provenance, where the warehouse can tell it: table -> the newest batch in `update_log`
    /// as of the snapshot the query read (read in the query's own transaction), so an answer can
    /// say "figures as of" and a checker can compare it with the truth. Empty when unknown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batches: BTreeMap<String, String>,
}

impl Rows {
    /// The rows as the JSON text the cache stores.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"columns\":[],\"rows\":[]}"))
    }
}

/// A warehouse failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// The query ran and failed.
    #[error("query failed: {0}")]
    Query(String),
    /// The warehouse could not be reached.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
    /// The warehouse has no schema or data yet.
    #[error("warehouse not initialised: {0}; run `freshcache warehouse init`")]
    NotInitialised(String),
}

/// The newest `update_log` entry of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateLogEntry {
    /// The table.
    pub table: String,
    /// The newest batch loaded into it.
    pub batch: String,
    /// When that load committed (ms since the epoch).
    pub last_updated_ms: u64,
    /// Rows that batch appended.
    pub rows: u64,
}

/// A source of answers for catalog queries.
pub trait Warehouse: Send + Sync + 'static {
    /// A short, secret-free description ("sqlite /path/warehouse.sqlite", "postgres://host/db").
    fn describe(&self) -> String;

    /// Runs one catalog query with its parameters.
    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>>;

    /// The newest `update_log` entry of every table that has one.
    fn update_log(&self) -> BoxFuture<'_, Result<Vec<UpdateLogEntry>, WarehouseError>>;

    /// Waits until the queries whose futures were dropped have been cancelled where they run
    /// (at most a few seconds). The engine calls it when a load reaches its deadline, before it
    /// answers the load's waiters, so that a process that exits on that answer leaves no query
    /// behind. Nothing to wait for by default (a cancellation that happens on drop).
    fn settle_cancelled(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The newest batch any table has reached (`None` before the first load).
    fn current_batch(&self) -> BoxFuture<'_, Result<Option<String>, WarehouseError>> {
        Box::pin(async move { Ok(self.update_log().await?.into_iter().map(|e| e.batch).max()) })
    }
}

/// The loading side of a warehouse, as the ETL sees it.
pub trait EtlTarget: Send + Sync + 'static {
    /// Appends batch `batch` to `table` in one transaction and records it in `update_log`, at
    /// `at_ms`. With `fail`, the transaction is rolled back part-way, as a failed load would be,
    /// and nothing is recorded. Returns the rows appended.
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> BoxFuture<'a, Result<u64, WarehouseError>>;
}

/// Simulated query latency, uniform between two bounds (the baseline's warehouse: 2–5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl Latency {
    /// The baseline's 2–5 s.
    pub const BASELINE: Latency = Latency {
        min: Duration::from_secs(2),
        max: Duration::from_secs(5),
    };
    /// No added latency.
    pub const NONE: Latency = Latency {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// A fixed latency.
    pub fn fixed(d: Duration) -> Self {
        Self { min: d, max: d }
    }

    /// Parses `300ms`, `2s-5s` or `2s..5s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parse = crate::model::clock::parse_duration;
        let (a, b) = match text.split_once("..").or_else(|| text.split_once('-')) {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let d = parse(text)?;
                (d, d)
            }
        };
        if b < a {
            return Err(format!("latency range `{text}` ends before it starts"));
        }
        Ok(Self { min: a, max: b })
    }

    /// One sample.
    pub fn sample(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = crate::model::num::us(self.max - self.min);
        self.min + Duration::from_micros(fastrand::u64(0..=span))
    }

    /// Sleeps for one sample minus `already` (time the real query took).
    pub async fn wait(&self, already: Duration) {
        let d = self.sample().saturating_sub(already);
        if !d.is_zero() {
            sleep_precisely(d).await;
        }
    }
}

/// Sleeps for `d` to within a few microseconds. Tokio's timer rounds deadlines up to the next
/// millisecond and fires on the next driver turn, which would add up to ~2 ms of simulated
/// warehouse latency that no real warehouse has; the last 2 ms are spent yielding to other tasks
/// until the deadline instead.
pub async fn sleep_precisely(d: Duration) {
    let deadline = std::time::Instant::now() + d;
    if let Some(coarse) = d.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep(coarse).await;
    }
    while std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// The newest `update_log` entry per table, from all entries.
pub(crate) fn newest_per_table(entries: Vec<UpdateLogEntry>) -> Vec<UpdateLogEntry> {
    let mut newest: Vec<UpdateLogEntry> = Vec::new();
    for e in entries {
        match newest.iter_mut().find(|n| n.table == e.table) {
            Some(n) if n.batch < e.batch => *n = e,
            Some(_) => {}
            None => newest.push(e),
        }
    }
    newest.sort_by(|a, b| a.table.cmp(&b.table));
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses_ranges_and_samples_inside() {
        let l = Latency::parse("2s-5s").unwrap();
        assert_eq!(l, Latency::BASELINE);
        assert_eq!(Latency::parse("2s..5s").unwrap(), Latency::BASELINE);
        for _ in 0..100 {
            let d = l.sample();
            assert!(d >= l.min && d <= l.max);
        }
        assert_eq!(
            Latency::parse("300ms").unwrap().sample(),
            Duration::from_millis(300)
        );
        assert!(Latency::parse("5s-2s").is_err());
        assert!(Latency::parse("fast").is_err());
    }
}
