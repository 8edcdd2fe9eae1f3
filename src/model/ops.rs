//! The one registry of operator actions: for each, its name (in commands, the event log and the
//! audit), whether it is dangerous, where it is refused, the phrase that confirms it and its
//! headless command.
//!
//! Everything that offers or runs an action derives from [`Action::spec`]: the instance's guard
//! (enforced below every UI), the console's footer, help, refusals and typed confirmations, and
//! the CLI's `--yes` / typed confirmation. A dangerous action is confirmed with the same phrase
//! everywhere ([`confirmation_phrase`]); a refusal reads the same everywhere ([`refusal`]).

use std::fmt;

use serde::Serialize;

use super::environment::Environment;

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Bump table versions by hand.
    Invalidate,
    /// Load hot keys ahead of need.
    Warm,
    /// Run an ETL batch with failing tables.
    SimulatePartial,
    /// Change the engine's strategy.
    SwitchStrategy,
    /// Run the ETL simulator (`etl run`): made-up data into the warehouse.
    RunEtl,
    /// Complete an ETL batch (`etl-complete`): bump what the update log confirms.
    EtlComplete,
    /// Create the demo schema and data in an empty warehouse (`warehouse init`).
    InitWarehouse,
}

/// What the registry says of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// Which.
    pub action: Action,
    /// The name in commands, the event log and confirmations.
    pub name: &'static str,
    /// One line: what it does.
    pub description: &'static str,
    /// Whether it needs a typed confirmation (or `--yes`): it makes users miss, or changes how
    /// they are served. The ETL's own steps are run by jobs, which answer no prompts; they are
    /// guarded by environment and read-only mode instead.
    pub dangerous: bool,
    /// Environments that refuse it outright, and why.
    pub refused_in: &'static [(Environment, &'static str)],
    /// The headless command that does it.
    pub cli: &'static str,
}

/// Every action.
pub const ACTIONS: [ActionSpec; 7] = [
    ActionSpec {
        action: Action::Invalidate,
        name: "invalidate",
        description: "bump table versions: every answer that reads them misses once",
        dangerous: true,
        refused_in: &[],
        cli: "freshcache invalidate --table T",
    },
    ActionSpec {
        action: Action::Warm,
        name: "warm",
        description: "load the hottest keys that are not fresh",
        dangerous: false,
        refused_in: &[],
        cli: "freshcache warm --top N",
    },
    ActionSpec {
        action: Action::SimulatePartial,
        name: "simulate-partial",
        description: "run an ETL batch in which chosen tables fail (staging, development)",
        dangerous: true,
        refused_in: &[(
            Environment::Production,
            "partial updates are simulated in staging and development, not in production",
        )],
        cli: "freshcache simulate-partial --fail T",
    },
    ActionSpec {
        action: Action::SwitchStrategy,
        name: "switch-strategy",
        description: "switch the caching strategy (demo): the baseline recipes or freshcache",
        dangerous: true,
        refused_in: &[(
            Environment::Production,
            "switching strategy is a demo feature, not in production",
        )],
        cli: "freshcache --strategy S ...",
    },
    ActionSpec {
        action: Action::RunEtl,
        name: "etl-run",
        description: "run the ETL simulator: made-up data into the warehouse, then complete the batch",
        dangerous: false,
        refused_in: &[(
            Environment::Production,
            "the ETL simulator loads made-up data: staging and development only; in production the real ETL loads, then runs `freshcache etl-complete`",
        )],
        cli: "freshcache etl run",
    },
    ActionSpec {
        action: Action::EtlComplete,
        name: "etl-complete",
        description: "complete an ETL batch: bump the tables the update log confirms",
        dangerous: false,
        refused_in: &[],
        cli: "freshcache etl-complete --batch B",
    },
    ActionSpec {
        action: Action::InitWarehouse,
        name: "warehouse-init",
        description: "create the demo schema and data in an empty warehouse",
        dangerous: false,
        refused_in: &[(
            Environment::Production,
            "the demo schema and data are for staging and development, not a production warehouse",
        )],
        cli: "freshcache warehouse init",
    },
];

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::Invalidate,
        Action::Warm,
        Action::SimulatePartial,
        Action::SwitchStrategy,
        Action::RunEtl,
        Action::EtlComplete,
        Action::InitWarehouse,
    ];

    /// What the registry says of it.
    pub fn spec(self) -> &'static ActionSpec {
        // `ACTIONS` lists the actions in declaration order (checked by a test).
        &ACTIONS[self as usize]
    }

    /// The action's name in commands and the event log.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The action named `name` in commands and the event log.
    pub fn by_name(name: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it needs a typed confirmation (or `--yes`).
    pub fn dangerous(self) -> bool {
        self.spec().dangerous
    }

    /// Why `env` refuses the action outright, if it does.
    pub fn refused_in(self, env: Environment) -> Option<&'static str> {
        self.spec()
            .refused_in
            .iter()
            .find(|(e, _)| *e == env)
            .map(|(_, why)| *why)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an action may not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The environment refuses it (production refuses simulations).
    Environment(&'static str),
    /// Read-only mode refuses every action that changes anything.
    ReadOnly(Action),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Environment(why) => f.write_str(why),
            Refusal::ReadOnly(action) => write!(f, "{action} is disabled in read-only mode"),
        }
    }
}

/// Whether `action` may run in `env` (read-only or not); `None` when it may.
pub fn refusal(action: Action, env: Environment, read_only: bool) -> Option<Refusal> {
    if let Some(why) = action.refused_in(env) {
        return Some(Refusal::Environment(why));
    }
    read_only.then_some(Refusal::ReadOnly(action))
}

/// The phrase an operator types to confirm a dangerous action: it names the action, the targets
/// and the environment, so it cannot be typed by habit in the wrong window. The console and the
/// CLI ask for exactly this phrase.
pub fn confirmation_phrase(action: Action, targets: &[String], env: Environment) -> String {
    format!("{} {} in {env}", action.name(), targets.join(","))
}

/// What invalidating some tables does: every query that reads at least one of them misses
/// once — each query counted once, however many of the tables it reads. The console's
/// confirmation and the headless `invalidate` both say it with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlastRadius {
    /// Queries that read at least one of the tables.
    pub queries: usize,
    /// Queries in the catalog.
    pub of: usize,
    /// Cached answers at the current versions of the tables, when known.
    pub cached_answers: Option<u64>,
}

impl BlastRadius {
    /// The blast radius of invalidating `targets`, given the tables each catalog query reads.
    pub fn of_invalidation<Q, T, S>(query_tables: Q, targets: &[String]) -> Self
    where
        Q: IntoIterator<Item = T>,
        T: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (mut queries, mut of) = (0, 0);
        for tables in query_tables {
            of += 1;
            if tables
                .into_iter()
                .any(|t| targets.iter().any(|x| x == t.as_ref()))
            {
                queries += 1;
            }
        }
        Self {
            queries,
            of,
            cached_answers: None,
        }
    }
}

impl fmt::Display for BlastRadius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.cached_answers {
            write!(f, "{n} cached answers at the current versions and ")?;
        }
        write!(
            f,
            "every answer of {} of {} queries will miss once",
            self.queries, self.of
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_every_action_once_in_order() {
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(ACTIONS[i].action, *a);
            assert_eq!(a.spec().action, *a);
            assert!(ACTIONS[..i].iter().all(|s| s.name != a.name()), "{a:?}");
        }
    }

    #[test]
    fn production_refuses_simulations_and_read_only_refuses_every_change() {
        assert!(matches!(
            refusal(Action::SimulatePartial, Environment::Production, false),
            Some(Refusal::Environment(_))
        ));
        assert!(refusal(Action::SimulatePartial, Environment::Staging, false).is_none());
        assert!(refusal(Action::Invalidate, Environment::Production, false).is_none());
        assert!(matches!(
            refusal(Action::RunEtl, Environment::Production, false),
            Some(Refusal::Environment(_))
        ));
        assert!(refusal(Action::EtlComplete, Environment::Production, false).is_none());
        for a in Action::ALL {
            assert_eq!(
                refusal(a, Environment::Development, true),
                Some(Refusal::ReadOnly(a)),
                "{a:?}"
            );
        }
        assert!(!Action::Warm.dangerous() && Action::Invalidate.dangerous());
        assert!(Action::SimulatePartial.dangerous());
    }

    #[test]
    fn the_phrase_names_action_targets_and_environment() {
        assert_eq!(
            confirmation_phrase(Action::Invalidate, &["sales".into()], Environment::Staging),
            "invalidate sales in staging"
        );
        assert_eq!(
            confirmation_phrase(
                Action::SimulatePartial,
                &["inventory".into(), "sales".into()],
                Environment::Development
            ),
            "simulate-partial inventory,sales in development"
        );
    }

    #[test]
    fn a_query_reading_two_invalidated_tables_is_counted_once() {
        let queries = [
            vec!["sales", "inventory"],
            vec!["sales"],
            vec!["inventory"],
            vec!["customers"],
        ];
        let targets = ["sales".to_string(), "inventory".to_string()];
        let b = BlastRadius::of_invalidation(queries.iter().map(|q| q.iter()), &targets);
        assert_eq!((b.queries, b.of), (3, 4));
        assert_eq!(
            b.to_string(),
            "every answer of 3 of 4 queries will miss once"
        );
    }
}
