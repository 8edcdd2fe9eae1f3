//! Single-flight: at most one load per key in flight in this process.
//!
//! [`Flights`] is the one place that owns the in-flight map. The first caller for a key becomes the
//! leader and gets a [`Lead`]; later callers get the [`Flight`] and wait on it. Waiters are woken by
//! a `Notify` when the result is set — nobody sleeps in a poll loop. A `Lead` that is dropped without
//! completing (its task panicked or was cancelled) completes the flight with an error on the way
//! out, so no waiter can hang on a dead leader.
//!
//! Ordering that makes "exactly one load per key" hold: a leader stores its entry *before* it
//! removes the flight from the map, and a caller that finds no flight re-checks the store while
//! holding the map's lock (see [`Flights::join`]). A caller that missed the store just before the
//! entry landed therefore either finds the flight or finds the entry, never neither.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::Notify;

use crate::model::entry::{Entry, EntryKey};

const SHARDS: usize = 32;

/// Why a load produced no entry. Cloned to every waiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The warehouse failed (it answered with an error, or is unreachable).
    #[error("{0}")]
    Warehouse(crate::warehouse::WarehouseError),
    /// The loader panicked.
    #[error("the loader panicked: {0}")]
    Panicked(String),
    /// The loader was cancelled before it finished (runtime shutting down).
    #[error("the load was cancelled before it finished")]
    Aborted,
    /// The warehouse did not answer within the load timeout (`--load-timeout`); the query was
    /// cancelled (the warehouse's future dropped, which cancels it at the server).
    #[error("the warehouse load exceeded its deadline of {0:?} and was cancelled")]
    Deadline(std::time::Duration),
}

/// One load in flight.
#[derive(Debug)]
pub struct Flight {
    result: OnceLock<Result<Arc<Entry>, LoadError>>,
    notify: Notify,
    waiters: AtomicU32,
    found_shared: AtomicBool,
}

impl Flight {
    fn new() -> Self {
        Self {
            result: OnceLock::new(),
            notify: Notify::new(),
            waiters: AtomicU32::new(0),
            found_shared: AtomicBool::new(false),
        }
    }

    /// Waits for the load's result, woken by notification.
    pub async fn wait(&self) -> Result<Arc<Entry>, LoadError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a completion between the check and the await is not lost.
            notified.as_mut().enable();
            if let Some(r) = self.result.get() {
                return r.clone();
            }
            notified.await;
        }
    }

    /// Whether the result was found in the shared tier (loaded by another process, or before)
    /// rather than loaded by this flight.
    pub fn found_shared(&self) -> bool {
        self.found_shared.load(Ordering::Acquire)
    }

    /// Callers waiting on this flight besides the leader.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}

/// What [`Flights::join`] found.
pub enum Joined {
    /// No load was in flight and the store had no usable entry: this caller leads the load.
    Leader(Lead),
    /// Another caller's load is in flight: wait on it.
    Follower(Arc<Flight>),
    /// The entry landed between the caller's miss and the join.
    Ready(Arc<Entry>),
}

/// The right, and the duty, to complete one flight.
pub struct Lead {
    flights: Arc<Flights>,
    key: EntryKey,
    flight: Arc<Flight>,
    done: bool,
}

impl Lead {
    /// The flight this lead completes (the leader waits on it like everyone else).
    pub fn flight(&self) -> Arc<Flight> {
        self.flight.clone()
    }

    /// Says that the result about to be published was found in the shared tier, not loaded here.
    pub fn mark_found_shared(&self) {
        self.flight.found_shared.store(true, Ordering::Release);
    }

    /// Publishes the result to every waiter and removes the flight; returns how many waited.
    pub fn complete(mut self, result: Result<Arc<Entry>, LoadError>) -> u32 {
        self.finish(result)
    }

    fn finish(&mut self, result: Result<Arc<Entry>, LoadError>) -> u32 {
        self.done = true;
        // Set once: a flight is finished by its leader only (`done` guards a second call).
        let _ = self.flight.result.set(result);
        {
            let mut map = self.flights.shard(&self.key);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.notify.notify_waiters();
        self.flight.waiters()
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.done {
            let err = if std::thread::panicking() {
                LoadError::Panicked("the loader panicked".into())
            } else {
                LoadError::Aborted
            };
            self.finish(Err(err));
        }
    }
}

type FlightMap = HashMap<EntryKey, Arc<Flight>>;

/// The in-flight map, sharded by key.
pub struct Flights {
    shards: Box<[Mutex<FlightMap>]>,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Flights {
    fn shard(&self, key: &EntryKey) -> MutexGuard<'_, FlightMap> {
        // No code panics while holding this lock, so a poisoned lock is consistent; take it over.
        self.shards[usize::try_from((key.fingerprint >> 64) % SHARDS as u128).unwrap_or(0)].lock()
    }

    /// Joins the flight for `key`, or leads a new one. `recheck` is called under the map's lock
    /// when no flight exists; an entry it returns is handed back as [`Joined::Ready`].
    pub fn join(
        self: &Arc<Self>,
        key: EntryKey,
        recheck: impl FnOnce() -> Option<Arc<Entry>>,
    ) -> Joined {
        let mut map = self.shard(&key);
        if let Some(f) = map.get(&key) {
            f.waiters.fetch_add(1, Ordering::Relaxed);
            return Joined::Follower(f.clone());
        }
        if let Some(e) = recheck() {
            return Joined::Ready(e);
        }
        let flight = Arc::new(Flight::new());
        map.insert(key, flight.clone());
        Joined::Leader(Lead {
            flights: self.clone(),
            key,
            flight,
            done: false,
        })
    }

    /// Leads a new flight for `key` only if none is in flight (background refreshes).
    pub fn try_lead(self: &Arc<Self>, key: EntryKey) -> Option<Lead> {
        let mut map = self.shard(&key);
        if map.contains_key(&key) {
            return None;
        }
        let flight = Arc::new(Flight::new());
        map.insert(key, flight.clone());
        Some(Lead {
            flights: self.clone(),
            key,
            flight,
            done: false,
        })
    }

    /// Loads in flight now.
    pub fn in_flight(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Runs a future, turning a panic inside it into `Err(message)` instead of unwinding the task.
pub struct CatchUnwind<F>(pub Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::Stamp;

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            value: Arc::from("1"),
            versions: Stamp::default(),
            created_ms: 1,
            load_ms: 1,
            fresh_until: 2,
            keep_until: 3,
        })
    }

    #[tokio::test]
    async fn followers_get_the_leaders_result() {
        let flights = Arc::new(Flights::default());
        let key = EntryKey::new(42, [0; 4]);
        let Joined::Leader(lead) = flights.join(key, || None) else {
            panic!("first caller must lead")
        };
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let Joined::Follower(f) = flights.join(key, || None) else {
                panic!("later callers must follow")
            };
            waiters.push(tokio::spawn(async move { f.wait().await }));
        }
        tokio::task::yield_now().await;
        assert_eq!(lead.complete(Ok(entry())), 10);
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap().value.as_ref(), "1");
        }
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_lead_releases_its_waiters() {
        let flights = Arc::new(Flights::default());
        let key = EntryKey::new(7, [1; 4]);
        let Joined::Leader(lead) = flights.join(key, || None) else {
            panic!()
        };
        let flight = lead.flight();
        drop(lead);
        assert_eq!(flight.wait().await.unwrap_err(), LoadError::Aborted);
        assert!(flights.try_lead(key).is_some(), "the key can be led again");
    }

    #[tokio::test]
    async fn recheck_under_the_lock_finds_a_landed_entry() {
        let flights = Arc::new(Flights::default());
        let key = EntryKey::new(9, [0; 4]);
        assert!(matches!(
            flights.join(key, || Some(entry())),
            Joined::Ready(_)
        ));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn catch_unwind_reports_the_message() {
        let r = CatchUnwind(Box::pin(async { panic!("boom") })).await;
        let r: Result<(), String> = r;
        assert_eq!(r.unwrap_err(), "boom");
    }
}
