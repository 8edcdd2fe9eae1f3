//! The Prometheus text exposition format 0.0.4: families with their HELP and TYPE, samples with
//! escaped labels, and histograms read from hdrhistogram into cumulative buckets.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric type in the exposition format.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    Int(u64),
    Float(f64),
}

/// The text being written. Writing to a `String` cannot fail, so `write!` results are dropped.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    pub(super) out: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; its samples follow.
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        // Writing into a String cannot fail (here and below).
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = match value {
            Value::Int(n) => writeln!(self.out, " {n}"),
            Value::Float(f) => writeln!(self.out, " {}", format_float(f)),
        };
    }

    pub(super) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], Value::Int(value));
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], Value::Int(value));
    }

    pub(super) fn histogram(&mut self, name: &str, help: &str, b: &Buckets) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (&bound, &n) in b.bounds_us.iter().zip(&b.cumulative) {
            let le = format_seconds(bound);
            self.sample(&bucket, &[("le", &le)], Value::Int(n));
        }
        self.sample(&bucket, &[("le", "+Inf")], Value::Int(b.count));
        self.sample(&format!("{name}_sum"), &[], Value::Float(b.sum_seconds));
        self.sample(&format!("{name}_count"), &[], Value::Int(b.count));
    }
}

/// A histogram in Prometheus' shape: cumulative counts at fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Buckets {
    bounds_us: &'static [u64],
    /// Values at or below each bound, in bound order (non-decreasing).
    cumulative: Vec<u64>,
    /// Every value (the `+Inf` bucket).
    count: u64,
    sum_seconds: f64,
}

impl Buckets {
    /// Reads an hdr histogram of microseconds into `bounds_us`. A value counts under a bound
    /// only when the highest value of the range it was recorded in is at or below the bound.
    pub(super) fn of(h: &Histogram<u64>, bounds_us: &'static [u64]) -> Self {
        let mut per_bound = vec![0u64; bounds_us.len()];
        let mut count = 0u64;
        let mut sum_us = 0f64;
        for v in h.iter_recorded() {
            let n = v.count_since_last_iteration();
            let value = v.value_iterated_to();
            let highest = h.highest_equivalent(value);
            if let Some(i) = bounds_us.iter().position(|&b| highest <= b) {
                per_bound[i] += n;
            }
            count += n;
            sum_us += n as f64 * h.median_equivalent(value) as f64;
        }
        let cumulative = per_bound
            .iter()
            .scan(0u64, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect();
        Self {
            bounds_us,
            cumulative,
            count,
            sum_seconds: sum_us / 1e6,
        }
    }
}

/// Microseconds as decimal seconds, exactly: 100 → `0.0001`, 2_500_000 → `2.5`.
fn format_seconds(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN` spelled its way).
fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        f.to_string()
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text with `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::registry::{DURATION_BOUNDS_US, LAG_BOUNDS_US};

    fn histogram_of(values_us: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = crate::engine::stats::histogram();
        for &(v, n) in values_us {
            h.record_n(v, n).unwrap();
        }
        h
    }

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("plain sales"), "plain sales");
        let mut x = Exposition::default();
        x.family("m", Kind::Gauge, "help with \\ and\nnewline");
        x.sample("m", &[("table", "we\"ird\\\n"), ("b", "2")], Value::Int(7));
        assert_eq!(
            x.out,
            "# HELP m help with \\\\ and\\nnewline\n# TYPE m gauge\nm{table=\"we\\\"ird\\\\\\n\",b=\"2\"} 7\n"
        );
    }

    #[test]
    fn bounds_print_as_exact_decimal_seconds() {
        let printed: Vec<String> = [100, 250, 1_000, 250_000, 1_000_000, 2_500_000, 300_000_000]
            .iter()
            .map(|&us| format_seconds(us))
            .collect();
        assert_eq!(
            printed,
            ["0.0001", "0.00025", "0.001", "0.25", "1", "2.5", "300"]
        );
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(0.5), "0.5");
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_every_value() {
        // 3 × 50 µs, 2 × 1.5 ms, 1 × 3 s, 1 × 20 s (beyond the last bound).
        let h = histogram_of(&[(50, 3), (1_500, 2), (3_000_000, 1), (20_000_000, 1)]);
        let b = Buckets::of(&h, DURATION_BOUNDS_US);
        assert_eq!(b.count, 7);
        assert_eq!(b.cumulative.len(), DURATION_BOUNDS_US.len());
        assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        let at = |us: u64| {
            let i = DURATION_BOUNDS_US.iter().position(|&x| x == us).unwrap();
            b.cumulative[i]
        };
        assert_eq!(at(100), 3);
        assert_eq!(at(1_000), 3);
        assert_eq!(at(2_500), 5);
        assert_eq!(at(2_500_000), 5);
        assert_eq!(at(5_000_000), 6);
        assert_eq!(at(10_000_000), 6, "20 s is only in +Inf");
        let sum = 3.0 * 50e-6 + 2.0 * 1.5e-3 + 3.0 + 20.0;
        assert!(
            (b.sum_seconds - sum).abs() / sum < 0.01,
            "{}",
            b.sum_seconds
        );

        let mut x = Exposition::default();
        x.histogram("h_seconds", "h", &b);
        let lines: Vec<&str> = x.out.lines().collect();
        assert_eq!(lines[0], "# HELP h_seconds h");
        assert_eq!(lines[1], "# TYPE h_seconds histogram");
        assert_eq!(lines[2], "h_seconds_bucket{le=\"0.0001\"} 3");
        let n = lines.len();
        assert_eq!(lines[n - 3], "h_seconds_bucket{le=\"+Inf\"} 7");
        let printed_sum: f64 = lines[n - 2]
            .strip_prefix("h_seconds_sum ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(printed_sum, b.sum_seconds);
        assert_eq!(lines[n - 1], "h_seconds_count 7");
    }

    #[test]
    fn a_value_counts_below_a_bound_only_when_its_whole_range_does() {
        // hdr keeps 2 significant figures: 1000 µs is recorded in a range reaching past 1000,
        // so it may have been slower than 1 ms and is not claimed under le=0.001.
        let h = histogram_of(&[(1_000, 1)]);
        assert!(h.highest_equivalent(1_000) > 1_000);
        let b = Buckets::of(&h, DURATION_BOUNDS_US);
        assert_eq!(b.cumulative[2], 0, "le=0.0005");
        assert_eq!(b.cumulative[3], 0, "le=0.001");
        assert_eq!(b.cumulative[4], 1, "le=0.0025");
        let empty = Buckets::of(&crate::engine::stats::histogram(), LAG_BOUNDS_US);
        assert_eq!(empty.count, 0);
        assert!(empty.cumulative.iter().all(|&n| n == 0));
    }
}
