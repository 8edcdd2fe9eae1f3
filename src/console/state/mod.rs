//! The console's state and its one transition function, [`update`], which does no I/O: it takes a
//! message (a key, a mouse event, a new snapshot, an event from the feed, a command's answer) and
//! returns at most one [`Effect`] for the event loop to carry out. Everything it decides is tested
//! without a terminal.
//!
//! The state itself is here; [`update`] and the input it routes live in `update`, starting an
//! action and carrying its dialog through to an effect in `dialogs`, and an event's feed line in
//! [`feed_line`].

mod dialogs;
mod feed;
mod update;

use std::collections::VecDeque;

use ratatui::crossterm::event::Event as TermEvent;
use tui_input::Input;

use super::action::{self, ActionId, ActionSpec};
use super::source::{Command, Sample, Snapshot};
use crate::model::events::Event;
pub use feed::feed_line;
pub use update::update;

/// Samples kept for the charts (at four a second: five minutes).
pub const HISTORY: usize = 1_200;
/// Events kept in the feed.
pub const FEED: usize = 2_000;

/// A line of the event feed, cleaned for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLine {
    /// Log sequence number.
    pub seq: u64,
    /// `HH:MM:SS`.
    pub time: String,
    /// The event type.
    pub kind: &'static str,
    /// What happened, one clean line.
    pub text: String,
    /// Whether it is bad news (bad input, incident, refusal, partial update).
    pub alarming: bool,
    /// What happened in plain words (see [`crate::model::events::EventKind::plain`]).
    pub plain: String,
    /// The whole event, for its detail view.
    pub event: Box<Event>,
}

/// The story's caption and whether its next step is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryBar {
    /// What the presenter reads now.
    pub caption: String,
    /// A step is running (keys wait for it).
    pub busy: bool,
}

/// What one strategy did while it ran (cumulative counters at its start and now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategyMoney {
    /// The strategy.
    pub strategy: crate::model::policy::Strategy,
    /// Questions and warehouse queries when it started.
    pub from: (u64, u64),
    /// Questions and warehouse queries when it stopped (or now).
    pub to: (u64, u64),
}

impl StrategyMoney {
    /// Questions asked while it ran.
    pub fn questions(&self) -> u64 {
        self.to.0.saturating_sub(self.from.0)
    }

    /// Warehouse queries sent while it ran.
    pub fn queries(&self) -> u64 {
        self.to.1.saturating_sub(self.from.1)
    }
}

/// An open dialog.
#[derive(Debug, Clone)]
pub enum Dialog {
    /// Choosing tables for an action (invalidate: tables and "all"; partial update: tables to fail).
    Pick {
        /// For which action.
        action: ActionId,
        /// The choices.
        options: Vec<String>,
        /// Which are checked.
        checked: Vec<bool>,
        /// The highlighted one.
        cursor: usize,
    },
    /// Choosing a strategy.
    Strategy {
        /// The highlighted one.
        cursor: usize,
    },
    /// How many keys to warm.
    Warm {
        /// The number.
        top: usize,
    },
    /// One event in full: every field, wrapped.
    Detail {
        /// The event.
        event: Box<Event>,
    },
    /// Typing the confirmation phrase of a dangerous action.
    Confirm {
        /// Which action.
        action: ActionId,
        /// What it will do.
        command: Command,
        /// What must be typed.
        phrase: String,
        /// What has been typed.
        input: Input,
        /// What it will affect, in words.
        blast: String,
    },
    /// Waiting for the instance's answer.
    Running {
        /// Which action.
        action: ActionId,
    },
    /// The answer.
    Outcome {
        /// Which action.
        action: ActionId,
        /// Whether it worked.
        ok: bool,
        /// What the instance said.
        message: String,
    },
    /// Typing the feed filter.
    Filter {
        /// The text so far.
        input: Input,
    },
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct State {
    /// The latest snapshot (what a frozen screen does not show).
    pub live: Snapshot,
    /// The snapshot the screen shows while frozen.
    pub frozen: Option<Box<Snapshot>>,
    /// Chart samples, oldest first.
    pub samples: VecDeque<Sample>,
    /// Samples recorded while frozen are shown on unfreeze.
    pub frozen_samples: Option<VecDeque<Sample>>,
    /// The event feed, newest first.
    pub feed: VecDeque<FeedLine>,
    /// The feed as it was when frozen.
    pub frozen_feed: Option<VecDeque<FeedLine>>,
    /// Events the feed missed because the console fell behind.
    pub dropped: u64,
    /// Lines scrolled down from the newest event.
    pub scroll: usize,
    /// The feed filter (lower case), if any.
    pub filter: Option<String>,
    /// The selected table (the default target of invalidate).
    pub selected_table: usize,
    /// The open dialog.
    pub dialog: Option<Dialog>,
    /// Whether help is shown.
    pub help: bool,
    /// Whether the feed speaks in plain words (for a non-engineer audience).
    pub plain_words: bool,
    /// Whether the instances view was asked for (on a narrow terminal it takes the feed's place).
    pub show_instances: bool,
    /// The story being told (`demo --story`), if any.
    pub story: Option<StoryBar>,
    /// Questions and warehouse queries per strategy, in the order they ran: a switch starts a
    /// new row, so the money each strategy cost is never mixed with another's.
    pub by_strategy: Vec<StrategyMoney>,
    /// A one-line notice (a refusal, an outcome), shown until the next key.
    pub notice: Option<String>,
    /// Whether colours are off (`NO_COLOR`).
    pub monochrome: bool,
    /// The terminal's size.
    pub size: (u16, u16),
    /// Set when the console should exit.
    pub quit: bool,
}

/// What the event loop should do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this command to the instance.
    Execute(ActionId, Command),
}

/// A message to the console.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Input from the terminal.
    Terminal(TermEvent),
    /// A new snapshot.
    Snapshot(Box<Snapshot>),
    /// An event from the feed.
    Event(Box<Event>),
    /// The feed missed this many events.
    Lagged(u64),
    /// The answer to an executed action.
    Done(ActionId, Result<String, String>),
}

impl State {
    /// A state showing `first`, with `history` in the feed.
    pub fn new(first: Snapshot, history: &[Event], monochrome: bool) -> Self {
        let mut s = Self {
            live: first,
            frozen: None,
            samples: VecDeque::with_capacity(HISTORY),
            frozen_samples: None,
            feed: VecDeque::with_capacity(FEED),
            frozen_feed: None,
            dropped: 0,
            scroll: 0,
            filter: None,
            selected_table: 0,
            dialog: None,
            help: false,
            plain_words: false,
            show_instances: false,
            story: None,
            by_strategy: Vec::new(),
            notice: None,
            monochrome,
            size: (80, 24),
            quit: false,
        };
        for e in history {
            s.push_event(e);
        }
        s.note_money();
        s
    }

    /// Charges the latest counters to the strategy running now, starting a new row on a switch.
    fn note_money(&mut self) {
        let now = (self.live.stats.requests, self.live.stats.loads);
        match self.by_strategy.last_mut() {
            Some(m) if m.strategy == self.live.strategy => m.to = now,
            last => {
                // A new strategy takes over where the last one stopped (the first, from the
                // start, as the totals do).
                let from = last.map_or((0, 0), |m| m.to);
                self.by_strategy.push(StrategyMoney {
                    strategy: self.live.strategy,
                    from,
                    to: now,
                });
            }
        }
    }

    /// The snapshot on screen (frozen or live).
    pub fn shown(&self) -> &Snapshot {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    /// The samples on screen.
    pub fn shown_samples(&self) -> &VecDeque<Sample> {
        self.frozen_samples.as_ref().unwrap_or(&self.samples)
    }

    /// The feed lines on screen, after the filter, newest first.
    pub fn shown_feed(&self) -> impl Iterator<Item = &FeedLine> {
        let feed = self.frozen_feed.as_ref().unwrap_or(&self.feed);
        let filter = self.filter.clone();
        feed.iter().filter(move |l| {
            filter.as_deref().is_none_or(|f| {
                l.text.to_lowercase().contains(f)
                    || l.kind.contains(f)
                    || l.plain.to_lowercase().contains(f)
            })
        })
    }

    /// The optional panels there is something to show in.
    pub fn wanted(&self) -> crate::console::layout::Wanted {
        crate::console::layout::Wanted {
            compare: self.shown().shadow.is_some(),
            instances: self.show_instances,
            story: self
                .story
                .as_ref()
                .map(|s| ratatui::text::Span::raw(s.caption.as_str()).width()),
        }
    }

    /// Whether the screen is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// The actions the footer offers now.
    pub fn offered(&self) -> Vec<&'static ActionSpec> {
        let s = &self.live;
        action::ACTIONS
            .iter()
            .filter(|a| action::unavailable(a, s.env, s.read_only).is_none())
            .collect()
    }

    fn push_event(&mut self, e: &Event) {
        let line = feed_line(e);
        self.feed.push_front(line);
        self.feed.truncate(FEED);
        // Keep the reader's place when scrolled back.
        if self.scroll > 0 && self.frozen_feed.is_none() {
            self.scroll += 1;
        }
    }

    fn table_names(&self) -> Vec<String> {
        self.live.tables.iter().map(|t| t.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests;
