//! The PostgreSQL warehouse (Redshift speaks the PostgreSQL protocol), with tokio-postgres over a
//! deadpool connection pool.
//!
//! The catalog's `:name` placeholders become `$n`; each parameter is converted to the type the
//! server infers for it (so `CAST(:year AS INTEGER)` is sent as an integer, `:region` as text).
//! The password never appears in [`Warehouse::describe`], in errors or in logs.
//!
//! # Every load ends, and one slow query never blocks another
//! * Queries run on a pool of up to [`POOL_SIZE`] connections, each query on a connection of its
//!   own: a query waiting on a locked table holds one connection, the others go on. Statements
//!   are prepared once per connection (deadpool's statement cache), and prepared again when a
//!   table they read was re-created with another shape.
//! * A statement whose future is dropped before it finished (the engine's deadline, a caller that
//!   gave up) is cancelled at once with a cancel request, and its connection leaves the pool
//!   (it may still carry the cancelled statement's reply); see `Busy`. The engine waits for
//!   that request to be sent ([`Warehouse::settle_cancelled`]) before it answers the waiters.
//! * Every connection is opened with a connect timeout and `SET statement_timeout` to the load
//!   timeout plus [`SERVER_GRACE`], so the server itself ends any statement (a lock wait included)
//!   shortly after the deadline even when this process was killed before it could cancel. (The
//!   grace lets the client's deadline, with its clearer error, come first.)
//! * Reads outside the engine (`update_log`) and the ETL's writes carry the load timeout
//!   themselves. The ETL writes one transaction at a time (batches number their rows from the
//!   table's maximum), on pooled connections like the reads.

use std::str::FromStr;
use std::time::{Duration, Instant};

use deadpool_postgres::{
    HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    TimeoutType,
};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Config, NoTls};

use super::demo_data::{self, DemoSize, sql_text};
use super::{
    DEFAULT_LOAD_TIMEOUT, EtlTarget, Latency, Rows, UpdateLogEntry, Warehouse, WarehouseError,
};
use crate::model::BoxFuture;
use crate::model::catalog::Request;

mod write;
use write::*;

mod rows;
use rows::*;

mod busy;
use busy::*;

/// The longest wait for a new connection (shorter when the load timeout is).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per process: queries running at once (more wait their turn, within their deadline).
pub const POOL_SIZE: usize = 16;
/// The longest a cancel request may take before the connection is dropped anyway.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);
/// How much longer than the load timeout the server's `statement_timeout` is.
pub const SERVER_GRACE: Duration = Duration::from_secs(1);

/// Cancel requests under way (see [`Busy`]).
#[derive(Default)]
struct Cancels(parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl Cancels {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        // Nothing panics while holding it, so a poisoned lock is consistent.
        self.0.lock()
    }
}

/// A PostgreSQL (or Redshift) warehouse.
pub struct PostgresWarehouse {
    describe: String,
    pool: Pool,
    /// The ETL writes one transaction at a time.
    write: tokio::sync::Mutex<()>,
    cancels: std::sync::Arc<Cancels>,
    latency: Latency,
    load_timeout: Duration,
}

impl std::fmt::Debug for PostgresWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWarehouse")
            .field("at", &self.describe)
            .field("load_timeout", &self.load_timeout)
            .finish()
    }
}

/// `postgres://user@host:port/db`, without the password.
pub fn describe_config(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgres://{user}{host}:{port}/{db}")
}

/// Replaces `:name` placeholders by `$1`, `$2`, ... (outside string literals and `::` casts);
/// returns the text and the parameter names in `$n` order.
pub fn positional(sql: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
            i += 1;
            continue;
        }
        if !in_string
            && c == ':'
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_')
            && (i == 0 || chars[i - 1] != ':')
        {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            let name: String = chars[start..end].iter().collect();
            let n = match names.iter().position(|x| *x == name) {
                Some(p) => p + 1,
                None => {
                    names.push(name);
                    names.len()
                }
            };
            out.push_str(&format!("${n}"));
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    (out, names)
}

fn unavailable(e: tokio_postgres::Error) -> WarehouseError {
    WarehouseError::Unavailable(clean_error(&e))
}

fn query_error(e: tokio_postgres::Error) -> WarehouseError {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return unavailable(e);
    }
    let text = clean_error(&e);
    match e.code() {
        Some(&SqlState::UNDEFINED_TABLE) => WarehouseError::NotInitialised(text),
        // The server's statement_timeout (the load timeout) or a cancel request: it did not
        // answer in time, which for the caller is unavailable.
        Some(&SqlState::QUERY_CANCELED) => WarehouseError::Unavailable(text),
        _ => WarehouseError::Query(text),
    }
}

/// Whether the server refused a prepared statement because a table it reads changed shape since
/// it was prepared (re-created by an ETL, say): the connection's statement cache must be cleared
/// and the statement prepared again, or every later run on that connection fails the same way.
fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
        && e.as_db_error()
            .is_some_and(|db| db.message().contains("cached plan"))
}

/// The server's message when there is one (tokio-postgres's Display says only "db error").
fn clean_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}

/// Refuses a URL whose password holds a raw `@`: the parser would take the rest of the password
/// for the host name and show it in every message. The error shows the URL masked.
pub fn check_url(url: &str) -> Result<(), String> {
    let before_query = url.split('?').next().unwrap_or(url);
    if before_query.matches('@').count() > 1 {
        return Err(format!(
            "bad PostgreSQL URL {}: more than one `@`; write an `@` inside the password as %40",
            crate::secret::mask_url(url)
        ));
    }
    Ok(())
}

impl PostgresWarehouse {
    /// A warehouse at `url` (`postgres://user[:password]@host:port/db`) whose loads end after
    /// [`DEFAULT_LOAD_TIMEOUT`]. Connects lazily.
    pub fn new(url: &str, latency: Latency) -> Result<Self, WarehouseError> {
        Self::with_load_timeout(url, latency, DEFAULT_LOAD_TIMEOUT)
    }

    /// A warehouse at `url` whose statements end after `load_timeout` (`--load-timeout`): the
    /// server's `statement_timeout`, the wait for a connection, and the deadline of the reads and
    /// writes that do not go through the engine. Connects lazily.
    pub fn with_load_timeout(
        url: &str,
        latency: Latency,
        load_timeout: Duration,
    ) -> Result<Self, WarehouseError> {
        check_url(url).map_err(WarehouseError::Unavailable)?;
        let mut config = Config::from_str(url).map_err(|e| {
            WarehouseError::Unavailable(format!(
                "bad PostgreSQL URL (expected postgres://user[:password]@host[:port]/database): {}",
                clean_error(&e)
            ))
        })?;
        let load_timeout = load_timeout.max(Duration::from_millis(1));
        let connect_timeout = CONNECT_TIMEOUT
            .min(load_timeout)
            .max(Duration::from_millis(100));
        config.connect_timeout(connect_timeout);
        config.application_name("freshcache");
        let describe = describe_config(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A cancelled statement's connection never comes back (see `Busy`), so a
                // returned connection is idle: checking that it is open is enough.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // In milliseconds, at most the server's limit (i32::MAX ms, about 24 days).
        let set_timeout = format!(
            "SET statement_timeout = {}",
            (load_timeout + SERVER_GRACE)
                .as_millis()
                .min(i32::MAX as u128)
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(load_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(Duration::from_secs(1)))
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let sql = set_timeout.clone();
                Box::pin(
                    async move { client.batch_execute(&sql).await.map_err(HookError::Backend) },
                )
            }))
            .build()
            .map_err(|e| WarehouseError::Unavailable(format!("{describe}: {e}")))?;
        Ok(Self {
            describe,
            pool,
            write: tokio::sync::Mutex::new(()),
            cancels: std::sync::Arc::default(),
            latency,
            load_timeout,
        })
    }

    /// The deadline of one statement.
    pub fn load_timeout(&self) -> Duration {
        self.load_timeout
    }

    /// A pooled connection, within the load timeout.
    async fn connection(&self) -> Result<Busy, WarehouseError> {
        match tokio::time::timeout(self.load_timeout, self.pool.get()).await {
            Ok(Ok(client)) => Ok(Busy {
                client: Some(client),
                describe: self.describe.clone(),
                cancels: self.cancels.clone(),
            }),
            Ok(Err(e)) => Err(self.pool_error(e)),
            Err(_) => Err(WarehouseError::Unavailable(format!(
                "{}: no connection within {:?}",
                self.describe, self.load_timeout
            ))),
        }
    }

    fn pool_error(&self, e: PoolError) -> WarehouseError {
        let why = match e {
            PoolError::Timeout(TimeoutType::Wait) => format!(
                "all {POOL_SIZE} connections busy for {:?}",
                self.load_timeout
            ),
            PoolError::Timeout(TimeoutType::Create) => "connect timed out".into(),
            PoolError::Timeout(TimeoutType::Recycle) => "a pooled connection did not answer".into(),
            PoolError::Backend(e) => clean_error(&e),
            PoolError::PostCreateHook(HookError::Backend(e)) => {
                format!("setting statement_timeout: {}", clean_error(&e))
            }
            PoolError::PostCreateHook(HookError::Message(m)) => m.to_string(),
            PoolError::Closed => "the connection pool is closed".into(),
            PoolError::NoRuntimeSpecified => "the connection pool has no runtime".into(),
        };
        WarehouseError::Unavailable(format!("{}: {why}", self.describe))
    }

    /// Runs `work` with the load timeout as its deadline; at the deadline `work` is dropped, which
    /// cancels its statement at the server (see [`Busy`]), and the error is returned once the
    /// cancel request went out.
    async fn within_deadline<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        match tokio::time::timeout(self.load_timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                self.settle().await;
                Err(WarehouseError::Unavailable(format!(
                    "{}: {what} exceeded its deadline of {:?} and was cancelled",
                    self.describe, self.load_timeout
                )))
            }
        }
    }

    /// Waits for the cancel requests under way (each bounded by [`CANCEL_TIMEOUT`]).
    async fn settle(&self) {
        let pending: Vec<_> = self.cancels.lock().drain(..).collect();
        for handle in pending {
            // A cancel task that panicked or was aborted has nothing left to wait for.
            let _ = handle.await;
        }
    }

    /// Creates the schema and loads the demo data as batch `batch` at `at_ms`, unless data is
    /// already there. Returns whether it loaded anything. Each statement is bounded by the load
    /// timeout (the whole load is not: it may be large).
    pub async fn init_demo(
        &self,
        size: DemoSize,
        batch: &str,
        at_ms: u64,
    ) -> Result<bool, WarehouseError> {
        let _write = self.write.lock().await;
        let mut busy = self.connection().await?;
        let result = async {
            let c = busy.client()?;
            c.batch_execute(demo_data::SCHEMA)
                .await
                .map_err(query_error)?;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM update_log", &[])
                .await
                .map_err(query_error)?
                .try_get(0)
                .map_err(|e| unexpected_row("update_log", &e))?;
            if n > 0 {
                return Ok(false);
            }
            let tx = c.transaction().await.map_err(query_error)?;
            let customers = demo_data::customers(size, batch);
            insert_customers(&tx, &customers).await?;
            let sales = demo_data::sales(size, &customers, batch);
            insert_sales(&tx, &sales).await?;
            let inventory = demo_data::inventory(batch);
            insert_inventory(&tx, &inventory).await?;
            for (table, rows) in [
                ("customers", customers.len()),
                ("sales", sales.len()),
                ("inventory", inventory.len()),
            ] {
                record_update(&tx, table, batch, at_ms, rows as u64).await?;
            }
            tx.commit().await.map_err(query_error)?;
            Ok(true)
        }
        .await;
        busy.finish();
        result
    }

    async fn read_update_log(&self) -> Result<Vec<UpdateLogEntry>, WarehouseError> {
        let mut busy = self.connection().await?;
        let result = async {
            let c = busy.client()?;
            let mut replanned = false;
            let rows = loop {
                let stmt = c
                    .prepare_cached(
                        "SELECT u.table_name, u.batch, u.last_updated, u.rows FROM update_log u \
                         JOIN (SELECT table_name, MAX(batch) AS batch FROM update_log GROUP BY table_name) m \
                           ON m.table_name = u.table_name AND m.batch = u.batch \
                         ORDER BY u.table_name",
                    )
                    .await
                    .map_err(query_error)?;
                match c.query(&stmt, &[]).await {
                    Ok(rows) => break rows,
                    Err(e) if !replanned && stale_plan(&e) => {
                        c.statement_cache.clear();
                        replanned = true;
                    }
                    Err(e) => return Err(query_error(e)),
                }
            };
            rows.iter().map(update_log_entry).collect()
        }
        .await;
        busy.finish();
        result
    }

    async fn write_batch(
        &self,
        table: &str,
        batch: &str,
        at_ms: u64,
        fail: bool,
    ) -> Result<u64, WarehouseError> {
        let _write = self.write.lock().await;
        let mut busy = self.connection().await?;
        let result = async {
            let c = busy.client()?;
            let tx = c.transaction().await.map_err(query_error)?;
            let count = |row: tokio_postgres::Row| -> Result<i64, WarehouseError> {
                row.try_get::<_, i64>(0)
                    .map_err(|e| unexpected_row(table, &e))
            };
            if let Some(row) = tx
                .query_opt(
                    "SELECT rows FROM update_log WHERE table_name = $1 AND batch = $2",
                    &[&table, &batch],
                )
                .await
                .map_err(query_error)?
            {
                return Ok(count(row)?.max(0).unsigned_abs());
            }
            // Cast: the demo schema's ids are BIGINT, but a warehouse's may be narrower.
            let max_customer = count(
                tx.query_one(
                    "SELECT CAST(COALESCE(MAX(customer_id), 0) AS BIGINT) FROM customers",
                    &[],
                )
                .await
                .map_err(query_error)?,
            )?;
            let max_sale = count(
                tx.query_one(
                    "SELECT CAST(COALESCE(MAX(sale_id), 0) AS BIGINT) FROM sales",
                    &[],
                )
                .await
                .map_err(query_error)?,
            )?;
            let rows = demo_data::batch(batch, at_ms, max_customer, max_sale);
            let n = match table {
                "customers" => insert_customers(&tx, &rows.customers).await?,
                "sales" => insert_sales(&tx, &rows.sales).await?,
                "inventory" => insert_inventory(&tx, &rows.inventory).await?,
                other => return Err(WarehouseError::Query(format!("no table `{other}` to load"))),
            };
            if fail {
                tx.rollback().await.map_err(query_error)?;
                return Err(WarehouseError::Query(format!(
                    "simulated failure loading `{table}` for batch {batch} after {n} rows"
                )));
            }
            record_update(&tx, table, batch, at_ms, n).await?;
            tx.commit().await.map_err(query_error)?;
            Ok(n)
        }
        .await;
        busy.finish();
        result
    }
}

impl Warehouse for PostgresWarehouse {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// No deadline of its own beyond the server's `statement_timeout`: the engine's load timeout
    /// drops this future, and `Busy` cancels the statement.
    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>> {
        Box::pin(async move {
            let started = Instant::now();
            let (sql, names) = positional(&request.query().sql);
            let mut busy = self.connection().await?;
            let result = async {
                let client = busy.client()?;
                let params: Vec<(&str, &str)> = request.params().collect();
                let mut replanned = false;
                loop {
                    let stmt = client.prepare_cached(&sql).await.map_err(query_error)?;
                    let mut values: Vec<Box<dyn ToSql + Sync + Send>> =
                        Vec::with_capacity(names.len());
                    for (name, ty) in names.iter().zip(stmt.params()) {
                        let value = params
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| *v)
                            .ok_or_else(|| {
                                WarehouseError::Query(format!("no value for `:{name}`"))
                            })?;
                        values.push(typed(value, ty)?);
                    }
                    let refs: Vec<&(dyn ToSql + Sync)> = values
                        .iter()
                        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    match client.query(&stmt, &refs).await {
                        Ok(rows) => return Ok((stmt, rows)),
                        Err(e) if !replanned && stale_plan(&e) => {
                            client.statement_cache.clear();
                            replanned = true;
                        }
                        Err(e) => return Err(query_error(e)),
                    }
                }
            }
            .await;
            busy.finish();
            let (stmt, rows) = result?;
            let columns: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(
                    (0..columns.len())
                        .map(|i| cell(row, i))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            self.latency.wait(started.elapsed()).await;
            Ok(Rows {
                columns,
                rows: out,
                ..Rows::default()
            })
        })
    }

    fn update_log(&self) -> BoxFuture<'_, Result<Vec<UpdateLogEntry>, WarehouseError>> {
        Box::pin(self.within_deadline("reading update_log", self.read_update_log()))
    }

    fn settle_cancelled(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.settle())
    }
}

#[cfg(test)]
mod tests;
