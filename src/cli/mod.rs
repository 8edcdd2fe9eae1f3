//! The `freshcache` command line: the demo (the default), and benchmark scenarios.
//!
//! Every command prints human text by default and one JSON document with `--json`.

pub mod bench;
pub mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: the command did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed (the message says why).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line itself is wrong.
pub const EXIT_USAGE: u8 = 2;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the command failed (the message says what happened and what to do)
  2  the command line is wrong (unknown option, bad value)";

/// Keeps expensive data-warehouse answers cached, fresh and safe.
#[derive(Debug, Parser)]
#[command(name = "freshcache", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do (the demo when omitted).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the embedded demo: a warehouse that updates every hour, a burst of users, and what the
    /// cache did about it.
    Demo(demo::DemoArgs),
    /// Benchmark scenarios.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Parses the command line and runs it; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("freshcache: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => demo::run(demo::DemoArgs::default()).await,
            Some(Command::Demo(args)) => demo::run(args).await,
            Some(Command::Bench(b)) => bench::run(b).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("freshcache: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
