//! The event feed: newest first, after the filter, from the scroll position, with what was
//! dropped or scrolled past in its title.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, Paragraph};

use super::theme::Theme;
use crate::console::state::State;
use crate::sanitize::clean_short;

pub(super) fn draw_feed(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let mut title = vec![Span::raw(if state.plain_words {
        " what happened, in plain words "
    } else {
        " events "
    })];
    if let Some(f) = &state.filter {
        title.push(Span::styled(
            format!("filter \"{}\" ", clean_short(f, 30)),
            theme.warn(),
        ));
    }
    if state.dropped > 0 {
        title.push(Span::styled(
            format!("· {} dropped ", state.dropped),
            theme.bad(),
        ));
    }
    if state.scroll > 0 {
        title.push(Span::styled(
            format!("· {} newer above ", state.scroll),
            theme.dim(),
        ));
    }
    let block = theme.block(Line::from(title));
    let inner = block.inner(area);
    // Time (8 + 1) and type (17 + 1) come first — in plain words only the time — and the text
    // gets the rest, cut with an ellipsis (Enter shows the line at the top in full).
    let lead = if state.plain_words { 9 } else { 27 };
    let text_width = usize::from(inner.width).saturating_sub(lead).max(1);
    let items: Vec<ListItem> = state
        .shown_feed()
        .skip(state.scroll)
        .take(inner.height as usize)
        .enumerate()
        .map(|(i, l)| {
            let style = if l.alarming {
                theme.bad()
            } else {
                Style::new()
            };
            let mut spans = vec![Span::styled(format!("{} ", l.time), theme.dim())];
            if state.plain_words {
                spans.push(Span::styled(clean_short(&l.plain, text_width), style));
            } else {
                spans.push(Span::styled(
                    format!("{:<17} ", l.kind),
                    theme.fg(Color::Cyan),
                ));
                spans.push(Span::styled(clean_short(&l.text, text_width), style));
            }
            let line = Line::from(spans);
            // Scrolled back: the line Enter opens is marked.
            if i == 0 && state.scroll > 0 {
                ListItem::new(line.style(theme.selected()))
            } else {
                ListItem::new(line)
            }
        })
        .collect();
    let empty = items.is_empty();
    frame.render_widget(List::new(items).block(block), area);
    if empty {
        let msg = if state.filter.is_some() {
            "no event matches the filter"
        } else {
            "no events yet"
        };
        frame.render_widget(Paragraph::new(Span::styled(msg, theme.dim())), inner);
    }
}
