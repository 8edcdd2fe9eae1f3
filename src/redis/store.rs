//! The shared second tier: cached answers in Redis, one copy for every API server.
//!
//! # Keys
//! Every key of a request carries the hash tag of the first table its query reads, so an entry,
//! its lease and its pointer live in one Cluster slot and the scripts that touch them together are
//! legal on a Cluster:
//!
//! | key | holds |
//! |---|---|
//! | `fc:{sales}:e:<query>:<fingerprint>:<versions>` | the entry (JSON), `PX` = until it can no longer be served |
//! | `fc:{sales}:p:<query>:<fingerprint>` | pointer to the newest stored versions (for stale fallback) |
//! | `fc:{sales}:l:<query>:<fingerprint>:<versions>` | the lease on loading that key (`SET NX PX`, random token) |
//! | `fc:{sales}:i:<version>` | index: entries holding that version of the table (sorted by expiry) |
//! | `fc:{sales}:iv` | the versions that have an index |
//!
//! `<versions>` is the key's table versions in the query's table order, joined by `.` (`3.1`).
//!
//! # The entry format
//! An entry is the JSON of [`Entry`]: `{"fresh_until", "created_ms", "load_ms", "keep_until"}`
//! (ms since the epoch; `load_ms` a duration), `"value"` (the answer's JSON, as a string) and
//! `"versions": {"len", "tables", "versions"}` (the [`Stamp`](crate::model::entry::Stamp): how many tables, then four
//! table ids and four versions, zero-padded). The pointer is a hash `{versions, created}`.
//!
//! # Nothing read here is trusted
//! Every entry read back is validated before anyone uses it: it must parse, its stamp must name
//! exactly the tables the request's query reads, at exactly the versions of the key it was read
//! from, and its value must be JSON. Anything else (bytes written by another program, an older
//! format, a truncated write) is counted ([`Store::corrupt_entries`]), logged, and is a miss,
//! which the next load overwrites; a pointer naming versions that do not parse is the same.
//!
//! # What never happens here
//! No `KEYS`: per-table live and old-version counts come from the indexes (`ZCOUNT`), and purging
//! old versions walks an index in bounded batches of `UNLINK`, off the request path. A lease is
//! released or extended only by compare-and-delete / compare-and-pexpire scripts, so a slow loader
//! never removes someone else's lease. No entry is written by a plain `SET`: one script checks and
//! writes. A loader writes only while its token still holds the key's lease; when the lease has
//! expired and nobody holds it, only if no entry created later is stored; when another process
//! has taken the lease over, never (that holder's answer wins, and the refusal is counted by the
//! engine). The same script moves the pointer only to newer *versions* (compared per table,
//! numerically), so a late load of an old version never becomes the stale fallback in place of
//! the newer one; and a slow loader can never overwrite data of newer versions, because its key
//! carries the versions it loaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use super::fills::{FILLS_CHANNEL, Fills};
use super::link::{LinkError, RedisLink};
use crate::model::BoxFuture;
use crate::model::catalog::Request;
use crate::model::clock::system_now_ms;
use crate::model::entry::{Entry, EntryKey, TableKeys};
use crate::model::versions::{TableId, Tables, VersionVector};
use crate::store::{PutOutcome, Store, StoreError};

mod keys;
mod purge;
mod scripts;

use keys::request_key;
use scripts::*;

/// Keys purged per batch: one pipeline of this many UNLINKs plus a ZREM. Against 500, 200 lowered
/// other clients' p99 and p99.9 GET latency during a purge (BENCHMARKS.md), at the cost of a
/// slower purge, which runs in the background anyway.
pub const PURGE_BATCH: usize = 200;
/// The pause between two purge batches: Redis serves everyone else in between.
const PURGE_PAUSE: Duration = Duration::from_millis(2);
/// Whoever holds it does the fleet's housekeeping (purging old versions) for a while.
const HOUSEKEEPING_KEY: &str = "fc:{_}:housekeeping";

/// What [`RedisStore::store_entry`] writes for an entry.
struct StoredEntry {
    pointer: String,
    body: Vec<u8>,
    ttl: u64,
    versions: String,
    created: u64,
    keep_until: u64,
    index: Vec<(String, String, u64)>,
}

/// The Redis store.
pub struct RedisStore {
    link: Arc<RedisLink>,
    tables: Tables,
    fills: Arc<Fills>,
    put_script: Script,
    extend_script: Script,
    release_script: Script,
    /// Entries read back that failed validation (see the module docs).
    corrupt: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("at", &self.link.describe())
            .finish_non_exhaustive()
    }
}

fn store_err(e: LinkError) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    /// `SET name value NX PX ttl`: whether this call took the key (a lease, the housekeeping lock).
    async fn take(&self, name: String, value: String, ttl: Duration) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .link
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(name)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(crate::model::num::ms(ttl).max(1))
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(store_err)?;
        Ok(taken.is_some())
    }

    /// A store on `link` for the catalog's `tables`, with no bus beside it: nothing wakes a
    /// process waiting for another's fill, so it waits out its bound. A store that serves an
    /// instance is opened with its bus ([`Redis::open`](super::Redis::open)).
    pub fn new(link: Arc<RedisLink>, tables: Tables) -> Self {
        Self::with_fills(link, tables, Arc::default())
    }

    /// A store whose fill wake-ups come from the bus that shares `fills`.
    pub(super) fn with_fills(link: Arc<RedisLink>, tables: Tables, fills: Arc<Fills>) -> Self {
        Self {
            link,
            tables,
            fills,
            put_script: Script::new(PUT),
            extend_script: Script::new(EXTEND),
            release_script: Script::new(RELEASE),
            corrupt: AtomicU64::new(0),
        }
    }

    /// The link.
    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }

    fn tag(&self, request: &Request) -> &str {
        request
            .query()
            .tables
            .first()
            .map_or("_", |t| self.tables.name(*t))
    }

    fn versions_text(request: &Request, key: &EntryKey) -> String {
        key.versions[..request.query().tables.len().min(key.versions.len())]
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The entry's key: `fc:{table}:e:<query>:<fingerprint>:<versions>`.
    pub fn entry_key(&self, request: &Request, key: &EntryKey) -> String {
        let versions = Self::versions_text(request, key);
        request_key(self.tag(request), 'e', request, key, Some(&versions))
    }

    fn pointer_key(&self, request: &Request, key: &EntryKey) -> String {
        request_key(self.tag(request), 'p', request, key, None)
    }

    fn lease_key(&self, request: &Request, key: &EntryKey) -> String {
        let versions = Self::versions_text(request, key);
        request_key(self.tag(request), 'l', request, key, Some(&versions))
    }

    fn index_key(&self, table: TableId, version: u64) -> String {
        format!("fc:{{{}}}:i:{version}", self.tables.name(table))
    }

    fn versions_key(&self, table: TableId) -> String {
        format!("fc:{{{}}}:iv", self.tables.name(table))
    }

    /// Stores `entry` (its pointer, its indexes, then the fill notification) and releases the
    /// lease `token` holds, all in one call bounded by one response timeout: a Redis that hangs
    /// costs the loader one timeout, not one per step. The write is conditional (see the
    /// module docs); indexes and the notification follow only when it happened.
    async fn store_entry(
        &self,
        request: &Request,
        key: EntryKey,
        entry: Option<Arc<Entry>>,
        release: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let name = self.entry_key(request, &key);
        let lease = self.lease_key(request, &key);
        let stored = match &entry {
            Some(entry) => Some(StoredEntry {
                pointer: self.pointer_key(request, &key),
                body: serde_json::to_vec(&**entry).map_err(|e| StoreError(e.to_string()))?,
                ttl: entry.keep_until.saturating_sub(system_now_ms()).max(1_000),
                versions: Self::versions_text(request, &key),
                created: entry.created_ms,
                keep_until: entry.keep_until,
                // The per-table indexes live in other slots: not in the script.
                index: entry
                    .versions
                    .iter()
                    .map(|(t, v)| (self.index_key(t, v), self.versions_key(t), v))
                    .collect(),
            }),
            None => None,
        };
        let (put, release_script) = (&self.put_script, &self.release_script);
        let token = release.map_or_else(String::new, |t| t.to_string());
        self.link
            .call(|mut c| {
                let (name, lease, token, stored) = (&name, &lease, &token, &stored);
                async move {
                    let Some(s) = stored else {
                        if !token.is_empty() {
                            release_script
                                .key(lease)
                                .arg(token)
                                .invoke_async::<i64>(&mut c)
                                .await?;
                        }
                        return Ok(PutOutcome::Stored { evicted: 0 });
                    };
                    // The script also releases the lease when this token held it (when it
                    // expired and nobody took it, there is nothing to release).
                    let outcome: i64 = put
                        .key(name)
                        .key(&s.pointer)
                        .key(lease)
                        .arg(&s.body)
                        .arg(s.ttl)
                        .arg(&s.versions)
                        .arg(s.created)
                        .arg(token)
                        .invoke_async(&mut c)
                        .await?;
                    match outcome {
                        1 => {}
                        0 => return Ok(PutOutcome::LeaseLost),
                        _ => return Ok(PutOutcome::KeptNewer),
                    }
                    let mut p = redis::pipe();
                    for (i, iv, v) in &s.index {
                        p.cmd("ZADD").arg(i).arg(s.keep_until).arg(name).ignore();
                        p.cmd("SADD").arg(iv).arg(*v).ignore();
                    }
                    p.cmd("PUBLISH").arg(FILLS_CHANNEL).arg(name).ignore();
                    p.exec_async(&mut c).await?;
                    Ok(PutOutcome::Stored { evicted: 0 })
                }
            })
            .await
            .map_err(store_err)
    }

    /// Reads the entry `name` of `request`, which must be at `versions` (see "Nothing read here
    /// is trusted" in the module docs).
    async fn get_key(
        &self,
        name: String,
        request: &Request,
        versions: &[u64],
    ) -> Result<Option<Arc<Entry>>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .link
            .call(|mut c| {
                let name = name.clone();
                async move { redis::cmd("GET").arg(name).query_async(&mut c).await }
            })
            .await
            .map_err(store_err)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        match serde_json::from_slice::<Entry>(&raw)
            .map_err(|e| format!("unreadable: {e}"))
            .and_then(|entry| check(&entry, request, versions).map(|()| entry))
        {
            Ok(entry) => Ok(Some(Arc::new(entry))),
            Err(why) => {
                self.count_corrupt(&name, &why);
                Ok(None)
            }
        }
    }

    /// Counts an entry (or pointer) that failed validation; logs the first and then every
    /// power of two, so a Redis full of garbage cannot flood the log.
    fn count_corrupt(&self, name: &str, why: &str) {
        let n = self.corrupt.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                key = name,
                reason = why,
                corrupt_so_far = n,
                "a shared entry failed validation and was treated as a miss"
            );
        }
    }
}

impl Store for RedisStore {
    fn describe(&self) -> String {
        self.link.describe().to_string()
    }

    fn get<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>> {
        let n = request.query().tables.len().min(key.versions.len());
        Box::pin(self.get_key(self.entry_key(request, key), request, &key.versions[..n]))
    }

    fn previous<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<Entry>>, StoreError>> {
        Box::pin(async move {
            let pointer = self.pointer_key(request, key);
            let newest: Option<String> = self
                .link
                .call(|mut c| async move {
                    redis::cmd("HGET")
                        .arg(pointer)
                        .arg("versions")
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(store_err)?;
            let current = Self::versions_text(request, key);
            match newest {
                Some(v) if v != current => {
                    let pointer = self.pointer_key(request, key);
                    let Some(versions) = parse_versions(&v, request.query().tables.len()) else {
                        self.count_corrupt(&pointer, "a pointer to versions that do not parse");
                        return Ok(None);
                    };
                    let name = format!(
                        "fc:{{{}}}:e:{}:{:032x}:{v}",
                        self.tag(request),
                        request.query().name,
                        key.fingerprint
                    );
                    self.get_key(name, request, &versions).await
                }
                _ => Ok(None),
            }
        })
    }

    fn put<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Arc<Entry>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.store_entry(request, key, Some(entry), None))
    }

    fn put_and_release<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Option<Arc<Entry>>,
        token: u64,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.store_entry(request, key, entry, Some(token)))
    }

    fn table_keys<'a>(
        &'a self,
        current: &'a VersionVector,
    ) -> BoxFuture<'a, Result<Vec<TableKeys>, StoreError>> {
        Box::pin(async move {
            let now = system_now_ms();
            let mut out = vec![TableKeys::default(); current.len()];
            for t in self.tables.ids() {
                let vkey = self.versions_key(t);
                let versions: Vec<u64> = self
                    .link
                    .call(|mut c| async move {
                        redis::cmd("SMEMBERS").arg(vkey).query_async(&mut c).await
                    })
                    .await
                    .map_err(store_err)?;
                if versions.is_empty() {
                    continue;
                }
                let names: Vec<String> = versions.iter().map(|v| self.index_key(t, *v)).collect();
                let counts: Vec<u64> = self
                    .link
                    .call(|mut c| async move {
                        let mut p = redis::pipe();
                        for n in &names {
                            p.cmd("ZCOUNT").arg(n).arg(now).arg("+inf");
                        }
                        p.query_async(&mut c).await
                    })
                    .await
                    .map_err(store_err)?;
                if let Some(k) = out.get_mut(t.index()) {
                    for (v, n) in versions.iter().zip(counts) {
                        if *v >= current.version(t) {
                            k.current += n;
                        } else {
                            k.old += n;
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    fn lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.take(self.lease_key(request, key), token.to_string(), ttl))
    }

    fn extend_lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let name = self.lease_key(request, key);
            let script = &self.extend_script;
            let n: i64 = self
                .link
                .call(|mut c| async move {
                    script
                        .key(name)
                        .arg(token.to_string())
                        .arg(crate::model::num::ms(ttl).max(1))
                        .invoke_async(&mut c)
                        .await
                })
                .await
                .map_err(store_err)?;
            Ok(n == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let name = self.lease_key(request, key);
            let script = &self.release_script;
            self.link
                .call(|mut c| async move {
                    script
                        .key(name)
                        .arg(token.to_string())
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await
                .map_err(store_err)?;
            Ok(())
        })
    }

    fn wait_fill<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let notify = self.fills.register(&self.entry_key(request, key));
            // Timing out is the point: the caller looks again either way.
            let _ = tokio::time::timeout(timeout, notify.notified()).await;
        })
    }

    fn corrupt_entries(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    fn degraded(&self) -> Option<String> {
        self.link.breaker().is_open().then(|| {
            format!(
                "{} unreachable: answering from the warehouse",
                self.link.describe()
            )
        })
    }

    fn housekeeping_lock(&self, ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.take(
            HOUSEKEEPING_KEY.to_string(),
            crate::model::events::origin(),
            ttl,
        ))
    }

    fn purge<'a>(
        &'a self,
        current: &'a VersionVector,
        budget: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut purged = 0;
            for t in self.tables.ids() {
                // The version just before the current one stays until it expires: it is what a
                // request may be served stale while the current one loads.
                let below = current.version(t).saturating_sub(1);
                purged += self.purge_table(t, below, budget - purged).await?;
                if purged >= budget {
                    break;
                }
            }
            Ok(purged)
        })
    }
}

/// Whether `entry`, read back for `request` at `versions`, may be used: its stamp names the
/// query's tables at exactly those versions, and its value is JSON.
fn check(entry: &Entry, request: &Request, versions: &[u64]) -> Result<(), String> {
    let stamp = &entry.versions;
    if stamp.tables() != request.query().tables.as_slice() {
        return Err("its stamp names other tables than the query reads".into());
    }
    if stamp.versions() != versions {
        return Err(format!(
            "its stamp says versions {:?}, its key {versions:?}",
            stamp.versions()
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&entry.value)
        .map_err(|e| format!("its value is not JSON: {e}"))?;
    Ok(())
}

/// `3.1` → `[3, 1]`, when it names exactly `tables` versions.
fn parse_versions(text: &str, tables: usize) -> Option<Vec<u64>> {
    let v: Vec<u64> = text
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == tables).then_some(v)
}
