//! Configuration: command-line flags > `FRESHCACHE_*` environment variables > the configuration
//! file > defaults.
//!
//! One table, [`KEYS`], names every setting once: its key in the file, its flag, its environment
//! variable. [`resolve`] fills what the command line and environment left unset from the file,
//! validates every effective value (whatever its origin), and returns where each came from, which
//! `freshcache config check` prints with secrets masked. The documented default file is
//! `assets/freshcache.toml`.

mod check;
mod defaults;
mod file;
mod keys;
mod values;

use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;

use crate::model::policy::Strategy;
use crate::secret::mask_url;
use crate::settings::GlobalArgs;

pub use check::print;
pub use file::default_path;
use file::{FileValue, line_of, read_file};
pub use keys::{KEYS, Key};
pub use values::parse_addr;
use values::validate;

/// The documented default configuration file.
pub const DEFAULT_FILE: &str = include_str!("../../../assets/freshcache.toml");

/// A configuration that cannot be used: says where and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// A command-line flag.
    Flag {
        /// The flag.
        flag: String,
    },
    /// An environment variable.
    Env {
        /// The variable.
        var: String,
    },
    /// The configuration file.
    File {
        /// The file.
        path: String,
        /// The line (from 1).
        line: usize,
    },
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag { flag } => write!(f, "flag {flag}"),
            Origin::Env { var } => write!(f, "environment {var}"),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One effective setting, secrets masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// The key.
    pub key: &'static str,
    /// The value as text (masked), defaults included; `None` where nothing sets it and the
    /// default is that the feature is off (no Redis, no metrics endpoint, ...).
    pub value: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// What [`resolve`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file read, if any.
    pub file: Option<String>,
    /// Every setting.
    pub settings: Vec<Effective>,
}

fn user_set(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    match matches.value_source(id) {
        Some(ValueSource::DefaultValue) | None => None,
        Some(s) => Some(s),
    }
}

/// Fills `global` from the configuration file where the command line and environment left a setting
/// unset, then validates every effective value. Returns where each value came from.
pub fn resolve(global: &mut GlobalArgs, matches: &ArgMatches) -> Result<Report, ConfigError> {
    let (path, explicit) = match &global.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_path(), false),
    };
    let loaded = match &path {
        Some(p) if explicit || p.exists() => Some((p.clone(), read_file(p)?)),
        _ => None,
    };
    let mut settings = Vec::with_capacity(KEYS.len());
    // Every problem is collected and reported together: one run shows all that needs fixing.
    let mut problems: Vec<String> = Vec::new();
    for k in KEYS {
        let origin = match user_set(matches, k.id) {
            Some(ValueSource::EnvVariable) => Origin::Env {
                var: k.env.to_string(),
            },
            Some(_) => Origin::Flag {
                flag: k.flag.to_string(),
            },
            None if TYPED_FROM_ENV.contains(&k.key) && std::env::var_os(k.env).is_some() => {
                let raw = std::env::var(k.env).map_err(|_| {
                    ConfigError(format!("environment variable {} is not valid UTF-8", k.env))
                })?;
                let shown = crate::sanitize::clean_short(&raw, 80);
                if let Err(why) = env_value(k.key, &raw).and_then(|v| set(global, k.key, v)) {
                    problems.push(format!(
                        "environment variable {}=`{shown}`: {why} (fix or unset it)",
                        k.env
                    ));
                }
                Origin::Env {
                    var: k.env.to_string(),
                }
            }
            None => match loaded
                .as_ref()
                .and_then(|(p, (text, file))| file.value(k.key).map(|v| (p, text, v)))
            {
                Some((p, text, (value, span))) => {
                    let line = line_of(text, span.start);
                    let shown = crate::sanitize::clean_line(&p.display().to_string());
                    if let Err(why) = set(global, k.key, value) {
                        problems.push(format!(
                            "config file {shown}: line {line}: key `{}`: {why}",
                            k.key
                        ));
                    }
                    Origin::File { path: shown, line }
                }
                None => Origin::Default,
            },
        };
        let value = get(global, k.key);
        if let Some(v) = &value
            && let Err(why) = validate(k.key, v)
        {
            let place = match &origin {
                Origin::File { path, line } => {
                    format!("config file {path}: line {line}: key `{}`", k.key)
                }
                other => other.to_string(),
            };
            problems.push(format!("{place}: {why}"));
        }
        settings.push(Effective {
            key: k.key,
            value: value.map(|v| mask(k.key, &v)),
            origin,
        });
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems.join("\n")));
    }
    // Defaults last, once every setting they depend on (the data directory, the warehouse) is known.
    for s in settings.iter_mut() {
        if s.value.is_none() && s.origin == Origin::Default {
            s.value = defaults::value(global, s.key).map(|v| mask(s.key, &v));
        }
    }
    Ok(Report {
        file: loaded.map(|(p, _)| crate::sanitize::clean_line(&p.display().to_string())),
        settings,
    })
}

fn mask(key: &str, value: &str) -> String {
    match key {
        "redis.url" => mask_url(value),
        "warehouse.url" if value.contains("://") => mask_url(value),
        _ => crate::sanitize::clean_line(value),
    }
}

/// Settings whose flag has a typed value: their variables are read here rather than by clap, which
/// would reject a bad value as a command-line error (and even when the flag overrides it).
const TYPED_FROM_ENV: [&str; 5] = [
    "environment",
    "read_only",
    "strategy",
    "redis.local_tier",
    "log.keep",
];

/// The value of `key`'s environment variable, as the file would give it.
fn env_value(key: &str, raw: &str) -> Result<FileValue, String> {
    let boolean = || match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false (also 1/0, yes/no, on/off)".to_string()),
    };
    match key {
        "read_only" => boolean().map(FileValue::Bool),
        // The variable is FRESHCACHE_NO_LOCAL_TIER: true turns the tier off.
        "redis.local_tier" => boolean().map(|b| FileValue::Bool(!b)),
        "log.keep" => raw
            .trim()
            .parse()
            .map(FileValue::Int)
            .map_err(|_| "expected a whole number from 1 to 365".to_string()),
        _ => Ok(FileValue::Text(raw.to_string())),
    }
}

fn text(v: FileValue) -> Result<String, String> {
    match v {
        FileValue::Text(t) => Ok(t),
        FileValue::Bool(_) | FileValue::Int(_) => Err("expected a string".into()),
    }
}

fn set(global: &mut GlobalArgs, key: &str, v: FileValue) -> Result<(), String> {
    match (key, v) {
        ("environment", v) => global.env = text(v)?.parse()?,
        ("read_only", FileValue::Bool(b)) => global.read_only = b,
        ("strategy", v) => {
            global.strategy = Some(text(v)?.parse()?);
        }
        ("data_dir", v) => global.data_dir = Some(PathBuf::from(text(v)?)),
        ("hour", v) => global.hour = Some(text(v)?),
        ("warehouse.url", v) => global.warehouse = Some(text(v)?),
        ("warehouse.latency", v) => global.latency = Some(text(v)?),
        ("warehouse.load_timeout", v) => global.load_timeout = text(v)?,
        ("redis.url", v) => global.redis = Some(text(v)?),
        ("redis.ca", v) => global.redis_ca = Some(PathBuf::from(text(v)?)),
        ("redis.timeout", v) => global.redis_timeout = text(v)?,
        ("redis.lease", v) => global.lease = text(v)?,
        ("redis.max_unverified", v) => global.max_unverified = text(v)?,
        ("redis.local_tier", FileValue::Bool(b)) => global.no_local_tier = !b,
        ("log.level", v) => global.log_level = Some(text(v)?),
        ("log.dir", v) => global.log_dir = Some(PathBuf::from(text(v)?)),
        ("log.keep", FileValue::Int(n)) => {
            global.log_keep = u32::try_from(n)
                .ok()
                .filter(|n| (1..=365).contains(n))
                .ok_or_else(|| format!("{n} is out of range; expected 1 to 365"))?;
        }
        ("metrics.addr", v) => global.metrics_addr = Some(text(v)?),
        (k, _) => return Err(format!("`{k}` has the wrong type")),
    }
    Ok(())
}

fn get(global: &GlobalArgs, key: &str) -> Option<String> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    match key {
        "environment" => Some(global.env.to_string()),
        "read_only" => Some(global.read_only.to_string()),
        "strategy" => Some(global.strategy.unwrap_or(Strategy::Freshcache).to_string()),
        "data_dir" => path(&global.data_dir),
        "hour" => global.hour.clone(),
        "warehouse.url" => global.warehouse.clone(),
        "warehouse.latency" => global.latency.clone(),
        "warehouse.load_timeout" => Some(global.load_timeout.clone()),
        "redis.url" => global.redis.clone(),
        "redis.ca" => path(&global.redis_ca),
        "redis.timeout" => Some(global.redis_timeout.clone()),
        "redis.lease" => Some(global.lease.clone()),
        "redis.max_unverified" => Some(global.max_unverified.clone()),
        "redis.local_tier" => Some((!global.no_local_tier).to_string()),
        "log.level" => global.log_level.clone(),
        "log.dir" => path(&global.log_dir),
        "log.keep" => Some(global.log_keep.to_string()),
        "metrics.addr" => global.metrics_addr.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
