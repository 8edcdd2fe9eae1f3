//! The console's state and its one transition function, [`update`], which does no I/O: it takes a
//! message (a key, a mouse event, a new snapshot, an event from the feed, a command's answer) and
//! returns at most one [`Effect`] for the event loop to carry out. Everything it decides is tested
//! without a terminal.

use std::collections::VecDeque;

use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;

use super::action::{self, ActionId, ActionSpec};
use super::source::{Request, Sample, Snapshot};
use crate::model::clock::format_rfc3339;
use crate::model::events::{Event, EventKind};
use crate::model::policy::Strategy;
use crate::sanitize::{clean_line, clean_short};

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
    /// Typing the confirmation phrase of a dangerous action.
    Confirm {
        /// Which action.
        action: ActionId,
        /// What it will do.
        request: Request,
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
    /// Send this request to the instance.
    Execute(ActionId, Request),
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
            notice: None,
            monochrome,
            size: (80, 24),
            quit: false,
        };
        for e in history {
            s.push_event(e);
        }
        s
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
            filter
                .as_deref()
                .is_none_or(|f| l.text.to_lowercase().contains(f) || l.kind.contains(f))
        })
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

fn toggle_freeze(s: &mut State) {
    if s.frozen.take().is_some() {
        s.frozen_feed = None;
        s.frozen_samples = None;
        s.notice = Some("unfrozen: showing the latest".into());
    } else {
        s.frozen = Some(Box::new(s.live.clone()));
        s.frozen_feed = Some(s.feed.clone());
        s.frozen_samples = Some(s.samples.clone());
        s.notice = Some("frozen: collection goes on (f to unfreeze)".into());
    }
}

/// Starts action `id` (from its key): opens its dialog, toggles, or refuses with the reason.
fn start(s: &mut State, id: ActionId) -> Option<Effect> {
    let spec = action::spec(id);
    if let Some(why) = action::unavailable(spec, s.live.env, s.live.read_only) {
        // The reason names the action: "invalidate is disabled in read-only mode", ...
        s.notice = Some(why);
        return None;
    }
    match id {
        ActionId::Quit => s.quit = true,
        ActionId::Help => s.help = !s.help,
        ActionId::Freeze => toggle_freeze(s),
        ActionId::Filter => {
            s.dialog = Some(Dialog::Filter {
                input: Input::new(s.filter.clone().unwrap_or_default()),
            })
        }
        ActionId::Invalidate => {
            let mut options = s.table_names();
            options.push("all tables".into());
            let mut checked = vec![false; options.len()];
            if let Some(c) = checked.get_mut(s.selected_table) {
                *c = true;
            }
            s.dialog = Some(Dialog::Pick {
                action: id,
                options,
                checked,
                cursor: s.selected_table,
            });
        }
        ActionId::SimulatePartial => {
            let options = s.table_names();
            let checked = vec![false; options.len()];
            s.dialog = Some(Dialog::Pick {
                action: id,
                options,
                checked,
                cursor: 0,
            });
        }
        ActionId::Strategy => {
            let cursor = Strategy::ALL
                .iter()
                .position(|x| *x == s.live.strategy)
                .unwrap_or(0);
            s.dialog = Some(Dialog::Strategy { cursor });
        }
        ActionId::Warm => s.dialog = Some(Dialog::Warm { top: 50 }),
    }
    None
}

/// What invalidating `targets` affects, from the snapshot.
fn blast_radius(s: &Snapshot, targets: &[String]) -> String {
    let rows: Vec<_> = s
        .tables
        .iter()
        .filter(|t| targets.contains(&t.name))
        .collect();
    let keys: u64 = rows.iter().map(|t| t.live).sum();
    let queries: usize = rows.iter().map(|t| t.queries).sum::<usize>().min(s.queries);
    format!(
        "{keys} cached answers at the current versions and up to {queries} of {} queries will miss once",
        s.queries
    )
}

/// Moves from a filled-in dialog to its confirmation, or straight to execution.
fn confirm_or_run(
    s: &mut State,
    id: ActionId,
    request: Request,
    targets: Vec<String>,
) -> Option<Effect> {
    let spec = action::spec(id);
    if !spec.dangerous() {
        s.dialog = Some(Dialog::Running { action: id });
        return Some(Effect::Execute(id, request));
    }
    let blast = match &request {
        Request::Invalidate(tables) => {
            let all = s.table_names();
            blast_radius(&s.live, if tables.is_empty() { &all } else { tables })
        }
        Request::SimulatePartial(tables) => format!(
            "an ETL batch runs now; {} will fail and stay behind, the other tables are bumped",
            tables.join(", ")
        ),
        Request::SetStrategy(st) => {
            format!("every instance's users are served by `{st}` from now on")
        }
        Request::Warm(n) => format!("up to {n} warehouse queries"),
    };
    s.dialog = Some(Dialog::Confirm {
        action: id,
        request,
        phrase: action::confirmation_phrase(spec, &targets, s.live.env),
        input: Input::default(),
        blast,
    });
    None
}

fn on_dialog_key(s: &mut State, key: KeyEvent, ev: &TermEvent) -> Option<Effect> {
    let dialog = s.dialog.as_mut()?;
    if key.code == KeyCode::Esc {
        if matches!(dialog, Dialog::Filter { .. }) {
            s.filter = None;
        }
        s.dialog = None;
        return None;
    }
    match dialog {
        Dialog::Pick {
            action: id,
            options,
            checked,
            cursor,
        } => {
            let id = *id;
            match key.code {
                KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => {
                    *cursor = (*cursor + 1).min(options.len() - 1)
                }
                KeyCode::Char(' ') => {
                    if let Some(c) = checked.get_mut(*cursor) {
                        *c = !*c;
                    }
                }
                KeyCode::Enter => {
                    let all =
                        id == ActionId::Invalidate && checked.last().copied().unwrap_or(false);
                    let tables: Vec<String> = options
                        .iter()
                        .zip(checked.iter())
                        .take(if id == ActionId::Invalidate {
                            options.len() - 1
                        } else {
                            options.len()
                        })
                        .filter(|(_, c)| **c)
                        .map(|(o, _)| o.clone())
                        .collect();
                    if !all && tables.is_empty() {
                        s.notice = Some("choose at least one table (space to tick)".into());
                        return None;
                    }
                    if id == ActionId::SimulatePartial && tables.len() == options.len() {
                        s.notice = Some(
                            "leave at least one table to load: a partial update needs one".into(),
                        );
                        return None;
                    }
                    return if id == ActionId::Invalidate {
                        let targets = if all {
                            vec!["all".into()]
                        } else {
                            tables.clone()
                        };
                        confirm_or_run(
                            s,
                            id,
                            Request::Invalidate(if all { Vec::new() } else { tables }),
                            targets,
                        )
                    } else {
                        confirm_or_run(s, id, Request::SimulatePartial(tables.clone()), tables)
                    };
                }
                _ => {}
            }
        }
        Dialog::Strategy { cursor } => match key.code {
            KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                *cursor = (*cursor + 1).min(Strategy::ALL.len() - 1)
            }
            KeyCode::Enter => {
                let st = Strategy::ALL[*cursor];
                return confirm_or_run(
                    s,
                    ActionId::Strategy,
                    Request::SetStrategy(st),
                    vec![st.name().into()],
                );
            }
            _ => {}
        },
        Dialog::Warm { top } => match key.code {
            KeyCode::Up | KeyCode::Char('+') | KeyCode::Char('k') => *top = (*top + 10).min(1_000),
            KeyCode::Down | KeyCode::Char('-') | KeyCode::Char('j') => {
                *top = top.saturating_sub(10).max(10)
            }
            KeyCode::Enter => {
                let n = *top;
                return confirm_or_run(
                    s,
                    ActionId::Warm,
                    Request::Warm(n),
                    vec![format!("top {n}")],
                );
            }
            _ => {}
        },
        Dialog::Confirm {
            action: id,
            request,
            phrase,
            input,
            ..
        } => {
            if key.code == KeyCode::Enter {
                if input.value() == phrase.as_str() {
                    let (id, request) = (*id, request.clone());
                    s.dialog = Some(Dialog::Running { action: id });
                    return Some(Effect::Execute(id, request));
                }
                s.notice = Some("the phrase does not match; nothing was done".into());
                return None;
            }
            input.handle_event(ev);
        }
        Dialog::Filter { input } => {
            if key.code == KeyCode::Enter {
                let text = clean_line(input.value()).to_lowercase();
                s.filter = (!text.is_empty()).then_some(text);
                s.scroll = 0;
                s.dialog = None;
                return None;
            }
            input.handle_event(ev);
            let text = clean_line(input.value()).to_lowercase();
            s.filter = (!text.is_empty()).then_some(text);
            s.scroll = 0;
        }
        Dialog::Running { .. } => {}
        Dialog::Outcome { .. } => {
            if matches!(
                key.code,
                KeyCode::Enter | KeyCode::Char(' ') | KeyCode::Char('q')
            ) {
                s.dialog = None;
            }
        }
    }
    None
}

fn scroll_by(s: &mut State, delta: isize) {
    let max = s.shown_feed().count().saturating_sub(1);
    s.scroll = s.scroll.saturating_add_signed(delta).min(max);
}

fn on_mouse(s: &mut State, m: MouseEvent) {
    if s.dialog.is_some() || s.help {
        return;
    }
    let Some(r) =
        super::layout::regions(Rect::new(0, 0, s.size.0, s.size.1), s.shown().tables.len())
    else {
        return;
    };
    let at = Position::new(m.column, m.row);
    match m.kind {
        MouseEventKind::ScrollUp if r.feed.contains(at) => scroll_by(s, -3),
        MouseEventKind::ScrollDown if r.feed.contains(at) => scroll_by(s, 3),
        MouseEventKind::Down(MouseButton::Left) if r.table_rows.contains(at) => {
            let row = (m.row - r.table_rows.y) as usize;
            if row < s.live.tables.len() {
                s.selected_table = row;
            }
        }
        _ => {}
    }
}

/// The transition function: no I/O, at most one effect.
pub fn update(s: &mut State, msg: Msg) -> Option<Effect> {
    match msg {
        Msg::Snapshot(snap) => {
            s.samples.push_back(snap.sample);
            while s.samples.len() > HISTORY {
                s.samples.pop_front();
            }
            s.live = *snap;
            if s.selected_table >= s.live.tables.len() {
                s.selected_table = 0;
            }
            None
        }
        Msg::Event(e) => {
            s.push_event(&e);
            None
        }
        Msg::Lagged(n) => {
            s.dropped += n;
            None
        }
        Msg::Done(id, result) => {
            let (ok, message) = match result {
                Ok(m) => (true, m),
                Err(m) => (false, m),
            };
            let message = clean_short(&message, 300);
            if matches!(s.dialog, Some(Dialog::Running { .. }) | None) {
                s.dialog = Some(Dialog::Outcome {
                    action: id,
                    ok,
                    message: message.clone(),
                });
            }
            s.notice = Some(format!("{}: {message}", action::spec(id).label));
            None
        }
        Msg::Terminal(ev) => match &ev {
            TermEvent::Resize(w, h) => {
                s.size = (*w, *h);
                None
            }
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => on_key(s, *key, &ev),
            TermEvent::Mouse(m) => {
                on_mouse(s, *m);
                None
            }
            TermEvent::Paste(text) => {
                if let Some(Dialog::Confirm { input, .. } | Dialog::Filter { input }) =
                    s.dialog.as_mut()
                {
                    for c in clean_line(text).chars() {
                        input.handle(tui_input::InputRequest::InsertChar(c));
                    }
                }
                None
            }
            _ => None,
        },
    }
}

fn on_key(s: &mut State, key: KeyEvent, ev: &TermEvent) -> Option<Effect> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        s.quit = true;
        return None;
    }
    s.notice = None;
    if s.dialog.is_some() {
        return on_dialog_key(s, key, ev);
    }
    if s.help {
        if matches!(
            key.code,
            KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
        ) {
            s.help = false;
        }
        return None;
    }
    match key.code {
        KeyCode::Char(c) => match action::by_key(c) {
            Some(spec) => start(s, spec.id),
            None => {
                match c {
                    'j' => scroll_by(s, 1),
                    'k' => scroll_by(s, -1),
                    'g' => s.scroll = 0,
                    _ => {}
                }
                None
            }
        },
        KeyCode::Esc => {
            s.filter = None;
            s.scroll = 0;
            None
        }
        KeyCode::Down => {
            scroll_by(s, 1);
            None
        }
        KeyCode::Up => {
            scroll_by(s, -1);
            None
        }
        KeyCode::PageDown => {
            scroll_by(s, 10);
            None
        }
        KeyCode::PageUp => {
            scroll_by(s, -10);
            None
        }
        KeyCode::Home => {
            s.scroll = 0;
            None
        }
        KeyCode::Tab => {
            s.selected_table = (s.selected_table + 1) % s.live.tables.len().max(1);
            None
        }
        KeyCode::BackTab => {
            let n = s.live.tables.len().max(1);
            s.selected_table = (s.selected_table + n - 1) % n;
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
