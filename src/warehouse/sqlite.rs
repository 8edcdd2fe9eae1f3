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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::demo_data::{self, DemoSize};
use super::{EtlTarget, Latency, Rows, UpdateLogEntry, Warehouse, WarehouseError};
use crate::model::BoxFuture;
use crate::model::catalog::Request;

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
            self.readers
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            for suffix in ["", "-wal", "-shm"] {
                let mut f = p.clone().into_os_string();
                f.push(suffix);
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
            let mut conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
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
            let pooled = shared
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
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
            let mut pool = shared.readers.lock().unwrap_or_else(|p| p.into_inner());
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

/// Connects a read's future to the connection its blocking thread runs the query on: the future
/// holds the original (armed), the thread a clone. Dropping the future (a deadline) interrupts that
/// connection while its query runs. The state changes under one lock, so an interrupt never
/// reaches a connection after its query ended (it may be running someone else's query by then).
///
/// One window remains: SQLite forgets an interrupt that arrives while no statement of the
/// connection is active, so a drop in the microseconds between `start` and the first step lets
/// that query run to its end (its result is thrown away).
struct Interrupt {
    state: Arc<Mutex<InterruptState>>,
    /// Set in the one the future holds: its drop is the cancellation.
    armed: bool,
}

#[derive(Default)]
enum InterruptState {
    #[default]
    NotStarted,
    Running(rusqlite::InterruptHandle),
    Cancelled,
    Finished,
}

impl Interrupt {
    fn lock(&self) -> std::sync::MutexGuard<'_, InterruptState> {
        // Nothing panics while holding it, so a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On the blocking thread, before the query: `false` when the read was already cancelled.
    fn start(&self, conn: &Connection) -> bool {
        let mut state = self.lock();
        match *state {
            InterruptState::NotStarted => {
                *state = InterruptState::Running(conn.get_interrupt_handle());
                true
            }
            _ => false,
        }
    }

    /// The query ended (on the thread), or the future saw the result: nothing to interrupt.
    fn finish(&self) {
        *self.lock() = InterruptState::Finished;
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            armed: true,
        }
    }
}

impl Clone for Interrupt {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            armed: false,
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.lock();
        match std::mem::replace(&mut *state, InterruptState::Cancelled) {
            InterruptState::Running(handle) => {
                handle.interrupt();
                tracing::info!("interrupted an SQLite query whose caller gave up (deadline)");
            }
            // Finished stays finished; not yet started means never starting.
            InterruptState::Finished => *state = InterruptState::Finished,
            InterruptState::NotStarted | InterruptState::Cancelled => {}
        }
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
                        last_updated_ms: r.get::<_, i64>(2)?.max(0) as u64,
                        rows: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                })
                .map_err(query_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err)?;
            Ok(rows)
        }))
    }
}

impl EtlTarget for SqliteWarehouse {
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> BoxFuture<'a, Result<u64, WarehouseError>> {
        let (table, batch) = (table.to_string(), batch.to_string());
        Box::pin(self.blocking_write(move |c| {
            let tx = c.transaction().map_err(query_err)?;
            let already: Option<i64> = tx
                .query_row(
                    "SELECT rows FROM update_log WHERE table_name = ?1 AND batch = ?2",
                    [&table, &batch],
                    |r| r.get(0),
                )
                .optional()
                .map_err(missing_schema)?;
            if let Some(n) = already {
                // The same batch loaded twice is one load.
                return Ok(n.max(0) as u64);
            }
            let max = |sql: &str| -> Result<i64, WarehouseError> {
                tx.query_row(sql, [], |r| r.get(0)).map_err(missing_schema)
            };
            let max_customer = max("SELECT COALESCE(MAX(customer_id), 0) FROM customers")?;
            let max_sale = max("SELECT COALESCE(MAX(sale_id), 0) FROM sales")?;
            let rows = demo_data::batch(&batch, at_ms, max_customer, max_sale);
            let n = match table.as_str() {
                "customers" => insert_customers(&tx, &rows.customers)?,
                "sales" => insert_sales(&tx, &rows.sales)?,
                "inventory" => insert_inventory(&tx, &rows.inventory)?,
                other => return Err(WarehouseError::Query(format!("no table `{other}` to load"))),
            };
            if fail {
                // Dropping the transaction rolls back what was written: a failed load.
                return Err(WarehouseError::Query(format!(
                    "simulated failure loading `{table}` for batch {batch} after {n} rows"
                )));
            }
            record_update(&tx, &table, &batch, at_ms, n)?;
            tx.commit().map_err(query_err)?;
            Ok(n)
        }))
    }
}

fn record_update(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    batch: &str,
    at_ms: u64,
    rows: u64,
) -> Result<(), WarehouseError> {
    tx.execute(
        "INSERT INTO update_log (table_name, batch, last_updated, rows) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![table, batch, at_ms as i64, rows as i64],
    )
    .map_err(query_err)?;
    Ok(())
}

fn insert_customers(
    tx: &rusqlite::Transaction<'_>,
    rows: &[demo_data::Customer],
) -> Result<u64, WarehouseError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO customers (customer_id, name, region, segment, batch) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(missing_schema)?;
    for c in rows {
        stmt.execute(rusqlite::params![
            c.customer_id,
            c.name,
            c.region,
            c.segment,
            c.batch
        ])
        .map_err(query_err)?;
    }
    Ok(rows.len() as u64)
}

fn insert_sales(
    tx: &rusqlite::Transaction<'_>,
    rows: &[demo_data::Sale],
) -> Result<u64, WarehouseError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO sales (sale_id, customer_id, product, region, year, quarter, sold_on, \
             quantity, amount_cents, batch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(missing_schema)?;
    for s in rows {
        stmt.execute(rusqlite::params![
            s.sale_id,
            s.customer_id,
            s.product,
            s.region,
            s.year,
            s.quarter,
            s.sold_on,
            s.quantity,
            s.amount_cents,
            s.batch
        ])
        .map_err(query_err)?;
    }
    Ok(rows.len() as u64)
}

fn insert_inventory(
    tx: &rusqlite::Transaction<'_>,
    rows: &[demo_data::Stock],
) -> Result<u64, WarehouseError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO inventory (product, location, on_hand, reorder_level, batch) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(missing_schema)?;
    for s in rows {
        stmt.execute(rusqlite::params![
            s.product,
            s.location,
            s.on_hand,
            s.reorder_level,
            s.batch
        ])
        .map_err(query_err)?;
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::Catalog;
    use std::time::Duration;

    fn small() -> DemoSize {
        DemoSize {
            customers: 300,
            sales: 5_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_catalog_query_runs_on_demo_data() {
        let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
        assert!(!w.is_initialised().await.unwrap());
        assert!(w.init_demo(small(), "20261101-00:00", 1).await.unwrap());
        assert!(
            !w.init_demo(small(), "20261101-00:00", 1).await.unwrap(),
            "loads once"
        );
        let catalog = Catalog::bundled().unwrap();
        for q in catalog.queries() {
            let r = catalog.request::<&str, &str>(&q.name, &[]).unwrap();
            let rows = w
                .run(&r)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", q.name));
            assert!(!rows.columns.is_empty(), "{}", q.name);
        }
        let r = catalog
            .request("sales_by_region", &[("quarter", "Q1"), ("year", "2025")])
            .unwrap();
        let rows = w.run(&r).await.unwrap();
        assert_eq!(rows.rows.len(), 5, "one row per region");
        assert!(rows.rows.iter().all(|r| r[1].as_i64().unwrap() > 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_appends_in_its_own_transaction_and_is_logged() {
        let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
        w.init_demo(small(), "20261101-00:00", 1).await.unwrap();
        let n = w
            .load_table("sales", "20261126-10:00", 1_795_687_200_000, false)
            .await
            .unwrap();
        assert!(n > 0);
        assert_eq!(
            w.load_table("sales", "20261126-10:00", 1_795_687_200_000, false)
                .await
                .unwrap(),
            n,
            "loading the same batch twice is one load"
        );
        let e = w
            .load_table("inventory", "20261126-10:00", 1_795_687_200_000, true)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("simulated failure"), "{e}");
        let log = w.update_log().await.unwrap();
        let batch_of = |t: &str| log.iter().find(|e| e.table == t).unwrap().batch.clone();
        assert_eq!(batch_of("sales"), "20261126-10:00");
        assert_eq!(
            batch_of("inventory"),
            "20261101-00:00",
            "the failed load left no trace"
        );
        assert_eq!(
            w.current_batch().await.unwrap().as_deref(),
            Some("20261126-10:00")
        );
        // The rolled-back inventory rows are not visible.
        let catalog = Catalog::bundled().unwrap();
        let r = catalog
            .request::<&str, &str>("latest_batch_sales", &[])
            .unwrap();
        let rows = w.run(&r).await.unwrap();
        let orders: i64 = rows.rows.iter().map(|r| r[2].as_i64().unwrap()).sum();
        assert_eq!(orders as u64, n);
        // The rows say which batch each table was at in the snapshot they were read from.
        assert_eq!(rows.batches["sales"], "20261126-10:00");
        assert_eq!(rows.batches["inventory"], "20261101-00:00");
        assert!(rows.to_json().contains("\"batches\""));
    }

    /// Regression (issue 10, D): a read dropped at its deadline used to go on running on its
    /// blocking thread until the query finished by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_query_is_interrupted_and_its_connection_serves_the_next() {
        use crate::model::policy::Policy;
        use crate::model::versions::Tables;
        let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
        // The schema (a read takes its provenance from update_log in the same transaction).
        w.init_demo(small(), "20261101-00:00", 1).await.unwrap();
        let mut catalog = Catalog::new(Tables::new(["sales"]).unwrap());
        // About a minute of work (a debug build, a busy machine), with no row before the end;
        // without the interrupt, this test fails and then waits for it (runtime shutdown).
        let spin = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                    WHERE x < 100000000) SELECT COUNT(*) FROM c";
        catalog
            .add("spin", "", spin, &["sales"], vec![], Policy::default())
            .unwrap();
        catalog
            .add(
                "one",
                "",
                "SELECT 1 AS one",
                &["sales"],
                vec![],
                Policy::default(),
            )
            .unwrap();
        let spin = catalog.request::<&str, &str>("spin", &[]).unwrap();
        let one = catalog.request::<&str, &str>("one", &[]).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), w.run(&spin)).await;
        assert!(
            r.is_err(),
            "the spinning query cannot finish in 300 ms: {:?}",
            r.map(|rows| rows.map(|r| r.rows))
        );
        // The blocking thread stops and returns its connection to the pool.
        let pooled = || w.shared.readers.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pooled() == 0 {
            assert!(
                Instant::now() < deadline,
                "the abandoned query still runs 10 s after its caller gave up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The interrupted connection answers the next query.
        let rows = w.run(&one).await.unwrap();
        assert_eq!(rows.rows, vec![vec![serde_json::json!(1)]]);
    }

    #[tokio::test]
    async fn an_empty_warehouse_says_how_to_initialise_it() {
        let w = SqliteWarehouse::temporary(Latency::NONE).unwrap();
        let catalog = Catalog::bundled().unwrap();
        let r = catalog.request::<&str, &str>("stock_outs", &[]).unwrap();
        let e = w.run(&r).await.unwrap_err();
        assert!(e.to_string().contains("freshcache warehouse init"), "{e}");
    }
}
