//! The ETL on a schedule: a batch at every boundary of the clock (hourly on the hour by default;
//! an accelerated clock makes an hour pass in a minute for demos).

use std::time::Duration;

use tokio::sync::watch;

use super::Instance;
use crate::warehouse::etl::{EtlPlan, batch_label, next_boundary};

/// Decides how the run at a boundary goes (e.g. "the 11:00 batch fails `inventory`").
pub type PlanFor = Box<dyn Fn(u64) -> EtlPlan + Send + Sync>;

/// Runs an ETL batch at every `interval` boundary of the instance's clock until `stop` turns true.
/// `plan_for` gets the run's index (0 for the first) and says which tables fail or are late.
pub fn spawn_etl(
    instance: Instance,
    interval: Duration,
    plan_for: PlanFor,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clock = instance.engine().clock().clone();
        let mut run = 0u64;
        loop {
            let now = clock.now_ms();
            let at = next_boundary(now, interval);
            let wait = Duration::from_millis(at - now).div_f64(clock.speed().max(1e-9));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            // The clock may have run a little past the boundary while we slept.
            let label = batch_label(clock.now_ms().max(at), interval);
            // A failed table is in the batch's own etl_run event; an error here is the bus's.
            if let Err(e) = instance.load_batch(&label, &plan_for(run)).await {
                tracing::warn!("scheduled batch {label}: {e}");
            }
            run += 1;
        }
    })
}
