//! `freshcache events`: the event log, one line (or JSON object) per event, and --follow.

use std::time::Duration;

use clap::Args;

use super::World;
use super::interrupt::watch_interrupt;
use super::output::{clean_line, print_json};
use crate::exit::CliError;
use crate::model::clock::format_rfc3339;
use crate::model::events::{Event, EventKind};
use crate::settings::Settings;

/// Options of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many of the latest events.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep printing new events until interrupted.
    #[arg(long)]
    pub follow: bool,
}

/// One event as a line of text.
pub fn event_line(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::WarehouseUpdated {
            tables,
            versions,
            batch,
            test,
            ..
        } => format!(
            "warehouse_updated {} batch {batch} → {}{}",
            tables.join(","),
            versions
                .iter()
                .filter(|(t, _)| tables.contains(t))
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            if *test { " (test)" } else { "" }
        ),
        EventKind::PartialUpdate { batch, behind, .. } => format!(
            "partial_update batch {batch}: behind {}",
            behind
                .iter()
                .map(|b| format!("{} ({})", b.table, b.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        EventKind::EtlRun {
            batch,
            loaded,
            failed,
            late,
        } => format!(
            "etl_run batch {batch}: loaded {}{}{}",
            loaded.join(","),
            if failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; failed {}",
                    failed
                        .iter()
                        .map(|f| f.table.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if late.is_empty() {
                String::new()
            } else {
                format!("; late {}", late.join(","))
            }
        ),
        EventKind::RefreshAhead {
            tables,
            keys,
            done,
            failed,
        } => format!(
            "refresh_ahead {}: {done}/{keys} reloaded, {failed} failed",
            if tables.is_empty() {
                "hot keys".to_string()
            } else {
                tables.join(",")
            }
        ),
        EventKind::Prepare {
            batch,
            versions,
            requester,
        } => format!(
            "prepare batch {batch} at {} for {requester}",
            versions
                .iter()
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        EventKind::Prepared {
            batch,
            instance,
            finished,
            keys,
            done,
            failed,
        } if !finished => format!("preparing batch {batch} on {instance}: {keys} hot keys to load"),
        EventKind::Prepared {
            batch,
            instance,
            keys,
            done,
            failed,
            ..
        } => format!("prepared batch {batch} on {instance}: {done}/{keys} loaded, {failed} failed"),
        EventKind::OperatorAction {
            action,
            operator,
            host,
            env,
            targets,
            result,
        } => format!(
            "{action} {} by {operator}@{host} in {env}: {result}",
            targets.join(",")
        ),
        EventKind::BadInput {
            source,
            reason,
            excerpt,
        } => format!("BAD INPUT on {source}: {reason} [{excerpt}]"),
        EventKind::Incident { message } => format!("INCIDENT {message}"),
    };
    clean_line(&format!("#{} {} {}", e.seq, format_rfc3339(e.at_ms), what))
}

/// `freshcache events`.
pub async fn events(g: &Settings, args: EventsArgs) -> Result<(), CliError> {
    let mut interrupt = args.follow.then(watch_interrupt).transpose()?;
    let world = World::open(g).await?;
    let bus = world.bus.clone();
    let mut feed = bus.subscribe();
    let all = bus
        .history(0, usize::MAX >> 1)
        .await
        .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
    let start = all.len().saturating_sub(args.limit);
    let print = |e: &Event| -> Result<(), CliError> {
        if g.json {
            print_json(e)
        } else {
            println!("{}", event_line(e));
            Ok(())
        }
    };
    for e in &all[start..] {
        print(e)?;
    }
    if !args.follow {
        return Ok(());
    }
    let Some(interrupt) = interrupt.as_mut() else {
        return Ok(());
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = tick.tick() => {
                // A failed catch-up is retried on the next tick; the feed still delivers.
                if let Err(e) = bus.catch_up().await {
                    tracing::debug!("events --follow: catch-up failed: {e}");
                }
            }
            received = feed.recv() => match received {
                Ok(e) => print(&e)?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("({n} events dropped: the printer fell behind)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}
