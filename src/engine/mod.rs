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
pub mod flight;
pub mod hot;
mod lease;
mod recipes;
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
use flight::{CatchUnwind, Flights, Joined, Lead, LoadError};
use stats::{Counter, HIT_SAMPLE, Stats, StatsSnapshot};

/// Why a `get` produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The request itself is wrong (unknown query, missing parameter, ...).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
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

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `build` was called outside a tokio runtime.
    #[error("the engine must be built inside a tokio runtime (it spawns its loads there)")]
    NoRuntime,
}

type SlowGet<'a> = Pin<Box<dyn Future<Output = Result<Answer, GetError>> + Send + 'a>>;

/// The future [`Engine::get`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct Get<'a> {
    engine: &'a Engine,
    request: &'a Request,
    slow: Option<SlowGet<'a>>,
}

impl Future for Get<'_> {
    type Output = Result<Answer, GetError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.slow.is_none() {
            match self.engine.start(self.request) {
                Ok(done) => return Poll::Ready(done),
                Err(slow) => self.slow = Some(slow),
            }
        }
        match self.slow.as_mut() {
            Some(slow) => slow.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// How far a [`Engine::refresh_ahead`] has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshProgress {
    /// Requests scheduled.
    pub total: u32,
    /// Reloaded.
    pub done: u32,
    /// Failed to reload.
    pub failed: u32,
    /// Already fresh or already loading.
    pub skipped: u32,
}

impl RefreshProgress {
    /// Whether every request is accounted for.
    pub fn finished(&self) -> bool {
        self.done + self.failed + self.skipped >= self.total
    }
}

/// What the synchronous part of a `get` found.
enum Lookup {
    Answered(Answer),
    Miss {
        fallback: Option<Arc<Entry>>,
        started: Instant,
    },
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    catalog: Arc<Catalog>,
    warehouse: Arc<dyn Warehouse>,
    clock: SharedClock,
    system_clock: bool,
    store: MemoryStoreConfig,
    strategy: Strategy,
    refresh_concurrency: usize,
    shared: Option<Arc<dyn crate::store::Store>>,
    local_tier: bool,
    lease: Duration,
    load_timeout: Duration,
    on_load: Option<LoadObserver>,
}

/// Called as each warehouse load starts, with the request and the versions it loads at (for
/// checkers that count loads per version, e.g. `bench chaos`). Must be quick and not block.
pub type LoadObserver = Arc<dyn Fn(&Request, &Stamp) + Send + Sync>;

impl EngineBuilder {
    /// Observes every warehouse load as it starts (see [`LoadObserver`]).
    pub fn on_load(mut self, observer: LoadObserver) -> Self {
        self.on_load = Some(observer);
        self
    }

    /// The clock freshness decisions use (the system clock by default).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self.system_clock = false;
        self
    }

    /// Bounds of the in-process store.
    pub fn store(mut self, config: MemoryStoreConfig) -> Self {
        self.store = config;
        self
    }

    /// Most warehouse queries refresh-ahead and warm run at once (8 by default).
    pub fn refresh_concurrency(mut self, n: usize) -> Self {
        self.refresh_concurrency = n;
        self
    }

    /// A shared second tier (Redis) behind the in-process one: loads go through its leases, so
    /// one process in the fleet loads a key while the others wait for it.
    pub fn shared(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.shared = Some(store);
        self
    }

    /// Whether the in-process tier caches answers (on by default). Off, every request goes to the
    /// shared tier (still coalesced in the process).
    pub fn local_tier(mut self, on: bool) -> Self {
        self.local_tier = on;
        self
    }

    /// How long a lease on the shared tier lasts (10 s by default); a dead holder's lease is
    /// taken over after at most this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// The deadline of every warehouse load (20 s by default, see
    /// [`crate::warehouse::DEFAULT_LOAD_TIMEOUT`]): at it the load is cancelled, its waiters get
    /// stale-if-error or [`LoadError::Deadline`], and its flight and lease are released.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The strategy to start with (`freshcache` by default).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Builds the engine on the current tokio runtime.
    pub fn build(self) -> Result<Engine, BuildError> {
        let runtime = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let tables = self.catalog.tables().len();
        Ok(Engine {
            inner: Arc::new(Inner {
                versions: VersionCell::new(tables),
                store: MemoryStore::new(self.store),
                flights: Arc::new(Flights::default()),
                stats: Stats::new(),
                strategy: AtomicU8::new(self.strategy.index()),
                seed_locks: std::sync::Mutex::new(std::collections::HashMap::new()),
                verified_until: std::sync::atomic::AtomicU64::new(u64::MAX),
                audit: audit::Samples::default(),
                hot: hot::HotKeys::default(),
                updating: (0..tables.div_ceil(64).max(1))
                    .map(|_| std::sync::atomic::AtomicU64::new(0))
                    .collect(),
                shared: self.shared,
                local_tier: self.local_tier,
                lease: self.lease,
                load_timeout: self.load_timeout,
                on_load: self.on_load,
                refresh_permits: Arc::new(tokio::sync::Semaphore::new(
                    self.refresh_concurrency.max(1),
                )),
                catalog: self.catalog,
                warehouse: self.warehouse,
                clock: self.clock,
                system_clock: self.system_clock,
                runtime,
            }),
        })
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
    /// The seed's lock recipe keeps its locks here (key -> expiry); only `Strategy::Lock` uses it.
    seed_locks: std::sync::Mutex<std::collections::HashMap<EntryKey, Millis>>,
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

/// How long a load took in clock milliseconds (XFetch's delta): the clock's own measure, or the
/// real time scaled by the clock's speed when the clock did not move (a manual clock in tests).
fn load_ms(inner: &Inner, began_ms: Millis, began: Instant, now: Millis) -> u64 {
    let by_clock = now.saturating_sub(began_ms);
    let by_timer = (began.elapsed().as_secs_f64() * 1000.0 * inner.clock.speed()) as u64;
    by_clock.max(by_timer)
}

/// XFetch (Vattani, Chierichetti, Lowenstein: "Optimal Probabilistic Cache Stampede Prevention",
/// VLDB 2015): refresh when `now - delta * beta * ln(rand) >= expiry`, with `rand` uniform in
/// (0, 1]. Since `-ln(rand) < 40` for any double, most hits are decided without drawing a number.
///
/// One refinement: never before the scheduled update that the TTL's grace period waits for. Until
/// then the ETL is expected to change the key anyway, so a refresh would be thrown away (this
/// matters when a load is long against the TTL, as in an accelerated demo).
#[inline]
fn xfetch_due(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    // Decided with two integer additions on almost every hit: an entry further from its expiry
    // than the grace period, or than any reach XFetch can draw (bounded per policy, see
    // `Policy::xfetch_reach_per_ms`), is never picked. Whatever these do not decide, the exact
    // rule below does, so the outcome is the same as without them.
    if now.saturating_add(policy.after_update_ms) < entry.fresh_until
        || xfetch_out_of_reach(now, entry, policy)
    {
        return false;
    }
    xfetch_near_expiry(now, entry, policy)
}

/// Whether `entry` is further from its expiry than any reach XFetch can draw, by the policy's
/// integer bound: whenever this holds, so does the exact rule's own bound (tested).
#[inline]
fn xfetch_out_of_reach(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    now.saturating_add(entry.load_ms.saturating_mul(policy.xfetch_reach_per_ms)) < entry.fresh_until
}

/// [`xfetch_due`] for an entry within reach of its expiry: the rule itself.
#[inline(never)]
fn xfetch_near_expiry(now: Millis, entry: &Entry, policy: &Policy) -> bool {
    let beta = policy.beta;
    // `-ln(rand) < 40` for any double in (0, 1], so an entry further than 40 * delta * beta from
    // expiry can never be picked: decided with integers, without drawing a number.
    let reach = entry.load_ms.saturating_mul(40);
    if beta <= 0.0
        || now.saturating_add((reach as f64 * beta) as u64) < entry.fresh_until
        || now.saturating_add(policy.after_update_ms) < entry.fresh_until
    {
        return false;
    }
    let r = 1.0 - fastrand::f64(); // (0, 1]
    now as f64 - entry.load_ms as f64 * beta * r.ln() >= entry.fresh_until as f64
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

    /// Answers a request from the cache, or from one warehouse load shared with every concurrent
    /// caller of the same key.
    ///
    /// The returned [`Get`] future is three words: a fresh hit completes on its first poll without
    /// allocating or copying a large state machine; everything slower (waiting for a load, the
    /// seed's recipes) continues in a boxed future.
    pub fn get<'a>(&'a self, request: &'a Request) -> Get<'a> {
        Get {
            engine: self,
            request,
            slow: None,
        }
    }

    /// The first step of a `get`: the answer, or the future that will produce it.
    ///
    /// This is the hit path, kept to the bare minimum: one seqlock read of the versions, one probe
    /// of the store, one clock read, one counter. Anything unusual goes to [`Engine::lookup_slow`].
    #[inline]
    fn start<'a>(&'a self, request: &'a Request) -> Result<Result<Answer, GetError>, SlowGet<'a>> {
        let inner = &*self.inner;
        let strategy = self.strategy();
        if strategy != Strategy::Freshcache {
            return Err(Box::pin(recipes::get(self, request, strategy)));
        }
        let query = request.query();
        let key = EntryKey::new(
            request.fingerprint(),
            inner.versions.key_versions(&query.tables),
        );
        let (stripe, sampled) = inner.stats.thread_slot();
        let timer = sampled.then(Instant::now);
        let found = if inner.local_tier {
            inner.store.get(&key)
        } else {
            None
        };
        if let Some(entry) = found {
            let now = inner.now_ms();
            if now < entry.fresh_until
                && inner.versions_verified(now)
                && !xfetch_due(now, &entry, &query.policy)
            {
                // Hits are the only outcome not also counted in `Requests` (one atomic add less
                // on the hot path); the snapshot adds them back.
                inner.stats.add_at(stripe, Counter::FreshHits, 1);
                if let Some(t) = timer {
                    inner.stats.record_user(t.elapsed(), HIT_SAMPLE);
                    inner.hot.touch(request, HIT_SAMPLE as f64, now);
                    inner.audit.offer(&entry, audit::HIT_ODDS);
                }
                return Ok(Ok(Answer::new(entry, Freshness::Fresh, Source::Cache)));
            }
            return self.continue_slow(request, key, Some(entry), timer);
        }
        self.continue_slow(request, key, None, timer)
    }

    fn continue_slow<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        found: Option<Arc<Entry>>,
        timer: Option<Instant>,
    ) -> Result<Result<Answer, GetError>, SlowGet<'a>> {
        match self.lookup_slow(request, key, found, timer) {
            Lookup::Answered(answer) => Ok(Ok(answer)),
            Lookup::Miss { fallback, started } => Err(Box::pin(
                self.wait_for_load(request, key, fallback, started),
            )),
        }
    }

    /// Everything but a plain fresh hit: an early refresh, a stale answer while revalidating or
    /// updating, or a miss with what may be served if the load fails.
    #[cold]
    #[inline(never)]
    fn lookup_slow(
        &self,
        request: &Request,
        key: EntryKey,
        found: Option<Arc<Entry>>,
        timer: Option<Instant>,
    ) -> Lookup {
        let inner = &*self.inner;
        let policy = &request.query().policy;
        let started = timer.unwrap_or_else(Instant::now);
        inner.hot.touch(request, 1.0, inner.now_ms());
        let mut fallback = None;
        // A bump of a table this query reads is being prepared: a refresh now would load the new
        // data under the old key, and be thrown away when the bump lands a moment later.
        let updating = self.is_updating(&request.query().tables);
        if let Some(entry) = found {
            let now = inner.now_ms();
            if now < entry.fresh_until && !self.versions_verified(now) {
                // The truth has not been confirmed for too long: a newer version may exist that
                // this process has not heard of. Say so instead of presenting it as fresh.
                inner.stats.incr(Counter::Requests);
                return Lookup::Answered(self.stale(
                    entry,
                    now,
                    StaleReason::VersionsUnverified,
                    started,
                ));
            }
            if now < entry.fresh_until {
                // Fresh, and XFetch says refresh early: one refresh per key, answer at once.
                if !updating {
                    self.refresh_in_background(request, key, Counter::EarlyRefreshes);
                }
                inner.stats.incr(Counter::FreshHits);
                inner.stats.record_user(started.elapsed(), 1);
                return Lookup::Answered(Answer::new(entry, Freshness::Fresh, Source::Cache));
            }
            inner.stats.incr(Counter::Requests);
            if servable_while_revalidating(&entry, now, policy) {
                let reason = if updating {
                    StaleReason::Updating
                } else {
                    self.refresh_in_background(request, key, Counter::SwrRefreshes);
                    StaleReason::Revalidating
                };
                return Lookup::Answered(self.stale(entry, now, reason, started));
            }
            fallback = Some(entry);
        } else {
            inner.stats.incr(Counter::Requests);
        }
        // The answer at the previous versions, if still held: served when the policy says so, or
        // when the warehouse cannot answer.
        let previous = inner.store.previous(&key);
        if policy.on_update == OnUpdate::ServeStale
            && let Some(prev) = &previous
        {
            let now = inner.now_ms();
            if now.saturating_sub(prev.created_ms) <= policy.max_stale.as_millis() as u64 {
                self.refresh_in_background(request, key, Counter::RefreshAhead);
                return Lookup::Answered(self.stale(
                    prev.clone(),
                    now,
                    StaleReason::Updating,
                    started,
                ));
            }
        }
        Lookup::Miss {
            fallback: fallback.or(previous),
            started,
        }
    }

    /// Joins (or leads) the load of `key` and waits for it, at most the policy's maximum wait.
    ///
    /// With a shared tier, the stale rules do not depend on this process's tier: the leader's
    /// look in the shared tier serves an expired entry found there as the hit path serves one of
    /// its own (stale-while-revalidate), and a load that fails or is too slow falls back on the
    /// shared tier's entry for this key or its previous version when this process holds none (no
    /// in-process tier, or a process that just started).
    async fn wait_for_load(
        &self,
        request: &Request,
        key: EntryKey,
        mut fallback: Option<Arc<Entry>>,
        started: Instant,
    ) -> Result<Answer, GetError> {
        let inner = &*self.inner;
        let policy = &request.query().policy;
        let deadline = tokio::time::Instant::now() + policy.max_wait;
        inner.stats.incr(Counter::Misses);
        let (flight, source) = match inner.flights.join(key, || {
            let now = inner.now_ms();
            inner.store.get(&key).filter(|e| now < e.fresh_until)
        }) {
            Joined::Ready(entry) => {
                let now = inner.now_ms();
                if !self.versions_verified(now) {
                    return Ok(self.stale(entry, now, StaleReason::VersionsUnverified, started));
                }
                inner.stats.record_user(started.elapsed(), 1);
                return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
            }
            Joined::Leader(lead) => {
                let flight = lead.flight();
                if let Some(shared) = &inner.shared {
                    // Most misses of this process's tier are hits of the shared one: look there
                    // first, inline, and spawn a load only when it has nothing fresh.
                    let mut pending = PendingLoad {
                        engine: self,
                        request,
                        key,
                        lead: Some(lead),
                    };
                    let probe = shared.get(request, &key);
                    if let Ok(Ok(Some(entry))) = tokio::time::timeout_at(deadline, probe).await {
                        let now = inner.now_ms();
                        if now < entry.fresh_until
                            && let Some(lead) = pending.lead.take()
                        {
                            inner.stats.incr(Counter::SharedHits);
                            lead.mark_found_shared();
                            Engine::complete(inner, policy, key, lead, Ok(entry.clone()));
                            if !self.versions_verified(now) {
                                // Keyed by versions this instance cannot confirm.
                                return Ok(self.stale(
                                    entry,
                                    now,
                                    StaleReason::VersionsUnverified,
                                    started,
                                ));
                            }
                            inner.stats.record_user(started.elapsed(), 1);
                            inner.audit.offer(&entry, audit::SLOW_ODDS);
                            return Ok(Answer::new(entry, Freshness::Fresh, Source::Cache));
                        }
                        // Expired there too: stale-while-revalidate as on the hit path, this
                        // flight's load being the one refresh.
                        if servable_while_revalidating(&entry, now, policy)
                            && let Some(lead) = pending.lead.take()
                        {
                            let reason = if self.is_updating(&request.query().tables) {
                                StaleReason::Updating
                            } else {
                                StaleReason::Revalidating
                            };
                            inner.stats.incr(Counter::SwrRefreshes);
                            self.spawn_load_after_probe(request.clone(), key, lead);
                            self.count_waited_stale(Source::Warehouse);
                            return Ok(self.stale(entry, now, reason, started));
                        }
                        fallback = fallback.or(Some(entry));
                    }
                    // Serve the previous version during an update, from the shared tier when
                    // this process holds none.
                    if fallback.is_none() && policy.on_update == OnUpdate::ServeStale {
                        let previous = shared.previous(request, &key);
                        fallback = match tokio::time::timeout_at(deadline, previous).await {
                            Ok(Ok(found)) => found,
                            _ => None,
                        };
                        let now = inner.now_ms();
                        if let Some(prev) = &fallback
                            && now.saturating_sub(prev.created_ms)
                                <= policy.max_stale.as_millis() as u64
                            && let Some(lead) = pending.lead.take()
                        {
                            inner.stats.incr(Counter::RefreshAhead);
                            self.spawn_load_after_probe(request.clone(), key, lead);
                            self.count_waited_stale(Source::Warehouse);
                            return Ok(self.stale(
                                prev.clone(),
                                now,
                                StaleReason::Updating,
                                started,
                            ));
                        }
                    }
                    if let Some(lead) = pending.lead.take() {
                        self.spawn_load_after_probe(request.clone(), key, lead);
                    }
                } else {
                    self.spawn_load(request.clone(), key, lead);
                }
                (flight, Source::Warehouse)
            }
            Joined::Follower(flight) => {
                inner.stats.incr(Counter::Coalesced);
                (flight, Source::Coalesced)
            }
        };
        let outcome = tokio::time::timeout_at(deadline, flight.wait()).await;
        if fallback.is_none() && !matches!(outcome, Ok(Ok(_))) {
            // A leader looked at this key in the shared tier already; a follower did not.
            fallback = self
                .shared_fallback(request, &key, source == Source::Coalesced)
                .await;
        }
        let now = inner.now_ms();
        let within_limit = |e: &Arc<Entry>| {
            now.saturating_sub(e.created_ms) <= policy.max_stale.as_millis() as u64
        };
        match outcome {
            Ok(Ok(entry)) => {
                inner.stats.record_user(started.elapsed(), 1);
                inner.audit.offer(&entry, audit::SLOW_ODDS);
                // Another process loaded it (or had): this request cost the warehouse nothing.
                let source = if flight.found_shared() {
                    Source::Cache
                } else {
                    source
                };
                Ok(Answer::new(entry, Freshness::Fresh, source))
            }
            Ok(Err(error)) => match fallback.filter(within_limit) {
                Some(e) => {
                    self.count_waited_stale(source);
                    Ok(self.stale(
                        e,
                        now,
                        StaleReason::WarehouseError(error.to_string()),
                        started,
                    ))
                }
                None => {
                    inner.stats.incr(Counter::Errors);
                    Err(GetError::Warehouse {
                        query: request.to_string(),
                        error,
                    })
                }
            },
            Err(_elapsed) => {
                inner.stats.incr(Counter::WaitTimeouts);
                match fallback.filter(within_limit) {
                    Some(e) => {
                        self.count_waited_stale(source);
                        Ok(self.stale(e, now, StaleReason::WarehouseSlow, started))
                    }
                    None => {
                        inner.stats.incr(Counter::Errors);
                        Err(GetError::Timeout {
                            query: request.to_string(),
                            waited: policy.max_wait,
                        })
                    }
                }
            }
        }
    }

    /// What the shared tier holds for `request` that may be served stale when its load failed or
    /// was too slow: the (expired) entry for `key` itself when `at_key`, else the previous
    /// version's. Looked up only then, so a load that succeeds costs the shared tier nothing more;
    /// bounded by [`SHARED_FALLBACK_LOOKUP`].
    async fn shared_fallback(
        &self,
        request: &Request,
        key: &EntryKey,
        at_key: bool,
    ) -> Option<Arc<Entry>> {
        let shared = self.inner.shared.as_ref()?;
        let look = async {
            if at_key && let Ok(Some(entry)) = shared.get(request, key).await {
                return Some(entry);
            }
            shared.previous(request, key).await.ok().flatten()
        };
        tokio::time::timeout(SHARED_FALLBACK_LOOKUP, look)
            .await
            .ok()
            .flatten()
    }

    /// Counts a request that waited (as a miss, or coalesced) and is answered stale, so that its
    /// outcome is `stale` (see [`stats::RequestOutcomes`]).
    fn count_waited_stale(&self, source: Source) {
        let stats = &self.inner.stats;
        stats.incr(Counter::WaitedStale);
        if source == Source::Coalesced {
            stats.incr(Counter::CoalescedStale);
        }
    }

    fn stale(
        &self,
        entry: Arc<Entry>,
        now: Millis,
        reason: StaleReason,
        started: Instant,
    ) -> Answer {
        let stats = &self.inner.stats;
        stats.incr(Counter::StaleServed);
        stats.record_user(started.elapsed(), 1);
        let age = Duration::from_millis(now.saturating_sub(entry.created_ms));
        Answer::new(entry, Freshness::Stale { age, reason }, Source::Cache)
    }

    /// Starts a load of `key` in the background unless one is in flight. Returns whether it started.
    pub(crate) fn refresh_in_background(
        &self,
        request: &Request,
        key: EntryKey,
        why: Counter,
    ) -> bool {
        match self.inner.flights.try_lead(key) {
            Some(lead) => {
                self.inner.stats.incr(why);
                self.spawn_load(request.clone(), key, lead);
                true
            }
            None => false,
        }
    }

    /// Runs one warehouse load on the runtime, so that a caller that gives up (or is cancelled)
    /// never cancels the load the other waiters depend on. Every outcome completes the flight.
    fn spawn_load(&self, request: Request, key: EntryKey, lead: Lead) {
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            Engine::load_and_complete(&inner, &request, key, lead, false).await;
        });
    }

    /// [`Engine::spawn_load`] once the shared tier was found without a fresh entry.
    fn spawn_load_after_probe(&self, request: Request, key: EntryKey, lead: Lead) {
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            Engine::load_and_complete(&inner, &request, key, lead, true).await;
        });
    }

    /// Loads `key`, stores the entry, and completes the flight `lead` leads. Returns whether the
    /// load succeeded.
    async fn load_and_complete(
        inner: &Inner,
        request: &Request,
        key: EntryKey,
        lead: Lead,
        probed: bool,
    ) -> bool {
        let policy = &request.query().policy;
        // The key carries the versions of the query's tables, in the query's table order.
        let stamp = Stamp::from_fn(&request.query().tables, {
            let mut versions = key.versions.iter().copied();
            move |_| versions.next().unwrap_or(0)
        });
        let shared = match &inner.shared {
            Some(s) => lease::load(inner, s, request, key, stamp, probed).await,
            None => lease::Outcome::Unavailable,
        };
        let result = match shared {
            lease::Outcome::Found(entry) => {
                lead.mark_found_shared();
                Ok(entry)
            }
            lease::Outcome::Loaded(entry) => Ok(entry),
            lease::Outcome::Failed(e) => Err(e),
            // Embedded, or the shared store is down: load here (still one load per key in this
            // process: this is the flight's leader).
            lease::Outcome::Unavailable => {
                if inner.shared.is_some() {
                    inner.stats.incr(Counter::Degraded);
                }
                Engine::load(inner, request, stamp, policy).await
            }
        };
        Engine::complete(inner, policy, key, lead, result)
    }

    /// Keeps a loaded entry in this process's tier and hands it to the flight's waiters.
    fn complete(
        inner: &Inner,
        policy: &Policy,
        key: EntryKey,
        lead: Lead,
        result: Result<Arc<Entry>, LoadError>,
    ) -> bool {
        match result {
            Ok(entry) => {
                if inner.local_tier
                    && let PutOutcome::TooLarge =
                        inner.store.put(key, entry.clone(), entry.created_ms)
                {
                    inner.stats.incr(Counter::TooLarge);
                }
                let waiters = lead.complete(Ok(entry));
                if waiters >= policy.stampede_threshold {
                    inner.stats.incr(Counter::StampedesAbsorbed);
                }
                true
            }
            Err(error) => {
                lead.complete(Err(error));
                false
            }
        }
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
        let until = read_began_ms.saturating_add(max_unverified.as_millis() as u64);
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

    /// Marks `tables` as being updated (a bump is being prepared) or not. While a table is, no
    /// early or stale-while-revalidate refresh starts for queries that read it.
    pub fn set_updating(&self, tables: &[TableId], updating: bool) {
        for t in tables {
            let (word, bit) = updating_bit(*t);
            // An id outside the catalog has no word: no query reads it, so it never matters.
            let Some(w) = self.inner.updating.get(word) else {
                continue;
            };
            if updating {
                w.fetch_or(bit, Ordering::Relaxed);
            } else {
                w.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// Whether any of `tables` is being updated.
    pub fn is_updating(&self, tables: &[TableId]) -> bool {
        tables.iter().any(|t| {
            let (word, bit) = updating_bit(*t);
            self.inner
                .updating
                .get(word)
                .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
        })
    }

    /// The `n` hottest requests reading any of `tables` (any table when empty), hottest first.
    pub fn hot_requests(&self, tables: &[TableId], n: usize) -> Vec<Request> {
        self.inner.hot.top(tables, n, self.inner.now_ms())
    }

    /// Reloads `requests` at the current versions in the background, at most the engine's
    /// refresh concurrency at a time, skipping any already fresh or already loading. Users who
    /// miss meanwhile load for themselves (and a refresh then finds the entry and skips it), so a
    /// long refresh queue never makes a user wait for a permit.
    pub fn refresh_ahead(&self, requests: Vec<Request>) -> watch::Receiver<RefreshProgress> {
        self.refresh_at(requests, None)
    }

    /// [`Engine::refresh_ahead`] at the versions of `at` instead of the current ones: loads the
    /// answers a coming bump will ask for, before it is published (the warehouse already holds
    /// that data), so that no user meets a miss when it is.
    pub fn refresh_at(
        &self,
        requests: Vec<Request>,
        at: Option<Arc<VersionVector>>,
    ) -> watch::Receiver<RefreshProgress> {
        let (tx, rx) = watch::channel(RefreshProgress {
            total: requests.len() as u32,
            ..RefreshProgress::default()
        });
        let tx = Arc::new(tx);
        for request in requests {
            let inner = self.inner.clone();
            let tx = tx.clone();
            let at = at.clone();
            self.inner.runtime.spawn(async move {
                let outcome = match inner.refresh_permits.clone().acquire_owned().await {
                    Ok(_permit) => {
                        let tables = &request.query().tables;
                        let versions = match &at {
                            Some(v) => {
                                let mut out = [0; crate::model::catalog::MAX_TABLES_PER_QUERY];
                                for (slot, t) in out.iter_mut().zip(tables) {
                                    *slot = v.version(*t);
                                }
                                out
                            }
                            None => inner.versions.key_versions(tables),
                        };
                        let key = EntryKey::new(request.fingerprint(), versions);
                        let now = inner.now_ms();
                        let fresh = inner.store.get(&key).is_some_and(|e| now < e.fresh_until);
                        // Fresh already, or someone is loading it: nothing to do.
                        let lead = if fresh {
                            None
                        } else {
                            inner.flights.try_lead(key)
                        };
                        match lead {
                            Some(lead) => {
                                inner.stats.incr(Counter::RefreshAhead);
                                Some(
                                    Engine::load_and_complete(&inner, &request, key, lead, false)
                                        .await,
                                )
                            }
                            None => None,
                        }
                    }
                    Err(_) => Some(false),
                };
                tx.send_modify(|p| match outcome {
                    Some(true) => p.done += 1,
                    Some(false) => p.failed += 1,
                    None => p.skipped += 1,
                });
            });
        }
        rx
    }

    /// One warehouse query, timed, with panics turned into errors and a deadline. Builds the entry.
    ///
    /// Every load ends: at the load timeout the warehouse's future is dropped, which cancels the
    /// query (PostgreSQL sends a cancel request, SQLite interrupts its connection), and the load
    /// fails with [`LoadError::Deadline`]. The caller then completes the flight and releases its
    /// lease as for any other failure, so waiters get stale-if-error or the error at once and the
    /// next request starts a new load.
    async fn load(
        inner: &Inner,
        request: &Request,
        stamp: Stamp,
        policy: &Policy,
    ) -> Result<Arc<Entry>, LoadError> {
        inner.stats.incr(Counter::Loads);
        let began_ms = inner.now_ms();
        let began = Instant::now();
        if let Some(observe) = &inner.on_load {
            observe(request, &stamp);
        }
        let run = CatchUnwind(Box::pin(inner.warehouse.run(request)));
        let result = tokio::time::timeout(inner.load_timeout, run).await;
        inner.stats.record_load(began.elapsed());
        let rows = match result {
            Ok(Ok(Ok(rows))) => rows,
            Ok(Ok(Err(e))) => {
                inner.stats.incr(Counter::LoadErrors);
                return Err(LoadError::Warehouse(e));
            }
            Ok(Err(panic)) => {
                inner.stats.incr(Counter::LoadErrors);
                return Err(LoadError::Panicked(panic));
            }
            Err(_elapsed) => {
                inner.stats.incr(Counter::LoadErrors);
                // The query's future is gone; see it cancelled at the server before anyone is
                // told, so a caller that exits on this answer leaves nothing running.
                inner.warehouse.settle_cancelled().await;
                tracing::warn!(
                    query = %request,
                    timeout = ?inner.load_timeout,
                    "warehouse load exceeded its deadline; cancelled"
                );
                return Err(LoadError::Deadline(inner.load_timeout));
            }
        };
        let now = inner.now_ms();
        let fresh_until = policy.fresh_until(now, fastrand::f64());
        Ok(Arc::new(Entry {
            value: Arc::from(rows.to_json()),
            versions: stamp,
            created_ms: now,
            load_ms: load_ms(inner, began_ms, began, now),
            fresh_until,
            keep_until: policy.keep_until(now, fresh_until),
        }))
    }
}

#[cfg(test)]
mod tests;

/// The longest a request whose load failed or passed the maximum wait spends looking for a stale
/// fallback in the shared tier (a healthy Redis answers in well under a millisecond).
const SHARED_FALLBACK_LOOKUP: Duration = Duration::from_millis(100);

/// Whether `entry`, past its freshness, may still be served stale while one refresh runs: within
/// the policy's stale-while-revalidate window and its stale limit.
fn servable_while_revalidating(entry: &Entry, now: Millis, policy: &Policy) -> bool {
    now < entry.fresh_until + policy.swr_window.as_millis() as u64
        && now.saturating_sub(entry.created_ms) <= policy.max_stale.as_millis() as u64
}

/// The word and bit of `table` in the engine's "updating" bitset.
#[inline]
fn updating_bit(table: TableId) -> (usize, u64) {
    (table.index() / 64, 1 << (table.index() % 64))
}

/// A flight whose leader is looking in the shared tier inline: if that caller is cancelled
/// mid-look, the load is spawned anyway, so the followers are never left with an aborted flight.
struct PendingLoad<'a> {
    engine: &'a Engine,
    request: &'a Request,
    key: EntryKey,
    lead: Option<Lead>,
}

impl Drop for PendingLoad<'_> {
    fn drop(&mut self) {
        if let Some(lead) = self.lead.take() {
            self.engine.spawn_load(self.request.clone(), self.key, lead);
        }
    }
}
