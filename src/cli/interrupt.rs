//! Ctrl-C for the commands that run until interrupted.

use crate::exit::CliError;

/// SIGINT, watched from now on for as long as the returned stream lives. A command that runs
/// until interrupted makes it once, before anything else: a listener made anew on each turn of
/// its loop misses a SIGINT that lands while the turn's work runs, and the command never stops.
pub(super) fn watch_interrupt() -> Result<tokio::signal::unix::Signal, CliError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| {
        CliError::new(
            crate::exit::EXIT_FAILURE,
            format!("cannot watch for Ctrl-C: {e}"),
        )
    })
}
