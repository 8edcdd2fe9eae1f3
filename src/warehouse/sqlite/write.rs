//! The ETL's writes: a batch appended to a table and recorded in update_log, in one
//! transaction.

use super::*;

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
                return Ok(n.max(0).unsigned_abs());
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

pub(super) fn record_update(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    batch: &str,
    at_ms: u64,
    rows: u64,
) -> Result<(), WarehouseError> {
    tx.execute(
        "INSERT INTO update_log (table_name, batch, last_updated, rows) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            table,
            batch,
            crate::model::num::to_i64(at_ms),
            crate::model::num::to_i64(rows)
        ],
    )
    .map_err(query_err)?;
    Ok(())
}

pub(super) fn insert_customers(
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

pub(super) fn insert_sales(
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

pub(super) fn insert_inventory(
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
