//! The `freshcache` command line: the demo (the default), the headless twins of every console
//! action, the simulated traffic, and benchmark scenarios.
//!
//! Every command prints human text by default and JSON with `--json`. Errors print one line that
//! says what happened and what to do (a configuration, one line per problem), and exit with a code
//! from [`ExitCode`](self#exit-codes).
//!
//! The shared options ([`GlobalArgs`]) are read once into [`Settings`] before a command runs; a
//! command's help shows its own options first and then, under "Global options", the shared ones
//! it reads. One it does not read is refused when given on the command line (`options`).
//!
//! # Exit codes
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command failed (a warehouse query failed, ...) |
//! | 2 | the command line is wrong (unknown option, bad value, a shared option the command ignores) |
//! | 3 | refused by a guard: read-only mode, production, no confirmation |
//! | 4 | bad input: unknown query, table or parameter, bad batch label, bad file |
//! | 5 | a backend is unavailable: warehouse or state store unreachable or not initialised |
//! | 6 | the configuration is wrong: file, environment variable or value |
//! | 101 | internal error (a bug): one line on stderr, details in the log |

mod backends;
pub mod bench;
pub mod bench_redis;
mod confirm;
pub mod demo;
mod etl;
mod events;
mod get;
mod interrupt;
mod invalidate;
mod options;
mod output;
mod serve;
mod simulate_partial;
pub mod stampede;
mod stats;
mod traffic;
mod warehouse;
mod warm;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::{
    CliError, EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE,
    EXIT_USAGE,
};
use crate::instance::InstanceError;
use crate::model::catalog::CatalogError;
use crate::settings::config::Report;
use crate::settings::{GlobalArgs, Settings};
use crate::warehouse::WarehouseError;

pub use backends::{Backends, MetricsGuard, serve_metrics};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the command failed (the message says what happened and what to do)
  2  the command line is wrong (unknown option, bad value, a shared option the command ignores)
  3  refused by a guard: read-only mode, production, no confirmation
  4  bad input: unknown query, table or parameter, bad batch label, bad file
  5  a backend is unavailable: warehouse or state store unreachable or not initialised
  6  the configuration is wrong: file, environment variable or value (see `freshcache config check`)
  101  internal error (a bug): one line on stderr, details in the log

Configuration: flags > FRESHCACHE_* environment > --config FILE (default
$XDG_CONFIG_HOME/freshcache/config.toml) > defaults. `freshcache config default` prints a
documented file. Logs: $XDG_STATE_HOME/freshcache/logs (--log-dir).";

/// Keeps expensive data-warehouse answers cached, fresh and safe.
#[derive(Debug, Parser)]
#[command(name = "freshcache", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do (the demo when omitted).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the embedded demo with the live console: a warehouse that updates every (accelerated)
    /// hour, simulated users, and what the cache does about it. The default command.
    #[command(
        after_help = "Examples:\n  freshcache demo\n  freshcache demo --users 2000 --hour 30s\n  freshcache demo --headless --json"
    )]
    Demo(demo::DemoArgs),
    /// The console over the configured cache (the data directory's embedded state, or Redis).
    #[command(
        after_help = "Examples:\n  freshcache console\n  freshcache --redis redis://cache.internal:6379/0 --read-only console\n  freshcache --env staging --redis redis://127.0.0.1:6379 --metrics-addr 127.0.0.1:9464 console"
    )]
    Console(demo::ConsoleArgs),
    /// Answers one catalog question and says how fresh the answer is.
    #[command(after_help = "Example:\n  freshcache get sales_by_region quarter=Q1 year=2026")]
    Get(get::GetArgs),
    /// The ETL finished batch B: check update_log, bump the tables that reached it, report the rest.
    #[command(after_help = "Example:\n  freshcache etl-complete --batch 20261126-10:00")]
    EtlComplete(etl::EtlCompleteArgs),
    /// Runs an ETL batch in which the named tables fail, then etl-complete (staging and
    /// development only; dangerous: needs --yes or a typed confirmation).
    #[command(
        after_help = "Examples:\n  freshcache --env staging simulate-partial --fail inventory\n  freshcache --env staging simulate-partial --fail inventory,customers --yes"
    )]
    SimulatePartial(simulate_partial::SimulatePartialArgs),
    /// Bumps the versions of tables so every answer that reads them misses once (dangerous:
    /// needs --yes or a typed confirmation).
    #[command(
        after_help = "Examples:\n  freshcache invalidate --table sales --yes\n  freshcache invalidate --all"
    )]
    Invalidate(invalidate::InvalidateArgs),
    /// Loads the hottest keys ahead of need and reports progress.
    #[command(after_help = "Examples:\n  freshcache warm --top 50\n  freshcache --json warm")]
    Warm(warm::WarmArgs),
    /// Runs one engine instance (a stand-in API server) with simulated chatbot users and prints a
    /// summary when it ends or is interrupted.
    #[command(
        after_help = "Example:\n  freshcache traffic --users 200 --duration 30s --with-etl --hour 60s"
    )]
    Traffic(traffic::TrafficArgs),
    /// Serves answers over HTTP to API servers in any language (a sidecar on loopback):
    /// GET /v1/answers/QUERY?NAME=VALUE; operator endpoints with --admin-token-file.
    #[command(
        after_help = "Examples:\n  freshcache serve --listen 127.0.0.1:8080\n  freshcache --redis redis://127.0.0.1:6379 serve --admin-token-file /etc/freshcache/token\n  curl 'http://127.0.0.1:8080/v1/answers/sales_by_region?quarter=Q4&year=2026'"
    )]
    Serve(serve::ServeArgs),
    /// Lists the event log (with --json: JSON Lines); --follow keeps printing new events.
    #[command(
        after_help = "Examples:\n  freshcache events --limit 20\n  freshcache --redis redis://127.0.0.1:6379 --json events --follow | jq .type"
    )]
    Events(events::EventsArgs),
    /// Counters summed over every live instance, and the versions; --watch keeps printing.
    #[command(
        after_help = "Examples:\n  freshcache stats\n  freshcache --redis redis://127.0.0.1:6379 --json stats\n  freshcache --json stats --watch --interval 5s"
    )]
    Stats(stats::StatsArgs),
    /// The warehouse itself: create the demo data, show update_log.
    #[command(
        subcommand,
        after_help = "Examples:\n  freshcache warehouse status\n  freshcache --warehouse postgres://analyst@127.0.0.1/sales warehouse init --sales 50000"
    )]
    Warehouse(warehouse::WarehouseCommand),
    /// The ETL simulator: load a batch now.
    #[command(
        subcommand,
        after_help = "Examples:\n  freshcache etl run\n  freshcache etl run --fail inventory --late customers=10m"
    )]
    Etl(etl::EtlCommand),
    /// Benchmark scenarios.
    #[command(
        subcommand,
        after_help = "Examples:\n  freshcache bench stampede --requesters 1000\n  freshcache --redis redis://127.0.0.1:6379 --json bench stampede --processes 4 --keys 20\n  freshcache bench day --hours 3 --hour-real 30s"
    )]
    Bench(bench::BenchCommand),
    /// The configuration: check it, print the documented default file.
    #[command(
        subcommand,
        after_help = "Examples:\n  freshcache config check\n  freshcache config default > ~/.config/freshcache/config.toml"
    )]
    Config(ConfigCommand),
    /// Prints a shell completion script.
    #[command(
        after_help = "Examples:\n  freshcache completions bash > ~/.local/share/bash-completion/completions/freshcache\n  freshcache completions zsh > ~/.zfunc/_freshcache\n  freshcache completions fish > ~/.config/fish/completions/freshcache.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validates the configuration (file, environment, flags) and prints the effective values,
    /// passwords masked, with where each came from.
    #[command(
        after_help = "Examples:\n  freshcache config check\n  freshcache --config /etc/freshcache.toml config check --json"
    )]
    Check,
    /// Prints the documented default configuration file.
    #[command(
        after_help = "Example:\n  freshcache config default > ~/.config/freshcache/config.toml"
    )]
    Default,
}

impl From<CatalogError> for CliError {
    fn from(e: CatalogError) -> Self {
        Self::new(EXIT_BAD_INPUT, e.to_string())
    }
}

impl From<WarehouseError> for CliError {
    fn from(e: WarehouseError) -> Self {
        let code = match e {
            WarehouseError::Query(_) => EXIT_FAILURE,
            WarehouseError::Unavailable(_) | WarehouseError::NotInitialised(_) => EXIT_UNAVAILABLE,
        };
        Self::new(code, e.to_string())
    }
}

impl From<InstanceError> for CliError {
    fn from(e: InstanceError) -> Self {
        let code = match &e {
            InstanceError::ReadOnly(_) | InstanceError::Refused(_) => EXIT_REFUSED,
            InstanceError::BadInput(_) => EXIT_BAD_INPUT,
            InstanceError::Bus(_) => EXIT_UNAVAILABLE,
            InstanceError::Warehouse(w) => return w.clone().into(),
            InstanceError::NoEtl => EXIT_FAILURE,
        };
        Self::new(code, e.to_string())
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::new(EXIT_FAILURE, format!("{e:#}"))
    }
}

/// The command line as parsed and shown in help: each subcommand's help lists its own options
/// first, then the shared ones it reads under "Global options" (those that do nothing for it are
/// hidden, and refused when given).
pub fn command() -> clap::Command {
    let mut c = Cli::command();
    c.build();
    options::hide_unread(&mut c);
    c
}

/// Parses `args` (the program name first) and reads the settings: the command, its typed
/// settings and the `config check` report; or the exit code and what to print.
pub fn parse<I, T>(args: I) -> Result<(Cli, Settings, Report), ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let usage = |e: clap::Error| {
        let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        // Printing usage to a closed stream: the exit code still says what happened.
        let _ = e.print();
        ExitCode::from(code)
    };
    let matches = command().try_get_matches_from(args).map_err(usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(usage)?;
    // `--json` is a flag only: read it from the command line, for errors before the settings.
    let json = matches
        .try_get_one::<bool>("json")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    let (settings, report) = crate::settings::config::resolve(&matches).map_err(|e| {
        for problem in &e.problems {
            report_error(json, EXIT_CONFIG, problem);
        }
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Some(message) = options::ignored(&cli.command, &settings, &matches) {
        report_error(json, EXIT_USAGE, &message);
        return Err(ExitCode::from(EXIT_USAGE));
    }
    Ok((cli, settings, report))
}

/// Parses the command line and runs it; the binary's whole `main`.
pub fn main() -> ExitCode {
    // Output into a closed pipe (`freshcache events | head`) ends the process quietly, as it
    // does any Unix tool, instead of a panic on the failed write.
    // SAFETY: setting a signal's disposition to the default takes no pointers and runs before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (cli, settings, config) = match parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    // Commands that only print need no logs.
    let _logs = match &cli.command {
        Some(Command::Completions { .. } | Command::Config(_)) => None,
        _ => Some(crate::settings::logging::init(&settings)),
    };
    match cli.command {
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "freshcache", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_OK),
                Err(e) => {
                    eprintln!("freshcache: cannot write the script: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{}", crate::settings::config::DEFAULT_FILE);
            return ExitCode::from(EXIT_OK);
        }
        Some(Command::Config(ConfigCommand::Check)) => {
            if settings.json {
                return match output::print_json(&config) {
                    Ok(()) => ExitCode::from(EXIT_OK),
                    Err(e) => ExitCode::from(e.code),
                };
            }
            crate::settings::config::print(&config);
            return ExitCode::from(EXIT_OK);
        }
        _ => {}
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = command_name(&cli.command),
        "start"
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(Command::Serve(args)) = &cli.command {
        builder.worker_threads(usize::from(args.workers));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("freshcache: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let json = settings.json;
    let result = runtime.block_on(run(cli.command, settings));
    // Background tasks (sync loops, refreshes) end with the runtime; never wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => {
            tracing::info!("done");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            let mut message = crate::secret::redact(&e.message);
            if e.code == EXIT_UNAVAILABLE && message.contains("redis unavailable") {
                message.push_str(redis_hint(&message));
            }
            tracing::warn!(code = e.code, "failed: {message}");
            report_error(json, e.code, &message);
            ExitCode::from(e.code)
        }
    }
}

/// Says on stderr why the command failed: one line of text, or with `--json` one JSON object
/// `{"error", "code", "hint"}` (the hint is what the exit code means and where to look).
fn report_error(json: bool, code: u8, message: &str) {
    let message = output::clean_line(message);
    if !json {
        eprintln!("freshcache: {message}");
        return;
    }
    let hint = match code {
        EXIT_USAGE => "the command line: see --help",
        EXIT_REFUSED => "refused by a guard: nothing was changed",
        EXIT_BAD_INPUT => "bad input: check the names and values given",
        EXIT_UNAVAILABLE => "a backend (Redis, the warehouse) is unavailable: check it and retry",
        EXIT_CONFIG => "the configuration: see `freshcache config check`",
        _ => "see the log for details",
    };
    eprintln!(
        "{}",
        serde_json::json!({ "error": message, "code": code, "hint": hint })
    );
}

/// What to check when Redis did not answer, unless the message already says it.
fn redis_hint(message: &str) -> &'static str {
    if message.contains("credentials") || message.contains("certificate") {
        ""
    } else if message.contains("reset by peer") || message.contains("end of file") {
        " (a server that speaks TLS closes plain connections: then use a rediss:// URL)"
    } else if message.contains("rediss://") && message.contains("no answer within") {
        " (is Redis running there, and does it speak TLS on that port? for a plain server use redis://)"
    } else {
        " (is Redis running there? the server is set with --redis or FRESHCACHE_REDIS)"
    }
}

fn command_name(c: &Option<Command>) -> &'static str {
    match c {
        None | Some(Command::Demo(_)) => "demo",
        Some(Command::Console(_)) => "console",
        Some(Command::Get(_)) => "get",
        Some(Command::EtlComplete(_)) => "etl-complete",
        Some(Command::SimulatePartial(_)) => "simulate-partial",
        Some(Command::Invalidate(_)) => "invalidate",
        Some(Command::Warm(_)) => "warm",
        Some(Command::Traffic(_)) => "traffic",
        Some(Command::Serve(_)) => "serve",
        Some(Command::Events(_)) => "events",
        Some(Command::Stats(_)) => "stats",
        Some(Command::Warehouse(_)) => "warehouse",
        Some(Command::Etl(_)) => "etl",
        Some(Command::Bench(_)) => "bench",
        Some(Command::Config(_)) => "config",
        Some(Command::Completions { .. }) => "completions",
    }
}

async fn run(command: Option<Command>, settings: Settings) -> Result<(), CliError> {
    let settings = &settings;
    match command {
        None => demo::run(settings, demo::DemoArgs::default()).await,
        Some(Command::Demo(args)) => demo::run(settings, args).await,
        Some(Command::Console(args)) => demo::console(settings, args).await,
        Some(Command::Get(args)) => get::get(settings, args).await,
        Some(Command::EtlComplete(args)) => etl::etl_complete(settings, args).await,
        Some(Command::SimulatePartial(args)) => {
            simulate_partial::simulate_partial(settings, args).await
        }
        Some(Command::Invalidate(args)) => invalidate::invalidate(settings, args).await,
        Some(Command::Warm(args)) => warm::warm(settings, args).await,
        Some(Command::Traffic(args)) => traffic::traffic(settings, args).await,
        Some(Command::Serve(args)) => serve::serve(settings, args).await,
        Some(Command::Events(args)) => events::events(settings, args).await,
        Some(Command::Stats(args)) => stats::stats(settings, args).await,
        Some(Command::Warehouse(c)) => warehouse::warehouse(settings, c).await,
        Some(Command::Etl(c)) => etl::etl(settings, c).await,
        Some(Command::Bench(b)) => bench::run(settings, b).await,
        // Handled before the runtime starts.
        Some(Command::Config(_) | Command::Completions { .. }) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Clap's own checks (duplicate flags, a subcommand flag shadowing a settings one, ...),
        // which otherwise run only in debug builds, at the first parse.
        Cli::command().debug_assert();
    }

    /// Every example in the help parses and is not refused: an example must not show a shared
    /// option the command ignores. (The demo's console examples need a terminal, which a test
    /// has not: without one the demo tells its story and reads only `--json`.)
    #[test]
    fn every_example_in_the_help_is_accepted() {
        fn walk(c: &clap::Command, out: &mut Vec<String>) {
            if let Some(h) = c.get_after_help() {
                out.extend(
                    h.to_string()
                        .lines()
                        .map(str::trim)
                        .filter(|l| l.starts_with("freshcache "))
                        .map(String::from),
                );
            }
            for s in c.get_subcommands() {
                walk(s, out);
            }
        }
        let mut examples = Vec::new();
        walk(&Cli::command(), &mut examples);
        assert!(examples.len() > 30, "{examples:?}");
        for e in examples {
            let words: Vec<&str> = e
                .split_whitespace()
                .take_while(|w| !["|", ">"].contains(w))
                .collect();
            // A file of the example's own is not there to read.
            if words.contains(&"--config")
                || (words.contains(&"demo") && !words.contains(&"--headless"))
            {
                continue;
            }
            let argv = ["freshcache", "--config", "/dev/null"]
                .into_iter()
                .chain(words[1..].iter().copied());
            assert!(parse(argv).is_ok(), "the example `{e}` is refused");
        }
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", c.get_name());
            let hidden = c.is_hide_set();
            let leaf = c.get_subcommands().next().is_none();
            if !hidden
                && leaf
                && !c
                    .get_after_help()
                    .is_some_and(|h| h.to_string().contains("Example"))
            {
                missing.push(path.clone());
            }
            for s in c.get_subcommands() {
                if s.get_name() != "help" {
                    walk(s, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        for s in Cli::command().get_subcommands() {
            if s.get_name() != "help" {
                walk(s, "freshcache", &mut missing);
            }
        }
        assert!(
            missing.is_empty(),
            "no examples in the help of: {missing:?}"
        );
    }
}
