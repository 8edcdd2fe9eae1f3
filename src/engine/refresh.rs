//! Refreshing ahead: the hot answers of tables being updated loaded before users ask (after a
//! bump, on `warm`, or at reserved versions before a flip), and the "updating" marks.

use super::*;

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

/// The word and bit of `table` in the engine's "updating" bitset.
#[inline]
pub(super) fn updating_bit(table: TableId) -> (usize, u64) {
    (table.index() / 64, 1 << (table.index() % 64))
}
impl Engine {
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
            total: crate::model::num::to_u32(requests.len()),
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
}
