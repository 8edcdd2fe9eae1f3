//! `freshcache warehouse init` and `freshcache warehouse status`: the demo data and update_log.

use clap::Subcommand;
use serde_json::json;

use super::Backends;
use super::output::print_json;
use crate::exit::CliError;
use crate::settings::Settings;
use crate::warehouse::demo_data::DemoSize;

/// `warehouse` subcommands.
#[derive(Debug, Subcommand)]
pub enum WarehouseCommand {
    /// Creates the schema and loads the demo data (100 000 sales) unless present.
    #[command(
        after_help = "Examples:\n  freshcache warehouse init\n  freshcache --warehouse postgres://analyst@127.0.0.1/sales warehouse init --sales 50000"
    )]
    Init {
        /// Sales rows to generate.
        #[arg(long, default_value_t = 100_000)]
        sales: u32,
        /// Customers to generate.
        #[arg(long, default_value_t = 2_000)]
        customers: u32,
    },
    /// Shows update_log and the versions the caches use.
    #[command(
        after_help = "Examples:\n  freshcache warehouse status\n  freshcache --redis redis://127.0.0.1:6379 --json warehouse status"
    )]
    Status,
}

/// `freshcache warehouse ...`.
pub async fn warehouse(settings: &Settings, cmd: WarehouseCommand) -> Result<(), CliError> {
    match cmd {
        WarehouseCommand::Init { sales, customers } => {
            // Checked before anything is opened: opening the embedded warehouse creates it.
            if let Some(e) = crate::instance::refusal(
                crate::model::ops::Action::InitWarehouse,
                settings.environment,
                settings.read_only,
            ) {
                tracing::warn!("refused: warehouse init: {e}");
                return Err(e.into());
            }
            let size = DemoSize { customers, sales };
            let (backends, created) = Backends::open_sized(settings, size).await?;
            let loaded = created || backends.init_demo(size).await?;
            if settings.json {
                return print_json(&json!({
                    "warehouse": backends.warehouse.describe(),
                    "loaded": loaded,
                }));
            }
            if loaded {
                println!(
                    "{}: schema and demo data created",
                    backends.warehouse.describe()
                );
            } else {
                println!(
                    "{}: already initialised, nothing changed",
                    backends.warehouse.describe()
                );
            }
            Ok(())
        }
        WarehouseCommand::Status => {
            let backends = Backends::open(settings).await?;
            let log = backends.warehouse.update_log().await?;
            let versions = backends
                .bus
                .versions()
                .await
                .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
            let tables = backends.catalog.tables();
            if settings.json {
                return print_json(&json!({
                    "warehouse": backends.warehouse.describe(),
                    "update_log": log,
                    "versions": crate::bus::versions_by_name(&versions, tables),
                    "batch": versions.batch.as_ref(),
                }));
            }
            println!("warehouse {}", backends.warehouse.describe());
            println!(
                "{:<12} {:<18} {:>8} {:>8}",
                "table", "update_log batch", "rows", "version"
            );
            for t in tables.ids() {
                let name = tables.name(t);
                let entry = log.iter().find(|e| e.table == name);
                println!(
                    "{:<12} {:<18} {:>8} {:>8}",
                    name,
                    entry.map_or("-", |e| e.batch.as_str()),
                    entry.map_or(0, |e| e.rows),
                    versions.version(t)
                );
            }
            Ok(())
        }
    }
}
