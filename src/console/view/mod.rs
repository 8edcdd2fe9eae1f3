//! Drawing: `view(&State, &mut Frame)` draws everything from state, and nothing else. Where each
//! part goes comes from [`layout::regions`](super::layout::regions), which the mouse handling
//! uses too.
//!
//! Layout, top to bottom: header (environment, backend, warehouse version and age, clock speed,
//! strategy, DEGRADED); tables and money; charts; event feed; footer with the keys that apply
//! now. Below 80×24 it draws a notice instead. Help and dialogs are drawn over it.

mod charts;
mod dialogs;
mod feed;
mod header;
mod instances;
mod keys;
mod tables;
mod theme;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};

use super::layout::{MIN_HEIGHT, MIN_WIDTH, regions};
use super::state::State;
use theme::Theme;

/// Draws the whole screen from `state`.
pub fn view(state: &State, frame: &mut Frame) {
    let area = frame.area();
    let theme = Theme {
        mono: state.monochrome,
    };
    let snap = state.shown();
    let Some(r) = regions(area, snap.tables.len(), state.wanted()) else {
        let text = vec![
            Line::from("freshcache").style(Style::new().add_modifier(Modifier::BOLD)),
            Line::from(format!(
                "terminal too small: {}×{}",
                area.width, area.height
            )),
            Line::from(format!("needs at least {MIN_WIDTH}×{MIN_HEIGHT}; q quits")),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    };
    header::draw_header(frame, r.header, snap, state, &theme);
    tables::draw_tables(frame, r.tables, snap, state, &theme);
    if r.money.width > 0 {
        tables::draw_money(frame, r.money, snap, &state.by_strategy, &theme);
    }
    if let (Some(rect), Some(figures)) = (r.compare, &snap.shadow) {
        tables::draw_compare(frame, rect, snap, figures, &theme);
    }
    charts::draw_charts(frame, r.charts, state, &theme);
    if r.feed.height > 0 {
        feed::draw_feed(frame, r.feed, state, &theme);
    }
    if let Some(rect) = r.instances {
        instances::draw_instances(frame, rect, snap, &theme);
    }
    if let (Some(rect), Some(story)) = (r.story, &state.story) {
        let title = if story.busy {
            " the story · playing… "
        } else {
            " the story · space or → next · q quits "
        };
        frame.render_widget(theme.block(title), rect);
        let inner = rect.inner(ratatui::layout::Margin::new(1, 1));
        frame.render_widget(
            Paragraph::new(crate::sanitize::clean_line(&story.caption)).wrap(Wrap { trim: true }),
            wrap_area(inner),
        );
    }
    keys::draw_footer(frame, r.footer, state, &theme);
    if state.help {
        keys::draw_help(frame, area, snap, &theme);
    }
    if let Some(d) = &state.dialog {
        dialogs::draw_dialog(frame, area, d, snap, state.notice.as_deref(), &theme);
    }
}

/// `3m 05s ago`, `2h 10m ago`, from clock milliseconds.
fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    span_ago(now.saturating_sub(then))
}

/// How long ago `then` (shared, wall-clock time) was, in the simulation's time: in a demo whose
/// hour lasts a minute, an update a minute ago happened an hour ago on its clock.
fn ago_simulated(snap: &crate::console::source::Snapshot, then: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    let real = snap.shared_now_ms.saturating_sub(then) as f64;
    span_ago(crate::model::num::f64_to_u64(
        real * snap.clock_speed.max(0.0),
    ))
}

/// `3m 05s ago` for a span of `ms` milliseconds.
fn span_ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m {:02}s ago", s / 60, s % 60),
        _ => format!("{}h {:02}m ago", s / 3600, (s / 60) % 60),
    }
}

/// Clears a `width`×`height` box centred in `area`, draws `block` around it and returns the
/// inside.
fn open_popup(
    frame: &mut Frame,
    area: Rect,
    width: u16,
    height: u16,
    block: ratatui::widgets::Block,
) -> Rect {
    let r = popup(area, width, height);
    frame.render_widget(ratatui::widgets::Clear, r);
    let inner = block.inner(r);
    frame.render_widget(block, r);
    inner
}

/// A popup `width` wide holding just `lines` inside `block`, as tall as they are.
/// Where wrapped text goes inside a panel: one column short of its right border, so that a word
/// that touches the border is always one that was cut (what the snapshot tests look for).
fn wrap_area(inner: Rect) -> Rect {
    Rect {
        width: inner.width.saturating_sub(1),
        ..inner
    }
}

fn popup_of_lines(
    frame: &mut Frame,
    area: Rect,
    width: u16,
    lines: Vec<Line<'_>>,
    block: ratatui::widgets::Block,
) {
    let height = crate::model::num::to_u16(lines.len()).saturating_add(2);
    let inner = open_popup(frame, area, width, height, block);
    frame.render_widget(ratatui::widgets::Paragraph::new(lines), inner);
}

/// A box of `width`×`height` centred in `area`, shrunk to leave at least a cell on every side.
fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2));
    let h = height.min(area.height.saturating_sub(2));
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
