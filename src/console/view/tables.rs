//! The upper panels: the tables (version, last update, live and old keys, state; the selected one
//! highlighted) and the money the cache saved.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::ago_simulated;
use super::theme::Theme;
use crate::console::source::{Snapshot, TableState};
use crate::console::state::{State, StrategyMoney};
use crate::sanitize::clean_short;
use crate::traffic::ShadowFigures;

pub(super) fn draw_tables(
    frame: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    state: &State,
    theme: &Theme,
) {
    let wide = area.width >= 70;
    // The fixed columns and the spaces between them; the state gets the rest of the inside.
    let fixed: u16 = if wide {
        10 + 4 + 28 + 6 + 5 + 5
    } else {
        10 + 4 + 11 + 5 + 5 + 5
    };
    let state_width = usize::from(area.width.saturating_sub(2 + fixed)).max(1);
    let header = if wide {
        Row::new(["table", "ver", "last update", "live", "old", "state"])
    } else {
        Row::new(["table", "ver", "updated", "live", "old", "state"])
    }
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = snap
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (state_text, style) = match &t.state {
                TableState::Fresh => ("fresh".to_string(), theme.good()),
                TableState::Updating => ("updating…".to_string(), theme.warn()),
                TableState::Partial(why) if wide => (format!("PARTIAL: {why}"), theme.bad()),
                TableState::Partial(_) => ("PARTIAL".to_string(), theme.bad()),
            };
            // Version 0 is the data the warehouse started with: no update has happened yet.
            let age = if t.updated_ms == 0 {
                "initial".to_string()
            } else {
                ago_simulated(snap, t.updated_ms)
            };
            let updated = if wide {
                format!("{} {age}", clean_short(&t.batch, 16))
            } else {
                age
            };
            let row = Row::new(vec![
                Cell::from(clean_short(&t.name, 14)),
                Cell::from(t.version.to_string()),
                Cell::from(updated),
                Cell::from(t.live.to_string()),
                Cell::from(t.old.to_string()),
                Cell::from(clean_short(&state_text, state_width)).style(style),
            ]);
            if i == state.selected_table {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let widths = if wide {
        [
            Constraint::Length(10),
            Constraint::Length(4),
            Constraint::Length(28),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Fill(1),
        ]
    } else {
        [
            Constraint::Length(10),
            Constraint::Length(4),
            Constraint::Length(11),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Fill(1),
        ]
    };
    let block = theme.block(" tables · Tab selects ");
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// Questions, warehouse queries and money. Lines come in order of importance and the panel
/// keeps as many as fit, so a short panel drops the least important, never half a line: what is
/// out of sight (in an outage), the totals, what was saved, the cost of each strategy that ran,
/// the stampedes absorbed, the consistency audit, the price assumed.
pub(super) fn draw_money(
    frame: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    by_strategy: &[StrategyMoney],
    theme: &Theme,
) {
    let s = &snap.stats;
    let width = usize::from(area.width.saturating_sub(2));
    let price = snap.price_per_query;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    // (importance, line): lower is more important; shown in this order.
    let mut lines: Vec<(u8, Line)> = Vec::new();
    if let Some((_, why)) = &snap.figures_as_of {
        let text = clean_short(&format!("last known: {why}"), width);
        lines.push((0, Line::from(Span::styled(text, theme.warn()))));
    }
    lines.push((
        1,
        Line::from(vec![
            Span::raw("questions  "),
            Span::styled(count(s.requests), bold),
        ]),
    ));
    lines.push((
        1,
        Line::from(vec![
            Span::raw("wh queries "),
            Span::styled(count(s.loads), bold),
        ]),
    ));
    let saved = s.requests.saturating_sub(s.loads);
    lines.push((
        2,
        Line::from(vec![
            Span::raw("saved      "),
            Span::styled(
                format!("{} · {}", count(saved), money(saved as f64 * price)),
                theme.good().add_modifier(Modifier::BOLD),
            ),
        ]),
    ));
    if by_strategy.len() > 1 {
        // The latest three: what each strategy cost while it ran.
        for m in by_strategy.iter().rev().take(3).rev() {
            let text = format!(
                "{:<10}{:>7} wh {:>9}",
                m.strategy.name(),
                count(m.queries()),
                money(m.queries() as f64 * price)
            );
            lines.push((3, Line::from(clean_short(&text, width))));
        }
    }
    let absorbed = s.stampedes_absorbed;
    lines.push((
        4,
        Line::from(Span::styled(
            format!(
                "{} stampede{} absorbed",
                count(absorbed),
                if absorbed == 1 { "" } else { "s" }
            ),
            theme.dim(),
        )),
    ));
    lines.push((
        5,
        Line::from(Span::styled(
            clean_short(
                &format!(
                    "audited {} · {} violation{}",
                    count(snap.audit.0),
                    count(snap.audit.1),
                    if snap.audit.1 == 1 { "" } else { "s" }
                ),
                width,
            ),
            if snap.audit.1 > 0 {
                theme.bad().add_modifier(Modifier::BOLD)
            } else {
                theme.dim()
            },
        )),
    ));
    lines.push((
        6,
        Line::from(Span::styled(
            format!("at {} a query", money(price)),
            theme.dim(),
        )),
    ));
    let room = usize::from(area.height.saturating_sub(2));
    let mut ranks: Vec<u8> = lines.iter().map(|(r, _)| *r).collect();
    ranks.sort_unstable();
    let cutoff = ranks
        .get(room.saturating_sub(1))
        .copied()
        .unwrap_or(u8::MAX);
    let mut kept: Vec<Line> = Vec::new();
    for (rank, line) in lines {
        if rank <= cutoff && kept.len() < room {
            kept.push(line);
        }
    }
    frame.render_widget(Paragraph::new(kept).block(theme.block(" money ")), area);
}

fn money(d: f64) -> String {
    if d >= 1000.0 {
        format!("${:.1}k", d / 1000.0)
    } else {
        format!("${d:.2}")
    }
}

/// "Without freshcache": what the baseline recipe (cache until the next hour, no versions, no
/// coalescing) would have done with the same questions, beside what freshcache did.
pub(super) fn draw_compare(
    frame: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    f: &ShadowFigures,
    theme: &Theme,
) {
    let price = snap.price_per_query;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let row = |label: &str, naive: String, ours: String, bad: bool| {
        Line::from(vec![
            Span::raw(format!("{label:<20}")),
            Span::styled(
                format!("{naive:>11}"),
                if bad {
                    theme.bad().add_modifier(Modifier::BOLD)
                } else {
                    bold
                },
            ),
            Span::styled(
                format!("{ours:>12}"),
                theme.good().add_modifier(Modifier::BOLD),
            ),
        ])
    };
    let lines = vec![
        Line::from(Span::styled(
            format!(
                "{:<20}{:>11}{:>12}",
                format!("{} questions", count(f.questions)),
                "hour TTL",
                "freshcache"
            ),
            theme.dim(),
        )),
        row(
            "old data as fresh",
            count(f.baseline_old_as_fresh),
            count(f.freshcache_old_as_fresh),
            f.baseline_old_as_fresh > 0,
        ),
        row(
            "stampede queries",
            count(f.baseline_stampede_queries),
            count(f.freshcache_stampede_queries),
            f.baseline_stampede_queries > 0,
        ),
        row(
            "warehouse queries",
            count(f.baseline_queries),
            count(snap.stats.loads),
            false,
        ),
        row(
            "cost",
            money(f.baseline_queries as f64 * price),
            money(snap.stats.loads as f64 * price),
            false,
        ),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(theme.block(" without freshcache ")),
        area,
    );
}

/// A count with thin grouping: `12 345`.
fn count(n: u64) -> String {
    crate::model::num::grouped(n, ' ')
}
