//! Which shared options each command reads. One table serves two ends: a shared option given on
//! the command line to a command that would ignore it is refused (a figure measured, or an action
//! taken, while an option was silently dropped would be misread), and each command's `--help`
//! hides the shared options that do nothing for it. Values from the environment or the
//! configuration file are shared by every command and are never refused.

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::Command;
use super::bench::BenchCommand;
use crate::settings::Settings;

/// Read by every command: where the configuration and the logs are.
const EVERYWHERE: &[&str] = &["config", "log_level", "log_dir", "log_keep"];
/// What the backends a command acts on is made of (`Backends::open`).
const WORLD: &[&str] = &[
    "data_dir",
    "warehouse",
    "latency",
    "load_timeout",
    "hour",
    "redis",
    "redis_ca",
    "redis_timeout",
];
/// How the engine over it caches (`Backends::engine`).
const ENGINE: &[&str] = &["lease", "strategy", "no_local_tier"];
/// The guards, and the instance's trust in its versions (`Backends::instance`).
const INSTANCE: &[&str] = &["env", "read_only", "max_unverified"];
const GUARDS: &[&str] = &["env", "read_only"];
const METRICS: &[&str] = &["metrics_addr"];
const JSON: &[&str] = &["json"];

/// What one command does with the shared options: the ones it reads, and its own option that
/// does the job of a shared one it ignores.
struct Reads {
    reads: &'static [&'static [&'static str]],
    instead: &'static [(&'static str, &'static str)],
}

impl Reads {
    fn reads(&self, id: &str) -> bool {
        EVERYWHERE.contains(&id) || self.reads.iter().any(|g| g.contains(&id))
    }
}

const fn reads(reads: &'static [&'static [&'static str]]) -> Option<Reads> {
    Some(Reads {
        reads,
        instead: &[],
    })
}

/// What the command at `path` (`"bench stampede"`) reads, given whether a Redis is configured and
/// whether the demo runs without its console. `None`: not checked (it reads them all, or it has a
/// refusal of its own that says more).
fn table(path: &str, redis: bool, headless: bool) -> Option<Reads> {
    const STAMPEDE: &[(&str, &str)] = &[("latency", "--load-ms"), ("strategy", "--strategies")];
    match path {
        // Without a terminal (or with --headless) the demo tells its story on a warehouse of
        // its own.
        "demo" if headless => reads(&[JSON]),
        "demo" => reads(&[
            &["hour", "latency", "load_timeout", "strategy"],
            INSTANCE,
            METRICS,
        ]),
        "console" => reads(&[WORLD, ENGINE, INSTANCE, METRICS]),
        "traffic" | "serve" => reads(&[WORLD, ENGINE, INSTANCE, METRICS, JSON]),
        "get" | "etl-complete" | "simulate-partial" | "invalidate" | "warm" | "etl run" => {
            reads(&[WORLD, ENGINE, INSTANCE, JSON])
        }
        "events" | "stats" | "warehouse status" => reads(&[WORLD, JSON]),
        "warehouse init" => reads(&[WORLD, GUARDS, JSON]),
        // With a Redis, the fleet's workers get the Redis and the lease; without one it runs in
        // this process on a simulated warehouse of its own.
        "bench stampede" => Some(Reads {
            reads: if redis {
                &[&["redis", "lease"], JSON]
            } else {
                &[JSON]
            },
            instead: STAMPEDE,
        }),
        "bench stampede-worker" => reads(&[&["redis", "lease"]]),
        "bench lag" => reads(&[JSON]),
        "bench day" => Some(Reads {
            reads: &[JSON],
            instead: &[
                ("hour", "--hour-real"),
                ("latency", "--warehouse-ms"),
                ("strategy", "--strategies"),
            ],
        }),
        // Without a Redis these refuse to start and say what they need, which matters more.
        "bench redis-hits" | "bench redis-invalidation" if !redis => None,
        "bench redis-hits" | "bench redis-invalidation" => reads(&[&["redis"], JSON]),
        // The chaos run starts a Redis and a warehouse of its own (a PostgreSQL one may be given).
        "bench chaos" => reads(&[GUARDS, &["warehouse"], JSON]),
        "bench chaos-worker" => reads(&[&["redis", "warehouse", "latency", "lease"]]),
        "config check" => None,
        "config default" | "completions" => reads(&[]),
        _ => None,
    }
}

/// The command's path as the table names it.
fn path(cmd: &Option<Command>) -> String {
    use super::{ConfigCommand, etl::EtlCommand, warehouse::WarehouseCommand};
    let bench = |b: &BenchCommand| match b {
        BenchCommand::Stampede(_) => "stampede",
        BenchCommand::Lag(_) => "lag",
        BenchCommand::Day(_) => "day",
        BenchCommand::RedisHits(_) => "redis-hits",
        BenchCommand::RedisInvalidation(_) => "redis-invalidation",
        BenchCommand::StampedeWorker(_) => "stampede-worker",
        BenchCommand::Chaos(_) => "chaos",
        BenchCommand::ChaosWorker(_) => "chaos-worker",
    };
    match cmd {
        Some(Command::Bench(b)) => format!("bench {}", bench(b)),
        Some(Command::Warehouse(WarehouseCommand::Init { .. })) => "warehouse init".into(),
        Some(Command::Warehouse(WarehouseCommand::Status)) => "warehouse status".into(),
        Some(Command::Etl(EtlCommand::Run { .. })) => "etl run".into(),
        Some(Command::Config(ConfigCommand::Check)) => "config check".into(),
        Some(Command::Config(ConfigCommand::Default)) => "config default".into(),
        other => super::command_name(other).into(),
    }
}

/// The first shared option given on the command line that `cmd` would ignore, as the message
/// that refuses it.
pub fn ignored(cmd: &Option<Command>, s: &Settings, matches: &ArgMatches) -> Option<String> {
    let path = path(cmd);
    let headless = match cmd {
        None => super::demo::headless(&super::demo::DemoArgs::default()),
        Some(Command::Demo(args)) => super::demo::headless(args),
        _ => false,
    };
    let r = table(&path, s.redis.url.is_some(), headless)?;
    let arg = matches
        .ids()
        .map(|id| id.as_str())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .find(|id| is_shared(id) && !r.reads(id))?;
    let flag = format!("--{}", arg.replace('_', "-"));
    let mut message = format!("`{flag}` does nothing for `{path}`");
    match r.instead.iter().find(|(shared, _)| *shared == arg) {
        Some((_, own)) => message.push_str(&format!(" (it has `{own}`)")),
        None => message.push_str("; leave it out"),
    }
    Some(message)
}

/// The ids of the shared options (the `GlobalArgs` fields).
fn shared_ids() -> Vec<String> {
    let args = <crate::settings::GlobalArgs as clap::Args>::augment_args(clap::Command::new("x"));
    args.get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

fn is_shared(id: &str) -> bool {
    shared_ids().iter().any(|s| s == id)
}

/// Whether some case of the command at `path` (or of a command under it) reads `id`; a command
/// that is not checked reads everything.
fn ever_reads(c: &clap::Command, path: &str, id: &str) -> bool {
    let subs: Vec<&clap::Command> = c
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        return subs
            .iter()
            .any(|s| ever_reads(s, &format!("{path} {}", s.get_name()), id));
    }
    [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .any(|(redis, headless)| table(path, redis, headless).is_none_or(|r| r.reads(id)))
}

/// Hides, in each subcommand's help, the shared options that do nothing for it. `c` must be built
/// (the shared options are copied into each subcommand then).
pub fn hide_unread(c: &mut clap::Command) {
    let ids = shared_ids();
    for s in c.get_subcommands_mut() {
        hide_in(s, s.get_name().to_string(), &ids);
    }
}

fn hide_in(c: &mut clap::Command, path: String, ids: &[String]) {
    let hidden: Vec<&String> = ids.iter().filter(|id| !ever_reads(c, &path, id)).collect();
    let mut own = std::mem::take(c);
    own = own.mut_args(|a| {
        if hidden.iter().any(|h| *h == a.get_id()) {
            a.hide(true)
        } else {
            a
        }
    });
    *c = own;
    for s in c.get_subcommands_mut() {
        if s.get_name() != "help" {
            let name = s.get_name().to_string();
            hide_in(s, format!("{path} {name}"), ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    /// Every path the table names is a real command, so a renamed command cannot slip out of it.
    #[test]
    fn the_table_names_real_commands() {
        let mut c = Cli::command();
        c.build();
        fn leaves(c: &clap::Command, path: &str, out: &mut Vec<String>) {
            let subs: Vec<_> = c
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .collect();
            if subs.is_empty() {
                out.push(path.trim().to_string());
            }
            for s in subs {
                leaves(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut all = Vec::new();
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            leaves(s, s.get_name(), &mut all);
        }
        let unchecked: Vec<&String> = all
            .iter()
            .filter(|p| {
                *p != "config check"
                    && table(p, true, false).is_none()
                    && table(p, false, false).is_none()
            })
            .collect();
        assert!(unchecked.is_empty(), "not in the table: {unchecked:?}");
        // Every id the table names is a shared option.
        for group in [EVERYWHERE, WORLD, ENGINE, INSTANCE, METRICS, JSON] {
            for id in group {
                assert!(is_shared(id), "{id} is not a shared option");
            }
        }
    }
}
