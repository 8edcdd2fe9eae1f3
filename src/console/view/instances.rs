//! The instances panel: one row per process sharing the bus, worst first — who it is, what it
//! does, whether it serves at the newest versions (and since when it has not), how busy it is.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Cell, Row, Table};

use super::ago;
use super::theme::Theme;
use crate::console::fleet::InstanceState;
use crate::console::source::Snapshot;
use crate::sanitize::clean_short;

pub(super) fn draw_instances(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
    let header = Row::new([
        "instance", "role", "state", "behind", "req/s", "hit", "loads", "seen",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = snap
        .fleet
        .iter()
        .map(|i| {
            let style = match i.state {
                InstanceState::Ok => theme.good(),
                InstanceState::Behind => theme.warn(),
                _ => theme.bad(),
            };
            let behind = match (i.behind, i.behind_since_ms) {
                (0, _) => "-".to_string(),
                (n, Some(since)) => {
                    format!(
                        "{n} ({})",
                        ago(snap.shared_now_ms, since).trim_end_matches(" ago")
                    )
                }
                (n, None) => n.to_string(),
            };
            Row::new(vec![
                Cell::from(clean_short(&i.id, 24)),
                Cell::from(clean_short(&i.role, 8)),
                Cell::from(i.state.label()).style(style),
                Cell::from(clean_short(&behind, 12)),
                Cell::from(format!("{:.0}", i.requests_per_s)),
                Cell::from(
                    i.hit_ratio
                        .map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
                ),
                Cell::from(i.loads_in_flight.to_string()),
                Cell::from(clean_short(&ago(snap.shared_now_ms, i.last_seen_ms), 10)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(24),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Fill(1),
    ];
    let title = format!(" instances · {} ", snap.fleet.len());
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(theme.block(title)),
        area,
    );
}
