//! Logs: `tracing` to daily files, never to the terminal (the console owns it while it runs).
//!
//! The level comes from `RUST_LOG` when set, else `--log-level` / `FRESHCACHE_LOG_LEVEL` / the
//! file's `log.level`, else `info`. Files are `freshcache.YYYY-MM-DD.log` in `--log-dir` (default
//! `$XDG_STATE_HOME/freshcache/logs`), the newest `log.keep` kept. Nothing secret is logged: URLs
//! are logged in their masked form, and a panic's message goes through [`redact`] first.

use std::path::PathBuf;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;

use crate::secret::redact;
use crate::settings::Settings;

/// Keeps the log writer flushing until dropped (at the end of `main`).
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// The log level when neither RUST_LOG nor `--log-level` sets one.
pub const DEFAULT_LEVEL: &str = "info";

/// The default log directory: `$XDG_STATE_HOME/freshcache/logs`, else
/// `~/.local/state/freshcache/logs`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("freshcache").join("logs"))
}

/// Starts logging to files for this process. A log directory that cannot be created costs the
/// logs, not the command: it says so once on stderr.
pub fn init(s: &Settings) -> LogGuard {
    let Some(dir) = s.log.dir.clone().or_else(default_dir) else {
        return LogGuard { _worker: None };
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| {
            s.log
                .level
                .as_deref()
                .and_then(|l| EnvFilter::try_new(l).ok())
        })
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LEVEL));
    let appender = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            Builder::new()
                .rotation(Rotation::DAILY)
                .filename_prefix("freshcache")
                .filename_suffix("log")
                .max_log_files(s.log.keep.max(1) as usize)
                .build(&dir)
                .map_err(|e| e.to_string())
        });
    let appender = match appender {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "freshcache: logging is off: cannot write logs in {}: {}",
                crate::sanitize::clean_line(&dir.display().to_string()),
                crate::sanitize::clean_line(&e)
            );
            return LogGuard { _worker: None };
        }
    };
    let (writer, worker) = tracing_appender::non_blocking(appender);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true)
        .try_init()
        .is_ok();
    if installed {
        install_panic_hook(dir);
    }
    LogGuard {
        _worker: Some(worker),
    }
}

/// A panic is a bug: its message (redacted) and place go to the log; the main thread also says
/// so in one line on stderr, without a backtrace. A panic in a background task is caught by the
/// runtime and only logged, so it never scribbles over the console.
fn install_panic_hook(dir: PathBuf) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        // `freshcache events | head`: the reader left; that is not a bug.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        let message = redact(&message);
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".into());
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(%thread, %place, "panic: {message}");
        if thread == "main" {
            eprintln!(
                "freshcache: internal error at {place} (a bug; please report it): {}; details in {}",
                crate::sanitize::clean_short(&message, 200),
                crate::sanitize::clean_line(&dir.display().to_string())
            );
        }
    }));
}
