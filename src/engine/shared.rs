//! Loading through the shared tier: one process in the fleet loads a key, the others wait.
//!
//! The leader of a flight in this process (there is one per key per process) first looks in the
//! shared store; on a miss it takes the key's lease (`SET NX PX` with a random token). The lease
//! holder loads from the warehouse, extends the lease while the load runs (compare-and-pexpire),
//! stores the entry, which notifies every other process, and releases the lease
//! (compare-and-delete). A process that does not get the lease waits for that notification — with a
//! bounded backoff as fallback — then reads the entry; if the holder died, its lease expires and
//! exactly one waiter takes it over. If the shared store fails, the caller loads directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::LoadError;
use super::stats::Counter;
use super::{Engine, Inner};
use crate::engine::catalog::Request;
use crate::store::{Entry, EntryKey, Stamp, Store};

/// How long a lease lasts before it must be extended (the holder extends it every third of it).
pub const LEASE: Duration = Duration::from_secs(10);
/// The longest a process waits on other processes' leases for one key before loading itself.
pub const GIVE_UP: Duration = Duration::from_secs(600);

/// What the shared tier gave.
pub(super) enum Outcome {
    /// An entry: found, loaded here under the lease, or stored by another process.
    Entry(Arc<Entry>),
    /// The load under the lease failed.
    Failed(LoadError),
    /// The shared tier cannot be used: load directly.
    Unavailable,
}

pub(super) async fn load(
    inner: &Inner,
    shared: &dyn Store,
    request: &Request,
    key: EntryKey,
    stamp: Stamp,
) -> Outcome {
    let fresh = |e: &Arc<Entry>| inner.now_ms() < e.fresh_until;
    match shared.get(request, &key).await {
        Ok(Some(e)) if fresh(&e) => {
            inner.stats.incr(Counter::SharedHits);
            return Outcome::Entry(e);
        }
        Ok(_) => {}
        Err(_) => return Outcome::Unavailable,
    }
    let token = fastrand::u64(1..);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    let mut waited = false;
    loop {
        match shared.lease(request, &key, token, LEASE).await {
            Ok(true) => return load_under_lease(inner, shared, request, key, stamp, token).await,
            Ok(false) => {
                if !waited {
                    inner.stats.incr(Counter::LeaseWaits);
                    waited = true;
                }
                // Woken by the holder's fill notification; the backoff only covers a lost one.
                shared.wait_fill(request, &key, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                match shared.get(request, &key).await {
                    Ok(Some(e)) if fresh(&e) => {
                        inner.stats.incr(Counter::SharedHits);
                        return Outcome::Entry(e);
                    }
                    Ok(_) => {}
                    Err(_) => return Outcome::Unavailable,
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
    shared: &dyn Store,
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
    let mut tick = tokio::time::interval(LEASE / 3);
    tick.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut load => break r,
            _ = tick.tick() => {
                let _ = shared.extend_lease(request, &key, token, LEASE).await;
            }
        }
    };
    if let Ok(entry) = &result {
        // A failure to store is not the user's problem: the answer is good.
        let _ = shared.put(request, key, entry.clone()).await;
    }
    let _ = shared.release_lease(request, &key, token).await;
    match result {
        Ok(e) => Outcome::Entry(e),
        Err(e) => Outcome::Failed(e),
    }
}
