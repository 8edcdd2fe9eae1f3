//! The baseline recipes, reproduced faithfully — flaws included — so that benchmarks and the demo can
//! show each one next to `freshcache` on the same store, warehouse and traffic.
//!
//! | strategy    | baseline recipe                         | flaw kept                                        |
//! |-------------|-------------------------------------|--------------------------------------------------|
//! | `ttl`       | strategy 1, TTL to the next hour    | every miss queries; 0 s TTL in the last second   |
//! | `lock`      | stampede solution 2                 | 100 ms polling; after 5 s everyone queries anyway; no invalidation |
//! | `swr`       | stampede solution 3                 | one refresh per reader; old data for up to 2 h   |
//! | `early`     | stampede solution 1                 | one refresh per reader; old data until TTL       |
//! | `versioned` | strategy 4 (+ strategy 2's events)  | every miss queries; minute-resolution version    |
//!
//! The recipes label what they serve `Fresh`, as the baseline presents it; the versions an answer was
//! computed at are still recorded, which is how the benchmarks count old data served as fresh.
//! Keys are salted per strategy, as the baseline's `sales:{hash}` keys are a namespace of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::{CatchUnwind, LoadError};
use super::stats::Counter;
use super::{Answer, Engine, Freshness, GetError, Inner, Source};
use crate::model::catalog::Request;
use crate::model::entry::{Entry, EntryKey, Stamp};
use crate::model::policy::Strategy;

const HOUR_MS: u64 = 3_600_000;

/// Baseline lock recipe: `SET lock NX EX 10`, then 50 polls 100 ms apart.
const LOCK_TTL_MS: u64 = 10_000;
const LOCK_POLLS: u32 = 50;
const LOCK_POLL_EVERY: Duration = Duration::from_millis(100);

fn salted(fingerprint: u128, strategy: Strategy) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(&fingerprint.to_le_bytes(), strategy.index() as u64 + 1)
}

pub(super) async fn get(
    engine: &Engine,
    request: &Request,
    strategy: Strategy,
) -> Result<Answer, GetError> {
    let inner = &*engine.inner;
    let started = Instant::now();
    let versions = inner.versions.snapshot();
    let mut key_versions = [0; 4];
    if strategy == Strategy::Versioned {
        key_versions[0] = versions.baseline_label_hash;
    }
    let key = EntryKey::new(salted(request.fingerprint(), strategy), key_versions);
    let now = inner.clock.now_ms();

    if let Some(entry) = inner.store.get(&key) {
        let age = now.saturating_sub(entry.created_ms);
        let serve = match strategy {
            Strategy::Swr => {
                if age < 2 * HOUR_MS {
                    if age > HOUR_MS {
                        // `Thread(target=refresh_cache_async).start()` on every such read.
                        spawn_refresh(engine, request, key, strategy, Counter::SwrRefreshes);
                    }
                    true
                } else {
                    false
                }
            }
            Strategy::Early => {
                if now < entry.fresh_until {
                    // `redis.ttl(key)` in whole seconds; probability 1 - ttl / 3600.
                    let ttl_left = (entry.fresh_until - now) / 1000;
                    let p = 1.0 - ttl_left as f64 / 3600.0;
                    if fastrand::f64() < p {
                        spawn_refresh(engine, request, key, strategy, Counter::EarlyRefreshes);
                    }
                    true
                } else {
                    false
                }
            }
            _ => now < entry.fresh_until,
        };
        if serve {
            inner.stats.incr(Counter::FreshHits);
            inner.stats.record_user(started.elapsed(), 1);
            return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
        }
    }

    inner.stats.incr(Counter::Requests);
    inner.stats.incr(Counter::Misses);
    let (result, source) = if strategy == Strategy::Lock {
        lock_recipe(inner, request, key, strategy).await
    } else {
        (
            load(inner, request, key, strategy, true).await,
            Source::Warehouse,
        )
    };
    inner.stats.record_user(started.elapsed(), 1);
    match result {
        Ok(entry) => Ok(Answer::new(entry, Freshness::Fresh, source)),
        Err(error) => {
            inner.stats.incr(Counter::Errors);
            Err(GetError::Warehouse {
                query: request.to_string(),
                error,
            })
        }
    }
}

async fn lock_recipe(
    inner: &Inner,
    request: &Request,
    key: EntryKey,
    strategy: Strategy,
) -> (Result<Arc<Entry>, LoadError>, Source) {
    let acquired = {
        let now = inner.clock.now_ms();
        let mut locks = inner.baseline_locks.lock();
        match locks.get(&key) {
            Some(&expires) if expires > now => false,
            _ => {
                locks.insert(key, now + LOCK_TTL_MS);
                true
            }
        }
    };
    if acquired {
        let result = load(inner, request, key, strategy, true).await;
        // `redis_client.delete(lock_key)`: no check that the lock is still ours.
        inner.baseline_locks.lock().remove(&key);
        return (result, Source::Warehouse);
    }
    for _ in 0..LOCK_POLLS {
        tokio::time::sleep(LOCK_POLL_EVERY).await;
        let now = inner.clock.now_ms();
        if let Some(entry) = inner.store.get(&key).filter(|e| now < e.fresh_until) {
            inner.stats.incr(Counter::Coalesced);
            return (Ok(entry), Source::Coalesced);
        }
    }
    // "Timeout - fallback to querying anyway", and the result is not cached.
    (
        load(inner, request, key, strategy, false).await,
        Source::Warehouse,
    )
}

fn spawn_refresh(
    engine: &Engine,
    request: &Request,
    key: EntryKey,
    strategy: Strategy,
    why: Counter,
) {
    engine.inner.stats.incr(why);
    let inner = engine.inner.clone();
    let request = request.clone();
    engine.inner.runtime.spawn(async move {
        // A background refresh of a baseline recipe: a failure is counted by `load` and the
        // next reader tries again, as the original recipe does.
        let _ = load(&inner, &request, key, strategy, true).await;
    });
}

/// One uncoalesced warehouse query, cached (when `cache`) with the recipe's TTL.
async fn load(
    inner: &Inner,
    request: &Request,
    key: EntryKey,
    strategy: Strategy,
    cache: bool,
) -> Result<Arc<Entry>, LoadError> {
    inner.stats.incr(Counter::Loads);
    let stamp = Stamp::of(&request.query().tables, &inner.versions.load());
    let began = Instant::now();
    let result = CatchUnwind(Box::pin(inner.warehouse.run(request))).await;
    inner.stats.record_load(began.elapsed());
    let rows = match result {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            inner.stats.incr(Counter::LoadErrors);
            return Err(LoadError::Warehouse(e));
        }
        Err(panic) => {
            inner.stats.incr(Counter::LoadErrors);
            return Err(LoadError::Panicked(panic));
        }
    };
    let now = inner.clock.now_ms();
    let ttl = strategy.baseline_ttl_ms(now);
    let fresh_until = now + ttl.unwrap_or(0);
    let entry = Arc::new(Entry {
        value: Arc::from(rows.to_json()),
        versions: stamp,
        created_ms: now,
        load_ms: crate::model::num::ms(began.elapsed()),
        fresh_until,
        keep_until: fresh_until,
    });
    if cache && ttl.is_some() {
        inner.store.put(key, entry.clone(), now);
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_recipe_caches_for_zero_seconds_in_the_last_second() {
        let last_second = 10 * HOUR_MS - 400;
        assert_eq!(Strategy::Ttl.baseline_ttl_ms(last_second), None);
        assert_eq!(
            Strategy::Ttl.baseline_ttl_ms(10 * HOUR_MS - 1_500),
            Some(1_000)
        );
        assert_eq!(
            Strategy::Ttl.baseline_ttl_ms(9 * HOUR_MS + 5 * 60_000),
            Some(55 * 60_000)
        );
    }

    #[test]
    fn salts_separate_strategies() {
        let a = salted(1, Strategy::Ttl);
        let b = salted(1, Strategy::Lock);
        assert_ne!(a, b);
        assert_eq!(a, salted(1, Strategy::Ttl));
    }
}
