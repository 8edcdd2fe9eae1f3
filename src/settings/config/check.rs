//! What `freshcache config check` prints: the file read and every effective value with its origin.

use super::{KEYS, Report, default_path, defaults};

/// Prints the report for `config check`.
pub fn print(report: &Report) {
    match &report.file {
        Some(f) => println!("configuration file: {f}"),
        None => println!(
            "configuration file: none (looked for {})",
            default_path()
                .map(|p| crate::sanitize::clean_line(&p.display().to_string()))
                .unwrap_or_else(|| "nothing: no HOME".into())
        ),
    }
    let width = KEYS.iter().map(|k| k.key.len()).max().unwrap_or(0);
    for s in &report.settings {
        println!(
            "  {:<width$}  {:<40}  {}",
            s.key,
            s.value
                .as_deref()
                .unwrap_or_else(|| defaults::absent(s.key)),
            s.origin
        );
    }
    println!("valid");
}
