//! The cache engine: a read-through cache over an expensive warehouse that is never stale after an
//! update and never stampedes the warehouse.
//!
//! # The promise
//! * A fresh answer is computed at the table versions current when the request began: the key
//!   carries those versions, so after [`Engine::bump`] the old entries are never found as fresh.
//! * At most one warehouse query per key (query, parameters, versions) is in flight in a process:
//!   concurrent misses join one load ([`flight`]); waiters are woken by notification, bounded by
//!   the policy's maximum wait.
//! * Before a fresh entry expires, XFetch may refresh it early (one refresh per key); after it
//!   expires, stale-while-revalidate serves it marked stale while one refresh runs.
//! * When the warehouse fails, is slow or panics, every waiter is answered: with the last good
//!   answer marked `Stale { age, reason }` if it is within the stale limit, otherwise with an error.
//!
//! # Example
//! ```
//! # use std::sync::Arc; use std::time::Duration;
//! # use freshcache::engine::Engine;
//! # use freshcache::model::{catalog::{Catalog, ParamSpec}, policy::Policy, versions::Tables};
//! # use freshcache::warehouse::MemoryWarehouse;
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! let mut catalog = Catalog::new(Tables::new(["sales"]).map_err(anyhow::Error::msg)?);
//! catalog.add("total_sales", "Total sales", "SELECT sum(amount) FROM sales", &["sales"], vec![],
//!             Policy::default())?;
//! let warehouse = Arc::new(MemoryWarehouse::new(1, Duration::from_millis(5)));
//! let engine = Engine::builder(Arc::new(catalog), warehouse).build()?;
//! let request = engine.request("total_sales", &[] as &[(&str, &str)])?;
//! let first = engine.get(&request).await?;   // a miss: one warehouse query
//! let again = engine.get(&request).await?;   // a fresh hit
//! assert!(again.freshness.is_fresh());
//! engine.bump(&["sales"], "20241102-10:00")?; // new data: the key changes, O(1)
//! let after = engine.get(&request).await?;   // computed at the new version
//! assert!(after.versions().versions()[0] > first.versions().versions()[0]);
//! # Ok(()) }
//! ```

pub mod answer;
pub mod audit;
mod builder;
pub mod flight;
mod get;
pub mod hot;
mod lease;
mod load;
mod recipes;
mod refresh;
pub mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::model::entry::{Entry, EntryKey, Stamp, TableKeys};
use crate::store::{MemoryStore, MemoryStoreConfig, PutOutcome};
use crate::warehouse::Warehouse;

use crate::model::catalog::{Catalog, CatalogError, Request};
use crate::model::clock::{Millis, SharedClock, SystemClock};
use crate::model::policy::{OnUpdate, Policy, Strategy};
use crate::model::versions::{TableId, UnknownTable, VersionCell, VersionVector};
pub use answer::{Answer, Freshness, Source, StaleReason};
pub use builder::{BuildError, EngineBuilder, LoadObserver};
use flight::{CatchUnwind, Flights, Joined, Lead, LoadError};
pub use get::Get;
pub use refresh::RefreshProgress;
use stats::{Counter, HIT_SAMPLE, Stats, StatsSnapshot};

/// Why a `get` produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The request itself is wrong (unknown query, missing parameter, ...).
    /// (Boxed: the error is rare and large, and every `get` moves its result by value.)
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    /// The warehouse failed and no answer within the stale limit is held.
    #[error(
        "`{query}` could not be answered: {error}; no earlier answer within the stale limit is held"
    )]
    Warehouse {
        /// The request.
        query: String,
        /// What the load reported.
        error: LoadError,
    },
    /// The warehouse did not answer within the maximum wait and no answer within the stale limit
    /// is held. The load goes on and fills the cache when it finishes.
    #[error(
        "`{query}` was not answered within {waited:?}; no earlier answer within the stale limit is held"
    )]
    Timeout {
        /// The request.
        query: String,
        /// How long the request waited.
        waited: Duration,
    },
}

impl From<CatalogError> for GetError {
    fn from(e: CatalogError) -> Self {
        GetError::Catalog(Box::new(e))
    }
}

pub(crate) struct Inner {
    catalog: Arc<Catalog>,
    versions: VersionCell,
    store: MemoryStore,
    flights: Arc<Flights>,
    warehouse: Arc<dyn Warehouse>,
    clock: SharedClock,
    system_clock: bool,
    stats: Stats,
    strategy: AtomicU8,
    runtime: Handle,
    hot: hot::HotKeys,
    refresh_permits: Arc<tokio::sync::Semaphore>,
    /// Tables whose bump is being prepared: one bit per table id, as many words as the catalog
    /// needs (it may hold up to 65 535 tables).
    updating: Box<[std::sync::atomic::AtomicU64]>,
    /// The shared second tier (Redis), if any.
    shared: Option<Arc<dyn crate::store::Store>>,
    /// Whether the in-process tier caches (off: every hit goes to the shared tier).
    local_tier: bool,
    /// How long a lease on the shared tier lasts (extended while the load runs).
    lease: Duration,
    /// The deadline of one warehouse load.
    load_timeout: Duration,
    /// Told of every warehouse load as it starts.
    on_load: Option<LoadObserver>,
    /// The baseline's lock recipe keeps its locks here (key -> expiry); only `Strategy::Lock` uses it.
    baseline_locks: parking_lot::Mutex<std::collections::HashMap<EntryKey, Millis>>,
    /// Until when (wall clock) the versions held count as confirmed by the truth; `u64::MAX`
    /// for an engine nobody verifies (a library user's, or an embedded truth in this process).
    /// Past it, answers from this process's tier are served as `Stale { VersionsUnverified }`.
    verified_until: std::sync::atomic::AtomicU64,
    /// A few fresh answers, sampled as they are served, for the consistency audit.
    audit: audit::Samples,
}

impl Inner {
    /// Whether the versions held count as confirmed by the truth (see
    /// [`Engine::confirm_versions`]); `now` is the engine clock's reading, reused as real time
    /// when the engine runs on the system clock.
    #[inline]
    fn versions_verified(&self, now: Millis) -> bool {
        let until = self.verified_until.load(Ordering::Relaxed);
        until == u64::MAX
            || (if self.system_clock {
                now
            } else {
                crate::model::clock::coarse_now_ms()
            }) < until
    }

    /// The engine clock; the system clock is read directly, without a virtual call.
    #[inline]
    fn now_ms(&self) -> Millis {
        if self.system_clock {
            crate::model::clock::coarse_now_ms()
        } else {
            self.clock.now_ms()
        }
    }
}

/// The cache engine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("strategy", &self.strategy())
            .field("warehouse", &self.inner.warehouse.describe())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine over a catalog and a warehouse.
    pub fn builder(catalog: Arc<Catalog>, warehouse: Arc<dyn Warehouse>) -> EngineBuilder {
        EngineBuilder {
            catalog,
            warehouse,
            clock: Arc::new(SystemClock),
            system_clock: true,
            store: MemoryStoreConfig::default(),
            strategy: Strategy::default(),
            refresh_concurrency: 8,
            shared: None,
            local_tier: true,
            lease: lease::LEASE,
            load_timeout: crate::warehouse::DEFAULT_LOAD_TIMEOUT,
            on_load: None,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Arc<dyn Warehouse> {
        &self.inner.warehouse
    }

    /// The in-process store.
    pub fn store(&self) -> &MemoryStore {
        &self.inner.store
    }

    /// Builds a checked request (see [`Catalog::request`]).
    pub fn request<K: AsRef<str>, V: AsRef<str>>(
        &self,
        query: &str,
        params: &[(K, V)],
    ) -> Result<Request, CatalogError> {
        self.inner.catalog.request(query, params)
    }

    /// The strategy in use.
    #[inline]
    pub fn strategy(&self) -> Strategy {
        Strategy::from_index(self.inner.strategy.load(Ordering::Relaxed))
    }

    /// Switches strategy at run time; requests already running finish under the old one.
    pub fn set_strategy(&self, strategy: Strategy) {
        self.inner
            .strategy
            .store(strategy.index(), Ordering::Relaxed);
    }

    /// The current version vector.
    pub fn versions(&self) -> Arc<VersionVector> {
        self.inner.versions.snapshot()
    }

    /// Bumps the versions of the named tables by one, atomically, as one new snapshot. O(1) in the
    /// number of cached entries.
    pub fn bump(&self, tables: &[&str], batch: &str) -> Result<Arc<VersionVector>, UnknownTable> {
        let ids = tables
            .iter()
            .map(|t| self.inner.catalog.tables().id(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.bump_ids(&ids, batch))
    }

    /// [`Engine::bump`] by table id.
    pub fn bump_ids(&self, tables: &[TableId], batch: &str) -> Arc<VersionVector> {
        self.inner.versions.bump(tables, batch, self.inner.now_ms())
    }

    /// Raises versions to at least those of `incoming` (a vector received from elsewhere);
    /// returns the tables that went up. Older or duplicate vectors change nothing.
    pub fn apply_versions(&self, incoming: &VersionVector) -> Vec<TableId> {
        self.inner.versions.merge(incoming)
    }

    /// Counters and latency percentiles since start.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.inner.stats.snapshot();
        s.evictions = self.inner.store.evictions();
        s
    }

    /// The user-latency and load-time histograms since start (see [`stats::Stats::histograms`]).
    pub fn latency_histograms(
        &self,
    ) -> (hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>) {
        self.inner.stats.histograms()
    }

    /// Live entries per table at the current and at older versions.
    pub fn table_keys(&self) -> Vec<TableKeys> {
        self.inner.store.table_keys(&self.inner.versions.load())
    }

    /// Loads in flight now.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.flights.in_flight()
    }

    /// Drops entries no rule can serve any more, at most `budget` of them; off the request path.
    pub fn purge_expired(&self, budget: usize) -> usize {
        self.inner.store.purge_expired(self.inner.now_ms(), budget)
    }

    #[inline]
    fn versions_verified(&self, now: Millis) -> bool {
        self.inner.versions_verified(now)
    }

    /// Records that the version truth, as read by a read that began at `read_began_ms` (wall
    /// clock), has been applied: the versions held count as confirmed until `max_unverified`
    /// after that read began — so however late the read or its application ran (a stalled
    /// process, a slow link), an update made after the read began is never hidden for longer.
    /// Call it only once the truth is applied. An engine never confirmed is never unverified (a
    /// library user's engine, with nobody to ask).
    pub fn confirm_versions(&self, read_began_ms: Millis, max_unverified: Duration) {
        let until = read_began_ms.saturating_add(crate::model::num::ms(max_unverified));
        let cell = &self.inner.verified_until;
        // Confirmations only move it forward (an older read finishing late confirms nothing
        // newer); the first one replaces "never verified by anyone".
        if cell
            .compare_exchange(u64::MAX, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            cell.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Marks the versions held as unverified from now on, until the next confirmation: an
    /// instance that starts without the truth.
    pub fn distrust_versions(&self) {
        self.inner
            .verified_until
            .store(crate::model::clock::coarse_now_ms(), Ordering::Relaxed);
    }

    /// Since when (wall clock, ms since the epoch) the versions held are unverified, if they are.
    pub fn unverified_since(&self) -> Option<Millis> {
        let until = self.inner.verified_until.load(Ordering::Relaxed);
        (until != u64::MAX && crate::model::clock::coarse_now_ms() >= until).then_some(until)
    }

    /// The fresh answers sampled since the last call (see [`audit`]).
    pub fn take_audit_samples(&self) -> Vec<audit::Sample> {
        self.inner.audit.take()
    }

    /// Why the engine runs degraded (its shared store unreachable), if it does.
    pub fn degraded(&self) -> Option<String> {
        self.inner.shared.as_ref().and_then(|s| s.degraded())
    }

    /// The shared store, if any.
    pub fn shared_store(&self) -> Option<&Arc<dyn crate::store::Store>> {
        self.inner.shared.as_ref()
    }
}

#[cfg(test)]
mod tests;
