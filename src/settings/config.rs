//! Configuration: command-line flags > `FRESHCACHE_*` environment variables > the configuration
//! file > defaults.
//!
//! One table, [`KEYS`], names every setting once: its key in the file, its flag, its environment
//! variable. [`resolve`] fills what the command line and environment left unset from the file,
//! validates every effective value (whatever its origin), and returns where each came from, which
//! `freshcache config check` prints with secrets masked. The documented default file is
//! `assets/freshcache.toml`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::clock::parse_duration;
use crate::model::policy::Strategy;
use crate::secret::mask_url;
use crate::settings::GlobalArgs;
use crate::warehouse::Latency;

/// The documented default configuration file.
pub const DEFAULT_FILE: &str = include_str!("../../assets/freshcache.toml");

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Its key in the file (`redis.timeout`).
    pub key: &'static str,
    /// The clap argument id (the `GlobalArgs` field).
    id: &'static str,
    /// Its flag.
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// What it is.
    pub help: &'static str,
}

const fn key(
    key: &'static str,
    id: &'static str,
    flag: &'static str,
    env: &'static str,
    help: &'static str,
) -> Key {
    Key {
        key,
        id,
        flag,
        env,
        help,
    }
}

/// Every setting.
pub const KEYS: &[Key] = &[
    key(
        "environment",
        "env",
        "--env",
        "FRESHCACHE_ENV",
        "production, staging or development",
    ),
    key(
        "read_only",
        "read_only",
        "--read-only",
        "FRESHCACHE_READ_ONLY",
        "refuse every action that changes anything",
    ),
    key(
        "strategy",
        "strategy",
        "--strategy",
        "FRESHCACHE_STRATEGY",
        "ttl, lock, swr, early, versioned or freshcache",
    ),
    key(
        "data_dir",
        "data_dir",
        "--data-dir",
        "FRESHCACHE_DATA_DIR",
        "directory of the embedded warehouse and state",
    ),
    key(
        "hour",
        "hour",
        "--hour",
        "FRESHCACHE_HOUR",
        "real time one clock hour lasts (accelerated schedule)",
    ),
    key(
        "warehouse.url",
        "warehouse",
        "--warehouse",
        "FRESHCACHE_WAREHOUSE",
        "SQLite file or postgres:// URL",
    ),
    key(
        "warehouse.latency",
        "latency",
        "--latency",
        "FRESHCACHE_LATENCY",
        "simulated latency per query: DURATION or MIN-MAX",
    ),
    key(
        "warehouse.load_timeout",
        "load_timeout",
        "--load-timeout",
        "FRESHCACHE_LOAD_TIMEOUT",
        "deadline of one warehouse load; then it is cancelled at the server",
    ),
    key(
        "redis.url",
        "redis",
        "--redis",
        "FRESHCACHE_REDIS",
        "redis:// or rediss:// URL; embedded when absent",
    ),
    key(
        "redis.ca",
        "redis_ca",
        "--redis-ca",
        "FRESHCACHE_REDIS_CA",
        "PEM certificate authority for rediss://",
    ),
    key(
        "redis.timeout",
        "redis_timeout",
        "--redis-timeout",
        "FRESHCACHE_REDIS_TIMEOUT",
        "longest wait for one Redis call",
    ),
    key(
        "redis.lease",
        "lease",
        "--lease",
        "FRESHCACHE_LEASE",
        "how long a load's lease lasts",
    ),
    key(
        "redis.max_unverified",
        "max_unverified",
        "--max-unverified",
        "FRESHCACHE_MAX_UNVERIFIED",
        "how long without confirming the version truth before cached answers are served as stale",
    ),
    key(
        "redis.local_tier",
        "no_local_tier",
        "--no-local-tier",
        "FRESHCACHE_NO_LOCAL_TIER",
        "keep an in-process tier in front of Redis",
    ),
    key(
        "log.level",
        "log_level",
        "--log-level",
        "FRESHCACHE_LOG_LEVEL",
        "trace, debug, info, warn, error, off or a filter (RUST_LOG wins)",
    ),
    key(
        "log.dir",
        "log_dir",
        "--log-dir",
        "FRESHCACHE_LOG_DIR",
        "directory of the daily log files",
    ),
    key(
        "log.keep",
        "log_keep",
        "--log-keep",
        "FRESHCACHE_LOG_KEEP",
        "daily log files kept",
    ),
    key(
        "metrics.addr",
        "metrics_addr",
        "--metrics-addr",
        "FRESHCACHE_METRICS_ADDR",
        "serve Prometheus metrics at http://ADDR/metrics",
    ),
];

/// A configuration that cannot be used: says where and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    environment: Option<Spanned<String>>,
    read_only: Option<Spanned<bool>>,
    strategy: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    hour: Option<Spanned<String>>,
    #[serde(default)]
    warehouse: WarehouseSection,
    #[serde(default)]
    redis: RedisSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    metrics: MetricsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarehouseSection {
    url: Option<Spanned<String>>,
    latency: Option<Spanned<String>>,
    load_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    url: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    max_unverified: Option<Spanned<String>>,
    local_tier: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    addr: Option<Spanned<String>>,
}

/// A value as written in the file.
enum FileValue {
    Text(String),
    Bool(bool),
    Int(i64),
}

fn spanned_text(v: &Option<Spanned<String>>) -> Option<(FileValue, Range<usize>)> {
    v.as_ref()
        .map(|s| (FileValue::Text(s.get_ref().clone()), s.span()))
}

impl FileConfig {
    fn value(&self, key: &str) -> Option<(FileValue, Range<usize>)> {
        let bool_of = |v: &Option<Spanned<bool>>| {
            v.as_ref()
                .map(|s| (FileValue::Bool(*s.get_ref()), s.span()))
        };
        match key {
            "environment" => spanned_text(&self.environment),
            "read_only" => bool_of(&self.read_only),
            "strategy" => spanned_text(&self.strategy),
            "data_dir" => spanned_text(&self.data_dir),
            "hour" => spanned_text(&self.hour),
            "warehouse.url" => spanned_text(&self.warehouse.url),
            "warehouse.latency" => spanned_text(&self.warehouse.latency),
            "warehouse.load_timeout" => spanned_text(&self.warehouse.load_timeout),
            "redis.url" => spanned_text(&self.redis.url),
            "redis.ca" => spanned_text(&self.redis.ca),
            "redis.timeout" => spanned_text(&self.redis.timeout),
            "redis.lease" => spanned_text(&self.redis.lease),
            "redis.max_unverified" => spanned_text(&self.redis.max_unverified),
            "redis.local_tier" => bool_of(&self.redis.local_tier),
            "log.level" => spanned_text(&self.log.level),
            "log.dir" => spanned_text(&self.log.dir),
            "log.keep" => self
                .log
                .keep
                .as_ref()
                .map(|s| (FileValue::Int(*s.get_ref()), s.span())),
            "metrics.addr" => spanned_text(&self.metrics.addr),
            _ => None,
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
    /// The value as text (masked), or `None` when unset.
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

/// The file read when `--config` is not given: `$XDG_CONFIG_HOME/freshcache/config.toml`, else
/// `~/.config/freshcache/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("freshcache").join("config.toml"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn read_file(path: &Path) -> Result<(String, FileConfig), ConfigError> {
    let shown = crate::sanitize::clean_line(&path.display().to_string());
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config file {shown}: cannot read it: {e}")))?;
    let parsed = parse(&text)
        .map_err(|(line, why)| ConfigError(format!("config file {shown}: line {line}: {why}")))?;
    Ok((text, parsed))
}

fn parse(text: &str) -> Result<FileConfig, (usize, String)> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        let why = crate::sanitize::clean_line(e.message().trim());
        // serde says "field"; a configuration file has keys.
        (line, why.replace("unknown field", "unknown key"))
    })
}

fn user_set(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    match matches.value_source(id) {
        Some(ValueSource::DefaultValue) | None => None,
        Some(s) => Some(s),
    }
}

/// Fills `g` from the configuration file where the command line and environment left a setting
/// unset, then validates every effective value. Returns where each value came from.
pub fn resolve(g: &mut GlobalArgs, matches: &ArgMatches) -> Result<Report, ConfigError> {
    let (path, explicit) = match &g.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_path(), false),
    };
    let loaded = match &path {
        Some(p) if explicit || p.exists() => Some((p.clone(), read_file(p)?)),
        _ => None,
    };
    let mut settings = Vec::with_capacity(KEYS.len());
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
                let value = env_value(k.key, &raw)
                    .and_then(|v| set(g, k.key, v))
                    .map_err(|why| {
                        ConfigError(format!(
                            "environment variable {}=`{shown}`: {why} (fix or unset it)",
                            k.env
                        ))
                    });
                value?;
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
                    set(g, k.key, value).map_err(|why| {
                        ConfigError(format!(
                            "config file {shown}: line {line}: key `{}`: {why}",
                            k.key
                        ))
                    })?;
                    Origin::File { path: shown, line }
                }
                None => Origin::Default,
            },
        };
        let value = get(g, k.key);
        if let Some(v) = &value {
            validate(k.key, v).map_err(|why| {
                let place = match &origin {
                    Origin::File { path, line } => {
                        format!("config file {path}: line {line}: key `{}`", k.key)
                    }
                    other => other.to_string(),
                };
                ConfigError(format!("{place}: {why}"))
            })?;
        }
        settings.push(Effective {
            key: k.key,
            value: value.map(|v| mask(k.key, &v)),
            origin,
        });
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

fn set(g: &mut GlobalArgs, key: &str, v: FileValue) -> Result<(), String> {
    match (key, v) {
        ("environment", v) => g.env = text(v)?.parse()?,
        ("read_only", FileValue::Bool(b)) => g.read_only = b,
        ("strategy", v) => {
            g.strategy = Some(text(v)?.parse()?);
        }
        ("data_dir", v) => g.data_dir = Some(PathBuf::from(text(v)?)),
        ("hour", v) => g.hour = Some(text(v)?),
        ("warehouse.url", v) => g.warehouse = Some(text(v)?),
        ("warehouse.latency", v) => g.latency = Some(text(v)?),
        ("warehouse.load_timeout", v) => g.load_timeout = text(v)?,
        ("redis.url", v) => g.redis = Some(text(v)?),
        ("redis.ca", v) => g.redis_ca = Some(PathBuf::from(text(v)?)),
        ("redis.timeout", v) => g.redis_timeout = text(v)?,
        ("redis.lease", v) => g.lease = text(v)?,
        ("redis.max_unverified", v) => g.max_unverified = text(v)?,
        ("redis.local_tier", FileValue::Bool(b)) => g.no_local_tier = !b,
        ("log.level", v) => g.log_level = Some(text(v)?),
        ("log.dir", v) => g.log_dir = Some(PathBuf::from(text(v)?)),
        ("log.keep", FileValue::Int(n)) => {
            g.log_keep = u32::try_from(n)
                .ok()
                .filter(|n| (1..=365).contains(n))
                .ok_or_else(|| format!("{n} is out of range; expected 1 to 365"))?;
        }
        ("metrics.addr", v) => g.metrics_addr = Some(text(v)?),
        (k, _) => return Err(format!("`{k}` has the wrong type")),
    }
    Ok(())
}

fn get(g: &GlobalArgs, key: &str) -> Option<String> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    match key {
        "environment" => Some(g.env.to_string()),
        "read_only" => Some(g.read_only.to_string()),
        "strategy" => Some(g.strategy.unwrap_or(Strategy::Freshcache).to_string()),
        "data_dir" => path(&g.data_dir),
        "hour" => g.hour.clone(),
        "warehouse.url" => g.warehouse.clone(),
        "warehouse.latency" => g.latency.clone(),
        "warehouse.load_timeout" => Some(g.load_timeout.clone()),
        "redis.url" => g.redis.clone(),
        "redis.ca" => path(&g.redis_ca),
        "redis.timeout" => Some(g.redis_timeout.clone()),
        "redis.lease" => Some(g.lease.clone()),
        "redis.max_unverified" => Some(g.max_unverified.clone()),
        "redis.local_tier" => Some((!g.no_local_tier).to_string()),
        "log.level" => g.log_level.clone(),
        "log.dir" => path(&g.log_dir),
        "log.keep" => Some(g.log_keep.to_string()),
        "metrics.addr" => g.metrics_addr.clone(),
        _ => None,
    }
}

/// Checks one effective value; says what is accepted.
fn validate(key: &str, v: &str) -> Result<(), String> {
    let quoted = || format!("`{}`", crate::sanitize::clean_short(v, 80));
    match key {
        "hour"
        | "redis.timeout"
        | "redis.lease"
        | "redis.max_unverified"
        | "warehouse.load_timeout" => {
            let d = parse_duration(v).map_err(|e| format!("{}: {e}", quoted()))?;
            if d.is_zero() {
                return Err(format!(
                    "{} must be more than zero, e.g. 300ms, 2s",
                    quoted()
                ));
            }
        }
        "warehouse.latency" => {
            Latency::parse(v).map_err(|e| format!("{}: {e}; e.g. 300ms or 2s-5s", quoted()))?;
        }
        "redis.url" => {
            if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
                return Err(format!(
                    "{} is not a Redis URL; expected redis://[user:password@]host[:port][/db] or rediss://…",
                    mask_url(v)
                ));
            }
            redis::Client::open(v)
                .map_err(|_| format!("{} does not parse as a Redis URL", mask_url(v)))?;
        }
        "warehouse.url" if v.contains("://") => {
            if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                return Err(format!(
                    "{} is neither a SQLite file nor a postgres:// URL",
                    mask_url(v)
                ));
            }
            crate::warehouse::postgres::check_url(v)?;
            v.parse::<tokio_postgres::Config>()
                .map_err(|_| format!("{} does not parse as a PostgreSQL URL", mask_url(v)))?;
        }
        "redis.ca" => {
            let pem = std::fs::read(v).map_err(|e| format!("{}: cannot read it: {e}", quoted()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    quoted()
                ));
            }
        }
        "log.level" => {
            tracing_subscriber::EnvFilter::try_new(v).map_err(|e| {
                format!(
                    "{}: {e}; expected trace, debug, info, warn, error, off or a filter such as freshcache=debug",
                    quoted()
                )
            })?;
        }
        "metrics.addr" => {
            parse_addr(v)?;
        }
        _ => {}
    }
    Ok(())
}

/// Parses a listening address: `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`.
pub fn parse_addr(v: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let shown = crate::sanitize::clean_short(v, 80);
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!(
                "`{shown}` is not an address to listen on; expected HOST:PORT, e.g. 127.0.0.1:9464"
            )
        })
}

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
            s.value.as_deref().unwrap_or("(unset)"),
            s.origin
        );
    }
    println!("valid");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::environment::Environment;
    use clap::{CommandFactory, FromArgMatches};

    /// The shared options alone, parsed as the command line parses them.
    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        global: GlobalArgs,
    }

    fn resolve_with(file: &str, args: &[&str]) -> Result<(GlobalArgs, Report), ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "freshcache-config-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["freshcache", "--config", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        let matches = Line::command().try_get_matches_from(argv).unwrap();
        let mut cli = Line::from_arg_matches(&matches).unwrap();
        let r = resolve(&mut cli.global, &matches);
        let _ = std::fs::remove_dir_all(&dir);
        r.map(|r| (cli.global, r))
    }

    #[test]
    fn the_documented_default_file_is_valid_and_changes_nothing() {
        let (g, report) = resolve_with(DEFAULT_FILE, &[]).unwrap();
        assert_eq!(g.env, Environment::Development);
        assert!(!g.read_only);
        assert_eq!(g.strategy, Some(Strategy::Freshcache));
        assert_eq!(g.redis_timeout, "300ms");
        assert_eq!(g.lease, "10s");
        assert_eq!(g.load_timeout, "20s");
        assert!(!g.no_local_tier);
        assert_eq!(g.log_keep, 7);
        // Every key of the table is in the documented file (commented out or set).
        for k in KEYS {
            let leaf = k.key.rsplit('.').next().unwrap();
            assert!(
                DEFAULT_FILE.contains(&format!("{leaf} = ")),
                "{} is not documented in assets/freshcache.toml",
                k.key
            );
        }
        assert_eq!(report.settings.len(), KEYS.len());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = "strategy = \"ttl\"\n[redis]\ntimeout = \"50ms\"\nlease = \"3s\"\n";
        let (g, report) = resolve_with(file, &["--lease", "7s"]).unwrap();
        assert_eq!(g.strategy, Some(Strategy::Ttl));
        assert_eq!(g.redis_timeout, "50ms");
        assert_eq!(g.lease, "7s");
        let origin = |key: &str| {
            report
                .settings
                .iter()
                .find(|s| s.key == key)
                .unwrap()
                .origin
                .clone()
        };
        assert!(matches!(
            origin("redis.timeout"),
            Origin::File { line: 3, .. }
        ));
        assert_eq!(
            origin("redis.lease"),
            Origin::Flag {
                flag: "--lease".into()
            }
        );
        assert_eq!(origin("environment"), Origin::Default);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line_and_what_is_accepted() {
        let e = resolve_with("[redis]\nurl = \"redis://h\"\ntimout = \"1s\"\n", &[]).unwrap_err();
        assert!(e.0.contains("line 3"), "{e}");
        assert!(e.0.contains("unknown key `timout`"), "{e}");
        assert!(e.0.contains("timeout"), "{e}");

        let e = resolve_with("\n\n[redis]\ntimeout = \"soon\"\n", &[]).unwrap_err();
        assert!(
            e.0.contains("line 4") && e.0.contains("redis.timeout"),
            "{e}"
        );

        let e = resolve_with("strategy = \"fastest\"\n", &[]).unwrap_err();
        assert!(e.0.contains("line 1") && e.0.contains("freshcache"), "{e}");

        let e = resolve_with("read_only = \"yes\"\n", &[]).unwrap_err();
        assert!(e.0.contains("line 1"), "{e}");

        let e = resolve_with("[log]\nkeep = 0\n", &[]).unwrap_err();
        assert!(e.0.contains("line 2") && e.0.contains("1 to 365"), "{e}");
    }

    #[test]
    fn secrets_are_masked_in_errors_and_reports() {
        let (_, report) = resolve_with(
            "[redis]\nurl = \"redis://ann:S3NT1NEL@127.0.0.1:1/0\"\n",
            &[],
        )
        .unwrap();
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("S3NT1NEL"), "{text}");
        assert!(text.contains("redis://ann:***@127.0.0.1:1/0"), "{text}");
        let e = resolve_with("[redis]\nurl = \"http://ann:S3NT1NEL@h/0\"\n", &[]).unwrap_err();
        assert!(!e.0.contains("S3NT1NEL") && e.0.contains("line 2"), "{e}");
        let e =
            resolve_with("[warehouse]\nurl = \"mysql://ann:S3NT1NEL@h/db\"\n", &[]).unwrap_err();
        assert!(!e.0.contains("S3NT1NEL"), "{e}");
    }

    #[test]
    fn the_load_timeout_comes_from_the_file_or_the_flag_and_is_never_zero() {
        let file = "[warehouse]\nload_timeout = \"750ms\"\n";
        let (g, _) = resolve_with(file, &[]).unwrap();
        assert_eq!(g.load_timeout, "750ms");
        let (g, _) = resolve_with(file, &["--load-timeout", "2s"]).unwrap();
        assert_eq!(g.load_timeout, "2s");
        let e = resolve_with("[warehouse]\nload_timeout = \"0s\"\n", &[]).unwrap_err();
        assert!(
            e.0.contains("line 2") && e.0.contains("warehouse.load_timeout"),
            "{e}"
        );
        let e = resolve_with("", &["--load-timeout", "soon"]).unwrap_err();
        assert!(e.0.contains("--load-timeout"), "{e}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let matches = Line::command()
            .try_get_matches_from(["freshcache", "--config", "/nonexistent/fc.toml"])
            .unwrap();
        let mut cli = Line::from_arg_matches(&matches).unwrap();
        let e = resolve(&mut cli.global, &matches).unwrap_err();
        assert!(
            e.0.contains("/nonexistent/fc.toml") && e.0.contains("cannot read"),
            "{e}"
        );
    }
}
