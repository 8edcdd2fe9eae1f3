//! Operator actions — invalidate, warm, simulate a partial update, switch strategy — each
//! refused here when read-only mode or the environment forbids it (see `guard`), and each
//! written to the event log with who, where, when and what came of it.

use tokio::sync::watch;

use super::{EtlCompleteReport, Instance, InstanceError, guard};
use crate::bus::BumpMode;
use crate::engine::RefreshProgress;
use crate::model::events::EventKind;
use crate::model::ops::Action;
use crate::model::policy::Strategy;
use crate::model::versions::TableId;
use crate::warehouse::etl::{EtlPlan, EtlRun};

impl Instance {
    /// Writes an operator action to the event log, naming the operator acting now (see
    /// [`super::acting_as`]). The guarded methods write their own; a caller that completes an
    /// action of its own (the sidecar's `etl-complete`) writes one with this.
    pub async fn audit(&self, action: Action, targets: Vec<String>, result: &str) {
        let op = &guard::actor_or(&self.inner.operator);
        let logged = self
            .inner
            .bus
            .publish(EventKind::OperatorAction {
                action: action.name().to_string(),
                operator: op.user.clone(),
                host: op.host.clone(),
                env: self.inner.config.env.to_string(),
                targets,
                result: result.to_string(),
            })
            .await;
        if let Err(e) = logged {
            // The action's outcome stands; its audit record is what was lost, so say so loudly.
            tracing::error!(
                "the audit record of {} ({result}) could not be written: {e}",
                action.name()
            );
        }
    }

    /// Refuses `action` if read-only mode or the environment forbids it, logging the refusal.
    /// The guarded methods call it themselves; a caller that starts guarded work of its own (the
    /// ETL simulator on a schedule, `traffic --with-etl`) asks first.
    pub async fn allow(&self, action: Action, targets: &[String]) -> Result<(), InstanceError> {
        let refusal = guard::refusal(action, self.inner.config.env, self.inner.config.read_only);
        if let Some(e) = refusal {
            self.audit(action, targets.to_vec(), &e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    /// Resolves table names, refusing unknown ones with the list of known ones.
    pub fn table_ids(&self, names: &[String]) -> Result<Vec<TableId>, InstanceError> {
        let tables = self.inner.engine.catalog().tables();
        names
            .iter()
            .map(|n| {
                tables
                    .id(n)
                    .map_err(|e| InstanceError::BadInput(e.to_string()))
            })
            .collect()
    }

    /// Invalidates `tables` (all when empty): their versions go up by one, so every answer that
    /// reads them misses once. O(1) whatever the number of entries; old entries age out.
    pub async fn invalidate(&self, tables: &[TableId]) -> Result<EtlCompleteReport, InstanceError> {
        let catalog_tables = self.inner.engine.catalog().tables().clone();
        let ids: Vec<TableId> = if tables.is_empty() {
            catalog_tables.ids().collect()
        } else {
            tables.to_vec()
        };
        let targets: Vec<String> = ids
            .iter()
            .map(|t| catalog_tables.name(*t).to_string())
            .collect();
        self.allow(Action::Invalidate, &targets).await?;
        let label = self.inner.engine.versions().batch.to_string();
        let outcome = match self
            .inner
            .bus
            .bump(&ids, &label, BumpMode::Force, false)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.audit(Action::Invalidate, targets, &format!("failed: {e}"))
                    .await;
                return Err(e.into());
            }
        };
        self.apply_local(&outcome.versions);
        self.audit(Action::Invalidate, targets.clone(), "ok").await;
        Ok(EtlCompleteReport {
            batch: label,
            verified: targets.clone(),
            bumped: targets,
            behind: Vec::new(),
            versions: crate::bus::versions_by_name(&outcome.versions, &catalog_tables),
        })
    }

    /// Loads the `top` hottest keys (of all tables) that are not fresh, in the background; the
    /// receiver reports progress.
    pub async fn warm(
        &self,
        top: usize,
    ) -> Result<watch::Receiver<RefreshProgress>, InstanceError> {
        let requests = self.inner.engine.hot_requests(&[], top);
        self.warm_requests(requests).await
    }

    /// Loads the given requests that are not fresh, in the background, as `warm` does.
    pub async fn warm_requests(
        &self,
        requests: Vec<crate::model::catalog::Request>,
    ) -> Result<watch::Receiver<RefreshProgress>, InstanceError> {
        let targets = vec![format!("{} keys", requests.len())];
        self.allow(Action::Warm, &targets).await?;
        let progress = self.track_refresh(requests, Vec::new(), true);
        self.audit(Action::Warm, targets, "ok").await;
        Ok(progress)
    }

    /// Simulates a partial update: an ETL batch in which `fail` tables fail to load, followed by
    /// `etl-complete`. Staging and development only.
    pub async fn simulate_partial(
        &self,
        fail: &[TableId],
    ) -> Result<(EtlRun, EtlCompleteReport), InstanceError> {
        let tables = self.inner.engine.catalog().tables().clone();
        let targets: Vec<String> = fail.iter().map(|t| tables.name(*t).to_string()).collect();
        self.allow(Action::SimulatePartial, &targets).await?;
        if fail.is_empty() {
            return Err(InstanceError::BadInput(
                "name at least one table to fail (--fail TABLE)".into(),
            ));
        }
        let batch = self.next_batch_label().await?;
        let plan = EtlPlan::failing(targets.iter().cloned());
        let result = self.load_batch(&batch, &plan).await;
        let summary = match &result {
            Ok((_, report)) => format!(
                "ok: batch {batch}; bumped {}; behind {}",
                list_or_none(&report.bumped),
                list_or_none(
                    &report
                        .behind
                        .iter()
                        .map(|b| b.table.clone())
                        .collect::<Vec<_>>()
                )
            ),
            Err(e) => format!("failed: {e}"),
        };
        self.audit(Action::SimulatePartial, targets, &summary).await;
        result
    }

    /// Switches the engine's strategy (demo).
    pub async fn set_strategy(&self, strategy: Strategy) -> Result<(), InstanceError> {
        let targets = vec![strategy.name().to_string()];
        self.allow(Action::SwitchStrategy, &targets).await?;
        self.inner.engine.set_strategy(strategy);
        self.audit(Action::SwitchStrategy, targets, "ok").await;
        Ok(())
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
