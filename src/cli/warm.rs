//! `freshcache warm`: load the hottest keys ahead of need and report progress.

use clap::Args;

use super::World;
use super::output::print_json;
use crate::exit::CliError;
use crate::settings::Settings;
use crate::traffic::{self, TrafficConfig};

/// Options of `warm`.
#[derive(Debug, Args)]
pub struct WarmArgs {
    /// How many of the hottest keys to load.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
}

/// `freshcache warm`.
pub async fn warm(g: &Settings, args: WarmArgs) -> Result<(), CliError> {
    let world = World::open(g).await?;
    let instance = world.instance(g).await?;
    let hot = instance.engine().hot_requests(&[], args.top);
    let mut progress = if hot.is_empty() {
        // A fresh process has no hit history: warm the catalog's most asked questions instead.
        let requests: Vec<_> = traffic::questions(&world.catalog, TrafficConfig::default().seed)
            .into_iter()
            .take(args.top)
            .collect();
        instance.warm_requests(requests).await?
    } else {
        instance.warm(args.top).await?
    };
    loop {
        let p = *progress.borrow_and_update();
        if !g.json {
            eprint!(
                "\rwarming: {}/{} loaded, {} failed, {} already fresh   ",
                p.done, p.total, p.failed, p.skipped
            );
        }
        if p.finished() {
            if g.json {
                print_json(&p)?;
            } else {
                eprintln!();
            }
            return warm_outcome(&p, world.warehouse.as_ref()).await;
        }
        if progress.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Success when every load worked; otherwise what went wrong, as an exit code: 5 when nothing
/// loaded because the warehouse is unreachable, 1 otherwise.
async fn warm_outcome(
    p: &crate::engine::RefreshProgress,
    warehouse: &dyn crate::warehouse::Warehouse,
) -> Result<(), CliError> {
    if p.failed == 0 {
        return Ok(());
    }
    let failed = format!("warming: {} of {} loads failed", p.failed, p.total);
    if p.done == 0 && p.skipped == 0 {
        // Nothing loaded: ask the warehouse why, so the exit code says whether it is down.
        if let Err(e) = warehouse.update_log().await {
            let e = CliError::from(e);
            return Err(CliError::new(e.code, format!("{failed}: {}", e.message)));
        }
    }
    Err(CliError::new(
        crate::exit::EXIT_FAILURE,
        format!("{failed}; `freshcache get` on one of them shows why"),
    ))
}
