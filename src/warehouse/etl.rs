//! The ETL simulator: on a schedule (hourly on the hour by default), each run appends a batch to
//! each table in its own transaction and records it in `update_log`. A run can be told to fail
//! chosen tables (a partial update) or to load some of them late.
//!
//! The simulator only loads the warehouse; telling the caches (`etl-complete`) is the job of
//! whoever runs it, exactly as the baseline's ETL job calls `warehouse_update_complete()` at its end.

use std::time::Duration;

use serde::Serialize;

use super::EtlTarget;
use crate::model::clock::{Millis, format_batch_label};

/// How a run should go wrong, if at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtlPlan {
    /// Tables whose load fails (rolled back, not recorded).
    pub fail: Vec<String>,
    /// Tables loaded only after the others, this long (clock time) later.
    pub late: Vec<(String, Duration)>,
}

impl EtlPlan {
    /// A run in which the loads of `tables` fail and the others land: a partial update.
    pub fn failing<T: Into<String>>(tables: impl IntoIterator<Item = T>) -> Self {
        Self {
            fail: tables.into_iter().map(Into::into).collect(),
            late: Vec::new(),
        }
    }
}

/// What happened to one table in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum TableLoad {
    /// Loaded and recorded in `update_log`.
    Loaded {
        /// The table.
        table: String,
        /// Rows appended.
        rows: u64,
    },
    /// The load failed; nothing was recorded.
    Failed {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// Deferred: to be loaded later.
    Late {
        /// The table.
        table: String,
        /// How much later (clock time).
        after_ms: u64,
    },
}

/// One ETL run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtlRun {
    /// Its batch label (`20261126-10:00`).
    pub batch: String,
    /// When it ran (ms since the epoch, engine clock).
    pub at_ms: Millis,
    /// Per table, in load order.
    pub tables: Vec<TableLoad>,
}

impl EtlRun {
    /// Tables loaded and recorded.
    pub fn loaded(&self) -> Vec<&str> {
        self.tables
            .iter()
            .filter_map(|t| match t {
                TableLoad::Loaded { table, .. } => Some(table.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The label of the batch a run at `at_ms` loads, for a schedule of `interval` (the boundary at or
/// before `at_ms`, as `YYYYMMDD-HH:MM`).
pub fn batch_label(at_ms: Millis, interval: Duration) -> String {
    let step = crate::model::num::ms(interval).max(60_000);
    format_batch_label(at_ms - at_ms % step)
}

/// The next schedule boundary strictly after `now`.
pub fn next_boundary(now: Millis, interval: Duration) -> Millis {
    let step = crate::model::num::ms(interval).max(1);
    now - now % step + step
}

/// Loads batch `batch` into `tables` (those not late), in order. Late tables are listed and not
/// loaded: [`load_late`] loads them when their time comes.
pub async fn run_batch(
    target: &dyn EtlTarget,
    tables: &[&str],
    batch: &str,
    at_ms: Millis,
    plan: &EtlPlan,
) -> EtlRun {
    let mut out = Vec::with_capacity(tables.len());
    for &table in tables {
        if let Some((_, after)) = plan.late.iter().find(|(t, _)| t == table) {
            out.push(TableLoad::Late {
                table: table.to_string(),
                after_ms: crate::model::num::ms(*after),
            });
            continue;
        }
        let fail = plan.fail.iter().any(|t| t == table);
        out.push(load_one(target, table, batch, at_ms, fail).await);
    }
    EtlRun {
        batch: batch.to_string(),
        at_ms,
        tables: out,
    }
}

/// Loads one late table of batch `batch` at `at_ms`.
pub async fn load_late(
    target: &dyn EtlTarget,
    table: &str,
    batch: &str,
    at_ms: Millis,
) -> TableLoad {
    load_one(target, table, batch, at_ms, false).await
}

/// Loads `table` of batch `batch` at `at_ms` (made to fail when `fail`), and says how it went.
async fn load_one(
    target: &dyn EtlTarget,
    table: &str,
    batch: &str,
    at_ms: Millis,
    fail: bool,
) -> TableLoad {
    match target.load_table(table, batch, at_ms, fail).await {
        Ok(rows) => TableLoad::Loaded {
            table: table.to_string(),
            rows,
        },
        Err(e) => TableLoad::Failed {
            table: table.to_string(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{MemoryWarehouse, Warehouse};

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn labels_and_boundaries_follow_the_schedule() {
        // 2026-11-26T10:00:00Z + 12 min
        let t = 1_795_687_200_000 + 12 * 60_000;
        assert_eq!(batch_label(t, H), "20261126-10:00");
        assert_eq!(next_boundary(t, H), 1_795_687_200_000 + 3_600_000);
        assert_eq!(
            next_boundary(1_795_687_200_000, H),
            1_795_687_200_000 + 3_600_000
        );
    }

    #[tokio::test]
    async fn a_partial_run_records_only_what_loaded() {
        let w = MemoryWarehouse::for_tables(
            &crate::model::versions::Tables::new(["sales", "inventory", "customers"]).unwrap(),
            Duration::ZERO,
        );
        let plan = EtlPlan {
            fail: vec!["inventory".into()],
            late: vec![("customers".into(), Duration::from_secs(300))],
        };
        let run = run_batch(&w, &["customers", "sales", "inventory"], "b1", 10, &plan).await;
        assert_eq!(run.loaded(), vec!["sales"]);
        assert!(
            matches!(&run.tables[2], TableLoad::Failed { reason, .. } if reason.contains("simulated failure"))
        );
        assert!(matches!(
            &run.tables[0],
            TableLoad::Late {
                after_ms: 300_000,
                ..
            }
        ));
        let log = w.update_log().await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].table, "sales");
        let late = load_late(&w, "customers", "b1", 20).await;
        assert!(matches!(late, TableLoad::Loaded { .. }));
        assert_eq!(w.update_log().await.unwrap().len(), 2);
    }
}
