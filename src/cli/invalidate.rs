//! `freshcache invalidate`: bump the versions of tables so every answer that reads them misses once.

use clap::Args;

use super::World;
use super::confirm::confirm_action;
use super::etl::print_report;
use crate::exit::CliError;
use crate::model::ops::Action;
use crate::settings::Settings;

/// Options of `invalidate`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["tables", "all"]))]
pub struct InvalidateArgs {
    /// Tables to invalidate.
    #[arg(long = "table", value_delimiter = ',', value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Every table.
    #[arg(long)]
    pub all: bool,
    /// Do it without asking for a typed confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `freshcache invalidate`.
pub async fn invalidate(g: &Settings, args: InvalidateArgs) -> Result<(), CliError> {
    let world = World::open(g).await?;
    let instance = world.instance(g).await?;
    let ids = if args.all {
        Vec::new()
    } else {
        instance.table_ids(&args.tables)?
    };
    let names: Vec<String> = if args.all {
        world.catalog.tables().names().to_vec()
    } else {
        args.tables.clone()
    };
    let affected = world
        .catalog
        .queries()
        .iter()
        .filter(|q| {
            args.all
                || q.tables
                    .iter()
                    .any(|t| names.iter().any(|n| n == world.catalog.tables().name(*t)))
        })
        .count();
    let what = format!(
        "invalidate {}: every cached answer of {affected} of {} queries misses once.",
        names.join(", "),
        world.catalog.queries().len()
    );
    let targets = if args.all {
        vec!["all".to_string()]
    } else {
        names.clone()
    };
    confirm_action(g, Action::Invalidate, &targets, args.yes, &what)?;
    let report = instance.invalidate(&ids).await?;
    print_report(g, &report)
}
