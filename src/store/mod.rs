//! Where cached answers live: the in-process [`MemoryStore`] (embedded default, and the first tier in
//! front of Redis), behind the [`Store`] trait that the Redis store also implements.
//!
//! An [`Entry`] is immutable once stored and shared as `Arc<Entry>`; replacing it is a new entry.
//! An [`EntryKey`] is the request's stable fingerprint plus the versions of the tables the query reads,
//! so a version bump changes every affected key at once and nothing has to be deleted.

pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use crate::model::BoxFuture;
use crate::model::catalog::Request;
use crate::model::entry::{Entry, EntryKey, TableKeys};
use crate::model::versions::VersionVector;

pub use memory::{MemoryStore, MemoryStoreConfig};

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
