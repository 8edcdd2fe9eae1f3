//! Drawing: `view(&State, &mut Frame)` draws everything from state, and nothing else. The only
//! thing it hands back is where it drew the clickable parts ([`Areas`]), for the mouse. Where
//! each part goes is decided in [`layout`](super::layout).
//!
//! Layout, top to bottom: header (environment, backend, warehouse version and age, clock speed,
//! strategy, DEGRADED); tables and money; charts; event feed; footer with the keys that apply
//! now. Below 80×24 it draws a notice instead.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Clear, Dataset, Gauge, GraphType, List, ListItem, Paragraph, Row,
    Table, Wrap,
};
use tui_input::Input;

use super::action::{self, ACTIONS, ActionId};
use super::layout::{MIN_HEIGHT, MIN_WIDTH, regions};
use super::source::{Sample, Snapshot, TableState};
use super::state::{Dialog, State};
use crate::model::environment::Environment;
use crate::model::policy::Strategy;
use crate::sanitize::clean_short;

/// Colours, or their absence (`NO_COLOR`): in monochrome, emphasis is bold and selection is
/// reversed, so nothing depends on colour to be seen.
struct Theme {
    mono: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(c)
        }
    }
    fn dim(&self) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(Color::DarkGray)
        }
    }
    fn bad(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD)
        }
    }
    fn good(&self) -> Style {
        self.fg(Color::LightGreen)
    }
    fn warn(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        }
    }
    fn selected(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().bg(Color::Blue).fg(Color::White)
        }
    }
    fn badge(&self, env: Environment) -> Style {
        let base = Style::new().add_modifier(Modifier::BOLD);
        if self.mono {
            return base.add_modifier(Modifier::REVERSED);
        }
        match env {
            Environment::Production => base.bg(Color::Red).fg(Color::White),
            Environment::Staging => base.bg(Color::Yellow).fg(Color::Black),
            Environment::Development => base.bg(Color::Green).fg(Color::Black),
        }
    }
    fn block<'a>(&self, title: impl Into<Line<'a>>) -> Block<'a> {
        Block::bordered().title(title).border_style(self.dim())
    }
}

/// `3m 05s ago`, `2h 10m ago`, from clock milliseconds.
fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m {:02}s ago", s / 60, s % 60),
        _ => format!("{}h {:02}m ago", s / 3600, (s / 60) % 60),
    }
}

fn money(d: f64) -> String {
    if d >= 1000.0 {
        format!("${:.1}k", d / 1000.0)
    } else {
        format!("${d:.2}")
    }
}

/// Draws the whole screen from `state`.
pub fn view(state: &State, frame: &mut Frame) {
    let area = frame.area();
    let theme = Theme {
        mono: state.monochrome,
    };
    let snap = state.shown();
    let Some(r) = regions(area, snap.tables.len()) else {
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
    draw_header(frame, r.header, snap, state, &theme);
    draw_tables(frame, r.tables, snap, state, &theme);
    draw_money(frame, r.money, snap, &theme);
    draw_charts(frame, r.charts, state, &theme);
    draw_feed(frame, r.feed, state, &theme);
    draw_footer(frame, r.footer, state, &theme);
    if state.help {
        draw_help(frame, area, snap, &theme);
    }
    if let Some(d) = &state.dialog {
        draw_dialog(frame, area, d, snap, &theme);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, snap: &Snapshot, state: &State, theme: &Theme) {
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

fn draw_tables(frame: &mut Frame, area: Rect, snap: &Snapshot, state: &State, theme: &Theme) {
    let wide = area.width >= 70;
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
                TableState::Partial(why) if wide => {
                    (format!("PARTIAL: {}", clean_short(why, 60)), theme.bad())
                }
                TableState::Partial(_) => ("PARTIAL".to_string(), theme.bad()),
            };
            let updated = if wide {
                format!(
                    "{} {}",
                    clean_short(&t.batch, 16),
                    ago(snap.shared_now_ms, t.updated_ms)
                )
            } else {
                ago(snap.shared_now_ms, t.updated_ms)
            };
            let row = Row::new(vec![
                Cell::from(clean_short(&t.name, 14)),
                Cell::from(t.version.to_string()),
                Cell::from(updated),
                Cell::from(t.live.to_string()),
                Cell::from(t.old.to_string()),
                Cell::from(state_text).style(style),
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

fn draw_money(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
    let s = &snap.stats;
    let saved = s.requests.saturating_sub(s.loads);
    let lines = vec![
        Line::from(vec![
            Span::raw("questions  "),
            Span::styled(
                s.requests.to_string(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(vec![
            Span::raw("wh queries "),
            Span::styled(
                s.loads.to_string(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(vec![
            Span::raw("saved      "),
            Span::styled(
                format!("{saved} · {}", money(saved as f64 * snap.price_per_query)),
                theme.good().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(Span::styled(
            format!("at {} a query", money(snap.price_per_query)),
            theme.dim(),
        )),
        Line::from(Span::styled(
            format!("{} stampedes absorbed", s.stampedes_absorbed),
            theme.dim(),
        )),
        Line::from(Span::styled(
            format!(
                "consistency: {} checked, {} violation{}",
                snap.audit.0,
                snap.audit.1,
                if snap.audit.1 == 1 { "" } else { "s" }
            ),
            if snap.audit.1 > 0 {
                theme.bad().add_modifier(Modifier::BOLD)
            } else {
                theme.dim()
            },
        )),
    ];
    frame.render_widget(Paragraph::new(lines).block(theme.block(" money ")), area);
}

/// Points, colour and name of one line on a chart.
type Series = (Vec<(f64, f64)>, Color, &'static str);

/// The points of one chart line: at most `buckets` of them, each the most telling value of its
/// span of samples (the largest, or with `low` the smallest, so a short spike or dip still shows),
/// at the span's last x.
fn series(
    samples: &std::collections::VecDeque<Sample>,
    buckets: usize,
    low: bool,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let per = samples.len().div_ceil(buckets.max(1)).max(1);
    let mut out = Vec::with_capacity(buckets + 1);
    let mut best: Option<f64> = None;
    for (i, s) in samples.iter().enumerate() {
        if let Some(v) = f(s) {
            best = Some(best.map_or(v, |b: f64| if low { b.min(v) } else { b.max(v) }));
        }
        if ((i + 1) % per == 0 || i + 1 == samples.len())
            && let Some(v) = best.take()
        {
            out.push((i as f64, v));
        }
    }
    out
}

fn draw_charts(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let samples = state.shown_samples();
    let last = samples.back().copied().unwrap_or_default();
    let cols: [Rect; 4] = Layout::horizontal([Constraint::Fill(1); 4]).areas(area);
    let span = super::state::HISTORY as f64;
    let minutes = super::state::HISTORY as f64 * super::source::SAMPLE_EVERY.as_secs_f64() / 60.0;
    // The newest sample at the right edge; the window scrolls left as samples arrive.
    let x_from = samples.len() as f64 - span;
    let narrow = cols[0].width < 40;
    // Braille gives two dots per column: more points than that cannot be seen.
    let buckets = (cols[0].width as usize).saturating_sub(2) * 2;
    let chart = |title: String,
                 data: Vec<Series>,
                 (min, max): (f64, f64),
                 frame: &mut Frame,
                 area: Rect| {
        let datasets: Vec<Dataset> = data
            .iter()
            .map(|(points, color, name)| {
                Dataset::default()
                    .name(*name)
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(theme.fg(*color))
                    .data(points)
            })
            .collect();
        let widget = Chart::new(datasets)
            .block(theme.block(title))
            .legend_position(None)
            .x_axis(Axis::default().bounds([x_from, x_from + span]))
            .y_axis(Axis::default().bounds([min, max.max(min + 1e-9)]));
        frame.render_widget(widget, area);
    };
    let hit = series(samples, buckets, true, |s| s.hit_ratio.map(|r| r * 100.0));
    // Hit ratios live near the top: start the axis a little below the lowest one shown.
    let low = hit.iter().map(|p| p.1).fold(100.0, f64::min);
    let floor = ((low - 5.0) / 10.0).floor().clamp(0.0, 9.0) * 10.0;
    let ratio = last
        .hit_ratio
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    chart(
        if narrow {
            format!(" hit {ratio} ")
        } else {
            format!(" hit ratio {ratio} ")
        },
        vec![(hit, Color::LightGreen, "hit %")],
        (floor, 100.0),
        frame,
        cols[0],
    );
    let qps = series(samples, buckets, false, |s| Some(s.warehouse_qps));
    let qmax = qps.iter().map(|p| p.1).fold(1.0, f64::max);
    chart(
        if narrow {
            format!(" wh {:.1} q/s ", last.warehouse_qps)
        } else {
            format!(" warehouse {:.1} q/s ", last.warehouse_qps)
        },
        vec![(qps, Color::LightMagenta, "q/s")],
        (0.0, qmax),
        frame,
        cols[1],
    );
    let p50 = series(samples, buckets, false, |s| Some(s.p50_ms));
    let p99 = series(samples, buckets, false, |s| Some(s.p99_ms));
    let lmax = p99
        .iter()
        .chain(p50.iter())
        .map(|p| p.1)
        .fold(1.0, f64::max);
    chart(
        if narrow {
            format!(" p99 {:.1} ms ", last.p99_ms)
        } else {
            format!(
                " latency p50 {:.1} · p99 {:.1} ms ",
                last.p50_ms, last.p99_ms
            )
        },
        vec![
            (p50, Color::LightCyan, "p50"),
            (p99, Color::LightYellow, "p99"),
        ],
        (0.0, lmax),
        frame,
        cols[2],
    );
    let stale = series(samples, buckets, false, |s| Some(s.stale_per_s));
    let smax = stale.iter().map(|p| p.1).fold(1.0, f64::max);
    chart(
        if narrow {
            format!(" stale {:.1}/s ", last.stale_per_s)
        } else {
            format!(" stale {:.1}/s · last {minutes:.0} min ", last.stale_per_s)
        },
        vec![(stale, Color::LightRed, "stale/s")],
        (0.0, smax),
        frame,
        cols[3],
    );
}

fn draw_feed(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let mut title = vec![Span::raw(" events ")];
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
    let items: Vec<ListItem> = state
        .shown_feed()
        .skip(state.scroll)
        .take(inner.height as usize)
        .map(|l| {
            let style = if l.alarming {
                theme.bad()
            } else {
                Style::new()
            };
            ListItem::new(Line::from(vec![
                Span::styled(format!("{} ", l.time), theme.dim()),
                Span::styled(format!("{:<17} ", l.kind), theme.fg(Color::Cyan)),
                Span::styled(l.text.clone(), style),
            ]))
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

fn draw_footer(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
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
    // The widest form that fits: labels, short labels, then keys alone.
    for form in 0..3 {
        let mut spans = Vec::new();
        for a in &offered {
            let label = match (a.id == ActionId::Freeze && frozen, form) {
                (true, 0) => "unfreeze",
                (true, _) => "thaw",
                (false, 0) => a.label,
                (false, _) => a.short,
            };
            spans.push(Span::styled(format!(" {} ", a.key), theme.selected()));
            spans.push(Span::raw(match form {
                0 => format!(" {label} "),
                1 => format!("{label} "),
                _ => " ".to_string(),
            }));
        }
        if form == 0 {
            spans.push(Span::styled(" ↑↓ scroll ", theme.dim()));
        }
        let width: usize = spans.iter().map(|s| s.width()).sum();
        if width <= area.width as usize || form == 2 {
            frame.render_widget(Paragraph::new(Line::from(spans)), area);
            return;
        }
    }
}

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

fn draw_help(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
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
        " ↑↓ j k PgUp PgDn scroll the feed · wheel scrolls · click or Tab selects a table",
        theme.dim(),
    )));
    let r = popup(area, 100, lines.len() as u16 + 2);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines)
            .block(theme.block(" help: every action and its headless twin · Esc closes ")),
        r,
    );
}

fn input_line<'a>(input: &'a Input, width: u16) -> (Line<'a>, u16) {
    let w = width.saturating_sub(1) as usize;
    let scroll = input.visual_scroll(w);
    let visible: String = input.value().chars().skip(scroll).take(w).collect();
    let cursor = (input.visual_cursor().max(scroll) - scroll) as u16;
    (Line::from(visible), cursor)
}

fn draw_dialog(frame: &mut Frame, area: Rect, dialog: &Dialog, snap: &Snapshot, theme: &Theme) {
    match dialog {
        Dialog::Pick {
            action: id,
            options,
            checked,
            cursor,
        } => {
            let spec = action::spec(*id);
            let title = if *id == ActionId::SimulatePartial {
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
                    if i == *cursor {
                        line.style(theme.selected())
                    } else {
                        line
                    }
                })
                .collect();
            lines.push(Line::from(""));
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
            let r = popup(area, 64, lines.len() as u16 + 2);
            frame.render_widget(Clear, r);
            frame.render_widget(Paragraph::new(lines).block(theme.block(title)), r);
        }
        Dialog::Strategy { cursor } => {
            let mut lines: Vec<Line> = Strategy::ALL
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let line = Line::from(format!(" {:<11} {}", s.name(), s.describe()));
                    if i == *cursor {
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
            let r = popup(area, 78, lines.len() as u16 + 2);
            frame.render_widget(Clear, r);
            frame.render_widget(
                Paragraph::new(lines).block(theme.block(" switch strategy ")),
                r,
            );
        }
        Dialog::Warm { top } => {
            let lines = vec![
                Line::from(format!(" load the {top} hottest keys that are not fresh")),
                Line::from(Span::styled(
                    " ↑/+ more · ↓/- fewer · Enter starts · Esc cancels",
                    theme.dim(),
                )),
            ];
            let r = popup(area, 60, 4);
            frame.render_widget(Clear, r);
            frame.render_widget(Paragraph::new(lines).block(theme.block(" warm ")), r);
        }
        Dialog::Confirm {
            action: id,
            phrase,
            input,
            blast,
            ..
        } => {
            let spec = action::spec(*id);
            let r = popup(area, 76, 9);
            frame.render_widget(Clear, r);
            let block = Block::bordered()
                .title(format!(
                    " confirm {} in {} ",
                    spec.label,
                    snap.env.name().to_uppercase()
                ))
                .border_style(theme.bad());
            let inner = block.inner(r);
            frame.render_widget(block, r);
            let [what, ask, field, hint] = Layout::vertical([
                Constraint::Length(2),
                Constraint::Length(1),
                Constraint::Length(1),
                Constraint::Fill(1),
            ])
            .areas(inner);
            frame.render_widget(
                Paragraph::new(clean_short(blast, 200)).wrap(Wrap { trim: true }),
                what,
            );
            frame.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::raw("type "),
                    Span::styled(phrase.clone(), Style::new().add_modifier(Modifier::BOLD)),
                    Span::raw(" to confirm:"),
                ])),
                ask,
            );
            let (line, cursor) = input_line(input, field.width);
            frame.render_widget(Paragraph::new(line).style(theme.selected()), field);
            frame.set_cursor_position((
                field.x + cursor.min(field.width.saturating_sub(1)),
                field.y,
            ));
            let matches = input.value() == phrase;
            frame.render_widget(
                Paragraph::new(Span::styled(
                    if matches {
                        "Enter runs it · Esc cancels"
                    } else {
                        "Esc cancels"
                    },
                    theme.dim(),
                )),
                hint,
            );
        }
        Dialog::Running { action: id } => {
            let spec = action::spec(*id);
            let r = popup(area, 60, 5);
            frame.render_widget(Clear, r);
            let block = theme.block(format!(" {} ", spec.label));
            let inner = block.inner(r);
            frame.render_widget(block, r);
            if *id == ActionId::Warm && snap.refresh.total > 0 {
                draw_progress(frame, inner, snap, theme);
            } else {
                frame.render_widget(Paragraph::new(" working…"), inner);
            }
        }
        Dialog::Outcome {
            action: id,
            ok,
            message,
        } => {
            let spec = action::spec(*id);
            let r = popup(area, 76, 7);
            frame.render_widget(Clear, r);
            let block = Block::bordered()
                .title(format!(
                    " {}: {} ",
                    spec.label,
                    if *ok { "done" } else { "refused or failed" }
                ))
                .border_style(if *ok { theme.good() } else { theme.bad() });
            let inner = block.inner(r);
            frame.render_widget(block, r);
            let [text, gauge] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
            frame.render_widget(
                Paragraph::new(clean_short(message, 300)).wrap(Wrap { trim: true }),
                text,
            );
            if *id == ActionId::Warm && snap.refresh.total > 0 {
                draw_progress(frame, gauge, snap, theme);
            } else {
                frame.render_widget(
                    Paragraph::new(Span::styled("Enter or Esc closes", theme.dim())),
                    gauge,
                );
            }
        }
        Dialog::Filter { input } => {
            let r = Rect {
                x: area.x,
                y: area.bottom().saturating_sub(2),
                width: area.width,
                height: 1,
            };
            frame.render_widget(Clear, r);
            let prefix = " filter events: ";
            let field = Rect {
                x: r.x + prefix.len() as u16,
                width: r.width.saturating_sub(prefix.len() as u16),
                ..r
            };
            frame.render_widget(Paragraph::new(Span::styled(prefix, theme.warn())), r);
            let (line, cursor) = input_line(input, field.width);
            frame.render_widget(Paragraph::new(line), field);
            frame.set_cursor_position((
                field.x + cursor.min(field.width.saturating_sub(1)),
                field.y,
            ));
        }
    }
}

fn draw_progress(frame: &mut Frame, area: Rect, snap: &Snapshot, theme: &Theme) {
    let p = snap.refresh;
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
