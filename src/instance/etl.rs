//! The simulated ETL, run through an instance: a batch loaded into the warehouse (tables failing
//! or late as the plan says), logged, then completed by the invalidation protocol.

use std::time::Duration;

use super::{EtlCompleteReport, Instance, InstanceError, check_batch_label};
use crate::model::events::{Behind, EventKind};
use crate::model::ops::Action;
use crate::model::versions::TableId;
use crate::warehouse::etl::{self, EtlPlan, EtlRun, TableLoad};

impl Instance {
    /// Runs one simulated ETL batch into the warehouse (failing or deferring tables as `plan`
    /// says), logs it, then runs the invalidation protocol for it. Late tables are loaded when
    /// their time comes, followed by another `etl-complete` for the same batch. The simulator
    /// writes made-up data: refused in production and in read-only mode.
    pub async fn run_etl(
        &self,
        batch: &str,
        plan: &EtlPlan,
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        self.allow(Action::RunEtl, &[batch.to_string()]).await?;
        self.load_batch(batch, plan).await
    }

    /// [`Instance::run_etl`] without the guard: the demo's scheduled ETL (part of the simulated
    /// world, not an operator's action) and `simulate-partial` (guarded by its own action).
    pub(crate) async fn load_batch(
        &self,
        batch: &str,
        plan: &EtlPlan,
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        check_batch_label(batch, self.inner.engine.clock().now_ms())?;
        let target = self.inner.etl.clone().ok_or(InstanceError::NoEtl)?;
        let tables = self.inner.engine.catalog().tables().clone();
        let names: Vec<&str> = tables.names().iter().map(String::as_str).collect();
        let now = self.inner.engine.clock().now_ms();
        // The tables are being loaded: no background refresh should load them under the keys the
        // coming bump retires (etl-complete clears the mark).
        let all: Vec<TableId> = tables.ids().collect();
        self.inner.engine.set_updating(&all, true);
        let run = etl::run_batch(target.as_ref(), &names, batch, now, plan).await;
        let mut failed = Vec::new();
        let mut late = Vec::new();
        for t in &run.tables {
            match t {
                TableLoad::Failed { table, reason } => failed.push(Behind {
                    table: table.clone(),
                    reason: reason.clone(),
                }),
                TableLoad::Late { table, after_ms } => {
                    late.push(table.clone());
                    self.load_late(table.clone(), batch.to_string(), *after_ms);
                }
                TableLoad::Loaded { .. } => {}
            }
        }
        let logged = self
            .inner
            .bus
            .publish(EventKind::EtlRun {
                batch: batch.to_string(),
                loaded: run.loaded().iter().map(|s| s.to_string()).collect(),
                failed,
                late,
            })
            .await;
        if let Err(e) = logged {
            self.inner.engine.set_updating(&all, false);
            return Err(e.into());
        }
        let report = self.complete_batch(batch, &[]).await;
        self.inner.engine.set_updating(&all, false);
        Ok((run, report?))
    }

    fn load_late(&self, table: String, batch: String, after_ms: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            let clock = this.inner.engine.clock().clone();
            let real = Duration::from_millis(after_ms).div_f64(clock.speed().max(1e-9));
            tokio::time::sleep(real).await;
            let Some(target) = this.inner.etl.clone() else {
                return;
            };
            match etl::load_late(target.as_ref(), &table, &batch, clock.now_ms()).await {
                TableLoad::Failed { table, reason } => {
                    // Nothing was recorded in update_log, so there is nothing to confirm: say so
                    // in the feed as the batch's own failure would have been.
                    tracing::warn!("the late load of {table} for batch {batch} failed: {reason}");
                    this.log_event(EventKind::EtlRun {
                        batch,
                        loaded: vec![],
                        failed: vec![Behind { table, reason }],
                        late: vec![],
                    })
                    .await;
                    return;
                }
                TableLoad::Loaded { .. } | TableLoad::Late { .. } => {}
            }
            if let Err(e) = this.complete_batch(&batch, &[]).await {
                tracing::warn!("batch {batch} after the late load of {table}: {e}");
            }
        });
    }
}
