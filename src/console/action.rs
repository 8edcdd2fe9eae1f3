//! The console's keys. Each key is one value: an operator action of the one registry
//! ([`crate::model::ops`]) — whose danger, refusals, confirmation phrase, description and headless
//! twin come from there, unchanged — or a view control (help, freeze, filter, quit) that changes
//! nothing outside the console. The footer, the help overlay, read-only mode and the typed
//! confirmations are all derived from this list.
use crate::model::environment::Environment;
use crate::model::ops::{self, Action};

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
    /// Switch the feed between the engineers' words and plain words.
    PlainWords,
    /// Show the instances one by one (in the feed's place on a narrow terminal).
    Instances,
    /// The story's next step (`demo --story`: space or →; not a footer key).
    StoryNext,
    /// Filter the event feed.
    Filter,
    /// Quit.
    Quit,
}

/// One key of the console.
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
    /// What it does, for the help overlay, when it is a view control (an operator action's comes
    /// from the registry).
    view: Option<View>,
    /// The operator action it carries out, if any: its guard, danger, phrase and CLI twin apply.
    pub engine: Option<Action>,
}

/// What a view control does, and the headless command closest to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    description: &'static str,
    cli: Option<&'static str>,
}

impl ActionSpec {
    /// A line for the help overlay.
    pub fn description(&self) -> &'static str {
        match (self.engine, self.view) {
            (Some(a), _) => a.spec().description,
            (None, Some(v)) => v.description,
            (None, None) => "",
        }
    }

    /// Whether it needs a typed confirmation (the registry's word for operator actions).
    pub fn dangerous(&self) -> bool {
        self.engine.is_some_and(Action::dangerous)
    }

    /// The headless command that does the same.
    pub fn cli(&self) -> Option<&'static str> {
        match (self.engine, self.view) {
            (Some(a), _) => Some(a.spec().cli),
            (None, Some(v)) => v.cli,
            (None, None) => None,
        }
    }
}

/// Every console action, in footer order.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        id: ActionId::Invalidate,
        key: 'i',
        label: "invalidate",
        short: "inval",
        view: None,
        engine: Some(Action::Invalidate),
    },
    ActionSpec {
        id: ActionId::Warm,
        key: 'w',
        label: "warm",
        short: "warm",
        view: None,
        engine: Some(Action::Warm),
    },
    ActionSpec {
        id: ActionId::SimulatePartial,
        key: 'p',
        label: "partial update",
        short: "partial",
        view: None,
        engine: Some(Action::SimulatePartial),
    },
    ActionSpec {
        id: ActionId::Strategy,
        key: 's',
        label: "strategy",
        short: "strat",
        view: None,
        engine: Some(Action::SwitchStrategy),
    },
    ActionSpec {
        id: ActionId::Instances,
        key: 'n',
        label: "instances",
        short: "inst",
        view: Some(View {
            description: "the instances one by one: role, versions behind, state, requests/s, hit ratio",
            cli: Some("freshcache stats --json"),
        }),
        engine: None,
    },
    ActionSpec {
        id: ActionId::PlainWords,
        key: 'e',
        label: "plain words",
        short: "plain",
        view: Some(View {
            description: "explain: the feed in plain words, or back in the engineers' words",
            cli: None,
        }),
        engine: None,
    },
    ActionSpec {
        id: ActionId::Freeze,
        key: 'f',
        label: "freeze",
        short: "freeze",
        view: Some(View {
            description: "freeze the screen; collection goes on, unfreeze shows the latest",
            cli: None,
        }),
        engine: None,
    },
    ActionSpec {
        id: ActionId::Filter,
        key: '/',
        label: "filter",
        short: "filter",
        view: Some(View {
            description: "filter the event feed by text (Esc clears)",
            cli: Some("freshcache events"),
        }),
        engine: None,
    },
    ActionSpec {
        id: ActionId::Help,
        key: '?',
        label: "help",
        short: "help",
        view: Some(View {
            description: "show or hide this help",
            cli: None,
        }),
        engine: None,
    },
    ActionSpec {
        id: ActionId::Quit,
        key: 'q',
        label: "quit",
        short: "quit",
        view: Some(View {
            description: "quit and restore the terminal (also Ctrl-C)",
            cli: None,
        }),
        engine: None,
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
    ops::refusal(action.engine?, env, read_only).map(|r| r.to_string())
}

/// The phrase an operator types to confirm a dangerous action (the registry's, as the CLI asks).
pub fn confirmation_phrase(action: &ActionSpec, targets: &[String], env: Environment) -> String {
    match action.engine {
        Some(a) => ops::confirmation_phrase(a, targets, env),
        None => format!("{} {} in {env}", action.label, targets.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_guards_follow_the_engine() {
        for (i, a) in ACTIONS.iter().enumerate() {
            assert!(ACTIONS[..i].iter().all(|b| b.key != a.key), "{:?}", a.id);
            assert_eq!(spec(a.id).id, a.id);
            assert!(!a.description().is_empty(), "{:?}", a.id);
            assert_eq!(a.dangerous(), a.engine.is_some_and(Action::dangerous));
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
