//! One wording for every event: the console's feed and `freshcache events` print the same
//! sentence, so an operator who reads one can grep the other.

use super::{Behind, Event, EventKind};
use crate::model::ops::Action;

/// An event told in one line, and whether it is bad news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// What happened, in one line (not yet cleaned of control characters: callers sanitise for
    /// where they print).
    pub text: String,
    /// Whether an operator should look (a failure, a refusal, bad input, an incident).
    pub alarming: bool,
}

fn list(items: &[String]) -> String {
    items.join(", ")
}

fn tables_of(behind: &[Behind]) -> String {
    behind
        .iter()
        .map(|f| f.table.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn versions_of<'a>(versions: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    versions
        .map(|(t, v)| format!("{t}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn failed_suffix(failed: u32) -> String {
    if failed > 0 {
        format!(", {failed} failed")
    } else {
        String::new()
    }
}

impl Event {
    /// The event in one line (see [`Summary`]).
    pub fn summary(&self) -> Summary {
        self.kind.summary()
    }
}

impl EventKind {
    /// The event in one line (see [`Summary`]).
    pub fn summary(&self) -> Summary {
        let (text, alarming) = match self {
            EventKind::WarehouseUpdated {
                tables,
                versions,
                batch,
                test,
                ..
            } => (
                format!(
                    "{} bumped to {} (batch {batch}){}",
                    list(tables),
                    versions_of(versions.iter().filter(|(t, _)| tables.contains(t))),
                    if *test { " [test]" } else { "" }
                ),
                false,
            ),
            EventKind::PartialUpdate { batch, behind, .. } => (
                format!(
                    "batch {batch} left behind: {}",
                    behind
                        .iter()
                        .map(|b| format!("{} ({})", b.table, b.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                true,
            ),
            EventKind::EtlRun {
                batch,
                loaded,
                failed,
                late,
            } => (
                format!(
                    "ETL {batch}: loaded {}{}{}",
                    if loaded.is_empty() {
                        "nothing".to_string()
                    } else {
                        list(loaded)
                    },
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!("; FAILED {}", tables_of(failed))
                    },
                    if late.is_empty() {
                        String::new()
                    } else {
                        format!("; late {}", list(late))
                    }
                ),
                !failed.is_empty(),
            ),
            EventKind::RefreshAhead {
                tables,
                keys,
                done,
                failed,
            } => (
                format!(
                    "loaded {done} of {keys} hot keys ahead{}{}",
                    if tables.is_empty() {
                        String::new()
                    } else {
                        format!(" of {}", list(tables))
                    },
                    failed_suffix(*failed)
                ),
                *failed > 0,
            ),
            EventKind::Prepare {
                batch,
                versions,
                requester,
            } => (
                format!(
                    "preparing batch {batch}: hot answers load at {} before {requester} flips",
                    versions_of(versions.iter())
                ),
                false,
            ),
            EventKind::Prepared {
                batch,
                instance,
                finished: false,
                keys,
                ..
            } => (
                format!("{instance} is preparing {keys} hot answers for batch {batch}"),
                false,
            ),
            EventKind::Prepared {
                batch,
                instance,
                keys,
                done,
                failed,
                ..
            } => (
                format!(
                    "{instance} prepared {done} of {keys} hot answers for batch {batch}{}",
                    failed_suffix(*failed)
                ),
                *failed > 0,
            ),
            EventKind::OperatorAction {
                action,
                operator,
                host,
                env,
                targets,
                result,
            } => (
                format!(
                    "{action} {} by {operator}@{host} ({env}): {result}",
                    list(targets)
                ),
                !result.starts_with("ok"),
            ),
            EventKind::BadInput {
                source,
                reason,
                excerpt,
            } => (format!("bad input on {source}: {reason} — {excerpt}"), true),
            EventKind::Incident { message } => (message.clone(), true),
        };
        Summary { text, alarming }
    }
}

/// "sales", "sales and customers", "sales, inventory and customers".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn answers(n: u32) -> String {
    if n == 1 {
        "1 popular answer was".into()
    } else {
        format!("{n} popular answers were")
    }
}

impl EventKind {
    /// The event in plain words, for people who do not run the cache (a stakeholder watching a
    /// demo): what changed for the people asking questions, without the machinery's names.
    pub fn plain(&self) -> String {
        match self {
            EventKind::WarehouseUpdated { tables, test, .. } => format!(
                "New data in {}: answers that read {} will be computed again when next asked{}.",
                and_list(tables),
                if tables.len() == 1 { "it" } else { "them" },
                if *test { " (a test)" } else { "" }
            ),
            EventKind::PartialUpdate { behind, .. } => {
                let names: Vec<String> = behind.iter().map(|b| b.table.clone()).collect();
                format!(
                    "{} did not get its new data yet, so its answers stay as they were (still correct for the data it has).",
                    and_list(&names)
                )
            }
            EventKind::EtlRun {
                loaded,
                failed,
                late,
                ..
            } => {
                let mut text = if loaded.is_empty() {
                    "The warehouse load finished without new data".to_string()
                } else {
                    format!("The warehouse finished loading {}", and_list(loaded))
                };
                if !failed.is_empty() {
                    let names: Vec<String> = failed.iter().map(|f| f.table.clone()).collect();
                    text.push_str(&format!("; {} failed to load", and_list(&names)));
                }
                if !late.is_empty() {
                    text.push_str(&format!("; {} will arrive later", and_list(late)));
                }
                text.push('.');
                text
            }
            EventKind::RefreshAhead {
                done, failed, keys, ..
            } => {
                let mut text = format!("{} computed again before anyone asked", answers(*done));
                if *failed > 0 {
                    text.push_str(&format!(" ({failed} of {keys} could not be)"));
                }
                text.push('.');
                text
            }
            EventKind::Prepare { batch, .. } => format!(
                "Getting ready for batch {batch}: popular answers are computed before the switch."
            ),
            EventKind::Prepared {
                finished: false,
                batch,
                ..
            } => format!("A server is computing popular answers for batch {batch}."),
            EventKind::Prepared {
                batch, done, keys, ..
            } => format!(
                "{} ready for batch {batch} before anyone asked ({done} of {keys}).",
                answers(*done)
            ),
            EventKind::OperatorAction {
                action,
                operator,
                targets,
                result,
                ..
            } => {
                let what = match Action::by_name(action) {
                    Some(Action::Invalidate) => {
                        format!("cleared the saved answers of {}", and_list(targets))
                    }
                    Some(Action::Warm) => {
                        "asked for popular answers to be computed ahead".to_string()
                    }
                    Some(Action::SimulatePartial) => {
                        format!("ran a test update in which {} fails", and_list(targets))
                    }
                    Some(Action::SwitchStrategy) => {
                        format!("switched the caching method to {}", and_list(targets))
                    }
                    _ => format!("ran {action} on {}", and_list(targets)),
                };
                if result.starts_with("ok") {
                    format!("{operator} {what}.")
                } else {
                    format!("{operator} tried to {what}, but it was refused: {result}.")
                }
            }
            EventKind::BadInput { .. } => {
                "A malformed message was received and ignored; nothing changed.".to_string()
            }
            EventKind::Incident { message } => format!("Something went wrong: {message}."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_refusals_are_alarming_updates_are_not() {
        let etl = |failed: Vec<Behind>| EventKind::EtlRun {
            batch: "20261130-10:00".into(),
            loaded: vec!["sales".into()],
            failed,
            late: vec![],
        };
        let ok = etl(vec![]).summary();
        assert_eq!(ok.text, "ETL 20261130-10:00: loaded sales");
        assert!(!ok.alarming);
        let bad = etl(vec![Behind {
            table: "inventory".into(),
            reason: "timeout".into(),
        }])
        .summary();
        assert_eq!(
            bad.text,
            "ETL 20261130-10:00: loaded sales; FAILED inventory"
        );
        assert!(bad.alarming);

        let refused = EventKind::OperatorAction {
            action: "invalidate".into(),
            operator: "ann".into(),
            host: "h".into(),
            env: "production".into(),
            targets: vec!["sales".into()],
            result: "refused: read-only".into(),
        }
        .summary();
        assert!(refused.alarming, "{refused:?}");
    }

    #[test]
    fn an_update_names_only_the_bumped_tables_versions() {
        let s = EventKind::WarehouseUpdated {
            timestamp: String::new(),
            tables: vec!["sales".into()],
            versions: [("sales".to_string(), 4), ("inventory".to_string(), 9)]
                .into_iter()
                .collect(),
            batch: "b".into(),
            test: true,
        }
        .summary();
        assert_eq!(s.text, "sales bumped to sales=4 (batch b) [test]");
    }

    #[test]
    fn plain_words_name_tables_in_a_sentence() {
        let etl = EventKind::EtlRun {
            batch: "20261126-10:00".into(),
            loaded: vec!["sales".into(), "customers".into()],
            failed: vec![Behind {
                table: "inventory".into(),
                reason: "timeout".into(),
            }],
            late: vec![],
        };
        assert_eq!(
            etl.plain(),
            "The warehouse finished loading sales and customers; inventory failed to load."
        );
        let ahead = EventKind::RefreshAhead {
            tables: vec![],
            keys: 46,
            done: 46,
            failed: 0,
        };
        assert_eq!(
            ahead.plain(),
            "46 popular answers were computed again before anyone asked."
        );
    }
}
