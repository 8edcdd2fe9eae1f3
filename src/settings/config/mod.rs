//! Configuration: command-line flags > `FRESHCACHE_*` environment variables > the configuration
//! file > defaults.
//!
//! One table, [`KEYS`], names every setting once: its key in the file, the clap argument that
//! carries its flag (with its help and default), its environment variable. [`resolve`] takes each
//! setting from the first source that has it, turns every effective value into the typed
//! [`Settings`] (whatever its origin), reports every bad value at once, and returns where each
//! came from, which `freshcache config check` prints with secrets masked. The documented default
//! file is `assets/freshcache.toml`.

mod check;
mod defaults;
mod file;
mod keys;
mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;

use crate::secret::mask_url;
use crate::settings::Settings;

pub use check::print;
pub use file::default_path;
use file::{FileConfig, FileValue, read_file};
pub use keys::{KEYS, Key, Kind};
pub use values::{parse_addr, positive_duration};

/// The documented default configuration file.
pub const DEFAULT_FILE: &str = include_str!("../../../assets/freshcache.toml");

/// A configuration that cannot be used: every problem found, each saying where and what is
/// accepted, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

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

/// One effective value before it is typed: what it is and where it came from.
struct Given {
    value: FileValue,
    origin: Origin,
    /// Where a problem with it is reported, and how problems are ordered (file lines last).
    place: String,
    order: usize,
}

/// Reads the settings: each from the command line, else its `FRESHCACHE_*` variable, else the
/// configuration file (`--config`, else the default path if that file exists), else its default.
/// Every bad value and unknown key is reported at once.
pub fn resolve(matches: &ArgMatches) -> Result<(Settings, Report), ConfigError> {
    let (path, explicit) = match matches.get_one::<PathBuf>("config") {
        Some(p) => (Some(p.clone()), true),
        None => (default_path(), false),
    };
    let file = match &path {
        Some(p) if explicit || p.exists() => Some(read_file(p)?),
        _ => None,
    };
    let mut problems: Vec<(usize, String)> = Vec::new();
    if let Some(f) = &file {
        problems.extend(f.problems.iter().cloned());
    }
    // The flags clap reads a variable for; the others' variables are read here.
    let flags = <crate::settings::GlobalArgs as clap::Args>::augment_args(clap::Command::new("x"));
    let mut given: BTreeMap<&'static str, Given> = BTreeMap::new();
    for k in KEYS {
        let clap_reads_env = flags
            .get_arguments()
            .any(|a| a.get_id() == k.id && a.get_env().is_some());
        match source(k, matches, clap_reads_env, file.as_ref()) {
            Ok(Some(g)) => {
                given.insert(k.key, g);
            }
            Ok(None) => {}
            Err(problem) => problems.push((0, problem)),
        }
    }
    let lookup = |key: &str| given.get(key).map(|g| g.value.clone());
    let mut reader = values::Reader::new(&lookup);
    let settings = values::build(&mut reader, matches.get_flag("json"));
    for (key, why) in reader.errors {
        let (place, order) = given.get(key).map_or_else(
            || (format!("key `{key}`"), 0),
            |g| (g.place.clone(), g.order),
        );
        problems.push((order, format!("{place}: {why}")));
    }
    if !problems.is_empty() {
        // Flags and variables first, then the file from top to bottom.
        problems.sort_by_key(|(order, _)| *order);
        return Err(ConfigError {
            problems: problems.into_iter().map(|(_, p)| p).collect(),
        });
    }
    let report = Report {
        file: file.map(|f| f.shown),
        settings: KEYS
            .iter()
            .map(|k| match given.remove(k.key) {
                Some(g) => Effective {
                    key: k.key,
                    value: Some(mask(k.key, &g.value.text())),
                    origin: g.origin,
                },
                None => Effective {
                    key: k.key,
                    value: defaults::value(&settings, k.key).map(|v| mask(k.key, &v)),
                    origin: Origin::Default,
                },
            })
            .collect(),
    };
    Ok((settings, report))
}

/// Where `k`'s value comes from, and the value: `Err` for a variable that cannot be read.
fn source(
    k: &Key,
    matches: &ArgMatches,
    clap_reads_env: bool,
    file: Option<&FileConfig>,
) -> Result<Option<Given>, String> {
    let raw = || {
        matches
            .get_raw(k.id)
            .and_then(|mut v| v.next())
            .map(|v| v.to_string_lossy().into_owned())
    };
    let from_line = |origin: Origin, place: String| -> Option<Given> {
        let text = raw()?;
        let value = match k.kind {
            Kind::Text => FileValue::Text(text),
            Kind::Bool => FileValue::Bool(text == "true"),
            Kind::NotFlag => FileValue::Bool(text != "true"),
            Kind::Int => text.parse().map_or(FileValue::Text(text), FileValue::Int),
        };
        Some(Given {
            value,
            origin,
            place,
            order: 0,
        })
    };
    match matches.value_source(k.id) {
        Some(ValueSource::CommandLine) => {
            let flag = k.flag();
            return Ok(from_line(
                Origin::Flag { flag: flag.clone() },
                format!("flag {flag}"),
            ));
        }
        Some(ValueSource::EnvVariable) => {
            return Ok(from_line(
                Origin::Env {
                    var: k.env.to_string(),
                },
                format!("environment {}", k.env),
            ));
        }
        _ => {}
    }
    // Variables of typed flags are read here rather than by clap, which would reject a bad value
    // as a command-line error (and even when the flag overrides it).
    if let Some(os) = std::env::var_os(k.env).filter(|_| !clap_reads_env) {
        let raw = os.into_string().map_err(|_| {
            format!(
                "environment variable {} is not valid UTF-8 (fix or unset it)",
                k.env
            )
        })?;
        let shown = crate::sanitize::clean_short(&raw, 80);
        let value = env_value(k.kind, &raw).map_err(|why| {
            format!(
                "environment variable {}=`{shown}`: {why} (fix or unset it)",
                k.env
            )
        })?;
        return Ok(Some(Given {
            value,
            origin: Origin::Env {
                var: k.env.to_string(),
            },
            place: format!("environment variable {}=`{shown}`", k.env),
            order: 0,
        }));
    }
    if let Some(f) = file
        && let Some((value, line)) = f.values.get(k.key)
    {
        return Ok(Some(Given {
            value: value.clone(),
            origin: Origin::File {
                path: f.shown.clone(),
                line: *line,
            },
            place: format!("config file {}: line {line}: key `{}`", f.shown, k.key),
            order: *line,
        }));
    }
    Ok(from_line(Origin::Default, "default".into()))
}

fn mask(key: &str, value: &str) -> String {
    match key {
        "redis.url" => mask_url(value),
        "warehouse.url" if value.contains("://") => mask_url(value),
        _ => crate::sanitize::clean_line(value),
    }
}

/// The value of a variable, as the file would give it.
fn env_value(kind: Kind, raw: &str) -> Result<FileValue, String> {
    let boolean = || match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false (also 1/0, yes/no, on/off)".to_string()),
    };
    match kind {
        Kind::Text => Ok(FileValue::Text(raw.to_string())),
        Kind::Bool => boolean().map(FileValue::Bool),
        // FRESHCACHE_NO_LOCAL_TIER=true turns the tier off.
        Kind::NotFlag => boolean().map(|b| FileValue::Bool(!b)),
        Kind::Int => raw
            .trim()
            .parse()
            .map(FileValue::Int)
            .map_err(|_| "expected a whole number".to_string()),
    }
}

#[cfg(test)]
mod tests;
