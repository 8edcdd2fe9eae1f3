//! `freshcache events`: the event log, one line (or JSON object) per event, and --follow.

use std::time::Duration;

use clap::Args;

use super::Backends;
use super::interrupt::watch_interrupt;
use super::output::{clean_line, print_json};
use crate::exit::CliError;
use crate::model::clock::format_rfc3339;
use crate::model::events::Event;
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

/// One event as a line of text: sequence, time, type and the same sentence the console's feed
/// shows.
pub fn event_line(e: &Event) -> String {
    clean_line(&format!(
        "#{} {} {} {}",
        e.seq,
        format_rfc3339(e.at_ms),
        e.kind.name(),
        e.summary().text
    ))
}

/// `freshcache events`.
pub async fn events(settings: &Settings, args: EventsArgs) -> Result<(), CliError> {
    let mut interrupt = args.follow.then(watch_interrupt).transpose()?;
    let backends = Backends::open(settings).await?;
    let bus = backends.bus.clone();
    let mut feed = bus.subscribe();
    let all = bus
        .history(0, usize::MAX >> 1)
        .await
        .map_err(|e| CliError::new(crate::exit::EXIT_UNAVAILABLE, e.to_string()))?;
    let start = all.len().saturating_sub(args.limit);
    let print = |e: &Event| -> Result<(), CliError> {
        if settings.json {
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
