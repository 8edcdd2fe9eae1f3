//! `freshcache invalidate`: bump the versions of tables so every answer that reads them misses once.

use clap::Args;

use super::Backends;
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
pub async fn invalidate(settings: &Settings, args: InvalidateArgs) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends.instance(settings).await?;
    let ids = if args.all {
        Vec::new()
    } else {
        instance.table_ids(&args.tables)?
    };
    let names: Vec<String> = if args.all {
        backends.catalog.tables().names().to_vec()
    } else {
        args.tables.clone()
    };
    // The same count the console's confirmation shows: each query once.
    let blast = backends.catalog.blast_radius(&names);
    let what = format!("invalidate {}: {blast}.", names.join(", "));
    let targets = if args.all {
        vec!["all".to_string()]
    } else {
        names.clone()
    };
    confirm_action(settings, Action::Invalidate, &targets, args.yes, &what)?;
    let report = instance.invalidate(&ids).await?;
    print_report(settings, &report)
}
