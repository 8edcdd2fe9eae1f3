//! A small in-memory warehouse for tests and benchmarks: configurable latency, injectable failures,
//! panics and hangs, and a count of every query it ran.
//!
//! Each table has a *data version* that [`MemoryWarehouse::load_batch`] raises, standing in for an
//! ETL run. Every answer carries the data versions it saw, so a test can check that an answer
//! labelled fresh really reflects the newest data.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{EtlTarget, Rows, UpdateLogEntry, Warehouse, WarehouseError};
use crate::model::BoxFuture;
use crate::model::catalog::Request;
use crate::model::versions::{TableId, Tables};

/// An in-memory warehouse with scripted behaviour.
#[derive(Debug)]
pub struct MemoryWarehouse {
    names: Vec<String>,
    update_log: Mutex<Vec<UpdateLogEntry>>,
    latency_ms: AtomicU64,
    data_versions: Mutex<Vec<u64>>,
    fail_next: AtomicU32,
    failing: AtomicBool,
    panic_next: AtomicU32,
    hanging: AtomicBool,
    queries: AtomicU64,
    running: std::sync::Arc<AtomicU64>,
    by_request: Mutex<HashMap<(u128, Vec<u64>), u64>>,
}

impl MemoryWarehouse {
    /// A warehouse over `tables` tables (named `t0`, `t1`, ...) answering after `latency`.
    pub fn new(tables: usize, latency: Duration) -> Self {
        Self::with_names((0..tables).map(|i| format!("t{i}")).collect(), latency)
    }

    /// A warehouse over the catalog's tables answering after `latency`.
    pub fn for_tables(tables: &Tables, latency: Duration) -> Self {
        Self::with_names(tables.names().to_vec(), latency)
    }

    fn with_names(names: Vec<String>, latency: Duration) -> Self {
        let tables = names.len();
        Self {
            names,
            update_log: Mutex::new(Vec::new()),
            latency_ms: AtomicU64::new(crate::model::num::ms(latency)),
            data_versions: Mutex::new(vec![0; tables]),
            fail_next: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            panic_next: AtomicU32::new(0),
            hanging: AtomicBool::new(false),
            queries: AtomicU64::new(0),
            running: std::sync::Arc::new(AtomicU64::new(0)),
            by_request: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the latency of every later query.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(crate::model::num::ms(latency), Ordering::SeqCst);
    }

    /// New data lands in `tables` (an ETL batch), without an `update_log` entry.
    pub fn load_batch(&self, tables: &[TableId]) {
        let mut v = self.data_versions.lock();
        for t in tables {
            if let Some(x) = v.get_mut(t.index()) {
                *x += 1;
            }
        }
    }

    /// The data version of a table.
    pub fn data_version(&self, table: TableId) -> u64 {
        self.data_versions
            .lock()
            .get(table.index())
            .copied()
            .unwrap_or(0)
    }

    /// The next `n` queries fail.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every query fails until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The next `n` queries panic.
    pub fn panic_next(&self, n: u32) {
        self.panic_next.store(n, Ordering::SeqCst);
    }

    /// Every query hangs (never answers) until told otherwise.
    pub fn set_hanging(&self, hanging: bool) {
        self.hanging.store(hanging, Ordering::SeqCst);
    }

    /// Queries run so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    /// Queries running now.
    pub fn running(&self) -> u64 {
        self.running.load(Ordering::SeqCst)
    }

    /// Queries run so far per (request fingerprint, data versions seen).
    pub fn queries_by_request(&self) -> HashMap<(u128, Vec<u64>), u64> {
        self.by_request.lock().clone()
    }

    /// Reads the data versions an answer carries (see [`Warehouse::run`]'s rows).
    pub fn versions_in(answer_json: &str) -> Option<Vec<u64>> {
        let rows: Rows = serde_json::from_str(answer_json).ok()?;
        rows.rows
            .iter()
            .map(|r| r.get(1).and_then(|v| v.as_u64()))
            .collect()
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl EtlTarget for MemoryWarehouse {
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> BoxFuture<'a, Result<u64, WarehouseError>> {
        Box::pin(async move {
            let Some(i) = self.names.iter().position(|n| n == table) else {
                return Err(WarehouseError::Query(format!("no table `{table}`")));
            };
            if fail {
                return Err(WarehouseError::Query(format!(
                    "simulated failure loading `{table}` for batch {batch}"
                )));
            }
            self.load_batch(&[TableId::at(i)]);
            self.update_log.lock().push(UpdateLogEntry {
                table: table.to_string(),
                batch: batch.to_string(),
                last_updated_ms: at_ms,
                rows: 1,
            });
            Ok(1)
        })
    }
}

impl Warehouse for MemoryWarehouse {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn update_log(&self) -> BoxFuture<'_, Result<Vec<UpdateLogEntry>, WarehouseError>> {
        let entries = self.update_log.lock().clone();
        Box::pin(std::future::ready(Ok(super::newest_per_table(entries))))
    }

    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>> {
        Box::pin(async move {
            self.queries.fetch_add(1, Ordering::SeqCst);
            let _running = Running::enter(&self.running);
            // Data is read when the query starts, as a real warehouse's snapshot would be.
            let seen: Vec<u64> = {
                let v = self.data_versions.lock();
                request
                    .query()
                    .tables
                    .iter()
                    .map(|t| v.get(t.index()).copied().unwrap_or(0))
                    .collect()
            };
            *self
                .by_request
                .lock()
                .entry((request.fingerprint(), seen.clone()))
                .or_default() += 1;
            if self.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let latency = self.latency_ms.load(Ordering::SeqCst);
            if latency > 0 {
                super::sleep_precisely(Duration::from_millis(latency)).await;
            }
            if Self::take(&self.panic_next) {
                // The fault this test warehouse exists to inject: a loader that panics.
                #[allow(clippy::panic)]
                {
                    panic!("memory warehouse: injected panic");
                }
            }
            if Self::take(&self.fail_next) || self.failing.load(Ordering::SeqCst) {
                return Err(WarehouseError::Query("injected failure".into()));
            }
            Ok(Rows {
                columns: vec!["table".into(), "data_version".into()],
                rows: request
                    .query()
                    .tables
                    .iter()
                    .zip(&seen)
                    .map(|(t, v)| vec![json!(t.0), json!(v)])
                    .collect(),
                ..Rows::default()
            })
        })
    }
}

/// Counts a query as running until dropped (also when the query panics or is cancelled).
struct Running(std::sync::Arc<AtomicU64>);

impl Running {
    fn enter(counter: &std::sync::Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
