//! The PostgreSQL warehouse (Redshift speaks the PostgreSQL protocol), with tokio-postgres.
//!
//! The catalog's `:name` placeholders become `$n`; each parameter is converted to the type the
//! server infers for it (so `CAST(:year AS INTEGER)` is sent as an integer, `:region` as text). One
//! connection serves queries (tokio-postgres pipelines concurrent queries on it); the ETL writes
//! through a second one, because a transaction needs the connection to itself. A closed
//! connection is replaced on the next call. The password never appears in [`Warehouse::describe`],
//! in errors or in logs.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::demo_data::{self, DemoSize, sql_text};
use super::{EtlTarget, Latency, Rows, UpdateLogEntry, Warehouse, WarehouseError};
use crate::engine::catalog::Request;
use crate::store::BoxFuture;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    client: Arc<Client>,
    statements: HashMap<String, Statement>,
}

/// A PostgreSQL (or Redshift) warehouse.
pub struct PostgresWarehouse {
    config: Config,
    describe: String,
    reader: Mutex<Option<Conn>>,
    writer: Mutex<Option<Client>>,
    latency: Latency,
}

impl std::fmt::Debug for PostgresWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWarehouse")
            .field("at", &self.describe)
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
    if e.is_closed() {
        return unavailable(e);
    }
    let text = clean_error(&e);
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        WarehouseError::NotInitialised(text)
    } else {
        WarehouseError::Query(text)
    }
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
            crate::redis_link::mask_url(url)
        ));
    }
    Ok(())
}

impl PostgresWarehouse {
    /// A warehouse at `url` (`postgres://user[:password]@host:port/db`). Connects lazily.
    pub fn new(url: &str, latency: Latency) -> Result<Self, WarehouseError> {
        check_url(url).map_err(WarehouseError::Unavailable)?;
        let mut config = Config::from_str(url).map_err(|e| {
            WarehouseError::Unavailable(format!(
                "bad PostgreSQL URL (expected postgres://user[:password]@host[:port]/database): {}",
                clean_error(&e)
            ))
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("freshcache");
        Ok(Self {
            describe: describe_config(&config),
            config,
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            latency,
        })
    }

    async fn connect(&self) -> Result<Client, WarehouseError> {
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| {
                    WarehouseError::Unavailable(format!("{}: connect timed out", self.describe))
                })?
                .map_err(|e| {
                    WarehouseError::Unavailable(format!("{}: {}", self.describe, clean_error(&e)))
                })?;
        tokio::spawn(async move {
            // Ends when the connection closes; the next call then reconnects.
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn statement(&self, sql: &str) -> Result<(Arc<Client>, Statement), WarehouseError> {
        let mut guard = self.reader.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(Conn {
                client: Arc::new(self.connect().await?),
                statements: HashMap::new(),
            });
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| WarehouseError::Unavailable("no connection".into()))?;
        if let Some(s) = conn.statements.get(sql) {
            return Ok((conn.client.clone(), s.clone()));
        }
        let s = conn.client.prepare(sql).await.map_err(query_error)?;
        conn.statements.insert(sql.to_string(), s.clone());
        Ok((conn.client.clone(), s))
    }

    /// The writer connection, (re)connected if needed; held for the whole of one transaction.
    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, WarehouseError> {
        let mut guard = self.writer.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect().await?);
        }
        Ok(guard)
    }

    /// Creates the schema and loads the demo data as batch `batch` at `at_ms`, unless data is
    /// already there. Returns whether it loaded anything.
    pub async fn init_demo(
        &self,
        size: DemoSize,
        batch: &str,
        at_ms: u64,
    ) -> Result<bool, WarehouseError> {
        let mut guard = self.writer().await?;
        let c = guard
            .as_mut()
            .ok_or_else(|| WarehouseError::Unavailable("no connection".into()))?;
        {
            c.batch_execute(demo_data::SCHEMA)
                .await
                .map_err(query_error)?;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM update_log", &[])
                .await
                .map_err(query_error)?
                .get(0);
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
    }
}

/// Boxes one text parameter as the type the server expects.
fn typed(value: &str, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, WarehouseError> {
    let bad = || WarehouseError::Query(format!("`{value}` is not a valid {ty}"));
    Ok(match *ty {
        Type::INT2 => Box::new(value.parse::<i16>().map_err(|_| bad())?),
        Type::INT4 => Box::new(value.parse::<i32>().map_err(|_| bad())?),
        Type::INT8 => Box::new(value.parse::<i64>().map_err(|_| bad())?),
        Type::FLOAT4 => Box::new(value.parse::<f32>().map_err(|_| bad())?),
        Type::FLOAT8 => Box::new(value.parse::<f64>().map_err(|_| bad())?),
        Type::BOOL => Box::new(value.parse::<bool>().map_err(|_| bad())?),
        _ => Box::new(value.to_string()),
    })
}

fn cell(row: &tokio_postgres::Row, i: usize) -> Result<serde_json::Value, WarehouseError> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map(|v| v.map(serde_json::Value::from)),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(serde_json::Value::from)),
    };
    v.map(|v| v.unwrap_or(serde_json::Value::Null))
        .map_err(|e| {
            WarehouseError::Query(format!(
                "column `{}` of type {ty}: {}",
                row.columns()[i].name(),
                clean_error(&e)
            ))
        })
}

impl Warehouse for PostgresWarehouse {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>> {
        Box::pin(async move {
            let started = Instant::now();
            let (sql, names) = positional(&request.query().sql);
            let (client, stmt) = self.statement(&sql).await?;
            let params: Vec<(&str, &str)> = request.params().collect();
            let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(names.len());
            for (name, ty) in names.iter().zip(stmt.params()) {
                let value = params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| WarehouseError::Query(format!("no value for `:{name}`")))?;
                values.push(typed(value, ty)?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client.query(&stmt, &refs).await.map_err(query_error)?;
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
        Box::pin(async move {
            let (client, stmt) = self
                .statement(
                    "SELECT u.table_name, u.batch, u.last_updated, u.rows FROM update_log u \
                     JOIN (SELECT table_name, MAX(batch) AS batch FROM update_log GROUP BY table_name) m \
                       ON m.table_name = u.table_name AND m.batch = u.batch \
                     ORDER BY u.table_name",
                )
                .await?;
            let rows = client.query(&stmt, &[]).await.map_err(query_error)?;
            Ok(rows
                .iter()
                .map(|r| UpdateLogEntry {
                    table: r.get(0),
                    batch: r.get(1),
                    last_updated_ms: r.get::<_, i64>(2).max(0) as u64,
                    rows: r.get::<_, i64>(3).max(0) as u64,
                })
                .collect())
        })
    }
}

impl EtlTarget for PostgresWarehouse {
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> BoxFuture<'a, Result<u64, WarehouseError>> {
        Box::pin(async move {
            let mut guard = self.writer().await?;
            let c = guard
                .as_mut()
                .ok_or_else(|| WarehouseError::Unavailable("no connection".into()))?;
            let tx = c.transaction().await.map_err(query_error)?;
            if let Some(row) = tx
                .query_opt(
                    "SELECT rows FROM update_log WHERE table_name = $1 AND batch = $2",
                    &[&table, &batch],
                )
                .await
                .map_err(query_error)?
            {
                return Ok(row.get::<_, i64>(0).max(0) as u64);
            }
            let max_customer: i64 = tx
                .query_one("SELECT COALESCE(MAX(customer_id), 0) FROM customers", &[])
                .await
                .map_err(query_error)?
                .get(0);
            let max_sale: i64 = tx
                .query_one("SELECT COALESCE(MAX(sale_id), 0) FROM sales", &[])
                .await
                .map_err(query_error)?
                .get(0);
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
        })
    }
}

async fn record_update(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    batch: &str,
    at_ms: u64,
    rows: u64,
) -> Result<(), WarehouseError> {
    tx.execute(
        "INSERT INTO update_log (table_name, batch, last_updated, rows) VALUES ($1, $2, $3, $4)",
        &[&table, &batch, &(at_ms as i64), &(rows as i64)],
    )
    .await
    .map_err(query_error)?;
    Ok(())
}

/// Inserts generated rows as multi-row `INSERT`s of literal values (demo data only: every value
/// is generated here and quoted by [`sql_text`]).
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    head: &str,
    rows: Vec<String>,
) -> Result<u64, WarehouseError> {
    for chunk in rows.chunks(1000) {
        tx.batch_execute(&format!("{head} VALUES {}", chunk.join(",")))
            .await
            .map_err(query_error)?;
    }
    Ok(rows.len() as u64)
}

async fn insert_customers(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[demo_data::Customer],
) -> Result<u64, WarehouseError> {
    insert_rows(
        tx,
        "INSERT INTO customers (customer_id, name, region, segment, batch)",
        rows.iter()
            .map(|c| {
                format!(
                    "({},{},{},{},{})",
                    c.customer_id,
                    sql_text(&c.name),
                    sql_text(c.region),
                    sql_text(c.segment),
                    sql_text(&c.batch)
                )
            })
            .collect(),
    )
    .await
}

async fn insert_sales(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[demo_data::Sale],
) -> Result<u64, WarehouseError> {
    insert_rows(
        tx,
        "INSERT INTO sales (sale_id, customer_id, product, region, year, quarter, sold_on, quantity, amount_cents, batch)",
        rows.iter().map(|s| {
            format!(
                "({},{},{},{},{},{},{},{},{},{})",
                s.sale_id,
                s.customer_id,
                sql_text(s.product),
                sql_text(s.region),
                s.year,
                sql_text(s.quarter),
                sql_text(&s.sold_on),
                s.quantity,
                s.amount_cents,
                sql_text(&s.batch)
            )
        })
        .collect(),
    )
    .await
}

async fn insert_inventory(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[demo_data::Stock],
) -> Result<u64, WarehouseError> {
    insert_rows(
        tx,
        "INSERT INTO inventory (product, location, on_hand, reorder_level, batch)",
        rows.iter()
            .map(|s| {
                format!(
                    "({},{},{},{},{})",
                    sql_text(s.product),
                    sql_text(s.location),
                    s.on_hand,
                    s.reorder_level,
                    sql_text(&s.batch)
                )
            })
            .collect(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_positional() {
        let (sql, names) = positional(
            "SELECT ':x', a::int FROM t WHERE y = CAST(:year AS INTEGER) AND q = :quarter AND z = :year",
        );
        assert_eq!(
            sql,
            "SELECT ':x', a::int FROM t WHERE y = CAST($1 AS INTEGER) AND q = $2 AND z = $1"
        );
        assert_eq!(names, vec!["year", "quarter"]);
    }

    #[test]
    fn descriptions_never_hold_the_password() {
        let w = PostgresWarehouse::new(
            "postgres://ann:s3cret-sentinel@db.local:6543/sales",
            Latency::NONE,
        )
        .unwrap();
        assert_eq!(w.describe(), "postgres://ann@db.local:6543/sales");
        assert!(!format!("{w:?}").contains("s3cret"));
        let e = PostgresWarehouse::new("postgres://ann:pw@host:notaport/db", Latency::NONE)
            .unwrap_err();
        assert!(e.to_string().contains("bad PostgreSQL URL"), "{e}");
    }
}
