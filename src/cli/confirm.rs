//! The typed confirmation a dangerous operator action asks for: the registry's phrase, the one
//! the console asks for.

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::{CliError, EXIT_REFUSED};
use crate::model::ops::{self, Action};
use crate::settings::Settings;

/// Asks for the registry's typed confirmation of a dangerous `action` (the phrase the console
/// asks for), after saying `what` will happen — unless `--yes` was given. An action the guard
/// refuses anyway is not asked about: the instance refuses it, and audits the refusal.
pub(super) fn confirm_action(
    settings: &Settings,
    action: Action,
    targets: &[String],
    yes: bool,
    what: &str,
) -> Result<(), CliError> {
    if yes
        || !action.dangerous()
        || ops::refusal(action, settings.environment, settings.read_only).is_some()
    {
        return Ok(());
    }
    eprintln!("{what}");
    confirm(
        &ops::confirmation_phrase(action, targets, settings.environment),
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
    // An unflushed prompt still reads the answer; stderr is unbuffered anyway.
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
