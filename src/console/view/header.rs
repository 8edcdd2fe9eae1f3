//! The header line: environment badge, READ-ONLY, DEGRADED, UNVERIFIED, silent instances,
//! FROZEN, then batch and its age, strategy, clock speed, instances and the backends; a compact
//! form when the full one does not fit.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::ago;
use super::theme::Theme;
use crate::console::source::Snapshot;
use crate::console::state::State;
use crate::sanitize::clean_short;

pub(super) fn draw_header(
    frame: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    state: &State,
    theme: &Theme,
) {
    let full = header_spans(snap, state, theme, false);
    let width: usize = full.iter().map(|s| s.width()).sum();
    let spans = if width <= area.width as usize {
        full
    } else {
        header_spans(snap, state, theme, true)
    };
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn header_spans<'a>(
    snap: &'a Snapshot,
    state: &State,
    theme: &Theme,
    compact: bool,
) -> Vec<Span<'a>> {
    let sep = || Span::styled(if compact { "│" } else { " │ " }, theme.dim());
    let mut spans = vec![
        Span::styled(
            if compact {
                "freshcache "
            } else {
                " freshcache "
            },
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(" {} ", snap.env.name().to_uppercase()),
            theme.badge(snap.env),
        ),
        Span::raw(" "),
    ];
    if snap.read_only {
        spans.push(Span::styled(
            if compact { " RO " } else { " READ-ONLY " },
            theme.warn().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(" "));
    }
    if let Some(why) = &snap.degraded {
        let text = if compact {
            " DEGRADED ".to_string()
        } else {
            format!(" DEGRADED: {} ", clean_short(why, 40))
        };
        spans.push(Span::styled(
            text,
            theme.bad().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(" "));
    }
    if snap.unverified_since_ms.is_some() {
        spans.push(Span::styled(
            if compact {
                " UNVERIF "
            } else {
                " UNVERIFIED: cached answers served as stale "
            },
            theme.bad().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(" "));
    }
    if snap.silent_instances > 0 {
        spans.push(Span::styled(
            format!(" {} SILENT ", snap.silent_instances),
            theme.warn().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(" "));
    }
    if state.is_frozen() {
        spans.push(Span::styled(
            " FROZEN ",
            theme.warn().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(" "));
    }
    let batch = if snap.batch.is_empty() {
        "-"
    } else {
        snap.batch.as_str()
    };
    let age = ago(snap.shared_now_ms, snap.last_update_ms);
    spans.push(Span::styled(
        if compact {
            format!("{batch} {}", age.trim_end_matches(" ago"))
        } else {
            format!("batch {batch} ({age})")
        },
        theme.fg(Color::Cyan),
    ));
    spans.push(sep());
    spans.push(Span::raw(if compact {
        snap.strategy.to_string()
    } else {
        format!("strategy {}", snap.strategy)
    }));
    if (snap.clock_speed - 1.0).abs() > f64::EPSILON {
        spans.push(sep());
        spans.push(Span::raw(format!("×{:.0}", snap.clock_speed)));
    }
    spans.push(sep());
    spans.push(Span::raw(if compact {
        format!("{} inst", snap.instances)
    } else {
        format!(
            "{} instance{}",
            snap.instances,
            if snap.instances == 1 { "" } else { "s" }
        )
    }));
    spans.push(sep());
    spans.push(Span::styled(
        clean_short(&snap.backend, if compact { 20 } else { 40 }),
        theme.dim(),
    ));
    if !compact {
        spans.push(Span::styled(" · ", theme.dim()));
        spans.push(Span::styled(clean_short(&snap.warehouse, 40), theme.dim()));
    }
    spans
}
