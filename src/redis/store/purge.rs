//! Purging: the entries of versions no rule can serve any more, dropped table by table through
//! their version indexes, in small batches with pauses so that requests go first.

use super::*;

impl RedisStore {
    /// Drops the (empty) index of an old version and its mention in the table's version set.
    pub(super) async fn forget_version(
        &self,
        index: &str,
        vkey: &str,
        v: u64,
    ) -> Result<(), StoreError> {
        let (index, vkey) = (index.to_string(), vkey.to_string());
        self.link
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("UNLINK")
                    .arg(index)
                    .ignore()
                    .cmd("SREM")
                    .arg(vkey)
                    .arg(v)
                    .ignore()
                    .exec_async(&mut c)
                    .await
            })
            .await
            .map_err(store_err)
    }

    /// Drops every indexed entry of `table` at versions below `below`, and expired entries of
    /// later versions, at most `budget` keys, in batches of [`PURGE_BATCH`].
    pub(super) async fn purge_table(
        &self,
        table: TableId,
        below: u64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let vkey = self.versions_key(table);
        let versions: Vec<u64> = self
            .link
            .call(|mut c| {
                let vkey = vkey.clone();
                async move { redis::cmd("SMEMBERS").arg(vkey).query_async(&mut c).await }
            })
            .await
            .map_err(store_err)?;
        let now = system_now_ms();
        let mut purged = 0;
        for v in versions {
            let index = self.index_key(table, v);
            loop {
                if purged >= budget {
                    return Ok(purged);
                }
                let take = PURGE_BATCH.min(budget - purged);
                // Old versions go whole; the current ones only where expired.
                let keys: Vec<String> = self
                    .link
                    .call(|mut c| {
                        let index = index.clone();
                        async move {
                            if v < below {
                                redis::cmd("ZRANGE")
                                    .arg(index)
                                    .arg(0)
                                    .arg(i64::try_from(take).unwrap_or(i64::MAX) - 1)
                                    .query_async(&mut c)
                                    .await
                            } else {
                                redis::cmd("ZRANGEBYSCORE")
                                    .arg(index)
                                    .arg("-inf")
                                    .arg(now)
                                    .arg("LIMIT")
                                    .arg(0)
                                    .arg(take)
                                    .query_async(&mut c)
                                    .await
                            }
                        }
                    })
                    .await
                    .map_err(store_err)?;
                if keys.is_empty() {
                    if v < below {
                        self.forget_version(&index, &vkey, v).await?;
                    }
                    break;
                }
                let n = keys.len();
                // One UNLINK per key: entries of one index can live in several slots.
                let index_for = index.clone();
                self.link
                    .call_within(self.link.response_timeout() * 4, |mut c| async move {
                        let mut p = redis::pipe();
                        for k in &keys {
                            p.cmd("UNLINK").arg(k).ignore();
                        }
                        p.cmd("ZREM").arg(&index_for).arg(&keys).ignore();
                        p.exec_async(&mut c).await
                    })
                    .await
                    .map_err(store_err)?;
                purged += n;
                if n < take {
                    // That was the last of an old version: its index goes too.
                    if v < below {
                        self.forget_version(&index, &vkey, v).await?;
                    }
                    break;
                }
                tokio::time::sleep(PURGE_PAUSE).await;
            }
        }
        Ok(purged)
    }
}

impl RedisStore {
    /// Drops every entry of `table` at versions below `below` (also the previous version, unlike
    /// [`Store::purge`]), at most `budget`: the benchmark's worst case.
    pub async fn purge_all_below(
        &self,
        table: TableId,
        below: u64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        self.purge_table(table, below, budget).await
    }
}
