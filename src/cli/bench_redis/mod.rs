//! Benchmark scenarios on Redis, one per file, and the Redis they share.
//!
//! * `bench stampede --redis URL --processes 4`: N real `freshcache` processes (API servers) sharing
//!   one Redis each release their requesters at the same instant on the same cold keys, then again
//!   right after a version bump. Every process has its own in-memory warehouse, so the sum of their
//!   queries per key is the number of warehouse queries the fleet made for it.
//! * `bench redis-hits --redis URL`: engine hits through Redis with the in-process tier off and on,
//!   beside `redis-benchmark -t get -c 50` against the same server in the same run.
//! * `bench redis-invalidation --redis URL --keys N`: with N entries cached, how long a bump takes
//!   and the worst GET latency another client sees during the bump and during the purge of the old
//!   version, next to the baseline's `KEYS` + `DEL` on the same data.

mod hits;
mod invalidation;
mod stampede;

use std::sync::Arc;
use std::time::Duration;

use crate::exit::{CliError, EXIT_BAD_INPUT};
use crate::redis::RedisLink;
use crate::settings::Settings;

pub use hits::{HitsReport, hits};
pub use invalidation::{InvalidationReport, Probe, invalidation};
pub use stampede::{WorkerArgs, WorkerReport, stampede, worker};

fn redis_url(settings: &Settings) -> Result<String, CliError> {
    settings
        .redis
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .ok_or_else(|| CliError::new(EXIT_BAD_INPUT, "this benchmark needs --redis URL"))
}

fn open(url: &str) -> anyhow::Result<Arc<RedisLink>> {
    let link = RedisLink::open(url, Duration::from_secs(1), Duration::from_secs(2))?;
    Ok(Arc::new(link))
}
