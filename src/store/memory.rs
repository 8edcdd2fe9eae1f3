//! The in-process store: sharded, bounded by entries and by bytes, evicting with CLOCK.
//!
//! # Layout
//! 64 shards, chosen by the request fingerprint (not by the versions), so every version held for one
//! request lives in one shard. Each shard is a `RwLock` over:
//! * a hash set of [`Slot`]s — each one cache line, aligned to one, holding the key, the
//!   `Arc<Entry>`, a referenced bit and its ring position. A hit is one probe (the key's hash is
//!   precomputed from the fingerprint and the versions, no hashing of bytes), that one line, and
//!   the `Arc` clone: about three cache lines, which keeps the hit path within a small factor of a
//!   plain concurrent map. (As a map value beside its key, the slot was 16-aligned, and most
//!   buckets straddled two lines);
//! * `fingerprint -> versions held`, touched only on a miss, to find the previous version of an
//!   answer (what may be served stale while the current one loads);
//! * the ring of keys that the CLOCK hand walks; every slot knows its ring position, so removal is
//!   O(1).
//!
//! # Eviction: CLOCK (second chance), superseded versions first
//! Why CLOCK and not LRU: the workload is read-mostly (an hour of hits per load), and LRU must
//! reorder a list on every hit, which needs a write lock on the read path. CLOCK only sets a
//! "referenced" bit with a relaxed atomic store (skipped when already set, so hot entries do not
//! bounce a cache line between cores) under the read lock. When a shard is over its entry or byte
//! budget, its hand sweeps the ring: an entry past `keep_until` goes at once; so does one that is
//! *superseded* (a newer version of the same request is held, so it can only ever be served as
//! stale); a referenced entry has its bit cleared and is passed over once; the first unreferenced
//! entry goes.
//!
//! "Newer" between the versions of one request always means the newer *versions* (the key's
//! table versions, compared in the query's table order), never the later creation time: a slow
//! loader of an old version finishes after the load of the new one, and its answer must neither
//! push the new one out nor be offered as the previous answer in its place. Each table's version
//! only goes up, so the versions held for one request form a chain, and comparing them
//! lexicographically orders them as the component-wise order does. Two passes always find a victim. This approximates LRU's hit ratio on skewed
//! (Zipf-like) traffic without its write traffic, and it knows which entries the versions have
//! already made worthless.
//!
//! # Counting per table
//! Each shard keeps a count of entries per `(table, version)`, updated on insert and removal under
//! its write lock. Live and old-version counts per table are then read in O(shards × versions held),
//! which is O(number of tables) for practical purposes, without walking entries.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{PutOutcome, Store, StoreError};
use crate::model::BoxFuture;
use crate::model::catalog::MAX_TABLES_PER_QUERY;
use crate::model::catalog::Request;
use crate::model::clock::Millis;
use crate::model::entry::{Entry, EntryKey, TableKeys};
use crate::model::versions::{TableId, VersionVector};

const SHARDS: usize = 64;

/// Most versions of one request held at once; the oldest is dropped when a newer one arrives.
pub const MAX_VERSIONS_PER_REQUEST: usize = 3;

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// Most entries held.
    pub max_entries: usize,
    /// Most bytes held (values plus per-entry overhead).
    pub max_bytes: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Passes a precomputed, well-mixed 64-bit hash straight through (see `EntryKey`'s `Hash`, which
/// writes one `u64` derived from an xxh3 fingerprint).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        // Folding the two halves into one: truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        let folded = n as u64 ^ (n >> 64) as u64;
        self.0 = folded;
    }
}

/// Asks the CPU to start loading the cache line at `p`. An entry's reference count and the
/// fields a hit reads next can sit on two lines (the allocator places entries at any 16-byte
/// offset); starting the second load while the count is incremented overlaps the two misses.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint that never faults, whatever the address, and SSE (which
        // it needs) is part of every x86_64 CPU.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

type Fast<K, V> = HashMap<K, V, BuildHasherDefault<PassThrough>>;
type FastSet<T> = HashSet<T, BuildHasherDefault<PassThrough>>;
type KeyVersions = [u64; MAX_TABLES_PER_QUERY];

/// How recent an entry held under `versions` is among the versions of its request: by versions
/// first (see the module docs), by creation time only between equal versions.
#[inline]
fn recency(versions: &KeyVersions, entry: &Entry) -> (KeyVersions, Millis) {
    (*versions, entry.created_ms)
}

/// One entry held, with its key: exactly one cache line (48 bytes of key, the `Arc`, 8 bytes of
/// bookkeeping), so a hit reads one line of the table.
#[repr(align(64))]
struct Slot {
    key: EntryKey,
    entry: Arc<Entry>,
    referenced: AtomicBool,
    /// Where the key sits in the shard's ring. Atomic only to be updated through a shared
    /// reference (a set hands out no `&mut`); it changes under the shard's write lock alone.
    ring_pos: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

// A slot is found by its key: hashing and equality are the key's, so the set can be probed with
// an `&EntryKey`.
impl Hash for Slot {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Slot {}

impl Borrow<EntryKey> for Slot {
    #[inline]
    fn borrow(&self) -> &EntryKey {
        &self.key
    }
}

#[derive(Default)]
struct Shard {
    table: FastSet<Slot>,
    versions_of: Fast<u128, Vec<KeyVersions>>,
    ring: Vec<EntryKey>,
    hand: usize,
    bytes: usize,
    counts: HashMap<(TableId, u64), u64>,
}

impl Shard {
    fn len(&self) -> usize {
        self.table.len()
    }

    fn account(&mut self, entry: &Entry, add: bool) {
        if add {
            self.bytes += entry.weight();
        } else {
            self.bytes -= entry.weight();
        }
        for (t, v) in entry.versions.iter() {
            let c = self.counts.entry((t, v)).or_default();
            *c = if add { *c + 1 } else { c.saturating_sub(1) };
            if *c == 0 {
                self.counts.remove(&(t, v));
            }
        }
    }

    fn add(&mut self, key: EntryKey, entry: Arc<Entry>) {
        self.account(&entry, true);
        self.ring.push(key);
        self.versions_of
            .entry(key.fingerprint)
            .or_default()
            .push(key.versions);
        self.table.insert(Slot {
            key,
            entry,
            referenced: AtomicBool::new(false),
            ring_pos: AtomicU32::new(crate::model::num::to_u32(self.ring.len() - 1)),
        });
    }

    fn remove(&mut self, key: &EntryKey) -> Option<Slot> {
        let slot = self.table.take(key)?;
        let pos = slot.ring_pos.load(Ordering::Relaxed) as usize;
        self.ring.swap_remove(pos);
        if let Some(moved) = self.ring.get(pos).copied()
            && let Some(s) = self.table.get(&moved)
        {
            s.ring_pos
                .store(crate::model::num::to_u32(pos), Ordering::Relaxed);
        }
        if let Some(list) = self.versions_of.get_mut(&key.fingerprint) {
            list.retain(|v| *v != key.versions);
            if list.is_empty() {
                self.versions_of.remove(&key.fingerprint);
            }
        }
        self.account(&slot.entry, false);
        Some(slot)
    }

    /// The other versions held for `key`'s request, with their entries.
    fn siblings<'a>(
        &'a self,
        key: &'a EntryKey,
    ) -> impl Iterator<Item = (EntryKey, &'a Slot)> + 'a {
        self.versions_of
            .get(&key.fingerprint)
            .into_iter()
            .flatten()
            .filter(move |v| **v != key.versions)
            .filter_map(move |v| {
                let k = EntryKey::new(key.fingerprint, *v);
                self.table.get(&k).map(|s| (k, s))
            })
    }

    /// Evicts one entry by CLOCK; returns false only when the shard is empty.
    fn evict_one(&mut self, now: Millis) -> bool {
        // The first pass clears referenced bits, so a victim is found by the end of the second.
        for _ in 0..2 * self.ring.len() + 1 {
            if self.ring.is_empty() {
                return false;
            }
            let at = self.hand % self.ring.len();
            let key = self.ring[at];
            let Some(slot) = self.table.get(&key) else {
                // Unreachable while ring and table agree; repair rather than loop.
                self.ring.swap_remove(at);
                continue;
            };
            // Superseded: a newer version of the same request is held.
            let worthless = slot.entry.keep_until <= now
                || self.siblings(&key).any(|(k, _)| k.versions > key.versions);
            if worthless || !slot.referenced.swap(false, Ordering::Relaxed) {
                // The last key moves into `at`; the hand stays to look at it next.
                self.remove(&key);
                return true;
            }
            self.hand = at + 1;
        }
        false
    }
}

/// The in-process store. See the module documentation for layout and eviction.
pub struct MemoryStore {
    /// A fixed-size array: an index reduced modulo `SHARDS` needs no bounds check.
    shards: Box<[RwLock<Shard>; SHARDS]>,
    per_shard_entries: usize,
    per_shard_bytes: usize,
    evictions: AtomicU64,
    expirations: AtomicU64,
    purge_cursor: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl MemoryStore {
    /// A store with the given bounds (each at least one entry per shard).
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            shards: Box::new(std::array::from_fn(|_| RwLock::new(Shard::default()))),
            per_shard_entries: config.max_entries.div_ceil(SHARDS).max(1),
            per_shard_bytes: config.max_bytes.div_ceil(SHARDS).max(1),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            purge_cursor: AtomicU64::new(0),
        }
    }

    #[inline]
    fn shard_of(&self, fingerprint: u128) -> usize {
        (fingerprint >> 122) as usize % SHARDS
    }

    // A panic while holding a shard lock leaves the shard consistent (every mutation finishes
    // before anything that can panic), so the lock not poisoning is safe.
    #[inline]
    fn read(&self, fingerprint: u128) -> RwLockReadGuard<'_, Shard> {
        self.read_shard(self.shard_of(fingerprint))
    }

    #[inline]
    fn read_shard(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i].read()
    }

    fn write_shard(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write()
    }

    /// The entry stored under exactly `key`, marking it referenced.
    // Inlined into the engine's hit path: a call would spill and restore six registers for a
    // function of about eighty instructions.
    #[inline(always)]
    pub fn get(&self, key: &EntryKey) -> Option<Arc<Entry>> {
        let shard = self.read(key.fingerprint);
        let slot = shard.table.get(key)?;
        prefetch(std::ptr::addr_of!(slot.entry.fresh_until));
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(slot.entry.clone())
    }

    /// The entry of the newest other version held for the same request (see the module docs on
    /// "newer").
    pub fn previous(&self, key: &EntryKey) -> Option<Arc<Entry>> {
        let shard = self.read(key.fingerprint);
        shard
            .siblings(key)
            .max_by_key(|(k, s)| recency(&k.versions, &s.entry))
            .map(|(_, s)| s.entry.clone())
    }

    /// Stores `entry` under `key` at time `now` (used to drop expired entries first).
    pub fn put(&self, key: EntryKey, entry: Arc<Entry>, now: Millis) -> PutOutcome {
        let weight = entry.weight();
        if weight > self.per_shard_bytes {
            return PutOutcome::TooLarge;
        }
        let mut shard = self.write_shard(self.shard_of(key.fingerprint));
        // Same key already held: keep whichever was created later, so a slow refresh never
        // replaces a newer answer.
        if let Some(held) = shard.table.get(&key) {
            if held.entry.created_ms > entry.created_ms {
                return PutOutcome::KeptNewer;
            }
            shard.remove(&key);
        }
        let mut evicted = 0;
        // Every version slot of this request taken: the oldest version goes, and when that is
        // the one arriving (a late load of an old version), it is not stored at all.
        if shard
            .versions_of
            .get(&key.fingerprint)
            .is_some_and(|l| l.len() >= MAX_VERSIONS_PER_REQUEST)
        {
            let oldest = shard
                .siblings(&key)
                .min_by_key(|(k, s)| recency(&k.versions, &s.entry))
                .map(|(k, _)| k);
            if let Some(k) = oldest {
                if k.versions > key.versions {
                    return PutOutcome::KeptNewer;
                }
                shard.remove(&k);
                evicted += 1;
            }
        }
        while shard.len() + 1 > self.per_shard_entries
            || shard.bytes + weight > self.per_shard_bytes
        {
            if !shard.evict_one(now) {
                break;
            }
            evicted += 1;
        }
        shard.add(key, entry);
        drop(shard);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        PutOutcome::Stored { evicted }
    }

    /// Removes up to `budget` entries past their `keep_until`, visiting shards in turn so that no
    /// call holds one lock for long. Returns how many were removed.
    pub fn purge_expired(&self, now: Millis, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..SHARDS {
            if removed >= budget {
                break;
            }
            let i = crate::model::num::to_usize(
                self.purge_cursor.fetch_add(1, Ordering::Relaxed) % SHARDS as u64,
            );
            let mut shard = self.write_shard(i);
            let expired: Vec<EntryKey> = shard
                .table
                .iter()
                .filter(|s| s.entry.keep_until <= now)
                .map(|s| s.key)
                .take(budget - removed)
                .collect();
            for k in expired {
                shard.remove(&k);
                removed += 1;
            }
        }
        if removed > 0 {
            self.expirations
                .fetch_add(removed as u64, Ordering::Relaxed);
        }
        removed
    }

    /// Per-table live entry counts, split by `current`'s versions.
    pub fn table_keys(&self, current: &VersionVector) -> Vec<TableKeys> {
        let mut out = vec![TableKeys::default(); current.len()];
        for i in 0..SHARDS {
            let shard = self.read_shard(i);
            for (&(t, v), &n) in &shard.counts {
                if let Some(k) = out.get_mut(t.index()) {
                    if v >= current.version(t) {
                        k.current += n;
                    } else {
                        k.old += n;
                    }
                }
            }
        }
        out
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.read_shard(i).len()).sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (values plus overhead).
    pub fn bytes(&self) -> usize {
        (0..SHARDS).map(|i| self.read_shard(i).bytes).sum()
    }

    /// Entries evicted to respect the bounds, so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Entries removed because they could no longer be served, so far.
    pub fn expirations(&self) -> u64 {
        self.expirations.load(Ordering::Relaxed)
    }

    /// Removes every entry.
    pub fn clear(&self) {
        for i in 0..SHARDS {
            *self.write_shard(i) = Shard::default();
        }
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "in-process".into()
    }

    fn get<'a>(
        &'a self,
        _request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>> {
        Box::pin(std::future::ready(Ok(MemoryStore::get(self, key))))
    }

    fn previous<'a>(
        &'a self,
        _request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>> {
        Box::pin(std::future::ready(Ok(MemoryStore::previous(self, key))))
    }

    fn put<'a>(
        &'a self,
        _request: &'a Request,
        key: EntryKey,
        entry: Arc<Entry>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let now = entry.created_ms;
        Box::pin(std::future::ready(Ok(MemoryStore::put(
            self, key, entry, now,
        ))))
    }

    fn table_keys<'a>(
        &'a self,
        current: &'a VersionVector,
    ) -> BoxFuture<'a, Result<Vec<TableKeys>, StoreError>> {
        Box::pin(std::future::ready(Ok(MemoryStore::table_keys(
            self, current,
        ))))
    }

    fn purge<'a>(
        &'a self,
        _current: &'a VersionVector,
        budget: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let now = crate::model::clock::system_now_ms();
        Box::pin(std::future::ready(Ok(self.purge_expired(now, budget))))
    }
}

#[cfg(test)]
mod tests;
