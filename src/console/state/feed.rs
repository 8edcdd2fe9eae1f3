//! An event as a line of the feed: one clean line of what happened, and whether it is bad news.

use super::FeedLine;
use crate::model::clock::format_rfc3339;
use crate::model::events::{Event, EventKind};
use crate::sanitize::clean_short;

/// One event as a feed line.
pub fn feed_line(e: &Event) -> FeedLine {
    let (text, alarming) = match &e.kind {
        EventKind::WarehouseUpdated {
            tables,
            versions,
            batch,
            test,
            ..
        } => (
            format!(
                "{} bumped to {} (batch {batch}){}",
                tables.join(", "),
                versions
                    .iter()
                    .filter(|(t, _)| tables.contains(t))
                    .map(|(t, v)| format!("{t}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
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
                    loaded.join(", ")
                },
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; FAILED {}",
                        failed
                            .iter()
                            .map(|f| f.table.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                if late.is_empty() {
                    String::new()
                } else {
                    format!("; late {}", late.join(", "))
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
                    format!(" of {}", tables.join(", "))
                },
                if *failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ),
            *failed > 0,
        ),
        EventKind::Prepare {
            batch, versions, ..
        } => (
            format!(
                "preparing batch {batch}: hot answers load at {} before the flip",
                versions
                    .iter()
                    .map(|(t, v)| format!("{t}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            false,
        ),
        EventKind::Prepared {
            batch,
            instance,
            finished,
            keys,
            done,
            failed,
        } if !finished => (
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
                if *failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
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
                targets.join(", ")
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
    let ts = format_rfc3339(e.at_ms);
    FeedLine {
        seq: e.seq,
        time: ts.get(11..19).unwrap_or("").to_string(),
        kind: e.kind.name(),
        text: clean_short(&text, 400),
        alarming,
    }
}
