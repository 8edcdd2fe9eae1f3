//! Loading through the shared tier: one process in the fleet loads a key, the others wait.
//!
//! The leader of a flight in this process (there is one per key per process) first looks in the
//! shared store; on a miss it takes the key's lease (`SET NX PX` with a random token), and then
//! looks once more: another process may have stored the entry and released its lease between the
//! first look and this lease. The lease holder loads from the warehouse, extends the lease while
//! the load runs (compare-and-pexpire), stores the entry, which notifies every other process, and
//! releases the lease (compare-and-delete). A process that does not get the lease waits for that
//! notification — with a bounded backoff as fallback — then reads the entry; if the holder died,
//! its lease expires and exactly one waiter takes it over.
//!
//! A holder that stalls past its lease (a long pause, a partition) may find the lease taken over
//! when its load ends. Its store is conditional on still holding the lease, so it never overwrites
//! the new holder's answer: the refusal is counted (`lease_lost`) and its answer goes to its own
//! waiters only. If the shared store fails, the caller loads directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::flight::LoadError;
use super::stats::Counter;
use super::{Engine, Inner};
use crate::model::catalog::Request;
use crate::model::entry::{Entry, EntryKey, Stamp};
use crate::store::{PutOutcome, Store};

/// How long a lease lasts by default before it must be extended (the holder extends it every
/// third of it); a dead holder's lease is taken over after at most this long.
pub const LEASE: Duration = Duration::from_secs(10);
/// The longest a process waits on other processes' leases for one key before loading itself.
pub const GIVE_UP: Duration = Duration::from_secs(600);

/// What the shared tier gave.
pub(super) enum Outcome {
    /// An entry found in the shared tier (stored before, or by another process meanwhile).
    Found(Arc<Entry>),
    /// An entry loaded here, under the lease.
    Loaded(Arc<Entry>),
    /// The load under the lease failed.
    Failed(LoadError),
    /// The shared tier cannot be used: load directly.
    Unavailable,
}

/// One look in the shared tier: a fresh entry (counted as a shared hit), the tier unusable, or
/// nothing to serve yet (`None`).
async fn look(
    inner: &Inner,
    shared: &Arc<dyn Store>,
    request: &Request,
    key: &EntryKey,
) -> Option<Outcome> {
    match shared.get(request, key).await {
        Ok(Some(e)) if inner.now_ms() < e.fresh_until => {
            inner.stats.incr(Counter::SharedHits);
            Some(Outcome::Found(e))
        }
        Ok(_) => None,
        Err(_) => Some(Outcome::Unavailable),
    }
}

pub(super) async fn load(
    inner: &Inner,
    shared: &Arc<dyn Store>,
    request: &Request,
    key: EntryKey,
    stamp: Stamp,
    probed: bool,
) -> Outcome {
    let fresh = |e: &Arc<Entry>| inner.now_ms() < e.fresh_until;
    // `probed`: the caller just looked and found nothing fresh.
    if !probed && let Some(outcome) = look(inner, shared, request, &key).await {
        return outcome;
    }
    let token = fastrand::u64(1..);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    let mut waited = false;
    loop {
        match shared.lease(request, &key, token, inner.lease).await {
            Ok(true) => {
                // Someone may have stored it between the look above and this lease.
                if let Ok(Some(e)) = shared.get(request, &key).await
                    && fresh(&e)
                {
                    if let Err(error) = shared.release_lease(request, &key, token).await {
                        // Harmless: the lease expires by itself; until then others wait on it
                        // and then find the entry.
                        tracing::debug!(%error, "could not release an unused lease");
                    }
                    inner.stats.incr(Counter::SharedHits);
                    return Outcome::Found(e);
                }
                return load_under_lease(inner, shared, request, key, stamp, token).await;
            }
            Ok(false) => {
                if !waited {
                    inner.stats.incr(Counter::LeaseWaits);
                    waited = true;
                }
                // Woken by the holder's fill notification; the backoff only covers a lost one.
                shared.wait_fill(request, &key, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                if let Some(outcome) = look(inner, shared, request, &key).await {
                    return outcome;
                }
                if started.elapsed() > GIVE_UP {
                    return Outcome::Unavailable;
                }
            }
            Err(_) => return Outcome::Unavailable,
        }
    }
}

async fn load_under_lease(
    inner: &Inner,
    shared: &Arc<dyn Store>,
    request: &Request,
    key: EntryKey,
    stamp: Stamp,
    token: u64,
) -> Outcome {
    let policy = &request.query().policy;
    let load = Engine::load(inner, request, stamp, policy);
    tokio::pin!(load);
    // Extend the lease every third of it while the warehouse works; a holder that dies stops
    // extending, and its lease expires for a waiter to take over.
    let lease = inner.lease;
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    // Set once an extension finds the lease held by another token: extending stops (the store at
    // the end is refused anyway).
    let lost = Arc::new(AtomicBool::new(false));
    let result = loop {
        tokio::select! {
            r = &mut load => break r,
            _ = tick.tick(), if !lost.load(Ordering::Relaxed) => {
                // In its own task: a Redis that hangs must not hold up the load's progress.
                let (shared, request, key, lost) = (shared.clone(), request.clone(), key, lost.clone());
                inner.runtime.spawn(async move {
                    match shared.extend_lease(&request, &key, token, lease).await {
                        Ok(true) => {}
                        Ok(false) => lost.store(true, Ordering::Relaxed),
                        // Unreachable for a moment: the next tick tries again, and the store at
                        // the end decides.
                        Err(error) => tracing::debug!(%error, "could not extend a lease"),
                    }
                });
            }
        }
    };
    // Store (which wakes the other processes) and release in one call: a Redis that hangs
    // costs this load one timeout. A failure to store is not the user's problem: the answer is
    // good, and the lease expires by itself.
    match shared
        .put_and_release(request, key, result.clone().ok(), token)
        .await
    {
        Ok(PutOutcome::LeaseLost) => {
            inner.stats.incr(Counter::LeaseLost);
            tracing::info!(
                query = %request,
                "lease taken over during the load: the new holder's answer stays in the shared store"
            );
        }
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%error, "could not store a loaded answer in the shared store")
        }
    }
    match result {
        Ok(e) => Outcome::Loaded(e),
        Err(e) => Outcome::Failed(e),
    }
}
