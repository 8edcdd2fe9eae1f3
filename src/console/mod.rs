//! The operations console: what SREs watch at 10:00, what staging testers drive, and what
//! stakeholders see in a demo.
//!
//! Built the Elm way:
//! * [`state::State`] holds everything on screen; [`state::update`] turns a message (a key, a new
//!   snapshot, an event, an action's answer) into a new state and at most one effect — no I/O;
//! * [`view::view`] draws a frame from state alone, where [`layout::regions`] places each part (the
//!   mouse handling uses the same layout, so a click lands where things were drawn);
//! * [`run`] is the only place with I/O: it reads a stream of terminal events, the [`Channels`]'s
//!   snapshots and feed, sends effects as commands, and draws.
//!
//! Every action comes from one registry ([`action::ACTIONS`]): key, description, danger flag. The
//! footer and help derive from it; dangerous actions need a typed phrase that names the
//! environment; read-only mode and production refusals hide actions here and are enforced again
//! in the instance, below the UI.
//!
//! The console runs on a thread of its own with its own single-threaded runtime, so neither the
//! engine nor the simulated users can delay input or drawing, and its CPU use can be measured
//! apart (the thread is named `console-ui`). The terminal is restored on quit, on Ctrl-C, on
//! SIGTERM/SIGHUP and on panic.

pub mod action;
mod collector;
pub mod fleet;
pub mod layout;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod story;
pub mod view;

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    EventStream,
};
use ratatui::crossterm::execute;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use source::{Channels, Snapshot};
use state::{Effect, Msg, State};

/// How the console looks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleOptions {
    /// No colours (also when `NO_COLOR` is set).
    pub monochrome: bool,
    /// Tell the story (`demo --story`): its caption below the feed, space or → steps.
    pub story: bool,
}

impl ConsoleOptions {
    /// Options from the environment: `NO_COLOR` (any non-empty value) turns colours off.
    pub fn from_env() -> Self {
        Self {
            monochrome: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            story: false,
        }
    }
}

/// Turns the terminal back to normal when dropped: on return, on error and during unwinding.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        // Best effort on the way out: there is no one left to tell if the terminal refuses.
        let _ = execute!(io::stdout(), DisableMouseCapture, DisableBracketedPaste);
        ratatui::restore();
    }
}

/// Runs the console over `source` until the user quits. Blocks the calling thread; the UI runs
/// on a thread of its own named `console-ui`.
pub fn run(source: Channels, options: ConsoleOptions) -> io::Result<()> {
    if !io::stdout().is_terminal() {
        return Err(io::Error::other(
            "the console needs a terminal; use the headless commands (see --help) in scripts",
        ));
    }
    let handle = std::thread::Builder::new()
        .name("console-ui".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(event_loop(source, options))
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => Err(io::Error::other(format!(
            "the console stopped on an internal error: {}",
            crate::engine::flight::panic_message(panic.as_ref())
        ))),
    }
}

async fn event_loop(source: Channels, options: ConsoleOptions) -> io::Result<()> {
    let Channels {
        mut snapshots,
        mut events,
        history,
        commands,
    } = source;
    let first = snapshots.borrow_and_update().clone();
    let mut state = State::new(first, &history, options.monochrome);
    if options.story {
        state.story = Some(state::StoryBar {
            caption: story::INTRO.to_string(),
            busy: false,
        });
    }

    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    // ratatui's hook restores raw mode and the screen; this one also gives the mouse back.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Best effort while panicking: the panic message below matters more.
        let _ = execute!(io::stdout(), DisableMouseCapture, DisableBracketedPaste);
        previous(info);
    }));
    execute!(io::stdout(), EnableMouseCapture, EnableBracketedPaste)?;
    let size = terminal.size()?;
    state.size = (size.width, size.height);

    let mut input = EventStream::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    loop {
        // At most 20 frames a second; a burst of events costs one frame.
        if dirty && last_draw.elapsed() >= Duration::from_millis(50) {
            terminal.draw(|f| view::view(&state, f))?;
            last_draw = Instant::now();
            dirty = false;
        }
        let msg = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(ev)) => Msg::Terminal(ev),
                Some(Err(e)) => return Err(e),
                None => break,
            },
            changed = snapshots.changed() => match changed {
                Ok(()) => Msg::Snapshot(Box::new(snapshots.borrow_and_update().clone())),
                Err(_) => break,
            },
            received = events.recv() => match received {
                Ok(e) => Msg::Event(Box::new(e)),
                Err(broadcast::error::RecvError::Lagged(n)) => Msg::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some((id, result)) = done_rx.recv() => Msg::Done(id, result),
            _ = term.recv() => break,
            _ = hup.recv() => break,
            _ = tick.tick() => continue,
        };
        if let Some(Effect::Execute(id, command)) = state::update(&mut state, msg) {
            let (reply, answer) = oneshot::channel();
            let done = done_tx.clone();
            let commands = commands.clone();
            tokio::spawn(async move {
                let result = match commands.send((command, reply)).await {
                    Ok(()) => answer
                        .await
                        .unwrap_or_else(|_| Err("the instance stopped before answering".into())),
                    Err(_) => Err("the instance is gone".into()),
                };
                // Fails only when the console has quit and no longer waits for the result.
                let _ = done.send((id, result));
            });
        }
        dirty = true;
        if state.quit {
            break;
        }
    }
    Ok(())
}
