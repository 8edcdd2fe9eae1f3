//! The ETL's writes: a batch appended to a table and recorded in update_log, one transaction
//! at a time.

use super::*;

impl EtlTarget for PostgresWarehouse {
    fn load_table<'a>(
        &'a self,
        table: &'a str,
        batch: &'a str,
        at_ms: u64,
        fail: bool,
    ) -> BoxFuture<'a, Result<u64, WarehouseError>> {
        Box::pin(self.within_deadline(
            "loading a batch",
            self.write_batch(table, batch, at_ms, fail),
        ))
    }
}

pub(super) async fn record_update(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    batch: &str,
    at_ms: u64,
    rows: u64,
) -> Result<(), WarehouseError> {
    tx.execute(
        "INSERT INTO update_log (table_name, batch, last_updated, rows) VALUES ($1, $2, $3, $4)",
        &[
            &table,
            &batch,
            &(crate::model::num::to_i64(at_ms)),
            &(crate::model::num::to_i64(rows)),
        ],
    )
    .await
    .map_err(query_error)?;
    Ok(())
}

/// Inserts generated rows as multi-row `INSERT`s of literal values (demo data only: every value
/// is generated here and quoted by [`sql_text`]).
pub(super) async fn insert_rows(
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

pub(super) async fn insert_customers(
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

pub(super) async fn insert_sales(
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

pub(super) async fn insert_inventory(
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
