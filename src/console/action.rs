//! The one registry of console actions. Each action is one value with its key, its description
//! and whether it is dangerous; the footer, the help overlay, read-only mode and the typed
//! confirmations are all derived from it, and an action that reaches the engine names the
//! [`instance::Action`](crate::instance::Action) whose guard (and headless CLI twin) it shares.

use crate::instance::Action as EngineAction;
use crate::model::environment::Environment;

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionId {
    /// Show or hide help.
    Help,
    /// Invalidate tables (a bump of their versions).
    Invalidate,
    /// Warm the hottest keys.
    Warm,
    /// Simulate a partial update.
    SimulatePartial,
    /// Switch strategy.
    Strategy,
    /// Freeze or unfreeze the screen (collection continues).
    Freeze,
    /// Filter the event feed.
    Filter,
    /// Quit.
    Quit,
}

/// One action of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// Which.
    pub id: ActionId,
    /// Its key.
    pub key: char,
    /// A word for the footer.
    pub label: &'static str,
    /// A shorter word, for narrow footers.
    pub short: &'static str,
    /// A line for the help overlay.
    pub description: &'static str,
    /// Whether it needs a typed confirmation.
    pub dangerous: bool,
    /// The engine action it carries out, if any (its guard applies, and its CLI twin).
    pub engine: Option<EngineAction>,
    /// The headless command that does the same.
    pub cli: Option<&'static str>,
}

/// Every console action, in footer order.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        id: ActionId::Invalidate,
        key: 'i',
        label: "invalidate",
        short: "inval",
        description: "bump table versions: every answer that reads them misses once",
        dangerous: true,
        engine: Some(EngineAction::Invalidate),
        cli: Some("freshcache invalidate --table T"),
    },
    ActionSpec {
        id: ActionId::Warm,
        key: 'w',
        label: "warm",
        short: "warm",
        description: "load the hottest keys that are not fresh",
        dangerous: false,
        engine: Some(EngineAction::Warm),
        cli: Some("freshcache warm --top N"),
    },
    ActionSpec {
        id: ActionId::SimulatePartial,
        key: 'p',
        label: "partial update",
        short: "partial",
        description: "run an ETL batch in which chosen tables fail (staging, development)",
        dangerous: true,
        engine: Some(EngineAction::SimulatePartial),
        cli: Some("freshcache simulate-partial --fail T"),
    },
    ActionSpec {
        id: ActionId::Strategy,
        key: 's',
        label: "strategy",
        short: "strat",
        description: "switch the caching strategy (demo): the seed's recipes or freshcache",
        dangerous: true,
        engine: Some(EngineAction::SwitchStrategy),
        cli: Some("freshcache --strategy S ..."),
    },
    ActionSpec {
        id: ActionId::Freeze,
        key: 'f',
        label: "freeze",
        short: "freeze",
        description: "freeze the screen; collection goes on, unfreeze shows the latest",
        dangerous: false,
        engine: None,
        cli: None,
    },
    ActionSpec {
        id: ActionId::Filter,
        key: '/',
        label: "filter",
        short: "filter",
        description: "filter the event feed by text (Esc clears)",
        dangerous: false,
        engine: None,
        cli: Some("freshcache events"),
    },
    ActionSpec {
        id: ActionId::Help,
        key: '?',
        label: "help",
        short: "help",
        description: "show or hide this help",
        dangerous: false,
        engine: None,
        cli: None,
    },
    ActionSpec {
        id: ActionId::Quit,
        key: 'q',
        label: "quit",
        short: "quit",
        description: "quit and restore the terminal (also Ctrl-C)",
        dangerous: false,
        engine: None,
        cli: None,
    },
];

/// The action bound to `key`.
pub fn by_key(key: char) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.key == key)
}

/// The spec of an action.
pub fn spec(id: ActionId) -> &'static ActionSpec {
    ACTIONS
        .iter()
        .find(|a| a.id == id)
        .unwrap_or(&ACTIONS[ACTIONS.len() - 1])
}

/// Why `action` is not available here, or `None` when it is. Engine actions follow the
/// engine's own guard; read-only mode removes everything that changes anything.
pub fn unavailable(action: &ActionSpec, env: Environment, read_only: bool) -> Option<String> {
    let engine = action.engine?;
    if let Some(why) = engine.refused_in(env) {
        return Some(why.to_string());
    }
    if read_only {
        return Some(format!("{} is disabled in read-only mode", action.label));
    }
    None
}

/// The phrase an operator types to confirm a dangerous action: it names the action, the targets
/// and the environment, so it cannot be typed by habit in the wrong window.
pub fn confirmation_phrase(action: &ActionSpec, targets: &[String], env: Environment) -> String {
    let verb = match action.engine {
        Some(e) => e.name(),
        None => action.label,
    };
    format!("{verb} {} in {env}", targets.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_guards_follow_the_engine() {
        for (i, a) in ACTIONS.iter().enumerate() {
            assert!(ACTIONS[..i].iter().all(|b| b.key != a.key), "{:?}", a.id);
            assert_eq!(spec(a.id).id, a.id);
            if let Some(e) = a.engine {
                assert_eq!(a.dangerous, e.dangerous(), "{:?}", a.id);
            }
        }
        let partial = spec(ActionId::SimulatePartial);
        assert!(
            unavailable(partial, Environment::Production, false)
                .unwrap()
                .contains("production")
        );
        assert!(unavailable(partial, Environment::Staging, false).is_none());
        assert!(unavailable(spec(ActionId::Invalidate), Environment::Staging, true).is_some());
        assert!(unavailable(spec(ActionId::Freeze), Environment::Production, true).is_none());
        assert_eq!(
            confirmation_phrase(
                spec(ActionId::Invalidate),
                &["sales".into()],
                Environment::Staging
            ),
            "invalidate sales in staging"
        );
    }
}
