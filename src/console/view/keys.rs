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
    const WIDTH: u16 = 100;
    let inner = usize::from(WIDTH.min(area.width.saturating_sub(2)).saturating_sub(2));
    let rows = usize::from(area.height.saturating_sub(4));
    // Descriptions wrap under themselves; when that is too tall for the terminal, each takes one
    // line, cut with an ellipsis.
    let mut lines = help_lines(snap, theme, inner, true);
    if lines.len() > rows {
        lines = help_lines(snap, theme, inner, false);
    }
    popup_of_lines(
        frame,
        area,
        WIDTH,
        lines,
        theme.block(" help: every action and its headless twin · Esc closes "),
    );
}

fn help_lines(snap: &Snapshot, theme: &Theme, inner: usize, wrap: bool) -> Vec<Line<'static>> {
    // Key and label take the first 20 columns.
    const INDENT: usize = 20;
    let room = inner.saturating_sub(INDENT + 1).max(10);
    let fit = |text: &str, width: usize| {
        if wrap {
            wrap_words(text, width)
        } else {
            vec![crate::sanitize::clean_short(text, width)]
        }
    };
    let mut lines = Vec::new();
    for a in ACTIONS {
        for (i, part) in fit(a.description(), room).into_iter().enumerate() {
            let mut spans = if i == 0 {
                vec![
                    Span::styled(format!(" {} ", a.key), theme.selected()),
                    Span::raw(format!(" {:<15}", a.label)),
                ]
            } else {
                vec![Span::raw(" ".repeat(INDENT))]
            };
            spans.push(Span::raw(part));
            lines.push(Line::from(spans));
        }
        let detail = match (action::unavailable(a, snap.env, snap.read_only), a.cli()) {
            (Some(why), _) => Some((format!("not available: {why}"), theme.bad())),
            (None, cli) => {
                let text = format!(
                    "{}{}",
                    if a.dangerous() {
                        "typed confirmation · "
                    } else {
                        ""
                    },
                    cli.map(|c| format!("$ {c}")).unwrap_or_default()
                );
                (!text.is_empty()).then_some((text, theme.dim()))
            }
        };
        if let Some((text, style)) = detail {
            for part in fit(&text, inner.saturating_sub(6).max(10)) {
                lines.push(Line::from(Span::styled(format!("     {part}"), style)));
            }
        }
    }
    let hint = "↑↓ j k PgUp PgDn scroll the feed · Enter shows its top event in full · \
                click or Tab selects a table";
    for part in fit(hint, inner.saturating_sub(2).max(10)) {
        lines.push(Line::from(Span::styled(format!(" {part}"), theme.dim())));
    }
    lines
}

/// `text` cut into lines of at most `width` columns at spaces (a word longer than `width` is
/// cut with an ellipsis).
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let width = width.max(2);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let word = crate::sanitize::clean_short(word, width);
        let needed = Span::raw(line.as_str()).width()
            + usize::from(!line.is_empty())
            + Span::raw(word.as_str()).width();
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::wrap_words;

    #[test]
    fn words_wrap_at_spaces_and_a_long_word_is_marked() {
        assert_eq!(
            wrap_words("bump table versions: every answer", 12),
            ["bump table", "versions:", "every answer"]
        );
        assert_eq!(wrap_words("", 12), [""]);
        assert_eq!(wrap_words("abcdefghijklmnop", 6), ["abcde…"]);
    }
}
