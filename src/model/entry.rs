//! Cached answers and their keys: an [`Entry`] (immutable, shared as `Arc<Entry>`), the [`Stamp`]
//! of table versions it was computed at, and the [`EntryKey`] that names it: the request's stable
//! fingerprint plus those versions, so a version bump changes every affected key at once and
//! nothing has to be deleted. Every store keeps these; the engine makes them.

use std::sync::Arc;

use super::catalog::MAX_TABLES_PER_QUERY;
use super::clock::Millis;
use super::versions::{TableId, Tables, VersionVector};

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
        s.len = u8::try_from(tables.len().min(MAX_TABLES_PER_QUERY)).unwrap_or(u8::MAX);
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
/// For `freshcache` the versions are the per-table versions the query reads; the baseline recipes put
/// other things there (nothing for TTL recipes, the minute label for the versioned one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryKey {
    /// The request's stable fingerprint ([`crate::model::catalog::Request::fingerprint`]).
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
        // The low half of the fingerprint: folding, not converting.
        #[allow(clippy::cast_possible_truncation)]
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

/// Live entries of one table, counted by the version *of that table* each entry holds: an entry
/// reading `sales` and `customers` that is behind on `sales` only counts as old for `sales`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableKeys {
    /// Entries computed at the table's current version.
    pub current: u64,
    /// Entries computed at an older version, still held (servable only as stale).
    pub old: u64,
}
