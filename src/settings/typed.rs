//! [`Settings`]: what every command runs with, read once from flags > `FRESHCACHE_*` environment >
//! configuration file > defaults and checked as a whole before anything starts. Durations are
//! [`Duration`]s, addresses are parsed, URLs keep their passwords out of `Debug` and `Display`; the
//! commands and everything below them take these values and never parse a setting again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::url::{RedisUrl, WarehouseUrl};
use crate::model::environment::Environment;
use crate::model::policy::Strategy;
use crate::warehouse::Latency;

/// The effective settings, typed. Built by [`super::config::resolve`]; the field names follow the
/// keys of the configuration file (`redis.lease` is `redis.lease`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `environment`: production refuses simulations.
    pub environment: Environment,
    /// `read_only`: refuse every action that changes anything.
    pub read_only: bool,
    /// `strategy`: how the engine caches.
    pub strategy: Strategy,
    /// `data_dir`: where the embedded warehouse and state live (its default applied).
    pub data_dir: PathBuf,
    /// `hour`: how long one clock hour lasts in real time; real time when `None`.
    pub hour: Option<Duration>,
    /// `[warehouse]`.
    pub warehouse: WarehouseSettings,
    /// `[redis]`.
    pub redis: RedisSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `metrics.addr`: where to serve Prometheus metrics; nowhere when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--json`: print JSON instead of text (a flag only).
    pub json: bool,
}

/// The `[warehouse]` settings.
#[derive(Debug, Clone)]
pub struct WarehouseSettings {
    /// `warehouse.url`, as given; [`Settings::warehouse_url`] applies the default.
    pub url: Option<WarehouseUrl>,
    /// `warehouse.latency`, as given; [`Settings::latency`] applies the default.
    pub latency: Option<Latency>,
    /// `warehouse.load_timeout`: the deadline of one load.
    pub load_timeout: Duration,
}

/// The `[redis]` settings (the lease and the unverified limit apply to the embedded cache too).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis.url`: the shared cache; embedded when `None`.
    pub url: Option<RedisUrl>,
    /// `redis.ca`: a PEM certificate authority for `rediss://`.
    pub ca: Option<PathBuf>,
    /// `redis.timeout`: the longest wait for one Redis call.
    pub timeout: Duration,
    /// `redis.lease`: how long a load's lease lasts.
    pub lease: Duration,
    /// `redis.max_unverified`: how long without confirming the version truth before cached
    /// answers are served as stale.
    pub max_unverified: Duration,
    /// `redis.local_tier`: keep an in-process tier in front of Redis.
    pub local_tier: bool,
}

/// The `[log]` settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `log.level`: a checked filter (`info`, `freshcache=debug`); `info` when `None`.
    pub level: Option<String>,
    /// `log.dir`: where the daily files go; the default location when `None`.
    pub dir: Option<PathBuf>,
    /// `log.keep`: daily files kept (1 to 365).
    pub keep: u32,
}

impl Settings {
    /// Where the warehouse is: the given one, else the SQLite file in the data directory.
    pub fn warehouse_url(&self) -> WarehouseUrl {
        self.warehouse
            .url
            .clone()
            .unwrap_or_else(|| WarehouseUrl::Sqlite(self.data_dir.join("warehouse.sqlite")))
    }

    /// The simulated latency of each warehouse query: the given one, else none for PostgreSQL
    /// (it has latency of its own) and the baseline's 2-5 s for the embedded warehouse.
    pub fn latency(&self) -> Latency {
        match (&self.warehouse.latency, &self.warehouse.url) {
            (Some(l), _) => *l,
            (None, Some(WarehouseUrl::Postgres(_))) => Latency::NONE,
            (None, _) => Latency::BASELINE,
        }
    }
}
