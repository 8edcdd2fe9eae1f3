//! One wording for every event: the console's feed and `freshcache events` print the same
//! sentence, so an operator who reads one can grep the other.

use super::{Behind, Event, EventKind};

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
}
