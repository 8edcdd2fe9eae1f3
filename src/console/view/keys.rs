//! What the action registry offers, drawn: the footer with the keys that apply now (or the
//! notice), and the help overlay with every action and its headless twin.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::popup_of_lines;
use super::theme::Theme;
use crate::console::action::{self, ACTIONS, ActionId};
use crate::console::source::Snapshot;
use crate::console::state::State;
use crate::sanitize::clean_short;

pub(super) fn draw_footer(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    if let Some(n) = &state.notice {
        frame.render_widget(
            Paragraph::new(Span::styled(
                format!(" {}", clean_short(n, area.width as usize)),
                theme.warn(),
            )),
            area,
        );
        return;
    }
    let offered = state.offered();
    let frozen = state.is_frozen();
    // The widest form that fits: labels; short labels; short labels for the first actions and
    // keys alone for the rest (help lists them all).
    let room = usize::from(area.width);
    for long in [true, false] {
        let mut labelled = offered.len();
        loop {
            let mut spans = Vec::new();
            for (i, a) in offered.iter().enumerate() {
                let label = match (a.id == ActionId::Freeze && frozen, long) {
                    (true, true) => "unfreeze",
                    (true, false) => "thaw",
                    (false, true) => a.label,
                    (false, false) => a.short,
                };
                spans.push(Span::styled(format!(" {} ", a.key), theme.selected()));
                spans.push(Span::raw(if i >= labelled {
                    " ".to_string()
                } else if long {
                    format!(" {label} ")
                } else {
                    format!("{label} ")
                }));
            }
            if long {
                spans.push(Span::styled(" ↑↓ scroll ", theme.dim()));
            }
            let width: usize = spans.iter().map(|s| s.width()).sum();
            if width <= room || (!long && labelled == 0) {
                frame.render_widget(Paragraph::new(Line::from(spans)), area);
                return;
            }
            if long {
                break;
            }
            labelled -= 1;
        }
    }
}

pub(super) fn draw_help(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
    let mut lines = Vec::new();
    for a in ACTIONS {
        lines.push(Line::from(vec![
            Span::styled(format!(" {} ", a.key), theme.selected()),
            Span::raw(format!(" {:<15}", a.label)),
            Span::raw(a.description()),
        ]));
        let detail = match (action::unavailable(a, snap.env, snap.read_only), a.cli()) {
            (Some(why), _) => Span::styled(format!("     not available: {why}"), theme.bad()),
            (None, cli) => Span::styled(
                format!(
                    "     {}{}",
                    if a.dangerous() {
                        "typed confirmation · "
                    } else {
                        ""
                    },
                    cli.map(|c| format!("$ {c}")).unwrap_or_default()
                ),
                theme.dim(),
            ),
        };
        lines.push(Line::from(detail));
    }
    lines.push(Line::from(Span::styled(
        " ↑↓ j k PgUp PgDn scroll the feed · Enter shows its top event in full · click or Tab selects a table",
        theme.dim(),
    )));
    popup_of_lines(
        frame,
        area,
        100,
        lines,
        theme.block(" help: every action and its headless twin · Esc closes "),
    );
}
