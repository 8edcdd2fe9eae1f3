//! Printing for humans and for scripts. Text that comes from data (warehouse rows, table names,
//! payloads) is stripped of control and escape sequences before it reaches a terminal.

use serde::Serialize;

use crate::exit::{CliError, EXIT_FAILURE};
use crate::warehouse::Rows;

pub use crate::sanitize::clean_line;

/// Prints a value as one line of JSON.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::new(EXIT_FAILURE, format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => clean_line(s),
        serde_json::Value::Null => String::new(),
        other => clean_line(&other.to_string()),
    }
}

/// Whole cents as money: `408137367` → `$4,081,373.67`.
pub fn money_of_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    let dollars = crate::model::num::grouped(cents / 100, ',');
    format!("{sign}${dollars}.{:02}", cents % 100)
}

/// Rows as an aligned text table (numbers right-aligned), at most `max_rows` rows. A column of
/// whole cents (`…_cents`) is shown as money under its name without the suffix; a cell wider
/// than a column may be is cut with an ellipsis.
pub fn rows_table(rows: &Rows, max_rows: usize) -> String {
    let cents: Vec<bool> = rows.columns.iter().map(|c| c.ends_with("_cents")).collect();
    let header: Vec<String> = rows
        .columns
        .iter()
        .map(|c| clean_line(c.strip_suffix("_cents").unwrap_or(c)))
        .collect();
    let body: Vec<Vec<String>> = rows
        .rows
        .iter()
        .take(max_rows)
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, v)| match (cents.get(i), v.as_i64()) {
                    (Some(true), Some(c)) => money_of_cents(c),
                    _ => cell_text(v),
                })
                .collect()
        })
        .collect();
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            rows.rows
                .iter()
                .all(|r| r.get(i).is_none_or(|v| v.is_number() || v.is_null()))
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain(std::iter::once(header[i].chars().count()))
                .max()
                .unwrap_or(0)
                .min(40)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                let c = if c.chars().count() > w {
                    let mut cut: String = c.chars().take(w.saturating_sub(1)).collect();
                    cut.push('…');
                    cut
                } else {
                    c.clone()
                };
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for r in &body {
        out.push('\n');
        out.push_str(&line(r));
    }
    if rows.rows.len() > max_rows {
        out.push_str(&format!("\n… {} more rows", rows.rows.len() - max_rows));
    }
    out
}

/// `1.2 s`, `340 ms`, `2 min 5 s`, `1 h 3 min`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_strip_escapes() {
        let rows = Rows {
            columns: vec!["region".into(), "revenue".into()],
            rows: vec![
                vec![json!("Europe"), json!(1200)],
                vec![json!("Asia\x1b[31m Pacific"), json!(5)],
            ],
            ..Rows::default()
        };
        let t = rows_table(&rows, 10);
        assert!(!t.contains('\x1b'), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "region            revenue");
        assert_eq!(lines[2], "Europe               1200");
        assert_eq!(lines[3], "Asia[31m Pacific        5");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(
            human_duration(std::time::Duration::from_millis(340)),
            "340 ms"
        );
        assert_eq!(
            human_duration(std::time::Duration::from_secs(125)),
            "2 min 5 s"
        );
    }

    /// Regression (issue 12): `get` printed `revenue_cents 408137367`; money reads as money, and
    /// a cell cut at the column's width says so.
    #[test]
    fn cents_print_as_money_and_long_cells_are_marked() {
        assert_eq!(money_of_cents(408_137_367), "$4,081,373.67");
        assert_eq!(money_of_cents(-5), "-$0.05");
        let rows = Rows {
            columns: vec!["region".into(), "revenue_cents".into()],
            rows: vec![vec![json!("x".repeat(60)), json!(408_137_367)]],
            ..Default::default()
        };
        let text = rows_table(&rows, 10);
        assert!(text.starts_with("region"), "{text}");
        assert!(text.contains("revenue"), "{text}");
        assert!(!text.contains("revenue_cents"), "{text}");
        assert!(text.contains("$4,081,373.67"), "{text}");
        assert!(text.contains('…'), "{text}");
    }
}
