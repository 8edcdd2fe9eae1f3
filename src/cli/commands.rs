//! The headless commands: each is the twin of a console action and goes through the same
//! [`Instance`] call, guards included.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use super::World;
use super::output::{clean_line, human_duration, print_json, rows_table};
use crate::engine::{Answer, Freshness};
use crate::exit::{CliError, EXIT_BAD_INPUT, EXIT_REFUSED};
use crate::instance::{EtlCompleteReport, Instance};
use crate::model::clock::{format_rfc3339, parse_duration};
use crate::model::events::{Event, EventKind};
use crate::model::ops::{self, Action};
use crate::settings::GlobalArgs;
use crate::traffic::{self, TrafficConfig};
use crate::warehouse::Rows;
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::{EtlPlan, EtlRun, TableLoad};

/// Options of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The catalog query.
    pub query: String,
    /// Parameters, as name=value.
    #[arg(value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

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

/// Options of `warm`.
#[derive(Debug, Args)]
pub struct WarmArgs {
    /// How many of the hottest keys to load.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
}

/// Options of `traffic`.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// Virtual users.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// How long to run (real time); until Ctrl-C when omitted.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Mean think time between two questions of a user (clock time).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub think: String,
    /// Seed of every random choice (the same seed repeats the run).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also run the ETL in this process, a batch at every clock hour.
    #[arg(long)]
    pub with_etl: bool,
}

/// Options of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many of the latest events.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep printing new events until interrupted.
    #[arg(long)]
    pub follow: bool,
}

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Instances heard from within this long count as live.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub live: String,
    /// Keep printing, once per --interval, until interrupted (with --json: JSON Lines).
    #[arg(long)]
    pub watch: bool,
    /// How often --watch prints.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
}

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

fn parse_params(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CliError::new(
                        EXIT_BAD_INPUT,
                        format!(
                            "parameter `{}` must be written NAME=VALUE, e.g. quarter=Q1",
                            clean_line(p)
                        ),
                    )
                })
        })
        .collect()
}

#[derive(Serialize)]
struct AnswerJson<'a> {
    query: &'a str,
    params: serde_json::Map<String, serde_json::Value>,
    freshness: &'static str,
    age_ms: Option<u64>,
    reason: Option<String>,
    source: String,
    computed_at: String,
    versions: serde_json::Map<String, serde_json::Value>,
    value: serde_json::Value,
}

fn describe_freshness(a: &Answer) -> String {
    match &a.freshness {
        Freshness::Fresh => "fresh".into(),
        Freshness::Stale { age, reason } => {
            format!(
                "STALE ({} old: {})",
                human_duration(*age),
                clean_line(&reason.to_string())
            )
        }
    }
}

/// `freshcache get`.
pub async fn get(g: &GlobalArgs, args: GetArgs) -> Result<(), CliError> {
    let params = parse_params(&args.params)?;
    let world = World::open(g).await?;
    // Checked before anything touches the warehouse.
    let request = world.catalog.request(&args.query, &params)?;
    let instance = world.instance(g).await?;
    let answer = instance.engine().get(&request).await.map_err(|e| {
        use crate::engine::{GetError, flight::LoadError};
        use crate::warehouse::WarehouseError;
        let code = match &e {
            GetError::Catalog(_) => crate::exit::EXIT_BAD_INPUT,
            GetError::Warehouse {
                error:
                    LoadError::Warehouse(
                        WarehouseError::Unavailable(_) | WarehouseError::NotInitialised(_),
                    ),
                ..
            } => crate::exit::EXIT_UNAVAILABLE,
            // It did not answer in time: for the caller, unavailable.
            GetError::Timeout { .. }
            | GetError::Warehouse {
                error: LoadError::Deadline(_),
                ..
            } => crate::exit::EXIT_UNAVAILABLE,
            _ => crate::exit::EXIT_FAILURE,
        };
        CliError::new(code, e.to_string())
    })?;
    if let Some(why) = instance
        .start_error()
        .or_else(|| instance.engine().degraded())
    {
        eprintln!(
            "freshcache: warning: running degraded, the shared cache did not answer ({}); this answer came straight from the warehouse",
            clean_line(&why)
        );
    }
    let tables = world.catalog.tables();
    let rows: Rows = serde_json::from_str(answer.value()).unwrap_or_default();
    if g.json {
        let versions = answer
            .versions()
            .iter()
            .map(|(t, v)| (tables.name(t).to_string(), json!(v)))
            .collect();
        let (age_ms, reason) = match &answer.freshness {
            Freshness::Fresh => (None, None),
            Freshness::Stale { age, reason } => {
                (Some(age.as_millis() as u64), Some(reason.to_string()))
            }
        };
        return print_json(&AnswerJson {
            query: &request.query().name,
            params: request
                .params()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
            freshness: if answer.freshness.is_fresh() {
                "fresh"
            } else {
                "stale"
            },
            age_ms,
            reason,
            source: answer.source.to_string(),
            computed_at: format_rfc3339(answer.computed_at_ms()),
            versions,
            value: serde_json::to_value(&rows).unwrap_or_default(),
        });
    }
    println!("{}", clean_line(&request.to_string()));
    println!(
        "{} · computed {} · from {} · versions {}",
        describe_freshness(&answer),
        format_rfc3339(answer.computed_at_ms()),
        answer.source,
        answer.versions().describe(tables)
    );
    println!("{}", rows_table(&rows, 50));
    Ok(())
}

fn print_report(g: &GlobalArgs, report: &EtlCompleteReport) -> Result<(), CliError> {
    if g.json {
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
pub async fn etl_complete(g: &GlobalArgs, args: EtlCompleteArgs) -> Result<(), CliError> {
    let world = World::open(g).await?;
    let instance = world.instance(g).await?;
    let tables = instance.table_ids(&args.tables)?;
    let report = instance.etl_complete(&args.batch, &tables).await?;
    print_report(g, &report)
}

fn print_run(g: &GlobalArgs, run: &EtlRun, report: &EtlCompleteReport) -> Result<(), CliError> {
    if g.json {
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
    print_report(g, report)
}

/// `freshcache simulate-partial`.
pub async fn simulate_partial(g: &GlobalArgs, args: SimulatePartialArgs) -> Result<(), CliError> {
    let world = World::open(g).await?;
    let instance = world.instance(g).await?;
    let fail = instance.table_ids(&args.fail)?;
    let what = format!(
        "simulate-partial: an ETL batch runs now; {} will fail and stay behind, the other tables are bumped.",
        args.fail.join(", ")
    );
    confirm_action(g, Action::SimulatePartial, &args.fail, args.yes, &what)?;
    let (run, report) = instance.simulate_partial(&fail).await?;
    print_run(g, &run, &report)
}

/// Asks for the registry's typed confirmation of a dangerous `action` (the phrase the console
/// asks for), after saying `what` will happen — unless `--yes` was given. An action the guard
/// refuses anyway is not asked about: the instance refuses it, and audits the refusal.
fn confirm_action(
    g: &GlobalArgs,
    action: Action,
    targets: &[String],
    yes: bool,
    what: &str,
) -> Result<(), CliError> {
    if yes || !action.dangerous() || ops::refusal(action, g.env, g.read_only).is_some() {
        return Ok(());
    }
    eprintln!("{what}");
    confirm(
        &ops::confirmation_phrase(action, targets, g.env),
        action.name(),
    )
}

/// Asks for a typed confirmation on a terminal; refuses elsewhere.
fn confirm(phrase: &str, what: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            EXIT_REFUSED,
            format!("refused: {what} needs --yes, or a typed confirmation on a terminal"),
        ));
    }
    eprint!("Type `{phrase}` to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(EXIT_REFUSED, format!("refused: no confirmation ({e})")))?;
    if line.trim() != phrase {
        return Err(CliError::new(
            EXIT_REFUSED,
            "refused: the confirmation did not match; nothing was changed",
        ));
    }
    Ok(())
}

/// `freshcache invalidate`.
pub async fn invalidate(g: &GlobalArgs, args: InvalidateArgs) -> Result<(), CliError> {
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

/// `freshcache warm`.
pub async fn warm(g: &GlobalArgs, args: WarmArgs) -> Result<(), CliError> {
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

/// `freshcache traffic`.
pub async fn traffic(g: &GlobalArgs, args: TrafficArgs) -> Result<(), CliError> {
    let world = World::open(g).await?;
    let instance = world.instance(g).await?;
    let _metrics = super::serve_metrics(g, &instance)?;
    let duration = args
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--duration: {e}")))?;
    let think = parse_duration(&args.think)
        .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--think: {e}")))?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    if args.with_etl {
        // The simulator writes made-up data into the configured warehouse.
        instance
            .allow(
                crate::model::ops::Action::RunEtl,
                &["hourly schedule".to_string()],
            )
            .await?;
        crate::instance::schedule::spawn_etl(
            instance.clone(),
            Duration::from_secs(3600),
            Box::new(|_| EtlPlan::default()),
            stop_rx.clone(),
        );
    }
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop_on_signal.send_replace(true);
    });
    if !g.json {
        eprintln!(
            "{} users asking; {} (Ctrl-C prints the summary)",
            args.users,
            duration.map_or("until interrupted".to_string(), |d| format!(
                "for {}",
                human_duration(d)
            ))
        );
    }
    let report = traffic::run(
        instance.engine().clone(),
        TrafficConfig {
            users: args.users,
            think,
            seed: args.seed,
            ..TrafficConfig::default()
        },
        duration,
        stop_rx,
    )
    .await;
    stop.send_replace(true);
    instance.shutdown();
    if g.json {
        return print_json(&report);
    }
    println!(
        "traffic summary ({} users, {:.1} s)",
        report.users, report.seconds
    );
    println!("  questions asked      {}", report.requests);
    println!(
        "  fresh                {} ({} from cache)",
        report.fresh, report.hits
    );
    println!("  stale (labelled)     {}", report.stale);
    println!("  errors               {}", report.errors);
    println!("  stale after update   {}", report.stale_after_update);
    println!("  hit ratio            {:.1}%", report.hit_ratio * 100.0);
    println!(
        "  user latency         p50 {:.1} ms, p99 {:.1} ms",
        report.user_p50_ms, report.user_p99_ms
    );
    println!("  distinct questions   {}", report.distinct_questions);
    println!("  warehouse queries    {}", report.warehouse_queries);
    Ok(())
}

/// One event as a line of text.
pub fn event_line(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::WarehouseUpdated {
            tables,
            versions,
            batch,
            test,
            ..
        } => format!(
            "warehouse_updated {} batch {batch} → {}{}",
            tables.join(","),
            versions
                .iter()
                .filter(|(t, _)| tables.contains(t))
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            if *test { " (test)" } else { "" }
        ),
        EventKind::PartialUpdate { batch, behind, .. } => format!(
            "partial_update batch {batch}: behind {}",
            behind
                .iter()
                .map(|b| format!("{} ({})", b.table, b.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        EventKind::EtlRun {
            batch,
            loaded,
            failed,
            late,
        } => format!(
            "etl_run batch {batch}: loaded {}{}{}",
            loaded.join(","),
            if failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; failed {}",
                    failed
                        .iter()
                        .map(|f| f.table.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if late.is_empty() {
                String::new()
            } else {
                format!("; late {}", late.join(","))
            }
        ),
        EventKind::RefreshAhead {
            tables,
            keys,
            done,
            failed,
        } => format!(
            "refresh_ahead {}: {done}/{keys} reloaded, {failed} failed",
            if tables.is_empty() {
                "hot keys".to_string()
            } else {
                tables.join(",")
            }
        ),
        EventKind::Prepare {
            batch,
            versions,
            requester,
        } => format!(
            "prepare batch {batch} at {} for {requester}",
            versions
                .iter()
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        EventKind::Prepared {
            batch,
            instance,
            finished,
            keys,
            done,
            failed,
        } if !finished => format!("preparing batch {batch} on {instance}: {keys} hot keys to load"),
        EventKind::Prepared {
            batch,
            instance,
            keys,
            done,
            failed,
            ..
        } => format!("prepared batch {batch} on {instance}: {done}/{keys} loaded, {failed} failed"),
        EventKind::OperatorAction {
            action,
            operator,
            host,
            env,
            targets,
            result,
        } => format!(
            "{action} {} by {operator}@{host} in {env}: {result}",
            targets.join(",")
        ),
        EventKind::BadInput {
            source,
            reason,
            excerpt,
        } => format!("BAD INPUT on {source}: {reason} [{excerpt}]"),
        EventKind::Incident { message } => format!("INCIDENT {message}"),
    };
    clean_line(&format!("#{} {} {}", e.seq, format_rfc3339(e.at_ms), what))
}

/// SIGINT, watched from now on for as long as the returned stream lives. A command that runs
/// until interrupted makes it once, before anything else: a listener made anew on each turn of
/// its loop misses a SIGINT that lands while the turn's work runs, and the command never stops.
fn watch_interrupt() -> Result<tokio::signal::unix::Signal, CliError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| {
        CliError::new(
            crate::exit::EXIT_FAILURE,
            format!("cannot watch for Ctrl-C: {e}"),
        )
    })
}

/// `freshcache events`.
pub async fn events(g: &GlobalArgs, args: EventsArgs) -> Result<(), CliError> {
    let mut interrupt = args.follow.then(watch_interrupt).transpose()?;
    let world = World::open(g).await?;
    let bus = world.bus.clone();
    let mut feed = bus.subscribe();
    let all = bus
        .history(0, usize::MAX >> 1)
        .await
        .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
    let start = all.len().saturating_sub(args.limit);
    let print = |e: &Event| -> Result<(), CliError> {
        if g.json {
            print_json(e)
        } else {
            println!("{}", event_line(e));
            Ok(())
        }
    };
    for e in &all[start..] {
        print(e)?;
    }
    if !args.follow {
        return Ok(());
    }
    let Some(interrupt) = interrupt.as_mut() else {
        return Ok(());
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = tick.tick() => {
                // A failed catch-up is retried on the next tick; the feed still delivers.
                if let Err(e) = bus.catch_up().await {
                    tracing::debug!("events --follow: catch-up failed: {e}");
                }
            }
            received = feed.recv() => match received {
                Ok(e) => print(&e)?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("({n} events dropped: the printer fell behind)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// `freshcache warehouse ...`.
pub async fn warehouse(g: &GlobalArgs, cmd: WarehouseCommand) -> Result<(), CliError> {
    match cmd {
        WarehouseCommand::Init { sales, customers } => {
            // Checked before anything is opened: opening the embedded warehouse creates it.
            if let Some(e) = crate::instance::refusal(
                crate::model::ops::Action::InitWarehouse,
                g.env,
                g.read_only,
            ) {
                tracing::warn!("refused: warehouse init: {e}");
                return Err(e.into());
            }
            let size = DemoSize { customers, sales };
            let (world, created) = World::open_sized(g, size).await?;
            let loaded = created || world.init_demo(size).await?;
            if g.json {
                return print_json(&json!({
                    "warehouse": world.warehouse.describe(),
                    "loaded": loaded,
                }));
            }
            if loaded {
                println!(
                    "{}: schema and demo data created",
                    world.warehouse.describe()
                );
            } else {
                println!(
                    "{}: already initialised, nothing changed",
                    world.warehouse.describe()
                );
            }
            Ok(())
        }
        WarehouseCommand::Status => {
            let world = World::open(g).await?;
            let log = world.warehouse.update_log().await?;
            let versions = world
                .bus
                .versions()
                .await
                .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
            let tables = world.catalog.tables();
            if g.json {
                return print_json(&json!({
                    "warehouse": world.warehouse.describe(),
                    "update_log": log,
                    "versions": crate::bus::versions_by_name(&versions, tables),
                    "batch": versions.batch.as_ref(),
                }));
            }
            println!("warehouse {}", world.warehouse.describe());
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

/// `freshcache etl ...`.
pub async fn etl(g: &GlobalArgs, cmd: EtlCommand) -> Result<(), CliError> {
    match cmd {
        EtlCommand::Run { batch, fail, late } => {
            let world = World::open(g).await?;
            let instance = world.instance(g).await?;
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
            print_run(g, &run, &report)?;
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

/// `freshcache stats`: counters summed over live instances, versions, instances.
pub async fn stats(g: &GlobalArgs, args: StatsArgs) -> Result<(), CliError> {
    let live = parse_duration(&args.live)
        .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--live: {e}")))?;
    let every = parse_duration(&args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::new(
                EXIT_BAD_INPUT,
                format!(
                    "--interval: `{}` is not a positive duration; e.g. 1s, 500ms",
                    crate::sanitize::clean_short(&args.interval, 40)
                ),
            )
        })?;
    let mut interrupt = args.watch.then(watch_interrupt).transpose()?;
    let world = World::open(g).await?;
    let Some(interrupt) = interrupt.as_mut() else {
        let doc = stats_doc(&world, live).await?;
        return print_stats(g, &world, &doc, false);
    };
    // One document (a JSON line, or a block of text) per interval until interrupted; a Redis
    // that stops answering is reported on stderr and retried, not fatal.
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = tick.tick() => match stats_doc(&world, live).await {
                Ok(doc) => print_stats(g, &world, &doc, true)?,
                Err(e) => eprintln!("freshcache: {}", crate::sanitize::clean_line(&e.message)),
            },
        }
    }
}

async fn stats_doc(world: &World, live: Duration) -> Result<serde_json::Value, CliError> {
    let unavailable =
        |e: crate::bus::BusError| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string());
    let versions = world.bus.versions().await.map_err(unavailable)?;
    // Every instance heard from in the last minute is listed: one that went silent (partitioned,
    // frozen, dead) is shown as unverified or lost, never silently dropped.
    let known = world.bus.reports(60_000).await.map_err(unavailable)?;
    let now = world.bus.clock().now_ms();
    let live_ms = live.as_millis() as u64;
    let mut total = crate::engine::stats::StatsSnapshot::default();
    let mut bad = 0;
    let mut degraded = 0;
    let mut unverified = 0;
    let mut live_count = 0;
    let mut list = Vec::with_capacity(known.len());
    for r in &known {
        let silent_ms = now.saturating_sub(r.at_ms);
        let state = if silent_ms > crate::bus::LOST_AFTER.as_millis() as u64 {
            "lost"
        } else if silent_ms > crate::bus::SILENT_UNVERIFIED.as_millis() as u64 || r.unverified {
            "unverified"
        } else if r.degraded {
            "degraded"
        } else {
            "ok"
        };
        if silent_ms <= live_ms {
            live_count += 1;
            total = total.plus(&r.stats);
            bad += r.bad_events;
            degraded += r.degraded as usize;
        }
        unverified += (state == "unverified") as usize;
        list.push(json!({"id": r.id, "state": state, "silent_ms": silent_ms}));
    }
    let by_name = crate::bus::versions_by_name(&versions, world.catalog.tables());
    Ok(json!({
        "at": crate::model::clock::format_rfc3339(world.clock.now_ms()),
        "versions": by_name,
        "batch": versions.batch.as_ref(),
        "instances": live_count,
        "degraded_instances": degraded,
        "unverified_instances": unverified,
        "instance_states": list,
        "requests": total.requests,
        "hits": total.fresh_hits,
        "stale": total.stale_served,
        "misses": total.misses,
        "coalesced": total.coalesced,
        "warehouse_queries": total.loads,
        "load_errors": total.load_errors,
        "shared_hits": total.shared_hits,
        "lease_waits": total.lease_waits,
        "bad_events": bad,
    }))
}

fn print_stats(
    g: &GlobalArgs,
    world: &World,
    doc: &serde_json::Value,
    watching: bool,
) -> Result<(), CliError> {
    if g.json {
        return print_json(doc);
    }
    let n = |k: &str| doc[k].as_u64().unwrap_or(0);
    if watching {
        println!("-- {}", doc["at"].as_str().unwrap_or(""));
    }
    println!(
        "{} live instance(s) on {}",
        n("instances"),
        world.bus.describe()
    );
    for i in doc["instance_states"].as_array().into_iter().flatten() {
        let state = i["state"].as_str().unwrap_or("");
        if state != "ok" {
            println!(
                "  {} {} (last heard {:.1} s ago)",
                crate::sanitize::clean_line(i["id"].as_str().unwrap_or("")),
                state.to_uppercase(),
                i["silent_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            );
        }
    }
    let versions = doc["versions"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    println!(
        "versions   {versions}  (batch {})",
        doc["batch"].as_str().unwrap_or("")
    );
    println!(
        "requests   {}  hits {}  stale {}  misses {}  coalesced {}",
        n("requests"),
        n("hits"),
        n("stale"),
        n("misses"),
        n("coalesced")
    );
    println!(
        "warehouse  {} queries, {} errors; shared hits {}, lease waits {}",
        n("warehouse_queries"),
        n("load_errors"),
        n("shared_hits"),
        n("lease_waits")
    );
    println!(
        "bad events {}; degraded instances {}",
        n("bad_events"),
        n("degraded_instances")
    );
    Ok(())
}
