//! The demo (what `freshcache` runs with no arguments on a terminal) and `freshcache console`.
//!
//! The demo is the whole story in one process: an embedded SQLite warehouse with demo data, an ETL
//! that lands every clock hour (an hour is a minute by default; every fourth batch fails
//! `inventory`), simulated chatbot users, one engine instance, and the console over it. Without a
//! terminal (or with `--headless`) it tells the baseline's 9:05 / 10:00 story as text instead.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{Backends, bench};
use crate::bus::LocalBus;
use crate::console::story::Story;
use crate::console::{self, Channels, ConsoleOptions};
use crate::engine::Engine;
use crate::exit::{CliError, EXIT_FAILURE};
use crate::instance::{Instance, InstanceConfig, Role};
use crate::model::catalog::Catalog;
use crate::model::clock::{Clock, ManualClock, ScaledClock, SystemClock, system_now_ms};
use crate::model::policy::Strategy;
use crate::settings::Settings;
use crate::traffic::{self, Shadow, TrafficConfig};
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::{EtlPlan, batch_label};
use crate::warehouse::{Latency, SqliteWarehouse};

/// Options of `freshcache demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Simulated chatbot users.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Estimated cost of one warehouse query, in dollars (the money view).
    #[arg(long, default_value_t = 0.05)]
    pub price_per_query: f64,
    /// Tell the story as text instead of starting the console.
    #[arg(long)]
    pub headless: bool,
    /// Sales rows of the demo warehouse.
    #[arg(long, default_value_t = 100_000)]
    pub sales: u32,
    /// Play the original problem's day step by step (9:05, 10:00:01, 10:05, 10:30, 11:05) on the
    /// console, with captions, for an audience: space or → steps.
    #[arg(long, conflicts_with = "headless")]
    pub story: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            users: 200,
            price_per_query: 0.05,
            headless: false,
            sales: 100_000,
            story: false,
        }
    }
}

/// Options of `freshcache console`.
#[derive(Debug, Args, Clone)]
pub struct ConsoleArgs {
    /// Estimated cost of one warehouse query, in dollars (the money view).
    #[arg(long, default_value_t = 0.05)]
    pub price_per_query: f64,
}

/// Whether the demo tells its story as text (asked to, or no terminal) rather than starting the
/// console.
pub fn headless(args: &DemoArgs) -> bool {
    args.headless || !std::io::stdout().is_terminal()
}

/// How long one clock hour of the demo lasts when `--hour` is not given.
const DEMO_HOUR: Duration = Duration::from_secs(60);

/// Runs the demo: the console on a terminal, the text story otherwise.
pub async fn run(settings: &Settings, args: DemoArgs) -> Result<(), CliError> {
    if headless(&args) {
        return run_headless(settings.json).await;
    }
    if args.story {
        return run_story(settings, &args).await;
    }
    let speed = 3600.0 / settings.hour.unwrap_or(DEMO_HOUR).as_secs_f64();
    // The whole demo runs on the accelerated clock: the baseline's 2-5 s warehouse included, so a
    // query is as long against the hour as it would be in real life.
    let latency = match settings.warehouse.latency {
        Some(l) => l,
        None => Latency {
            min: Latency::BASELINE.min.div_f64(speed),
            max: Latency::BASELINE.max.div_f64(speed),
        },
    };
    eprintln!(
        "freshcache demo: creating the warehouse ({} sales)…",
        args.sales
    );
    let catalog = Arc::new(Catalog::bundled()?);
    let clock = ScaledClock::new(system_now_ms(), speed);
    let warehouse = demo_warehouse(latency, args.sales, clock.now_ms()).await?;
    let bus = demo_bus(&catalog)?;
    let engine = Engine::builder(catalog, Arc::new(warehouse.clone()))
        .clock(clock.clone())
        .load_timeout(settings.warehouse.load_timeout)
        .strategy(settings.strategy)
        .build()
        .map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
    let instance = demo_instance(settings, engine.clone(), bus, warehouse, Role::Traffic).await?;
    let _metrics = super::serve_metrics(settings, &instance)?;
    // What the hour-TTL baseline would have done with the same questions, for the console's
    // "without freshcache" panel; its warehouse takes the mean query time, in clock time.
    let shadow = Arc::new(Shadow::new(
        (latency.min + latency.max).mul_f64(speed / 2.0),
    ));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    crate::instance::schedule::spawn_etl(
        instance.clone(),
        Duration::from_secs(3600),
        Box::new(|run| {
            if run % 4 == 2 {
                EtlPlan::failing(["inventory"])
            } else {
                EtlPlan::default()
            }
        }),
        stop_rx.clone(),
    );
    let users = tokio::spawn(traffic::run_with_shadow(
        engine,
        TrafficConfig {
            users: args.users,
            ..TrafficConfig::default()
        },
        None,
        stop_rx,
        Some(shadow.clone()),
    ));
    let source =
        Channels::attach_with(instance.clone(), args.price_per_query, Some(shadow), None).await;
    let result =
        tokio::task::spawn_blocking(move || console::run(source, ConsoleOptions::from_env()))
            .await
            .map_err(|e| CliError::new(EXIT_FAILURE, format!("the console stopped: {e}")))?;
    stop.send_replace(true);
    instance.shutdown();
    // The users stop at the signal; past two seconds they are dropped with the runtime.
    let _ = tokio::time::timeout(Duration::from_secs(2), users).await;
    result.map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))
}

/// A temporary warehouse with `sales` rows of demo data, loaded as the batch of `at_ms`.
async fn demo_warehouse(
    latency: Latency,
    sales: u32,
    at_ms: u64,
) -> Result<SqliteWarehouse, CliError> {
    let warehouse = SqliteWarehouse::temporary(latency)?;
    let size = DemoSize {
        sales,
        ..DemoSize::default()
    };
    let batch = batch_label(at_ms, Duration::from_secs(3600));
    warehouse.init_demo(size, &batch, at_ms).await?;
    Ok(warehouse)
}

/// The demo's one instance over `engine`, its bus and its warehouse (which is also the ETL's
/// target), started.
async fn demo_instance(
    settings: &Settings,
    engine: Engine,
    bus: LocalBus,
    warehouse: SqliteWarehouse,
    role: Role,
) -> Result<Instance, CliError> {
    let instance = Instance::new(
        engine,
        Arc::new(bus),
        Arc::new(warehouse.clone()),
        Some(Arc::new(warehouse)),
        InstanceConfig {
            env: settings.environment,
            read_only: settings.read_only,
            max_unverified: settings.redis.max_unverified,
            role,
            ..InstanceConfig::default()
        },
    );
    instance.start().await?;
    Ok(instance)
}

/// The demo's in-memory bus. Shared state is stamped in wall time; an accelerated or manual
/// clock stays inside the simulation.
fn demo_bus(catalog: &Catalog) -> Result<LocalBus, CliError> {
    LocalBus::in_memory(catalog.tables().clone(), Arc::new(SystemClock))
        .map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))
}

/// `freshcache demo --story`: the day of the original problem on a clock that only the story
/// moves, with a small real warehouse latency so that each step takes a moment, not minutes.
async fn run_story(settings: &Settings, args: &DemoArgs) -> Result<(), CliError> {
    const DAY: u64 = 86_400_000;
    let day_ms = system_now_ms() / DAY * DAY;
    let nine = day_ms + 9 * 3_600_000;
    let catalog = Arc::new(Catalog::bundled()?);
    let latency = Latency {
        min: Duration::from_millis(400),
        max: Duration::from_millis(800),
    };
    let warehouse = demo_warehouse(latency, args.sales, nine).await?;
    let clock = ManualClock::new(nine);
    let bus = demo_bus(&catalog)?;
    let engine = Engine::builder(catalog.clone(), Arc::new(warehouse.clone()))
        .clock(clock.clone())
        .build()
        .map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
    let instance = demo_instance(settings, engine, bus, warehouse, Role::Console).await?;
    // The original recipe's warehouse takes 2-5 s: 3.5 s on the story's clock.
    let shadow = Arc::new(Shadow::new(Duration::from_millis(3_500)));
    let question = catalog.request("sales_by_region", &[("quarter", "Q1"), ("year", "2026")])?;
    let inventory = catalog.request("stock_outs", &[] as &[(&str, &str)])?;
    let story = Story::new(clock, shadow.clone(), day_ms, question, inventory);
    let source = Channels::attach_with(
        instance.clone(),
        args.price_per_query,
        Some(shadow),
        Some(story),
    )
    .await;
    let options = ConsoleOptions {
        story: true,
        ..ConsoleOptions::from_env()
    };
    let result = tokio::task::spawn_blocking(move || console::run(source, options))
        .await
        .map_err(|e| CliError::new(EXIT_FAILURE, format!("the console stopped: {e}")))?;
    instance.shutdown();
    result.map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))
}

/// `freshcache console`: the console over the configured backends (the data directory's embedded
/// state, or Redis), as one more instance.
pub async fn console(settings: &Settings, args: ConsoleArgs) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends.instance_as(settings, Role::Console).await?;
    let _metrics = super::serve_metrics(settings, &instance)?;
    let source = Channels::attach(instance.clone(), args.price_per_query).await;
    let result =
        tokio::task::spawn_blocking(move || console::run(source, ConsoleOptions::from_env()))
            .await
            .map_err(|e| CliError::new(EXIT_FAILURE, format!("the console stopped: {e}")))?;
    instance.shutdown();
    result.map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))
}

/// The story as text: 1000 users at 09:05 on a cold cache and at 10:00:30 after the update,
/// with the baseline's TTL and lock recipes and with freshcache.
/// With `json`, prints the measurements as one JSON object instead.
pub async fn run_headless(json: bool) -> Result<(), CliError> {
    let (users, load_ms) = (1000, 300);
    if json {
        let report = bench::stampede(
            users,
            load_ms,
            &[Strategy::Ttl, Strategy::Lock, Strategy::Freshcache],
        )
        .await?;
        return super::output::print_json(&report);
    }
    println!("freshcache demo (embedded: in-process store, in-memory warehouse)");
    println!(
        "{users} users ask \"Q1 sales by region\" at 09:05 (cold cache) and at 10:00:30, right after the \
         10:00 update of `sales`; each warehouse query takes {load_ms} ms.\n"
    );
    let report = bench::stampede(
        users,
        load_ms,
        &[Strategy::Ttl, Strategy::Lock, Strategy::Freshcache],
    )
    .await?;
    for r in &report.results {
        println!(
            "{:<10} {:<10}  warehouse queries {:>5}   user p50 {:>7.1} ms  p99 {:>7.1} ms   old data served as fresh {:>5}",
            r.strategy.name(),
            r.phase,
            r.warehouse_queries,
            r.p50_ms,
            r.p99_ms,
            r.old_data_served
        );
    }
    println!(
        "\nttl: every user of a cold or expired key queries the warehouse.\n\
         lock: one query, but waiters poll every 100 ms, and after the update it keeps serving \
         the 09:05 data until its 1 h TTL ends.\n\
         freshcache: one query per key and version; the update changes the key, so nobody is \
         served the old data as fresh.\n\
         On a terminal, `freshcache` starts the live console instead."
    );
    Ok(())
}
