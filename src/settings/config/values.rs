//! What each setting accepts and the typed value it becomes: [`build`] is the one place a key of
//! [`KEYS`](super::KEYS) turns into a field of [`Settings`], whatever the value's origin.

use std::path::PathBuf;
use std::time::Duration;

use super::file::FileValue;
use crate::model::clock::parse_duration;
use crate::settings::url::{RedisUrl, WarehouseUrl};
use crate::settings::{LogSettings, RedisSettings, Settings, WarehouseSettings, default_data_dir};
use crate::warehouse::Latency;

/// The effective values by key, and what was wrong with them.
pub(super) struct Reader<'a> {
    value: &'a dyn Fn(&str) -> Option<FileValue>,
    /// Bad values: key and what is accepted.
    pub(super) errors: Vec<(&'static str, String)>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(value: &'a dyn Fn(&str) -> Option<FileValue>) -> Self {
        Self {
            value,
            errors: Vec::new(),
        }
    }

    /// A string setting through `parse`; `None` when unset or bad (then the error is kept).
    fn text<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match (self.value)(key)? {
            FileValue::Text(t) => self.keep(key, parse(&t)),
            other => self.wrong(key, &other, "a string"),
        }
    }

    fn boolean(&mut self, key: &'static str) -> Option<bool> {
        match (self.value)(key)? {
            FileValue::Bool(b) => Some(b),
            other => self.wrong(key, &other, "true or false"),
        }
    }

    fn int<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(i64) -> Result<T, String>,
    ) -> Option<T> {
        match (self.value)(key)? {
            FileValue::Int(n) => self.keep(key, parse(n)),
            other => self.wrong(key, &other, "a whole number"),
        }
    }

    /// A setting that always has a value (a default on the flag): its absence is an error too.
    fn required<T: Default>(&mut self, key: &'static str, v: Option<T>) -> T {
        if v.is_none() && (self.value)(key).is_none() {
            self.errors.push((key, "has no value".into()));
        }
        v.unwrap_or_default()
    }

    fn keep<T>(&mut self, key: &'static str, r: Result<T, String>) -> Option<T> {
        r.map_err(|why| self.errors.push((key, why))).ok()
    }

    fn wrong<T>(&mut self, key: &'static str, got: &FileValue, expected: &str) -> Option<T> {
        let got = match got {
            FileValue::Text(t) => format!("the string `{}`", crate::sanitize::clean_short(t, 80)),
            FileValue::Bool(b) => format!("the boolean {b}"),
            FileValue::Int(n) => format!("the number {n}"),
            FileValue::Other(kind) => format!("a {kind}"),
        };
        self.errors
            .push((key, format!("expected {expected}, found {got}")));
        None
    }
}

/// The typed settings from the effective values; every bad value is in `r.errors`.
pub(super) fn build(r: &mut Reader<'_>, json: bool) -> Settings {
    let environment = r.text("environment", |t| t.parse());
    let load_timeout = r.text("warehouse.load_timeout", positive_duration);
    let timeout = r.text("redis.timeout", positive_duration);
    let lease = r.text("redis.lease", positive_duration);
    let max_unverified = r.text("redis.max_unverified", positive_duration);
    let keep = r.int("log.keep", |n| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=365).contains(n))
            .ok_or_else(|| format!("{n} is out of range; expected 1 to 365"))
    });
    Settings {
        environment: r.required("environment", environment),
        read_only: r.boolean("read_only").unwrap_or(false),
        strategy: r.text("strategy", |t| t.parse()).unwrap_or_default(),
        data_dir: r
            .text("data_dir", |t| Ok(PathBuf::from(t)))
            .unwrap_or_else(default_data_dir),
        hour: r.text("hour", positive_duration),
        warehouse: WarehouseSettings {
            url: r.text("warehouse.url", WarehouseUrl::parse),
            latency: r.text("warehouse.latency", latency),
            load_timeout: r.required("warehouse.load_timeout", load_timeout),
        },
        redis: RedisSettings {
            url: r.text("redis.url", RedisUrl::parse),
            ca: r.text("redis.ca", ca_file),
            timeout: r.required("redis.timeout", timeout),
            lease: r.required("redis.lease", lease),
            max_unverified: r.required("redis.max_unverified", max_unverified),
            local_tier: r.boolean("redis.local_tier").unwrap_or(true),
        },
        log: LogSettings {
            level: r.text("log.level", log_level),
            dir: r.text("log.dir", |t| Ok(PathBuf::from(t))),
            keep: r.required("log.keep", keep),
        },
        metrics_addr: r.text("metrics.addr", parse_addr),
        json,
    }
}

fn quoted(v: &str) -> String {
    format!("`{}`", crate::sanitize::clean_short(v, 80))
}

/// A duration longer than zero: `300ms`, `2s`, `1m`.
pub fn positive_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v).map_err(|e| format!("{}: {e}", quoted(v)))?;
    if d.is_zero() {
        return Err(format!(
            "{} must be more than zero, e.g. 300ms, 2s",
            quoted(v)
        ));
    }
    Ok(d)
}

fn latency(v: &str) -> Result<Latency, String> {
    Latency::parse(v).map_err(|e| format!("{}: {e}; e.g. 300ms or 2s-5s", quoted(v)))
}

fn ca_file(v: &str) -> Result<PathBuf, String> {
    let pem = std::fs::read(v).map_err(|e| format!("{}: cannot read it: {e}", quoted(v)))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            quoted(v)
        ));
    }
    Ok(PathBuf::from(v))
}

fn log_level(v: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(v).map_err(|e| {
        format!(
            "{}: {e}; expected trace, debug, info, warn, error, off or a filter such as freshcache=debug",
            quoted(v)
        )
    })?;
    Ok(v.to_string())
}

/// Parses a listening address: `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`.
pub fn parse_addr(v: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!(
                "{} is not an address to listen on; expected HOST:PORT, e.g. 127.0.0.1:9464",
                quoted(v)
            )
        })
}
