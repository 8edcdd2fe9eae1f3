//! The table of settings: each one's key in the file, its flag and its environment variable.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Its key in the file (`redis.timeout`).
    pub key: &'static str,
    /// The clap argument id (the `GlobalArgs` field).
    pub(super) id: &'static str,
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
