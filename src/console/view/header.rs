//! The header line: environment badge, READ-ONLY, DEGRADED, UNVERIFIED, silent instances,
//! FROZEN, then batch and its age, strategy, clock speed, instances and the backends; a compact
//! form when the full one does not fit.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::{ago, ago_simulated};
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
    let width = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>();
    let room = usize::from(area.width);
    // The widest form that fits: everything; without the warehouse; compact.
    let mut spans = [(false, true), (false, false), (true, false)]
        .into_iter()
        .map(|(compact, warehouse)| header_spans(snap, state, theme, compact, warehouse))
        .find(|s| width(s) <= room)
        .unwrap_or_else(|| header_spans(snap, state, theme, true, false));
    // Still too wide: drop parts from the end (the least urgent come last) and say so.
    if width(&spans) > room {
        while spans.len() > 1 && width(&spans) + 1 > room {
            spans.pop();
        }
        spans.push(Span::styled("…", theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A clock speed in words: `1 h = 1 min` at ×60.
pub(super) fn speed_in_words(speed: f64) -> String {
    let hour_takes_s = 3600.0 / speed.max(1e-9);
    let took = if hour_takes_s >= 3600.0 {
        format!("{:.0} h", hour_takes_s / 3600.0)
    } else if hour_takes_s >= 60.0 {
        format!("{:.0} min", hour_takes_s / 60.0)
    } else if hour_takes_s >= 1.0 {
        format!("{:.0} s", hour_takes_s)
    } else {
        format!("{:.0} ms", hour_takes_s * 1000.0)
    };
    format!("1 h = {took}")
}

fn header_spans<'a>(
    snap: &'a Snapshot,
    state: &State,
    theme: &Theme,
    compact: bool,
    warehouse: bool,
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
    if let Some((at, why)) = &snap.figures_as_of {
        // The backend is out of sight: the figures are the last ones read, and how old they are.
        let time = crate::model::clock::format_rfc3339(*at);
        let hms = time.get(11..19).unwrap_or("");
        let text = if compact {
            format!(" AS OF {hms}, {} ", ago(snap.shared_now_ms, *at))
        } else {
            format!(
                " FIGURES AS OF {hms}, {}: {} ",
                ago(snap.shared_now_ms, *at),
                clean_short(why, 50)
            )
        };
        spans.push(Span::styled(
            text,
            theme.warn().add_modifier(Modifier::REVERSED),
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
    let age = ago_simulated(snap, snap.last_update_ms);
    spans.push(Span::styled(
        match (snap.batch.is_empty() || snap.last_update_ms == 0, compact) {
            (true, _) => "no batch yet".to_string(),
            (false, true) => format!("{} {}", snap.batch, age.trim_end_matches(" ago")),
            (false, false) => format!("batch {} ({age})", snap.batch),
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
        // The demo's clock: say that it is simulated, where it stands, and how fast it runs.
        let time = crate::model::clock::format_rfc3339(snap.now_ms);
        let hhmm = time.get(11..16).unwrap_or("");
        spans.push(sep());
        spans.push(Span::styled(
            if compact {
                format!("sim {hhmm} ×{:.0}", snap.clock_speed)
            } else {
                format!("simulated {hhmm} ({})", speed_in_words(snap.clock_speed))
            },
            theme.warn(),
        ));
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
    if warehouse {
        spans.push(Span::styled(" · ", theme.dim()));
        spans.push(Span::styled(clean_short(&snap.warehouse, 40), theme.dim()));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::speed_in_words;

    #[test]
    fn speeds_read_as_how_long_an_hour_takes() {
        assert_eq!(speed_in_words(60.0), "1 h = 1 min");
        assert_eq!(speed_in_words(3600.0), "1 h = 1 s");
        assert_eq!(speed_in_words(120.0), "1 h = 30 s");
        assert_eq!(speed_in_words(0.5), "1 h = 2 h");
    }
}
