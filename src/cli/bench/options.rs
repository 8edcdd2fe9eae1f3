//! Which shared options each bench reads, and the refusal of one given to a bench that would
//! ignore it: a figure measured while an option was silently dropped would be misread.

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::BenchCommand;
use crate::settings::GlobalArgs;

/// The shared options that shape what a bench measures (warehouse, cache, clock), by their clap
/// id. Output, logging and configuration options apply to every bench and are not listed.
const SHAPING: &[&str] = &[
    "warehouse",
    "data_dir",
    "latency",
    "load_timeout",
    "redis",
    "redis_ca",
    "redis_timeout",
    "lease",
    "max_unverified",
    "no_local_tier",
    "hour",
    "strategy",
    "metrics_addr",
];

/// What one bench does with the shared options: its name, the ones it reads, and its own
/// option that does the job of a shared one it ignores.
struct Reads {
    name: &'static str,
    reads: &'static [&'static str],
    instead: &'static [(&'static str, &'static str)],
}

fn reads(cmd: &BenchCommand, global: &GlobalArgs) -> Option<Reads> {
    Some(match cmd {
        // With a Redis, the fleet's workers get the Redis settings and the lease; without one
        // it runs in this process on a simulated warehouse of its own.
        BenchCommand::Stampede(_) if settings.redis.is_some() => Reads {
            name: "bench stampede",
            reads: &["redis", "redis_timeout", "lease"],
            instead: &[("latency", "--load-ms"), ("strategy", "--strategies")],
        },
        BenchCommand::Stampede(_) => Reads {
            name: "bench stampede",
            reads: &[],
            instead: &[("latency", "--load-ms"), ("strategy", "--strategies")],
        },
        BenchCommand::Lag(_) => Reads {
            name: "bench lag",
            reads: &[],
            instead: &[],
        },
        BenchCommand::Day(_) => Reads {
            name: "bench day",
            reads: &[],
            instead: &[
                ("hour", "--hour-real"),
                ("latency", "--warehouse-ms"),
                ("strategy", "--strategies"),
            ],
        },
        BenchCommand::RedisHits(_) if settings.redis.is_some() => Reads {
            name: "bench redis-hits",
            reads: &["redis"],
            instead: &[],
        },
        BenchCommand::RedisInvalidation(_) if settings.redis.is_some() => Reads {
            name: "bench redis-invalidation",
            reads: &["redis"],
            instead: &[],
        },
        // Without a Redis these refuse to start and say what they need, which matters more.
        BenchCommand::RedisHits(_) | BenchCommand::RedisInvalidation(_) => return None,
        // The chaos run and the hidden workers pass settings on to processes of their own.
        BenchCommand::Chaos(_) | BenchCommand::StampedeWorker(_) | BenchCommand::ChaosWorker(_) => {
            return None;
        }
    })
}

/// The first shared option given on the command line that `cmd` would ignore, as the message
/// that refuses it. Values from the environment or the configuration file are shared by every
/// command and are not refused.
pub fn ignored(cmd: &BenchCommand, global: &GlobalArgs, matches: &ArgMatches) -> Option<String> {
    let r = reads(cmd, settings)?;
    let id = SHAPING.iter().find(|id| {
        !r.reads.contains(id) && matches.value_source(id) == Some(ValueSource::CommandLine)
    })?;
    let flag = format!("--{}", id.replace('_', "-"));
    let mut message = format!("`{flag}` does nothing for `{}`", r.name);
    match r.instead.iter().find(|(shared, _)| shared == id) {
        Some((_, own)) => message.push_str(&format!(" (it has `{own}`)")),
        None => message.push_str("; leave it out"),
    }
    Some(message)
}
