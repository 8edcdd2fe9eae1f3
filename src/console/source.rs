//! What the console watches and acts through: [`Channels`] of snapshots (a `watch` with the
//! latest one), events (a `broadcast` feed; a lagging console is told how many it missed) and
//! commands (a bounded `mpsc` with a `oneshot` reply).
//!
//! [`Channels::attach`] builds them over an [`Instance`] — embedded or on Redis alike — with a
//! collector task ([`super::collector`]) that samples the instance four times a second and sums
//! the reports of every live instance on the bus, so a console attached to many API servers
//! shows their totals.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, broadcast, mpsc, oneshot, watch};

use super::collector::Collector;
pub use super::snapshot::{Sample, Snapshot, TableRow, TableState, sample_snapshot};
use super::story::Story;
use crate::instance::Instance;
use crate::model::events::Event;
use crate::model::policy::Strategy;
use crate::traffic::Shadow;

/// An action the console asks the instance to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Invalidate tables (empty: all).
    Invalidate(Vec<String>),
    /// Warm the `n` hottest keys.
    Warm(usize),
    /// Run an ETL batch in which these tables fail.
    SimulatePartial(Vec<String>),
    /// Switch strategy.
    SetStrategy(Strategy),
    /// Play the story's next step.
    StoryNext,
}

/// A command and where its answer goes: `Ok(summary)` or `Err(why)`.
pub type CommandAndReply = (Command, oneshot::Sender<Result<String, String>>);

/// The console's three channels.
pub struct Channels {
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Snapshot>,
    /// The event feed.
    pub events: broadcast::Receiver<Event>,
    /// Events logged before the console started, oldest first.
    pub history: Vec<Event>,
    /// Where commands go.
    pub commands: mpsc::Sender<CommandAndReply>,
}

/// How often the collector samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

impl Channels {
    /// A source over `instance`: starts the collector and the command task on the current
    /// runtime. `price_per_query` feeds the money view.
    pub async fn attach(instance: Instance, price_per_query: f64) -> Channels {
        Self::attach_with(instance, price_per_query, None, None).await
    }

    /// [`Channels::attach`], with the figures of a [`Shadow`] run by the traffic beside it, and
    /// a [`Story`] the presenter steps through (`demo --story`).
    pub async fn attach_with(
        instance: Instance,
        price_per_query: f64,
        shadow: Option<Arc<Shadow>>,
        story: Option<Story>,
    ) -> Channels {
        let history = instance
            .bus()
            .history(0, usize::MAX >> 1)
            .await
            .map(|all| {
                let skip = all.len().saturating_sub(500);
                all.into_iter().skip(skip).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let events = instance.bus().subscribe();
        let mut collector = Collector::new(instance.clone(), price_per_query, &history);
        collector.shadow = shadow;
        let first = collector.snapshot().await;
        let (tx, snapshots) = watch::channel(first);
        let (commands, rx) = mpsc::channel(16);
        tokio::spawn(collector.run(tx));
        tokio::spawn(serve_commands(
            instance,
            rx,
            story.map(|s| Arc::new(Mutex::new(s))),
        ));
        Channels {
            snapshots,
            events,
            history,
            commands,
        }
    }
}

async fn serve_commands(
    instance: Instance,
    mut rx: mpsc::Receiver<CommandAndReply>,
    story: Option<Arc<Mutex<Story>>>,
) {
    while let Some((command, reply)) = rx.recv().await {
        let instance = instance.clone();
        if command == Command::StoryNext {
            let story = story.clone();
            tokio::spawn(async move {
                let caption = match story {
                    // One step at a time: the lock is held for the whole step.
                    Some(story) => story.lock().await.next(&instance).await,
                    None => Err("no story is being told (freshcache demo --story)".into()),
                };
                // Fails only when the console has quit and no longer waits for the reply.
                let _ = reply.send(caption);
            });
            continue;
        }
        // Each command runs on its own task so a long one (a simulated ETL) never blocks the next.
        tokio::spawn(async move {
            // Fails only when the console has quit and no longer waits for the reply.
            let _ = reply.send(execute(&instance, command).await);
        });
    }
}

async fn execute(instance: &Instance, command: Command) -> Result<String, String> {
    match command {
        Command::StoryNext => Err("the story's steps are served apart".into()),
        Command::Invalidate(tables) => {
            let ids = instance.table_ids(&tables).map_err(|e| e.to_string())?;
            let r = instance.invalidate(&ids).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "invalidated {}; versions {}",
                r.bumped.join(", "),
                r.versions
                    .iter()
                    .map(|(t, v)| format!("{t}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }
        Command::Warm(n) => {
            let mut progress = instance.warm(n).await.map_err(|e| e.to_string())?;
            let p = *progress.borrow_and_update();
            Ok(format!("warming {} hot keys", p.total))
        }
        Command::SimulatePartial(tables) => {
            let ids = instance.table_ids(&tables).map_err(|e| e.to_string())?;
            let (_, r) = instance
                .simulate_partial(&ids)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "batch {}: bumped {}; behind {}",
                r.batch,
                if r.bumped.is_empty() {
                    "none".into()
                } else {
                    r.bumped.join(", ")
                },
                r.behind
                    .iter()
                    .map(|b| b.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Command::SetStrategy(s) => {
            instance.set_strategy(s).await.map_err(|e| e.to_string())?;
            Ok(format!("strategy is now {s}"))
        }
    }
}
