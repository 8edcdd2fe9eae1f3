//! Benchmark scenarios run by `freshcache bench ...`: the subcommands, their options, and which
//! scenario each runs. The scenarios live one per file; those that need Redis in `bench_redis`.

mod day;
mod lag;
mod stampede;

use clap::{Args, Subcommand};

use crate::model::policy::Strategy;
use day::print_day;
pub use day::{DayPlan, DayReport, DayResult, LoadCauses, day};
pub use lag::{LagReport, lag};
use stampede::print_stampede;
pub use stampede::stampede;

/// 2024-11-02T09:05:00Z, the baseline's "user asks at 9:05".
pub const T_0905_MS: u64 = 1_730_538_300_000;
/// 2024-11-02T10:00:00Z, the baseline's hourly update.
pub const T_1000_MS: u64 = 1_730_541_600_000;

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N users ask one question at once: on a cold key, and right after a version bump.
    #[command(
        after_help = "Examples:\n  freshcache bench stampede --requesters 1000 --load-ms 200\n  freshcache bench stampede --strategies lock,freshcache\n  freshcache --redis redis://127.0.0.1:6379 --json bench stampede --processes 4 --keys 20"
    )]
    Stampede(StampedeArgs),
    /// Invalidation lag: from `etl-complete` to the first fresh answer in another task.
    #[command(after_help = "Example:\n  freshcache --json bench lag --rounds 500")]
    Lag(LagArgs),
    /// A compressed simulated day: hourly updates (one partial), virtual users, every strategy.
    #[command(
        after_help = "Examples:\n  freshcache bench day\n  freshcache --json bench day --users 1000 --hours 3 --hour-real 30s --strategies ttl,freshcache"
    )]
    Day(DayArgs),
    /// Engine hits through Redis, in-process tier off and on, beside `redis-benchmark` (needs --redis).
    #[command(
        after_help = "Example:\n  freshcache --redis redis://127.0.0.1:6391 bench redis-hits --seconds 5"
    )]
    RedisHits(RedisHitsArgs),
    /// Bump and purge with many entries cached, beside the baseline's KEYS + DEL (needs --redis; use a
    /// Redis of its own: it fills it and runs KEYS there).
    #[command(
        after_help = "Example:\n  freshcache --redis redis://127.0.0.1:6391 bench redis-invalidation --keys 1000000"
    )]
    RedisInvalidation(RedisInvalidationArgs),
    /// One process of a multi-process stampede (started by `bench stampede --redis`).
    #[command(hide = true)]
    StampedeWorker(super::bench_redis::WorkerArgs),
    /// Searches for violations of the promise under faults: a private Redis, N instance
    /// processes, an ETL, and a seeded fault injector; counts stale answers marked fresh,
    /// duplicate loads, version regressions, unanswered requests and panics.
    #[command(
        after_help = "Examples:\n  freshcache bench chaos --seed 1 --duration 60\n  freshcache --json bench chaos --seed 7 --duration 120 --instances 4\n  freshcache --warehouse postgres://postgres@127.0.0.1/chaos --json bench chaos --seed 3 --duration 30"
    )]
    Chaos(crate::bench::chaos::ChaosArgs),
    /// One instance of a chaos run (started by `bench chaos`).
    #[command(hide = true)]
    ChaosWorker(crate::bench::chaos::worker::WorkerArgs),
}

/// Options of `bench redis-hits`.
#[derive(Debug, Args)]
pub struct RedisHitsArgs {
    /// Distinct cached keys the callers cycle through.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Seconds each side is measured.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Options of `bench redis-invalidation`.
#[derive(Debug, Args)]
pub struct RedisInvalidationArgs {
    /// Entries cached before the bump.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
}

/// Options of `bench lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// Updates measured.
    #[arg(long, default_value_t = 500)]
    pub rounds: usize,
}

/// Options of `bench day`.
#[derive(Debug, Args)]
pub struct DayArgs {
    /// Virtual users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Simulated hours (an update at the start of each).
    #[arg(long, default_value_t = 3)]
    pub hours: u32,
    /// Real time one simulated hour takes.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub hour_real: String,
    /// Warehouse latency per query (real time, added to the query's own time).
    #[arg(long, default_value_t = 200)]
    pub warehouse_ms: u64,
    /// Mean think time of a user between questions (clock time).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub think: String,
    /// Strategies to run (all when omitted).
    #[arg(long = "strategies", value_name = "S,S", value_delimiter = ',')]
    pub strategies: Vec<Strategy>,
}

/// Options of `bench stampede`.
#[derive(Debug, Args)]
pub struct StampedeArgs {
    /// Concurrent requesters per phase.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub requesters: u32,
    /// Warehouse latency of each query, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub load_ms: u64,
    /// Strategies to run (all when omitted; ignored with --redis).
    #[arg(long = "strategies", value_name = "S,S", value_delimiter = ',')]
    pub strategies: Vec<Strategy>,
    /// With --redis: API-server processes sharing the Redis, requesters split among them.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub processes: u32,
    /// With --redis: distinct cold keys the requesters ask for.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub keys: u32,
}

/// Runs a benchmark command.
pub async fn run(
    settings: &crate::settings::Settings,
    cmd: BenchCommand,
) -> Result<(), crate::exit::CliError> {
    match cmd {
        BenchCommand::Stampede(args) if settings.redis.url.is_some() => {
            super::bench_redis::stampede(
                settings,
                args.processes,
                args.requesters,
                args.keys,
                args.load_ms,
            )
            .await
        }
        BenchCommand::StampedeWorker(args) => super::bench_redis::worker(settings, args).await,
        BenchCommand::Chaos(args) => crate::bench::chaos::run(settings, args).await,
        BenchCommand::ChaosWorker(args) => {
            Ok(crate::bench::chaos::worker::run(settings, args).await?)
        }
        BenchCommand::RedisHits(args) => {
            super::bench_redis::hits(settings, args.keys, args.seconds).await
        }
        BenchCommand::RedisInvalidation(args) => {
            super::bench_redis::invalidation(settings, args.keys).await
        }
        BenchCommand::Stampede(args) => {
            let strategies = if args.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                args.strategies.clone()
            };
            let report = stampede(args.requesters, args.load_ms, &strategies).await?;
            if settings.json {
                crate::cli::output::print_json(&report)?;
            } else {
                print_stampede(&report);
            }
            Ok(())
        }
        BenchCommand::Lag(args) => {
            let report = lag(args.rounds).await?;
            if settings.json {
                crate::cli::output::print_json(&report)?;
            } else {
                println!(
                    "etl-complete to first fresh answer in another task, {} updates: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    report.rounds, report.p50_ms, report.p99_ms, report.max_ms
                );
            }
            Ok(())
        }
        BenchCommand::Day(args) => {
            let strategies = if args.strategies.is_empty() {
                Strategy::ALL.to_vec()
            } else {
                args.strategies.clone()
            };
            let hour_real = crate::model::clock::parse_duration(&args.hour_real).map_err(|e| {
                crate::exit::CliError::new(crate::exit::EXIT_BAD_INPUT, format!("--hour-real: {e}"))
            })?;
            let think = crate::model::clock::parse_duration(&args.think).map_err(|e| {
                crate::exit::CliError::new(crate::exit::EXIT_BAD_INPUT, format!("--think: {e}"))
            })?;
            let report = day(&DayPlan {
                users: args.users,
                hours: args.hours.max(1),
                hour_real,
                warehouse_ms: args.warehouse_ms,
                think,
                strategies,
                progress: !settings.json,
            })
            .await?;
            if settings.json {
                crate::cli::output::print_json(&report)?;
            } else {
                print_day(&report);
            }
            Ok(())
        }
    }
}
