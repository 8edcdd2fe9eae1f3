//! The embedded warehouse: SQLite (bundled, so no system library is needed), with generated,
//! deterministic demo data and a simulated query latency.
//!
//! Queries run on a small pool of read connections in `spawn_blocking`, so a slow query never
//! blocks the runtime; the ETL writes through one connection, one transaction per table. The file
//! is in WAL mode, so readers never wait for the ETL and other processes can read it too.
//!
//! A read whose future is dropped (the engine's load deadline) interrupts its connection
//! (`sqlite3_interrupt`), so the blocking thread stops too instead of running a long query for
//! nobody; see `Interrupt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::demo_data::{self, DemoSize};
use super::{EtlTarget, Latency, Rows, UpdateLogEntry, Warehouse, WarehouseError};
use crate::model::BoxFuture;
use crate::model::catalog::Request;

mod write;
use write::*;

mod interrupt;
use interrupt::*;

/// Queries run at once; more wait their turn, as in a warehouse's query queue.
const SLOTS: usize = 16;

/// Where the database lives.
#[derive(Debug, Clone)]
enum Location {
    File(PathBuf),
    /// A private file in the temp directory, removed when the warehouse is dropped. (Not a
    /// shared-cache in-memory database: there, a reader meets `SQLITE_LOCKED` while the ETL
    /// writes, where WAL lets readers go on.)
    Temporary(PathBuf),
}

impl Location {
    /// Opens a connection; only the writer sets the journal mode (readers of a WAL file need not,
    /// and setting it takes a lock).
    fn open(&self, writer: bool) -> Result<Connection, WarehouseError> {
        let path = match self {
            Location::File(p) | Location::Temporary(p) => p,
        };
        let conn = Connection::open(path)
            .map_err(|e| WarehouseError::Unavailable(format!("{self}: {e}")))?;
        // Fails only on a closed connection, which the next statement reports.
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        if !writer {
            return Ok(conn);
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| WarehouseError::Unavailable(format!("{self}: {e}")))?;
        if let Location::Temporary(_) = self {
            // Nothing to keep after a crash: skip the fsyncs.
            let _ = conn.pragma_update(None, "synchronous", "OFF");
        }
        Ok(conn)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Temporary(_) => f.write_str("(temporary)"),
        }
    }
}

struct Shared {
    location: Location,
    slots: tokio::sync::Semaphore,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Connection>,
    queries: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Location::Temporary(p) = &self.location {
            self.readers.get_mut().clear();
            for suffix in ["", "-wal", "-shm"] {
                let mut f = p.clone().into_os_string();
                f.push(suffix);
                // A temporary database file left behind is untidy, not wrong.
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// The embedded SQLite warehouse.
#[derive(Clone)]
pub struct SqliteWarehouse {
    shared: Arc<Shared>,
    latency: Latency,
}

impl std::fmt::Debug for SqliteWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWarehouse")
            .field("location", &self.shared.location.to_string())
            .finish()
    }
}

fn query_err(e: rusqlite::Error) -> WarehouseError {
    WarehouseError::Query(e.to_string())
}

impl SqliteWarehouse {
    /// Opens (creating if needed) the database file at `path`. The schema and data are created by
    /// [`SqliteWarehouse::init_demo`].
    pub fn open(path: &Path, latency: Latency) -> Result<Self, WarehouseError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                WarehouseError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Self::at(Location::File(path.to_path_buf()), latency)
    }

    /// A private, temporary database (tests, benchmarks, demos), removed when dropped.
    pub fn temporary(latency: Latency) -> Result<Self, WarehouseError> {
        let path = std::env::temp_dir().join(format!(
            "freshcache-{}-{:016x}.sqlite",
            std::process::id(),
            fastrand::u64(..)
        ));
        Self::at(Location::Temporary(path), latency)
    }

    fn at(location: Location, latency: Latency) -> Result<Self, WarehouseError> {
        let writer = location.open(true)?;
        Ok(Self {
            shared: Arc::new(Shared {
                location,
                slots: tokio::sync::Semaphore::new(SLOTS),
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(writer),
                queries: AtomicU64::new(0),
            }),
            latency,
        })
    }

    /// The same database with another simulated latency.
    pub fn with_latency(&self, latency: Latency) -> Self {
        Self {
            shared: self.shared.clone(),
            latency,
        }
    }

    /// Refuses every query from now on, including those waiting for a slot (they fail at once):
    /// for tearing a simulation down without draining its queue.
    pub fn close(&self) {
        self.shared.slots.close();
    }

    /// Queries run so far through this handle's database.
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// Whether the demo schema and data are present.
    pub async fn is_initialised(&self) -> Result<bool, WarehouseError> {
        self.blocking_write(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'update_log'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(query_err)
        })
        .await
    }

    /// Creates the schema and loads the demo data as batch `batch` at `at_ms`, unless data is
    /// already there. Returns whether it loaded anything.
    pub async fn init_demo(
        &self,
        size: DemoSize,
        batch: &str,
        at_ms: u64,
    ) -> Result<bool, WarehouseError> {
        let batch = batch.to_string();
        self.blocking_write(move |c| {
            c.execute_batch(demo_data::SCHEMA).map_err(query_err)?;
            let rows: i64 = c
                .query_row("SELECT COUNT(*) FROM update_log", [], |r| r.get(0))
                .map_err(query_err)?;
            if rows > 0 {
                return Ok(false);
            }
            let tx = c.transaction().map_err(query_err)?;
            let customers = demo_data::customers(size, &batch);
            insert_customers(&tx, &customers)?;
            let sales = demo_data::sales(size, &customers, &batch);
            insert_sales(&tx, &sales)?;
            let inventory = demo_data::inventory(&batch);
            insert_inventory(&tx, &inventory)?;
            for (table, n) in [
                ("customers", customers.len()),
                ("sales", sales.len()),
                ("inventory", inventory.len()),
            ] {
                record_update(&tx, table, &batch, at_ms, n as u64)?;
            }
            tx.commit().map_err(query_err)?;
            Ok(true)
        })
        .await
    }

    async fn blocking_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, WarehouseError> + Send + 'static,
    ) -> Result<T, WarehouseError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.writer.lock();
            f(&mut conn)
        })
        .await
        .map_err(|e| WarehouseError::Unavailable(format!("sqlite task failed: {e}")))?
    }

    async fn blocking_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, WarehouseError> + Send + 'static,
    ) -> Result<T, WarehouseError> {
        let _slot = self
            .shared
            .slots
            .acquire()
            .await
            .map_err(|_| WarehouseError::Unavailable("warehouse closed".into()))?;
        let shared = self.shared.clone();
        let interrupt = Interrupt::default();
        let on_thread = interrupt.clone();
        let result = tokio::task::spawn_blocking(move || {
            let pooled = shared.readers.lock().pop();
            let conn = match pooled {
                Some(c) => c,
                None => shared.location.open(false)?,
            };
            let result = if on_thread.start(&conn) {
                let r = f(&conn);
                // Before the connection goes back: a later interrupt must not reach the next
                // query that uses it.
                on_thread.finish();
                r
            } else {
                Err(WarehouseError::Unavailable(
                    "the query was cancelled before it started".into(),
                ))
            };
            let mut pool = shared.readers.lock();
            if pool.len() < SLOTS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| WarehouseError::Unavailable(format!("sqlite task failed: {e}")));
        interrupt.finish();
        result?
    }
}

fn missing_schema(e: rusqlite::Error) -> WarehouseError {
    let text = e.to_string();
    if text.contains("no such table") {
        WarehouseError::NotInitialised(text)
    } else {
        WarehouseError::Query(text)
    }
}

fn run_query(conn: &Connection, request: &Request) -> Result<Rows, WarehouseError> {
    let mut stmt = conn
        .prepare_cached(&request.query().sql)
        .map_err(missing_schema)?;
    for (name, value) in request.params() {
        if let Some(i) = stmt
            .parameter_index(&format!(":{name}"))
            .map_err(query_err)?
        {
            stmt.raw_bind_parameter(i, value).map_err(query_err)?;
        }
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(query_err)? {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(match row.get_ref(i).map_err(query_err)? {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(v) => v.into(),
                ValueRef::Real(v) => v.into(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
            });
        }
        rows.push(out);
    }
    Ok(Rows {
        columns,
        rows,
        ..Rows::default()
    })
}

/// The newest batch of every table in `update_log`, as the connection's snapshot sees it.
fn newest_batches(conn: &Connection) -> Result<BTreeMap<String, String>, WarehouseError> {
    let mut stmt = conn
        .prepare_cached("SELECT table_name, MAX(batch) FROM update_log GROUP BY table_name")
        .map_err(missing_schema)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

impl Warehouse for SqliteWarehouse {
    fn describe(&self) -> String {
        format!("sqlite {}", self.shared.location)
    }

    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>> {
        Box::pin(async move {
            self.shared.queries.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let req = request.clone();
            let rows = self
                .blocking_read(move |c| {
                    // One read transaction: in WAL mode both reads see the same snapshot, so
                    // `batches` is exactly the data the rows were computed from.
                    let tx = c.unchecked_transaction().map_err(query_err)?;
                    let batches = newest_batches(&tx)?;
                    let rows = run_query(&tx, &req)?;
                    Ok(Rows { batches, ..rows })
                })
                .await?;
            self.latency.wait(started.elapsed()).await;
            Ok(rows)
        })
    }

    fn update_log(&self) -> BoxFuture<'_, Result<Vec<UpdateLogEntry>, WarehouseError>> {
        Box::pin(self.blocking_read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT table_name, batch, last_updated, rows FROM update_log \
                     WHERE (table_name, batch) IN \
                       (SELECT table_name, MAX(batch) FROM update_log GROUP BY table_name) \
                     ORDER BY table_name",
                )
                .map_err(missing_schema)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(UpdateLogEntry {
                        table: r.get(0)?,
                        batch: r.get(1)?,
                        last_updated_ms: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                        rows: r.get::<_, i64>(3)?.max(0).unsigned_abs(),
                    })
                })
                .map_err(query_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err)?;
            Ok(rows)
        }))
    }
}

#[cfg(test)]
mod tests;
