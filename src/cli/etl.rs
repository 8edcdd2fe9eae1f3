//! `freshcache etl run` and `freshcache etl-complete`, and how an ETL run and an etl-complete
//! report print (the other commands that end in an etl-complete print them the same way).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::Backends;
use super::output::{clean_line, human_duration, print_json};
use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::instance::{EtlCompleteReport, Instance};
use crate::model::clock::parse_duration;
use crate::settings::Settings;
use crate::warehouse::etl::{EtlPlan, EtlRun, TableLoad};

/// Options of `etl-complete`.
#[derive(Debug, Args)]
pub struct EtlCompleteArgs {
    /// The batch the ETL finished (labels must sort in time order, e.g. 20261126-10:00).
    #[arg(long)]
    pub batch: String,
    /// Tables the batch should have reached (all when omitted).
    #[arg(long = "tables", value_delimiter = ',', value_name = "TABLE,...")]
    pub tables: Vec<String>,
}

/// `etl` subcommands.
#[derive(Debug, Subcommand)]
pub enum EtlCommand {
    /// Loads a batch now (then runs etl-complete for it).
    #[command(
        after_help = "Examples:\n  freshcache etl run\n  freshcache etl run --batch 20261126-10:00 --fail inventory --late customers=10m"
    )]
    Run {
        /// The batch label (default: one for now).
        #[arg(long)]
        batch: Option<String>,
        /// Tables whose load fails.
        #[arg(long = "fail", value_delimiter = ',', value_name = "TABLE")]
        fail: Vec<String>,
        /// Tables loaded late, as TABLE=DURATION (clock time).
        #[arg(long = "late", value_name = "TABLE=DURATION")]
        late: Vec<String>,
    },
}

pub(super) fn print_report(
    settings: &Settings,
    report: &EtlCompleteReport,
) -> Result<(), CliError> {
    if settings.json {
        return print_json(report);
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let already: Vec<String> = report
        .verified
        .iter()
        .filter(|t| !report.bumped.contains(t))
        .cloned()
        .collect();
    println!("batch {}", clean_line(&report.batch));
    println!("  bumped:          {}", list(&report.bumped));
    println!("  already applied: {}", list(&already));
    if report.behind.is_empty() {
        println!("  behind:          none");
    } else {
        for b in &report.behind {
            println!("  behind:          {} ({})", b.table, clean_line(&b.reason));
        }
    }
    println!(
        "  versions:        {}",
        report
            .versions
            .iter()
            .map(|(t, v)| format!("{t}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// `freshcache etl-complete`.
pub async fn etl_complete(settings: &Settings, args: EtlCompleteArgs) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends.instance(settings).await?;
    let tables = instance.table_ids(&args.tables)?;
    let report = instance.etl_complete(&args.batch, &tables).await?;
    print_report(settings, &report)
}

pub(super) fn print_run(
    settings: &Settings,
    run: &EtlRun,
    report: &EtlCompleteReport,
) -> Result<(), CliError> {
    if settings.json {
        return print_json(&json!({ "run": run, "etl_complete": report }));
    }
    println!("ETL batch {}", clean_line(&run.batch));
    for t in &run.tables {
        match t {
            TableLoad::Loaded { table, rows } => println!("  {table}: loaded {rows} rows"),
            TableLoad::Failed { table, reason } => {
                println!("  {table}: FAILED ({})", clean_line(reason))
            }
            TableLoad::Late { table, after_ms } => println!(
                "  {table}: late, loads in {}",
                human_duration(Duration::from_millis(*after_ms))
            ),
        }
    }
    print_report(settings, report)
}

/// `freshcache etl ...`.
pub async fn etl(settings: &Settings, cmd: EtlCommand) -> Result<(), CliError> {
    match cmd {
        EtlCommand::Run { batch, fail, late } => {
            let backends = Backends::open(settings).await?;
            let instance = backends.instance(settings).await?;
            instance.table_ids(&fail)?;
            let mut late_plan = Vec::new();
            for l in &late {
                let (t, d) = l.split_once('=').ok_or_else(|| {
                    CliError::new(
                        EXIT_BAD_INPUT,
                        format!("--late `{}` must be TABLE=DURATION", clean_line(l)),
                    )
                })?;
                instance.table_ids(&[t.to_string()])?;
                let d = parse_duration(d)
                    .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--late: {e}")))?;
                late_plan.push((t.to_string(), d));
            }
            let batch = match batch {
                Some(b) => b,
                None => instance.next_batch_label().await?,
            };
            let plan = EtlPlan {
                fail,
                late: late_plan,
            };
            let (run, report) = instance.run_etl(&batch, &plan).await?;
            let waiting = run
                .tables
                .iter()
                .any(|t| matches!(t, TableLoad::Late { .. }));
            print_run(settings, &run, &report)?;
            if waiting {
                wait_for_late(&instance, &run).await;
            }
            Ok(())
        }
    }
}

/// Keeps the process alive until the late tables of `run` have landed (or a minute passes).
async fn wait_for_late(instance: &Instance, run: &EtlRun) {
    let longest = run
        .tables
        .iter()
        .filter_map(|t| match t {
            TableLoad::Late { after_ms, .. } => Some(*after_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let speed = instance.engine().clock().speed().max(1e-9);
    let real = Duration::from_millis(longest).div_f64(speed) + Duration::from_millis(500);
    eprintln!("waiting {} for late tables…", human_duration(real));
    tokio::time::sleep(real.min(Duration::from_secs(60))).await;
}
