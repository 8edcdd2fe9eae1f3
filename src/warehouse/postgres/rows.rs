//! Rows read back: update_log entries, and any result cell as JSON, with errors that name
//! what was unexpected instead of panicking.

use super::*;

/// A row the schema did not lead us to expect: an error that names the table, never a panic.
pub(super) fn unexpected_row(table: &str, e: &tokio_postgres::Error) -> WarehouseError {
    WarehouseError::Query(format!(
        "unexpected schema of `{table}`: {}",
        clean_error(e)
    ))
}

/// One `update_log` row (`table_name`, `batch`, `last_updated`, `rows`).
pub(super) fn update_log_entry(r: &tokio_postgres::Row) -> Result<UpdateLogEntry, WarehouseError> {
    let bad = |e: tokio_postgres::Error| {
        WarehouseError::Query(format!(
            "unexpected schema of `update_log` (expected table_name TEXT, batch TEXT, \
             last_updated BIGINT, rows BIGINT, none NULL): {}",
            clean_error(&e)
        ))
    };
    Ok(UpdateLogEntry {
        table: r.try_get(0).map_err(bad)?,
        batch: r.try_get(1).map_err(bad)?,
        last_updated_ms: r.try_get::<_, i64>(2).map_err(bad)?.max(0).unsigned_abs(),
        rows: r.try_get::<_, i64>(3).map_err(bad)?.max(0).unsigned_abs(),
    })
}

/// Boxes one text parameter as the type the server expects.
pub(super) fn typed(
    value: &str,
    ty: &Type,
) -> Result<Box<dyn ToSql + Sync + Send>, WarehouseError> {
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

pub(super) fn cell(
    row: &tokio_postgres::Row,
    i: usize,
) -> Result<serde_json::Value, WarehouseError> {
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
