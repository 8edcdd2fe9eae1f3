//! `freshcache simulate-partial`: an ETL batch in which the named tables fail, then etl-complete.

use clap::Args;

use super::Backends;
use super::confirm::confirm_action;
use super::etl::print_run;
use crate::exit::CliError;
use crate::model::ops::Action;
use crate::settings::Settings;

/// Options of `simulate-partial`.
#[derive(Debug, Args)]
pub struct SimulatePartialArgs {
    /// Tables whose load fails.
    #[arg(
        long = "fail",
        value_delimiter = ',',
        required = true,
        value_name = "TABLE"
    )]
    pub fail: Vec<String>,
    /// Do it without asking for a typed confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `freshcache simulate-partial`.
pub async fn simulate_partial(
    settings: &Settings,
    args: SimulatePartialArgs,
) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends.instance(settings).await?;
    let fail = instance.table_ids(&args.fail)?;
    let what = format!(
        "simulate-partial: an ETL batch runs now; {} will fail and stay behind, the other tables are bumped.",
        args.fail.join(", ")
    );
    confirm_action(
        settings,
        Action::SimulatePartial,
        &args.fail,
        args.yes,
        &what,
    )?;
    let (run, report) = instance.simulate_partial(&fail).await?;
    print_run(settings, &run, &report)
}
