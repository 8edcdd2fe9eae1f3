//! [`update`], the transition function, and the input it routes: keys (to an action, a dialog,
//! help or the feed), the mouse (feed scrolling, table selection), resizes and pastes.

use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use super::dialogs::{on_dialog_key, start};
use super::{Dialog, Effect, HISTORY, Msg, State};
use crate::console::action::{self, ActionId};
use crate::console::layout::regions;
use crate::console::source::Command;
use crate::sanitize::{clean_line, clean_short};

/// The transition function: no I/O, at most one effect.
pub fn update(s: &mut State, msg: Msg) -> Option<Effect> {
    match msg {
        Msg::Snapshot(snap) => {
            s.samples.push_back(snap.sample);
            while s.samples.len() > HISTORY {
                s.samples.pop_front();
            }
            s.live = *snap;
            s.note_money();
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
        Msg::Done(ActionId::StoryNext, result) => {
            if let Some(story) = &mut s.story {
                story.busy = false;
                story.caption = match result {
                    Ok(caption) => caption,
                    Err(why) => format!("this step failed: {why} (space tries the next)"),
                };
            }
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
    if let Some(story) = &mut s.story
        && matches!(key.code, KeyCode::Char(' ') | KeyCode::Right)
    {
        if story.busy {
            return None;
        }
        story.busy = true;
        return Some(Effect::Execute(ActionId::StoryNext, Command::StoryNext));
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
        KeyCode::Enter => {
            // The line at the top of the feed, in full.
            let event = s.shown_feed().nth(s.scroll).map(|l| l.event.clone());
            if let Some(event) = event {
                s.dialog = Some(Dialog::Detail { event });
            }
            None
        }
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

fn scroll_by(s: &mut State, delta: isize) {
    let max = s.shown_feed().count().saturating_sub(1);
    s.scroll = s.scroll.saturating_add_signed(delta).min(max);
}

fn on_mouse(s: &mut State, m: MouseEvent) {
    if s.dialog.is_some() || s.help {
        return;
    }
    let Some(r) = regions(
        Rect::new(0, 0, s.size.0, s.size.1),
        s.shown().tables.len(),
        s.wanted(),
    ) else {
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
