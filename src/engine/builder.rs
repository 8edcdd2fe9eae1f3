//! Building an [`Engine`]: its store, clock, shared tier, lease, load deadline and strategy.

use super::*;

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `build` was called outside a tokio runtime.
    #[error("the engine must be built inside a tokio runtime (it spawns its loads there)")]
    NoRuntime,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    pub(super) catalog: Arc<Catalog>,
    pub(super) warehouse: Arc<dyn Warehouse>,
    pub(super) clock: SharedClock,
    pub(super) system_clock: bool,
    pub(super) store: MemoryStoreConfig,
    pub(super) strategy: Strategy,
    pub(super) refresh_concurrency: usize,
    pub(super) shared: Option<Arc<dyn crate::store::Store>>,
    pub(super) local_tier: bool,
    pub(super) lease: Duration,
    pub(super) load_timeout: Duration,
    pub(super) on_load: Option<LoadObserver>,
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
                baseline_locks: parking_lot::Mutex::new(std::collections::HashMap::new()),
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
