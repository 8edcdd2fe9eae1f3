//! `freshcache traffic`: one engine instance with simulated users, and a summary at the end.

use std::time::Duration;

use clap::Args;

use super::Backends;
use super::output::{human_duration, print_json};
use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::model::clock::parse_duration;
use crate::settings::Settings;
use crate::traffic::{self, TrafficConfig};
use crate::warehouse::etl::EtlPlan;

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

/// `freshcache traffic`.
pub async fn traffic(settings: &Settings, args: TrafficArgs) -> Result<(), CliError> {
    let backends = Backends::open(settings).await?;
    let instance = backends
        .instance_as(settings, crate::instance::Role::Traffic)
        .await?;
    let _metrics = super::serve_metrics(settings, &instance)?;
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
        // Without a signal handler there is no Ctrl-C to wait for: stop as if it came.
        let _ = tokio::signal::ctrl_c().await;
        stop_on_signal.send_replace(true);
    });
    if !settings.json {
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
    if settings.json {
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
