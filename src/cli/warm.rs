//! `freshcache warm`: load the hottest keys ahead of need and report progress.

use clap::Args;

use super::Backends;
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
pub async fn warm(settings: &Settings, args: WarmArgs) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends.instance(settings).await?;
    let hot = instance.engine().hot_requests(&[], args.top);
    let mut progress = if hot.is_empty() {
        // A fresh process has no hit history: warm the catalog's most asked questions instead.
        let requests: Vec<_> = traffic::questions(&backends.catalog, TrafficConfig::default().seed)
            .into_iter()
            .take(args.top)
            .collect();
        instance.warm_requests(requests).await?
    } else {
        instance.warm(args.top).await?
    };
    loop {
        let p = *progress.borrow_and_update();
        if !settings.json {
            eprint!(
                "\rwarming: {}/{} loaded, {} failed, {} already fresh   ",
                p.done, p.total, p.failed, p.skipped
            );
        }
        if p.finished() {
            // Without a shared tier the answers live in this process's memory and end with it.
            let shared = backends.shared.is_some();
            if settings.json {
                let mut doc = serde_json::to_value(p).unwrap_or_default();
                doc["shared"] = serde_json::Value::Bool(shared);
                print_json(&doc)?;
            } else {
                eprintln!();
                if !shared {
                    eprintln!(
                        "note: embedded cache: these answers were loaded into this process and end \
                         with it; to warm a cache other processes use, share one with --redis"
                    );
                }
            }
            return warm_outcome(&p, backends.warehouse.as_ref()).await;
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
