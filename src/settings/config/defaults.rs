//! What a setting is when nothing sets it: the default value `config check` shows, taken from the
//! typed settings the commands use (the data directory decides where the embedded warehouse is).

use crate::settings::{Settings, logging};

/// The default value of `key` given the other effective settings, or `None` where the default is
/// that the feature is off (then [`absent`] says what that means).
pub(super) fn value(s: &Settings, key: &str) -> Option<String> {
    match key {
        "data_dir" => Some(s.data_dir.display().to_string()),
        "strategy" => Some(s.strategy.to_string()),
        "warehouse.url" => Some(s.warehouse_url().expose()),
        "warehouse.latency" => {
            let l = s.latency();
            // Written as the flag takes it: 2s-5s, 0s.
            let text = |d: std::time::Duration| match d.as_millis() {
                ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
                ms => format!("{ms}ms"),
            };
            Some(if l.min == l.max {
                text(l.min)
            } else {
                format!("{}-{}", text(l.min), text(l.max))
            })
        }
        "log.level" => Some(logging::DEFAULT_LEVEL.to_string()),
        "log.dir" => logging::default_dir().map(|d| d.display().to_string()),
        _ => None,
    }
}

/// What an unset `key` means.
pub(super) fn absent(key: &str) -> &'static str {
    match key {
        "redis.url" => "none: embedded, no server",
        "redis.ca" => "none: the system's trusted roots",
        "hour" => "none: real time (the demo: 60s)",
        "metrics.addr" => "none: no metrics endpoint",
        "log.dir" => "none: no HOME, no log files",
        _ => "none",
    }
}
