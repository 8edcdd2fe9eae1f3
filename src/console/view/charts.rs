//! The charts: hit ratio, warehouse queries per second, latency p50/p99 and stale answers per
//! second, over the samples kept.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::symbols::Marker;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType};

use super::theme::Theme;
use crate::console::source::{SAMPLE_EVERY, Sample};
use crate::console::state::{HISTORY, State};

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

pub(super) fn draw_charts(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let samples = state.shown_samples();
    let last = samples.back().copied().unwrap_or_default();
    let cols: [Rect; 4] = Layout::horizontal([Constraint::Fill(1); 4]).areas(area);
    let span = HISTORY as f64;
    let minutes = HISTORY as f64 * SAMPLE_EVERY.as_secs_f64() / 60.0;
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
