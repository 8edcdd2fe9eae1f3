//! The embedded bus: the version truth and the event log in a SQLite state file (or in memory),
//! and a `tokio::sync::broadcast` feed inside the process.
//!
//! With a file, several processes on one machine share it — a headless `freshcache etl-complete`
//! bumps the versions that a running `freshcache traffic` or console reads — exactly as they would
//! share a Redis: the file is the truth, each process re-reads it on an interval, and
//! [`Bus::catch_up`] delivers what other processes logged to this process's subscribers.
//!
//! A bump is one `BEGIN IMMEDIATE` transaction: versions, the seed's `warehouse_version` and
//! `warehouse_last_update`, and the event-log entry commit together or not at all.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::{
    BumpMode, BumpOutcome, BumpRequest, Bus, BusError, Delivered, InstanceReport,
    SEED_MESSAGE_WINDOW, versions_by_name,
};
use crate::model::BoxFuture;
use crate::model::clock::{SharedClock, format_rfc3339};
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, Tables, VersionVector};

/// Events kept in the log; older ones are dropped.
pub const LOG_LIMIT: i64 = 10_000;
/// Live-feed capacity; a subscriber further behind is told how many it missed.
pub const FEED_CAPACITY: usize = 4_096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    table_name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    batch TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reserved (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, body TEXT NOT NULL);
";

struct Inner {
    db: Mutex<Connection>,
    /// An in-memory state answers in microseconds: run it inline, not on the blocking pool.
    inline: bool,
    tables: Tables,
    clock: SharedClock,
    origin: String,
    describe: String,
    feed: broadcast::Sender<Event>,
    delivered: Mutex<Delivered>,
}

/// The embedded bus. Cheap to clone.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.describe)
    }
}

fn err(e: rusqlite::Error) -> BusError {
    BusError(format!("state store: {e}"))
}

impl LocalBus {
    /// A bus whose state lives in the SQLite file at `path` (created if needed), shared with any
    /// other process that opens the same file.
    pub fn open(path: &Path, tables: Tables, clock: SharedClock) -> Result<Self, BusError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| BusError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        Self::with(
            conn,
            tables,
            clock,
            format!("embedded ({})", path.display()),
            false,
        )
    }

    /// A bus private to this process.
    pub fn in_memory(tables: Tables, clock: SharedClock) -> Result<Self, BusError> {
        let conn = Connection::open_in_memory().map_err(err)?;
        Self::with(conn, tables, clock, "embedded (in memory)".into(), true)
    }

    fn with(
        conn: Connection,
        tables: Tables,
        clock: SharedClock,
        describe: String,
        inline: bool,
    ) -> Result<Self, BusError> {
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Start the feed after what is already logged: history is read with `history`.
        let last: u64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(err)?
            .max(0) as u64;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                db: Mutex::new(conn),
                inline,
                tables,
                clock,
                origin: crate::model::events::origin(),
                describe,
                feed,
                delivered: Mutex::new(Delivered {
                    watermark: last,
                    ..Delivered::default()
                }),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &mut Connection) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let inner = self.inner.clone();
        let run = move || {
            let mut conn = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner, &mut conn)
        };
        if self.inner.inline {
            return run();
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| BusError(format!("state task failed: {e}")))?
    }

    /// Puts events not yet on this process's feed onto it; returns how many.
    fn deliver(&self, events: Vec<Event>) -> usize {
        let mut delivered = self
            .inner
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for e in events {
            if delivered.mark(e.seq) {
                n += 1;
                // No subscriber is not an error: the log keeps the event.
                let _ = self.inner.feed.send(e);
            }
        }
        n
    }
}

fn read_versions(inner: &Inner, conn: &Connection) -> Result<VersionVector, BusError> {
    let mut parts: Vec<(u64, Arc<str>, u64)> = vec![(0, Arc::from(""), 0); inner.tables.len()];
    let mut stmt = conn
        .prepare_cached("SELECT table_name, version, batch, updated_ms FROM versions")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (name, version, batch, updated) = row.map_err(err)?;
        if let Ok(id) = inner.tables.id(&name) {
            parts[id.index()] = (
                version.max(0) as u64,
                Arc::from(batch),
                updated.max(0) as u64,
            );
        }
    }
    let meta = |key: &str| -> Result<Option<String>, BusError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(err)
    };
    let batch = meta("warehouse_version")?.unwrap_or_default();
    let last = meta("warehouse_last_update_ms")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let generation = meta("generation")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut truth = VersionVector::from_parts(parts, Arc::from(batch), last, generation);
    truth.epoch = meta("truth_epoch")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(truth)
}

/// The highest number reserved for a table (0 if none).
fn reserved_of(conn: &Connection, table: &str) -> Result<u64, BusError> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT version FROM reserved WHERE table_name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

fn log_event(
    inner: &Inner,
    tx: &rusqlite::Transaction<'_>,
    kind: EventKind,
) -> Result<Event, BusError> {
    let mut event = Event {
        seq: 0,
        at_ms: inner.clock.now_ms(),
        origin: inner.origin.clone(),
        kind,
    };
    let body = serde_json::to_string(&event).map_err(|e| BusError(e.to_string()))?;
    tx.execute(
        "INSERT INTO events (at_ms, body) VALUES (?1, ?2)",
        rusqlite::params![event.at_ms as i64, body],
    )
    .map_err(err)?;
    event.seq = tx.last_insert_rowid().max(0) as u64;
    tx.execute(
        "DELETE FROM events WHERE seq <= ?1",
        [event.seq as i64 - LOG_LIMIT],
    )
    .map_err(err)?;
    Ok(event)
}

impl Bus for LocalBus {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn versions(&self) -> BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move {
            self.blocking(|inner, conn| read_versions(inner, conn).map(Arc::new))
                .await
        })
    }

    fn bump_with<'a>(
        &'a self,
        request: BumpRequest<'a>,
    ) -> BoxFuture<'a, Result<BumpOutcome, BusError>> {
        let (tables, batch) = (request.tables.to_vec(), request.batch.to_string());
        let (mode, test, once) = (request.mode, request.test, request.once);
        let wanted = request.reserved.to_vec();
        Box::pin(async move {
            let outcome = self
                .blocking(move |inner, conn| {
                    let tx = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(err)?;
                    let now = inner.clock.now_ms();
                    let nothing = |versions| BumpOutcome {
                        versions,
                        bumped: Vec::new(),
                        event: None,
                        overtaken: Vec::new(),
                        duplicate: false,
                    };
                    if let Some(id) = once {
                        // The dedupe mark and the bump commit together, or neither does.
                        let window = SEED_MESSAGE_WINDOW.as_millis() as i64;
                        let marked = tx
                            .execute(
                                "INSERT INTO delivered (id, at_ms) VALUES (?1, ?2) \
                                 ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms \
                                 WHERE delivered.at_ms <= ?2 - ?3",
                                rusqlite::params![id as i64, now as i64, window],
                            )
                            .map_err(err)?;
                        tx.execute(
                            "DELETE FROM delivered WHERE at_ms < ?1",
                            [now as i64 - window],
                        )
                        .map_err(err)?;
                        if marked == 0 {
                            let versions = Arc::new(read_versions(inner, &tx)?);
                            tx.commit().map_err(err)?;
                            let mut outcome = nothing(versions);
                            outcome.duplicate = true;
                            return Ok(outcome);
                        }
                    }
                    let current = read_versions(inner, &tx)?;
                    if mode == BumpMode::Adopt {
                        let mut adopted = Vec::new();
                        for &t in &tables {
                            if current.table_batch(t).is_empty() {
                                tx.execute(
                                    "INSERT INTO versions (table_name, version, batch, updated_ms) \
                                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(table_name) DO UPDATE SET \
                                     batch = excluded.batch WHERE versions.batch = ''",
                                    rusqlite::params![
                                        inner.tables.name(t),
                                        current.version(t) as i64,
                                        batch,
                                        current.table_updated_ms(t) as i64
                                    ],
                                )
                                .map_err(err)?;
                                adopted.push(t);
                            }
                        }
                        // The seed's warehouse_version, when the truth has none yet.
                        tx.execute(
                            "INSERT INTO meta (key, value) VALUES ('warehouse_version', ?1) \
                             ON CONFLICT(key) DO UPDATE SET value = excluded.value \
                             WHERE meta.value < excluded.value",
                            [batch.as_str()],
                        )
                        .map_err(err)?;
                        let versions = Arc::new(read_versions(inner, &tx)?);
                        tx.commit().map_err(err)?;
                        let mut outcome = nothing(versions);
                        outcome.bumped = adopted;
                        return Ok(outcome);
                    }
                    let (next, bumped) = match mode {
                        BumpMode::Advance => current.advanced_to(&tables, &batch, now),
                        _ => (current.bumped(&tables, &batch, now), tables.clone()),
                    };
                    if bumped.is_empty() {
                        tx.commit().map_err(err)?;
                        return Ok(nothing(Arc::new(current)));
                    }
                    // Each number is allocated above the version and above every reserved one;
                    // a reserved number is used only while nothing has overtaken it.
                    let mut next = next;
                    let mut overtaken = Vec::new();
                    for &t in &bumped {
                        let position = tables.iter().position(|x| *x == t);
                        let want = position.and_then(|i| wanted.get(i)).copied().unwrap_or(0);
                        let cur = current.version(t);
                        let v = if want > cur {
                            want
                        } else {
                            if want > 0 {
                                overtaken.push(t);
                            }
                            cur.max(reserved_of(&tx, inner.tables.name(t))?) + 1
                        };
                        next.set_version(t, v);
                        tx.execute(
                            "INSERT INTO reserved (table_name, version) VALUES (?1, ?2) \
                             ON CONFLICT(table_name) DO UPDATE SET version = excluded.version \
                             WHERE reserved.version < excluded.version",
                            rusqlite::params![inner.tables.name(t), v as i64],
                        )
                        .map_err(err)?;
                    }
                    for &t in &bumped {
                        tx.execute(
                            "INSERT INTO versions (table_name, version, batch, updated_ms) \
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT(table_name) DO UPDATE SET \
                             version = excluded.version, batch = excluded.batch, \
                             updated_ms = excluded.updated_ms",
                            rusqlite::params![
                                inner.tables.name(t),
                                next.version(t) as i64,
                                next.table_batch(t),
                                next.table_updated_ms(t) as i64
                            ],
                        )
                        .map_err(err)?;
                    }
                    for (key, value) in [
                        ("warehouse_version", next.batch.to_string()),
                        // The seed's key holds epoch seconds.
                        (
                            "warehouse_last_update",
                            format!("{:.3}", next.last_updated_ms as f64 / 1000.0),
                        ),
                        ("warehouse_last_update_ms", next.last_updated_ms.to_string()),
                        ("generation", next.generation.to_string()),
                    ] {
                        tx.execute(
                            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                            [key, value.as_str()],
                        )
                        .map_err(err)?;
                    }
                    let event = log_event(
                        inner,
                        &tx,
                        EventKind::WarehouseUpdated {
                            timestamp: format_rfc3339(now),
                            tables: bumped
                                .iter()
                                .map(|t| inner.tables.name(*t).to_string())
                                .collect(),
                            versions: versions_by_name(&next, &inner.tables),
                            batch: batch.clone(),
                            test,
                        },
                    )?;
                    tx.commit().map_err(err)?;
                    Ok(BumpOutcome {
                        versions: Arc::new(next),
                        bumped,
                        event: Some(event),
                        overtaken,
                        duplicate: false,
                    })
                })
                .await?;
            if let Some(e) = &outcome.event {
                self.deliver(vec![e.clone()]);
            }
            Ok(outcome)
        })
    }

    fn reserved(&self) -> BoxFuture<'_, Result<Vec<u64>, BusError>> {
        Box::pin(self.blocking(move |inner, conn| {
            inner
                .tables
                .names()
                .iter()
                .map(|name| reserved_of(conn, name))
                .collect()
        }))
    }

    fn reserve<'a>(&'a self, tables: &'a [TableId]) -> BoxFuture<'a, Result<Vec<u64>, BusError>> {
        let names: Vec<String> = tables
            .iter()
            .map(|t| self.inner.tables.name(*t).to_string())
            .collect();
        Box::pin(self.blocking(move |inner, conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let current = read_versions(inner, &tx)?;
            let mut out = Vec::with_capacity(names.len());
            for name in &names {
                let cur = inner.tables.id(name).map_or(0, |t| current.version(t));
                let v = cur.max(reserved_of(&tx, name)?) + 1;
                tx.execute(
                    "INSERT INTO reserved (table_name, version) VALUES (?1, ?2) \
                     ON CONFLICT(table_name) DO UPDATE SET version = excluded.version",
                    rusqlite::params![name, v as i64],
                )
                .map_err(err)?;
                out.push(v);
            }
            tx.commit().map_err(err)?;
            Ok(out)
        }))
    }

    fn publish(&self, kind: EventKind) -> BoxFuture<'_, Result<Event, BusError>> {
        Box::pin(async move {
            let event = self
                .blocking(move |inner, conn| {
                    let tx = conn.transaction().map_err(err)?;
                    let e = log_event(inner, &tx, kind)?;
                    tx.commit().map_err(err)?;
                    Ok(e)
                })
                .await?;
            self.deliver(vec![event.clone()]);
            Ok(event)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.feed.subscribe()
    }

    fn history(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>, BusError>> {
        Box::pin(self.blocking(move |_, conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(err)?;
            let rows = stmt
                .query_map(rusqlite::params![after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, body) = row.map_err(err)?;
                // A body this version cannot read (written by another version) is skipped.
                if let Ok(mut e) = serde_json::from_str::<Event>(&body) {
                    e.seq = seq.max(0) as u64;
                    out.push(e);
                }
            }
            Ok(out)
        }))
    }

    fn report<'a>(&'a self, report: &'a InstanceReport) -> BoxFuture<'a, Result<(), BusError>> {
        let body = serde_json::to_string(report);
        let (id, at) = (report.id.clone(), report.at_ms as i64);
        Box::pin(async move {
            let body = body.map_err(|e| BusError(e.to_string()))?;
            self.blocking(move |_, conn| {
                conn.execute(
                    "INSERT INTO instances (id, at_ms, body) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body",
                    rusqlite::params![id, at, body],
                )
                .map_err(err)?;
                // Instances silent for an hour are forgotten.
                conn.execute("DELETE FROM instances WHERE at_ms < ?1", [at - 3_600_000])
                    .map_err(err)?;
                Ok(())
            })
            .await
        })
    }

    fn reports(&self, live_ms: u64) -> BoxFuture<'_, Result<Vec<InstanceReport>, BusError>> {
        Box::pin(self.blocking(move |inner, conn| {
            let since = inner.clock.now_ms().saturating_sub(live_ms) as i64;
            let mut stmt = conn
                .prepare_cached("SELECT body FROM instances WHERE at_ms >= ?1 ORDER BY id")
                .map_err(err)?;
            let rows = stmt
                .query_map([since], |r| r.get::<_, String>(0))
                .map_err(err)?;
            let mut out = Vec::new();
            for body in rows {
                // A report this version cannot read (another version wrote it) is skipped.
                if let Ok(r) = serde_json::from_str::<InstanceReport>(&body.map_err(err)?) {
                    out.push(r);
                }
            }
            Ok(out)
        }))
    }

    fn raise<'a>(&'a self, versions: &'a VersionVector) -> BoxFuture<'a, Result<usize, BusError>> {
        let wanted: Vec<(String, u64, String)> = self
            .inner
            .tables
            .ids()
            .map(|t| {
                (
                    self.inner.tables.name(t).to_string(),
                    versions.version(t),
                    versions.table_batch(t).to_string(),
                )
            })
            .collect();
        let epoch = versions.epoch.to_string();
        Box::pin(self.blocking(move |_, conn| {
            let tx = conn.transaction().map_err(err)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('truth_epoch', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [epoch.as_str()],
            )
            .map_err(err)?;
            let mut raised = 0;
            for (name, v, batch) in wanted {
                raised += tx
                    .execute(
                        "INSERT INTO versions (table_name, version, batch, updated_ms) \
                         VALUES (?1, ?2, ?3, 0) ON CONFLICT(table_name) DO UPDATE SET \
                         version = MAX(version, excluded.version), \
                         batch = MAX(batch, excluded.batch) \
                         WHERE versions.version < excluded.version",
                        rusqlite::params![name, v as i64, batch],
                    )
                    .map_err(err)?;
                // Numbers a lost truth had handed out are never handed out again.
                tx.execute(
                    "INSERT INTO reserved (table_name, version) VALUES (?1, ?2) \
                     ON CONFLICT(table_name) DO UPDATE SET version = excluded.version \
                     WHERE reserved.version < excluded.version",
                    rusqlite::params![name, v as i64],
                )
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(raised)
        }))
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<usize, BusError>> {
        Box::pin(async move {
            let after = self
                .inner
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .watermark;
            let events = self.history(after, 1_000).await?;
            Ok(self.deliver(events))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clock::ManualClock;

    fn tables() -> Tables {
        Tables::new(["sales", "inventory", "customers"]).unwrap()
    }

    #[tokio::test]
    async fn a_bump_is_logged_published_and_idempotent() {
        let bus = LocalBus::in_memory(tables(), ManualClock::new(1_000)).unwrap();
        let mut feed = bus.subscribe();
        let out = bus
            .bump(
                &[TableId(0), TableId(2)],
                "20261126-10:00",
                BumpMode::Advance,
                false,
            )
            .await
            .unwrap();
        assert_eq!(out.bumped, vec![TableId(0), TableId(2)]);
        assert_eq!(out.versions.versions(), &[1, 0, 1]);
        let e = feed.recv().await.unwrap();
        assert_eq!(e.seq, 1);
        match &e.kind {
            EventKind::WarehouseUpdated {
                tables,
                versions,
                batch,
                ..
            } => {
                assert_eq!(tables, &["sales", "customers"]);
                assert_eq!(versions["sales"], 1);
                assert_eq!(batch, "20261126-10:00");
            }
            other => panic!("{other:?}"),
        }
        let again = bus
            .bump(
                &[TableId(0), TableId(2)],
                "20261126-10:00",
                BumpMode::Advance,
                false,
            )
            .await
            .unwrap();
        assert!(again.bumped.is_empty() && again.event.is_none());
        assert_eq!(bus.versions().await.unwrap().versions(), &[1, 0, 1]);
        let forced = bus
            .bump(&[TableId(1)], "manual", BumpMode::Force, false)
            .await
            .unwrap();
        assert_eq!(forced.versions.versions(), &[1, 1, 1]);
        assert_eq!(bus.history(0, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_lagging_reader_learns_how_many_it_missed() {
        let bus = LocalBus::in_memory(tables(), ManualClock::new(1)).unwrap();
        let mut slow = bus.subscribe();
        for i in 0..FEED_CAPACITY + 10 {
            bus.publish(EventKind::Incident {
                message: format!("{i}"),
            })
            .await
            .unwrap();
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag report, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_log_is_bounded() {
        let bus = LocalBus::in_memory(tables(), ManualClock::new(1)).unwrap();
        for _ in 0..(LOG_LIMIT + 5) {
            bus.publish(EventKind::Incident {
                message: "x".into(),
            })
            .await
            .unwrap();
        }
        let all = bus.history(0, usize::MAX >> 1).await.unwrap();
        assert_eq!(all.len() as i64, LOG_LIMIT);
        assert_eq!(all[0].seq, 6);
    }

    #[tokio::test]
    async fn processes_sharing_a_file_see_each_others_bumps_and_events() {
        let dir = std::env::temp_dir().join(format!(
            "fc-bus-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let path = dir.join("state.sqlite");
        let a = LocalBus::open(&path, tables(), ManualClock::new(1)).unwrap();
        let b = LocalBus::open(&path, tables(), ManualClock::new(1)).unwrap();
        let mut feed_b = b.subscribe();
        a.bump(&[TableId(1)], "b1", BumpMode::Advance, false)
            .await
            .unwrap();
        assert_eq!(b.versions().await.unwrap().versions(), &[0, 1, 0]);
        assert_eq!(b.catch_up().await.unwrap(), 1);
        assert_eq!(feed_b.recv().await.unwrap().seq, 1);
        assert_eq!(b.catch_up().await.unwrap(), 0, "nothing delivered twice");
        let once = |bus: &LocalBus| {
            let bus = bus.clone();
            async move {
                let mut request = BumpRequest::new(&[TableId(0)], "seed", BumpMode::Force);
                request.once = Some(42);
                bus.bump_with(request).await.unwrap()
            }
        };
        assert!(!once(&a).await.duplicate);
        assert!(once(&b).await.duplicate, "once across processes");
        assert_eq!(b.versions().await.unwrap().versions(), &[1, 1, 0]);
        drop((a, b));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression (issue 10 B): the same seed payload published again after the delivery window
    /// is a new update, not a duplicate for a day.
    #[tokio::test]
    async fn the_same_message_after_the_window_is_a_new_update() {
        let clock = ManualClock::new(1_000_000);
        let bus = LocalBus::in_memory(tables(), clock.clone()).unwrap();
        let bump = || {
            let bus = bus.clone();
            async move {
                let mut request = BumpRequest::new(&[TableId(1)], "seed", BumpMode::Force);
                request.once = Some(7);
                bus.bump_with(request).await.unwrap()
            }
        };
        assert!(!bump().await.duplicate);
        clock.advance(std::time::Duration::from_secs(5));
        assert!(bump().await.duplicate, "inside the window: one bump");
        clock.advance(SEED_MESSAGE_WINDOW + std::time::Duration::from_secs(1));
        assert!(!bump().await.duplicate, "after the window: a new update");
        assert_eq!(bus.versions().await.unwrap().version(TableId(1)), 2);
    }

    /// Regression (issue 10 F): a number reserved for a bump that never happened is burned; the
    /// next batch gets another one, so what was prepared for the first can never pass for it.
    #[tokio::test]
    async fn a_reserved_number_is_never_used_by_another_batch() {
        let bus = LocalBus::in_memory(tables(), ManualClock::new(1)).unwrap();
        let sales = [TableId(0)];
        let burned = bus.reserve(&sales).await.unwrap();
        assert_eq!(burned, vec![1]);
        // The bump for that batch failed; the next batch reserves and bumps.
        let next = bus.reserve(&sales).await.unwrap();
        assert_eq!(
            next,
            vec![2],
            "the failed batch's number is not handed out again"
        );
        let mut request = BumpRequest::new(&sales, "b2", BumpMode::Advance);
        request.reserved = &next;
        let outcome = bus.bump_with(request).await.unwrap();
        assert_eq!(outcome.versions.version(TableId(0)), 2);
        assert!(outcome.overtaken.is_empty());
        // A forced bump allocates above everything reserved.
        let reserved = bus.reserve(&sales).await.unwrap();
        assert_eq!(reserved, vec![3]);
        let forced = bus
            .bump(&sales, "op", BumpMode::Force, false)
            .await
            .unwrap();
        assert_eq!(forced.versions.version(TableId(0)), 4);
        // The batch that reserved 3 comes late: its number was overtaken, it gets a new one.
        let mut late = BumpRequest::new(&sales, "b3", BumpMode::Advance);
        late.reserved = &reserved;
        let outcome = bus.bump_with(late).await.unwrap();
        assert_eq!(outcome.versions.version(TableId(0)), 5);
        assert_eq!(outcome.overtaken, vec![TableId(0)]);
    }
}
