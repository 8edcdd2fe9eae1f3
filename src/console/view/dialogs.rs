//! The dialogs drawn over the dashboard, one function each: picking tables, a strategy or how
//! many keys to warm; typing a confirmation; waiting for the instance; its answer; and the feed
//! filter's input line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Gauge, Paragraph, Wrap};
use tui_input::Input;

use super::theme::Theme;
use super::{open_popup, popup_of_lines};
use crate::console::action::{self, ActionId};
use crate::console::source::Snapshot;
use crate::console::state::Dialog;
use crate::model::events::Event;
use crate::model::num::to_u16;
use crate::model::policy::Strategy;
use crate::sanitize::{clean_line, clean_short};

/// Draws `dialog` over the screen.
pub(super) fn draw_dialog(
    frame: &mut Frame,
    area: Rect,
    dialog: &Dialog,
    snap: &Snapshot,
    notice: Option<&str>,
    theme: &Theme,
) {
    match dialog {
        Dialog::Pick {
            action: id,
            options,
            checked,
            cursor,
        } => draw_pick(frame, area, *id, options, checked, *cursor, notice, theme),
        Dialog::Strategy { cursor } => draw_strategy(frame, area, *cursor, snap, theme),
        Dialog::Warm { top } => draw_warm(frame, area, *top, theme),
        Dialog::Confirm {
            action: id,
            phrase,
            input,
            blast,
            ..
        } => draw_confirm(frame, area, *id, phrase, input, blast, snap, notice, theme),
        Dialog::Running { action: id } => draw_running(frame, area, *id, snap, theme),
        Dialog::Outcome {
            action: id,
            ok,
            message,
        } => draw_outcome(frame, area, *id, *ok, message, snap, theme),
        Dialog::Filter { input } => draw_filter(frame, area, input, theme),
        Dialog::Detail { event } => draw_detail(frame, area, event, theme),
    }
}

/// One event in full: its plain-words sentence, then every field of its JSON (the event log's
/// contract), each on its own wrapped line.
fn draw_detail(frame: &mut Frame, area: Rect, event: &Event, theme: &Theme) {
    let mut lines = vec![
        Line::from(Span::styled(clean_line(&event.kind.plain()), theme.good())),
        Line::from(""),
    ];
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(event) {
        for (name, value) in fields {
            let value = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            lines.push(Line::from(vec![
                Span::styled(format!("{name}: "), theme.dim()),
                Span::raw(clean_line(&value)),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Enter or Esc closes", theme.dim())));
    let width = area.width.saturating_sub(4).min(110);
    // Wrapped lines need more rows than there are lines: count them at the width they wrap at.
    let inner_width = usize::from(width.saturating_sub(3)).max(1);
    let rows: usize = lines
        .iter()
        .map(|l| l.width().div_ceil(inner_width).max(1))
        .sum();
    let height = to_u16(rows).saturating_add(2);
    let title = format!(" event #{} · {} ", event.seq, event.kind.name());
    let inner = open_popup(frame, area, width, height, theme.block(title));
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }),
        super::wrap_area(inner),
    );
}

/// Ticking tables: which to invalidate, or which fail in a simulated partial update.
// The fields of `Dialog::Pick`, where to draw them and what to say: a struct for this one
// call would only rename them.
#[allow(clippy::too_many_arguments)]
fn draw_pick(
    frame: &mut Frame,
    area: Rect,
    id: ActionId,
    options: &[String],
    checked: &[bool],
    cursor: usize,
    notice: Option<&str>,
    theme: &Theme,
) {
    let spec = action::spec(id);
    let title = if id == ActionId::SimulatePartial {
        " simulate a partial update: tables that fail "
    } else {
        " invalidate: tables "
    };
    let mut lines: Vec<Line> = options
        .iter()
        .zip(checked)
        .enumerate()
        .map(|(i, (o, c))| {
            let line = Line::from(format!(
                " [{}] {}",
                if *c { "x" } else { " " },
                clean_short(o, 40)
            ));
            if i == cursor {
                line.style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    lines.push(match notice {
        // Why Enter did nothing (no table ticked, every table ticked).
        Some(why) => Line::from(Span::styled(
            format!(" {}", clean_short(why, 66)),
            theme.bad(),
        )),
        None => Line::from(""),
    });
    lines.push(Line::from(Span::styled(
        format!(
            " space ticks · Enter next · Esc cancels{}",
            if spec.dangerous() {
                " · then a typed confirmation"
            } else {
                ""
            }
        ),
        theme.dim(),
    )));
    popup_of_lines(frame, area, 72, lines, theme.block(title));
}

/// Choosing a strategy, each with what it does.
fn draw_strategy(frame: &mut Frame, area: Rect, cursor: usize, snap: &Snapshot, theme: &Theme) {
    let mut lines: Vec<Line> = Strategy::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let line = Line::from(format!(
                " {:<11} {}",
                s.name(),
                clean_short(s.describe(), 62)
            ));
            if i == cursor {
                line.style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(" now: {} · Enter chooses · Esc cancels", snap.strategy),
        theme.dim(),
    )));
    popup_of_lines(frame, area, 78, lines, theme.block(" switch strategy "));
}

/// How many of the hottest keys to warm.
fn draw_warm(frame: &mut Frame, area: Rect, top: usize, theme: &Theme) {
    let lines = vec![
        Line::from(format!(" load the {top} hottest keys that are not fresh")),
        Line::from(Span::styled(
            " ↑/+ more · ↓/- fewer · Enter starts · Esc cancels",
            theme.dim(),
        )),
    ];
    popup_of_lines(frame, area, 60, lines, theme.block(" warm "));
}

/// A dangerous action's blast radius and the phrase to type, with what has been typed.
// The fields of `Dialog::Confirm` and where to draw them: a struct for this one call would
// only rename them.
#[allow(clippy::too_many_arguments)]
fn draw_confirm(
    frame: &mut Frame,
    area: Rect,
    id: ActionId,
    phrase: &str,
    input: &Input,
    blast: &str,
    snap: &Snapshot,
    notice: Option<&str>,
    theme: &Theme,
) {
    let spec = action::spec(id);
    let title = format!(
        " confirm {} in {} ",
        spec.label,
        snap.env.name().to_uppercase()
    );
    let inner = open_popup(
        frame,
        area,
        76,
        9,
        Block::bordered().title(title).border_style(theme.bad()),
    );
    let [what, ask, field, hint] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    frame.render_widget(
        Paragraph::new(clean_short(blast, 200)).wrap(Wrap { trim: true }),
        super::wrap_area(what),
    );
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("type "),
            Span::styled(
                phrase.to_string(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(" to confirm:"),
        ])),
        ask,
    );
    let (line, cursor) = input_line(input, field.width);
    frame.render_widget(Paragraph::new(line).style(theme.selected()), field);
    frame.set_cursor_position((field.x + cursor.min(field.width.saturating_sub(1)), field.y));
    let matches = input.value() == phrase;
    let hint_line = match notice {
        // Why Enter did nothing: the phrase does not match.
        Some(why) => Span::styled(clean_short(why, 70), theme.bad()),
        None if matches => Span::styled("Enter runs it · Esc cancels", theme.dim()),
        None => Span::styled("Esc cancels", theme.dim()),
    };
    frame.render_widget(Paragraph::new(hint_line), hint);
}

/// Waiting for the instance's answer (with a warm's progress).
fn draw_running(frame: &mut Frame, area: Rect, id: ActionId, snap: &Snapshot, theme: &Theme) {
    let spec = action::spec(id);
    let title = if id == ActionId::Warm {
        warm_title(snap)
    } else {
        format!(" {} ", spec.label)
    };
    let inner = open_popup(frame, area, 60, 5, theme.block(title));
    if id == ActionId::Warm && snap.warm.total > 0 {
        draw_progress(frame, inner, snap, theme);
    } else {
        frame.render_widget(Paragraph::new(" working…"), inner);
    }
}

/// What the instance answered (with a warm's progress).
fn draw_outcome(
    frame: &mut Frame,
    area: Rect,
    id: ActionId,
    ok: bool,
    message: &str,
    snap: &Snapshot,
    theme: &Theme,
) {
    let spec = action::spec(id);
    let title = if ok && id == ActionId::Warm {
        warm_title(snap)
    } else {
        format!(
            " {}: {} ",
            spec.label,
            if ok { "done" } else { "refused or failed" }
        )
    };
    let style = if ok && (id != ActionId::Warm || snap.warm.failed == 0) {
        theme.good()
    } else {
        theme.bad()
    };
    let inner = open_popup(
        frame,
        area,
        76,
        7,
        Block::bordered().title(title).border_style(style),
    );
    let [text, gauge] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    frame.render_widget(
        Paragraph::new(clean_short(message, 300)).wrap(Wrap { trim: true }),
        super::wrap_area(text),
    );
    if ok && id == ActionId::Warm && snap.warm.total > 0 {
        draw_progress(frame, gauge, snap, theme);
    } else {
        frame.render_widget(
            Paragraph::new(Span::styled("Enter or Esc closes", theme.dim())),
            gauge,
        );
    }
}

/// The feed filter being typed, on the line above the footer.
fn draw_filter(frame: &mut Frame, area: Rect, input: &Input, theme: &Theme) {
    let r = Rect {
        x: area.x,
        y: area.bottom().saturating_sub(2),
        width: area.width,
        height: 1,
    };
    frame.render_widget(Clear, r);
    let prefix = " filter events: ";
    let field = Rect {
        x: r.x.saturating_add(to_u16(prefix.len())),
        width: r.width.saturating_sub(to_u16(prefix.len())),
        ..r
    };
    frame.render_widget(Paragraph::new(Span::styled(prefix, theme.warn())), r);
    let (line, cursor) = input_line(input, field.width);
    frame.render_widget(Paragraph::new(line), field);
    frame.set_cursor_position((field.x + cursor.min(field.width.saturating_sub(1)), field.y));
}

/// The visible part of `input` for a field `width` wide, and the cursor's column in it.
fn input_line<'a>(input: &'a Input, width: u16) -> (Line<'a>, u16) {
    let w = width.saturating_sub(1) as usize;
    let scroll = input.visual_scroll(w);
    let visible: String = input.value().chars().skip(scroll).take(w).collect();
    let cursor = to_u16(input.visual_cursor().max(scroll) - scroll);
    (Line::from(visible), cursor)
}

/// The warm's title: running, done or failed, with its numbers (its own work only, never the
/// hourly refresh-ahead's).
fn warm_title(snap: &Snapshot) -> String {
    let p = snap.warm;
    let finished = p.done + p.failed + p.skipped;
    if !p.finished() {
        format!(" warm: running, {finished} of {} ", p.total)
    } else if p.failed > 0 {
        format!(" warm: {} of {} failed ", p.failed, p.total)
    } else {
        format!(" warm: done, {} loaded of {} ", p.done, p.total)
    }
}

/// The warm's progress as a gauge.
fn draw_progress(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
    let p = snap.warm;
    let finished = p.done + p.failed + p.skipped;
    let ratio = (finished as f64 / p.total.max(1) as f64).clamp(0.0, 1.0);
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .gauge_style(theme.good())
            .label(format!(
                "{finished}/{} · {} loaded, {} already fresh, {} failed",
                p.total, p.done, p.skipped, p.failed
            )),
        area,
    );
}
