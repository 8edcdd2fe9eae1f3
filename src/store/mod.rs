//! Where cached answers live: the in-process [`MemoryStore`] (embedded default, and the first tier in
//! front of Redis), behind the [`Store`] trait that the Redis store also implements.
//!
//! An [`Entry`] is immutable once stored and shared as `Arc<Entry>`; replacing it is a new entry.
//! An [`EntryKey`] is the request's stable fingerprint plus the versions of the tables the query reads,
//! so a version bump changes every affected key at once and nothing has to be deleted.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::catalog::Request;

use crate::engine::catalog::MAX_TABLES_PER_QUERY;
use crate::engine::clock::Millis;
use crate::engine::versions::{TableId, Tables, VersionVector};

pub use memory::{MemoryStore, MemoryStoreConfig};

/// A boxed future, for trait objects whose methods are async.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The versions of the tables one query read, in the query's table order.
///
/// `len` is at most [`MAX_TABLES_PER_QUERY`], always: the constructors clamp it, and a stamp read
/// back (from Redis) with a larger one is refused when it is deserialized, so the slices below
/// can never be out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "StampFields")]
pub struct Stamp {
    len: u8,
    tables: [TableId; MAX_TABLES_PER_QUERY],
    versions: [u64; MAX_TABLES_PER_QUERY],
}

/// A [`Stamp`] as stored, before its length is checked.
#[derive(serde::Deserialize)]
struct StampFields {
    len: u8,
    tables: [TableId; MAX_TABLES_PER_QUERY],
    versions: [u64; MAX_TABLES_PER_QUERY],
}

impl TryFrom<StampFields> for Stamp {
    type Error = String;

    fn try_from(f: StampFields) -> Result<Self, String> {
        if f.len as usize > MAX_TABLES_PER_QUERY {
            return Err(format!(
                "a stamp of {} tables (at most {MAX_TABLES_PER_QUERY})",
                f.len
            ));
        }
        Ok(Stamp {
            len: f.len,
            tables: f.tables,
            versions: f.versions,
        })
    }
}

impl Stamp {
    /// The versions `current` holds for `tables` (at most [`MAX_TABLES_PER_QUERY`] are kept).
    pub fn of(tables: &[TableId], current: &VersionVector) -> Self {
        Self::from_fn(tables, |t| current.version(t))
    }

    /// The versions `version_of` gives for `tables` (at most [`MAX_TABLES_PER_QUERY`] are kept).
    #[inline]
    pub fn from_fn(tables: &[TableId], mut version_of: impl FnMut(TableId) -> u64) -> Self {
        let mut s = Stamp::default();
        for (i, &t) in tables.iter().take(MAX_TABLES_PER_QUERY).enumerate() {
            s.tables[i] = t;
            s.versions[i] = version_of(t);
        }
        s.len = tables.len().min(MAX_TABLES_PER_QUERY) as u8;
        s
    }

    /// `(table, version)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (TableId, u64)> + '_ {
        self.tables[..self.len as usize]
            .iter()
            .copied()
            .zip(self.versions[..self.len as usize].iter().copied())
    }

    /// The versions alone, in table order.
    pub fn versions(&self) -> &[u64] {
        &self.versions[..self.len as usize]
    }

    /// Whether any table here is at a version older than in `current`.
    pub fn is_behind(&self, current: &VersionVector) -> bool {
        self.iter().any(|(t, v)| v < current.version(t))
    }

    /// Whether every table here is at a version at least as new as in `other` (same tables).
    pub fn covers(&self, other: &Stamp) -> bool {
        self.versions()
            .iter()
            .zip(other.versions())
            .all(|(a, b)| a >= b)
    }

    /// The tables, in the query's order.
    pub fn tables(&self) -> &[TableId] {
        &self.tables[..self.len as usize]
    }

    /// `sales=3,customers=1`.
    pub fn describe(&self, tables: &Tables) -> String {
        self.iter()
            .map(|(t, v)| format!("{}={v}", tables.name(t)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The identity of a cached answer: which request, at which versions.
///
/// For `freshcache` the versions are the per-table versions the query reads; the seed's recipes put
/// other things there (nothing for TTL recipes, the minute label for the versioned one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryKey {
    /// The request's stable fingerprint ([`crate::engine::catalog::Request::fingerprint`]).
    pub fingerprint: u128,
    /// The versions that make this key differ after an update.
    pub versions: [u64; MAX_TABLES_PER_QUERY],
}

impl EntryKey {
    /// A key from a fingerprint and versions.
    pub fn new(fingerprint: u128, versions: [u64; MAX_TABLES_PER_QUERY]) -> Self {
        Self {
            fingerprint,
            versions,
        }
    }
}

impl std::hash::Hash for EntryKey {
    /// Writes one well-mixed `u64`: the fingerprint is already an xxh3 hash; each version is
    /// multiplied by its own odd constant (independent multiplies, no dependency chain) and folded
    /// in, so maps keyed by `EntryKey` never hash bytes.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        const K: [u64; MAX_TABLES_PER_QUERY] = [
            0x9E37_79B9_7F4A_7C15,
            0xC2B2_AE3D_27D4_EB4F,
            0x1656_67B1_9E37_79F9,
            0x85EB_CA77_C2B2_AE63,
        ];
        let mut h = self.fingerprint as u64;
        for (v, k) in self.versions.iter().zip(K) {
            h ^= v.wrapping_mul(k);
        }
        state.write_u64(h ^ (h >> 29));
    }
}

/// One cached answer. Immutable; shared as `Arc<Entry>`.
///
/// `repr(C)` with the fields a hit reads first, so that they share a cache line with the `Arc`'s
/// reference count, which a hit writes anyway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Entry {
    /// Until when it is fresh by TTL (the backstop; versions invalidate first).
    pub fresh_until: Millis,
    /// When the load finished (ms since the epoch, engine clock).
    pub created_ms: Millis,
    /// How long the load took, in ms: XFetch's delta.
    pub load_ms: u64,
    /// Until when any rule may still serve it; the store may drop it after.
    pub keep_until: Millis,
    /// The answer, as JSON text.
    pub value: Arc<str>,
    /// The table versions current when the load began: the answer reflects at least these.
    pub versions: Stamp,
}

impl Entry {
    /// Bytes this entry costs a store, counted against its byte bound.
    pub fn weight(&self) -> usize {
        self.value.len() + ENTRY_OVERHEAD
    }
}

/// Fixed per-entry bookkeeping cost counted with the value's bytes.
pub const ENTRY_OVERHEAD: usize = 160;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; `evicted` others made room.
    Stored {
        /// Entries evicted to make room.
        evicted: u64,
    },
    /// Not stored: something newer is already there (an entry for the same key created later,
    /// or newer versions of the same request in every slot the store keeps for it).
    KeptNewer,
    /// Not stored: the entry alone is larger than the store may hold.
    TooLarge,
    /// Not stored: the lease the loader held was taken over by another process, whose answer
    /// wins (a shared store only).
    LeaseLost,
}

/// Live entries of one table, counted by the version *of that table* each entry holds: an entry
/// reading `sales` and `customers` that is behind on `sales` only counts as old for `sales`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableKeys {
    /// Entries computed at the table's current version.
    pub current: u64,
    /// Entries computed at an older version, still held (servable only as stale).
    pub old: u64,
}

/// A store failure (only the Redis store has them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// The operations the engine needs from a store. The in-process [`MemoryStore`] is the first tier
/// (and the only one when embedded); the Redis store is the shared second tier, where the lease
/// and fill operations let one process in the whole fleet load a key while the others wait.
///
/// Methods take the [`Request`] as well as the key: a shared store names its keys after the query
/// and tags them with the table they belong to.
pub trait Store: Send + Sync {
    /// A short, secret-free description.
    fn describe(&self) -> String;

    /// The entry stored under exactly `key`.
    fn get<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>>;

    /// The most recently created entry for the same request stored under different versions: what
    /// may be served as stale while the current version loads.
    fn previous<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>>;

    /// Stores `entry` under `key`, unless an entry created later is already there (checked and
    /// written in one step in a shared store).
    fn put<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Arc<Entry>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;

    /// Per-table live entry counts, split by current and older versions of `current`.
    fn table_keys<'a>(
        &'a self,
        current: &'a VersionVector,
    ) -> BoxFuture<'a, Result<Vec<TableKeys>, StoreError>>;

    /// Takes the lease on loading `key` for `ttl`, with `token` as proof of ownership; `false`
    /// when someone else holds it. A store private to one process always grants it.
    fn lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        _token: u64,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Extends a lease this `token` holds; `false` when it is no longer held (expired or taken).
    fn extend_lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        _token: u64,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Stores `entry` (if any) and releases the lease `token` holds: what a loader does when its
    /// load ends. A store that can do both in one bounded call does. A shared store writes only
    /// while `token` still holds the lease (or nobody does and nothing newer is stored), so a
    /// loader whose lease was taken over never overwrites the new holder's answer
    /// ([`PutOutcome::LeaseLost`]).
    fn put_and_release<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Option<Arc<Entry>>,
        token: u64,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            let stored = match entry {
                Some(e) => self.put(request, key, e).await,
                None => Ok(PutOutcome::Stored { evicted: 0 }),
            };
            self.release_lease(request, &key, token).await?;
            stored
        })
    }

    /// Releases a lease this `token` holds (compare-and-delete: never someone else's).
    fn release_lease<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        _token: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Waits until another process reports `key` filled, or `timeout` passes.
    fn wait_fill<'a>(
        &'a self,
        _request: &'a Request,
        _key: &'a EntryKey,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(tokio::time::sleep(timeout))
    }

    /// Why the store cannot be used right now (down, breaker open), if it cannot.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// Entries read back that failed validation (unreadable bytes, a stamp that does not match
    /// the key, a value that is not JSON), so far. Each was treated as a miss. Only a store that
    /// reads bytes written by other processes has any.
    fn corrupt_entries(&self) -> u64 {
        0
    }

    /// Takes the fleet's housekeeping turn for `ttl` if nobody holds it (one purger at a time
    /// across processes). A store of one process is always its own turn.
    fn housekeeping_lock(&self, _ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Drops entries no rule can serve any more (old versions, past `keep_until`), at most `budget`
    /// of them, off the request path. Returns how many went.
    fn purge<'a>(
        &'a self,
        current: &'a VersionVector,
        budget: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;
}
