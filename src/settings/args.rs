//! The options every command shares (`--env`, `--warehouse`, `--redis`, ...), as the command line
//! declares them: flags, with their `FRESHCACHE_*` environment variables; [`super::config`] fills
//! in what the configuration file says where neither set a value. The data directory's default
//! lives here too, beside the option.

use std::path::PathBuf;

use clap::Args;

use crate::model::environment::Environment;
use crate::model::policy::Strategy;

/// Options every command shares: their flags, help, variables and defaults. What they become
/// is [`Settings`](super::Settings); a subcommand's help shows them under their own heading, after
/// its own options, and only those it reads.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Environment: production, staging or development. Production refuses simulations.
    /// [env: FRESHCACHE_ENV]
    #[arg(long, global = true, default_value = "development")]
    pub env: Environment,
    /// Warehouse: a SQLite file (embedded; default DATA_DIR/warehouse.sqlite) or
    /// postgres://user[:password]@host[:port]/database.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_WAREHOUSE",
        value_name = "PATH|URL"
    )]
    pub warehouse: Option<String>,
    /// Directory of the embedded warehouse and state (default: the XDG data directory).
    #[arg(long, global = true, env = "FRESHCACHE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Simulated warehouse latency, e.g. 2s-5s (the embedded default), 300ms, 0s.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_LATENCY",
        value_name = "DURATION[-DURATION]"
    )]
    pub latency: Option<String>,
    /// Deadline of one warehouse load: then the query is cancelled at the server and its waiters
    /// get an earlier answer marked stale (within the stale limit) or a clear error.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_LOAD_TIMEOUT",
        default_value = "20s",
        value_name = "DURATION"
    )]
    pub load_timeout: String,
    /// Share the cache through Redis: redis://[user:password@]host[:port][/db] (or rediss://).
    /// Embedded (no server) when omitted.
    #[arg(long, global = true, env = "FRESHCACHE_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// With a rediss:// URL, a PEM file of the certificate authority to trust (instead of the
    /// system's).
    #[arg(long, global = true, env = "FRESHCACHE_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<std::path::PathBuf>,
    /// Longest wait for one Redis call before the cache falls back to the warehouse.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_REDIS_TIMEOUT",
        default_value = "300ms",
        value_name = "DURATION"
    )]
    pub redis_timeout: String,
    /// With --redis, keep no in-process tier in front of it (every hit goes to Redis).
    /// [env: FRESHCACHE_NO_LOCAL_TIER]
    #[arg(long, global = true)]
    pub no_local_tier: bool,
    /// With --redis, how long a load's lease lasts (extended while it runs); a dead holder's
    /// lease is taken over after at most this long.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_LEASE",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub lease: String,
    /// How long an instance may go without confirming the version truth (Redis partitioned,
    /// frozen) before its in-process answers are served as stale and it reports itself
    /// UNVERIFIED.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_MAX_UNVERIFIED",
        default_value = "2s",
        value_name = "DURATION"
    )]
    pub max_unverified: String,
    /// Refuse every action that changes anything (enforced below the UI).
    /// [env: FRESHCACHE_READ_ONLY]
    #[arg(long, global = true)]
    pub read_only: bool,
    /// How long one clock hour lasts in real time, to accelerate the schedule, e.g. 60s.
    #[arg(long, global = true, env = "FRESHCACHE_HOUR", value_name = "DURATION")]
    pub hour: Option<String>,
    /// Strategy: ttl, lock, swr, early, versioned or freshcache (the default).
    /// [env: FRESHCACHE_STRATEGY]
    #[arg(long, global = true, value_name = "S")]
    pub strategy: Option<Strategy>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Configuration file (default: $XDG_CONFIG_HOME/freshcache/config.toml if present).
    #[arg(long, global = true, env = "FRESHCACHE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level or filter: trace, debug, info, warn, error, off, or e.g. freshcache=debug
    /// (RUST_LOG, when set, wins).
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_LOG_LEVEL",
        value_name = "FILTER"
    )]
    pub log_level: Option<String>,
    /// Directory of the daily log files (default: $XDG_STATE_HOME/freshcache/logs).
    #[arg(long, global = true, env = "FRESHCACHE_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Daily log files kept. [env: FRESHCACHE_LOG_KEEP]
    #[arg(
        long,
        global = true,
        default_value_t = 7,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=365)
    )]
    pub log_keep: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (demo, console, traffic), e.g.
    /// 127.0.0.1:9464.
    #[arg(
        long,
        global = true,
        env = "FRESHCACHE_METRICS_ADDR",
        value_name = "ADDR"
    )]
    pub metrics_addr: Option<String>,
}

/// The default data directory: `$XDG_DATA_HOME/freshcache`, else `~/.local/share/freshcache`,
/// else `./.freshcache`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("freshcache");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/freshcache");
    }
    PathBuf::from(".freshcache")
}
