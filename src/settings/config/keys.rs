//! The table of settings: each one's key in the file, the clap argument that sets it on the
//! command line, its environment variable and the kind of value it holds. The flag's name, help
//! and default live on [`GlobalArgs`](crate::settings::GlobalArgs); the typed value in
//! [`Settings`](crate::settings::Settings).

/// What a setting holds, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (durations, URLs, paths, names).
    Text,
    /// A boolean, set on the command line by a flag of the same sense.
    Bool,
    /// A boolean whose flag and variable say the opposite (`--no-local-tier` for `local_tier`).
    NotFlag,
    /// A whole number.
    Int,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Its key in the file (`redis.timeout`).
    pub key: &'static str,
    /// The clap argument id (the `GlobalArgs` field).
    pub id: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// What it is.
    pub help: &'static str,
}

impl Key {
    /// Its flag (`--redis-timeout`).
    pub fn flag(&self) -> String {
        format!("--{}", self.id.replace('_', "-"))
    }
}

const fn key(
    key: &'static str,
    id: &'static str,
    env: &'static str,
    kind: Kind,
    help: &'static str,
) -> Key {
    Key {
        key,
        id,
        env,
        kind,
        help,
    }
}

/// Every setting, in the order `config check` shows them.
pub const KEYS: &[Key] = &[
    key(
        "environment",
        "env",
        "FRESHCACHE_ENV",
        Kind::Text,
        "production, staging or development",
    ),
    key(
        "read_only",
        "read_only",
        "FRESHCACHE_READ_ONLY",
        Kind::Bool,
        "refuse every action that changes anything",
    ),
    key(
        "strategy",
        "strategy",
        "FRESHCACHE_STRATEGY",
        Kind::Text,
        "ttl, lock, swr, early, versioned or freshcache",
    ),
    key(
        "data_dir",
        "data_dir",
        "FRESHCACHE_DATA_DIR",
        Kind::Text,
        "directory of the embedded warehouse and state",
    ),
    key(
        "hour",
        "hour",
        "FRESHCACHE_HOUR",
        Kind::Text,
        "real time one clock hour lasts (accelerated schedule)",
    ),
    key(
        "warehouse.url",
        "warehouse",
        "FRESHCACHE_WAREHOUSE",
        Kind::Text,
        "SQLite file or postgres:// URL",
    ),
    key(
        "warehouse.latency",
        "latency",
        "FRESHCACHE_LATENCY",
        Kind::Text,
        "simulated latency per query: DURATION or MIN-MAX",
    ),
    key(
        "warehouse.load_timeout",
        "load_timeout",
        "FRESHCACHE_LOAD_TIMEOUT",
        Kind::Text,
        "deadline of one warehouse load; then it is cancelled at the server",
    ),
    key(
        "redis.url",
        "redis",
        "FRESHCACHE_REDIS",
        Kind::Text,
        "redis:// or rediss:// URL; embedded when absent",
    ),
    key(
        "redis.ca",
        "redis_ca",
        "FRESHCACHE_REDIS_CA",
        Kind::Text,
        "PEM certificate authority for rediss://",
    ),
    key(
        "redis.timeout",
        "redis_timeout",
        "FRESHCACHE_REDIS_TIMEOUT",
        Kind::Text,
        "longest wait for one Redis call",
    ),
    key(
        "redis.lease",
        "lease",
        "FRESHCACHE_LEASE",
        Kind::Text,
        "how long a load's lease lasts",
    ),
    key(
        "redis.max_unverified",
        "max_unverified",
        "FRESHCACHE_MAX_UNVERIFIED",
        Kind::Text,
        "how long without confirming the version truth before cached answers are served as stale",
    ),
    key(
        "redis.local_tier",
        "no_local_tier",
        "FRESHCACHE_NO_LOCAL_TIER",
        Kind::NotFlag,
        "keep an in-process tier in front of Redis",
    ),
    key(
        "log.level",
        "log_level",
        "FRESHCACHE_LOG_LEVEL",
        Kind::Text,
        "trace, debug, info, warn, error, off or a filter (RUST_LOG wins)",
    ),
    key(
        "log.dir",
        "log_dir",
        "FRESHCACHE_LOG_DIR",
        Kind::Text,
        "directory of the daily log files",
    ),
    key(
        "log.keep",
        "log_keep",
        "FRESHCACHE_LOG_KEEP",
        Kind::Int,
        "daily log files kept",
    ),
    key(
        "metrics.addr",
        "metrics_addr",
        "FRESHCACHE_METRICS_ADDR",
        Kind::Text,
        "serve Prometheus metrics at http://ADDR/metrics",
    ),
];
