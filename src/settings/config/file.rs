//! The configuration file: where it is looked for, its format (TOML, unknown keys refused), and
//! the line each value was written on.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
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
pub(super) enum FileValue {
    Text(String),
    Bool(bool),
    Int(i64),
}

fn spanned_text(v: &Option<Spanned<String>>) -> Option<(FileValue, Range<usize>)> {
    v.as_ref()
        .map(|s| (FileValue::Text(s.get_ref().clone()), s.span()))
}

impl FileConfig {
    pub(super) fn value(&self, key: &str) -> Option<(FileValue, Range<usize>)> {
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

/// The file read when `--config` is not given: `$XDG_CONFIG_HOME/freshcache/config.toml`, else
/// `~/.config/freshcache/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("freshcache").join("config.toml"))
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(super) fn read_file(path: &Path) -> Result<(String, FileConfig), ConfigError> {
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
