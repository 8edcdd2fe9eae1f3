//! The embedded bus: the version truth and the event log in a SQLite state file (or in memory),
//! and a `tokio::sync::broadcast` feed inside the process.
//!
//! With a file, several processes on one machine share it — a headless `freshcache etl-complete`
//! bumps the versions that a running `freshcache traffic` or console reads — exactly as they would
//! share a Redis: the file is the truth, each process re-reads it on an interval, and
//! [`Bus::catch_up`] delivers what other processes logged to this process's subscribers.
//!
//! This file holds the bus and its feed; every read and write of the state file is in `state`.

mod state;

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use rusqlite::Connection;
use tokio::sync::broadcast;

use super::{BumpOutcome, BumpRequest, Bus, BusError, Delivered, InstanceReport};
use crate::model::BoxFuture;
use crate::model::clock::SharedClock;
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, Tables, VersionVector};
use state::err;

/// Events kept in the log; older ones are dropped.
pub const LOG_LIMIT: i64 = 10_000;
/// Live-feed capacity; a subscriber further behind is told how many it missed.
pub const FEED_CAPACITY: usize = 4_096;
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
        // Start the feed after what is already logged: history is read with `history`.
        let last = state::prepare(&conn)?;
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
            let mut conn = inner.db.lock();
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
        let mut delivered = self.inner.delivered.lock();
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

impl Bus for LocalBus {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn versions(&self) -> BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move {
            self.blocking(|inner, conn| state::read_versions(inner, conn).map(Arc::new))
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
                    let request = BumpRequest {
                        tables: &tables,
                        batch: &batch,
                        mode,
                        test,
                        reserved: &wanted,
                        once,
                    };
                    state::bump(inner, conn, request)
                })
                .await?;
            if let Some(e) = &outcome.event {
                self.deliver(vec![e.clone()]);
            }
            Ok(outcome)
        })
    }

    fn reserved(&self) -> BoxFuture<'_, Result<Vec<u64>, BusError>> {
        Box::pin(self.blocking(move |inner, conn| state::reserved(inner, conn)))
    }

    fn reserve<'a>(&'a self, tables: &'a [TableId]) -> BoxFuture<'a, Result<Vec<u64>, BusError>> {
        let names: Vec<String> = tables
            .iter()
            .map(|t| self.inner.tables.name(*t).to_string())
            .collect();
        Box::pin(self.blocking(move |inner, conn| state::reserve(inner, conn, names)))
    }

    fn publish(&self, kind: EventKind) -> BoxFuture<'_, Result<Event, BusError>> {
        Box::pin(async move {
            let event = self
                .blocking(move |inner, conn| state::publish(inner, conn, kind))
                .await?;
            self.deliver(vec![event.clone()]);
            Ok(event)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.feed.subscribe()
    }

    fn history(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>, BusError>> {
        Box::pin(self.blocking(move |_, conn| state::history(conn, after, limit)))
    }

    fn report<'a>(&'a self, report: &'a InstanceReport) -> BoxFuture<'a, Result<(), BusError>> {
        let body = serde_json::to_string(report);
        let (id, at) = (report.id.clone(), crate::model::num::to_i64(report.at_ms));
        Box::pin(async move {
            let body = body.map_err(|e| BusError(e.to_string()))?;
            self.blocking(move |_, conn| state::report(conn, id, at, body))
                .await
        })
    }

    fn leave<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        let id = id.to_string();
        Box::pin(self.blocking(move |_, conn| state::leave(conn, &id)))
    }

    fn reports(&self, live_ms: u64) -> BoxFuture<'_, Result<Vec<InstanceReport>, BusError>> {
        Box::pin(self.blocking(move |inner, conn| state::reports(inner, conn, live_ms)))
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
        Box::pin(self.blocking(move |_, conn| state::raise(conn, wanted, epoch)))
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<usize, BusError>> {
        Box::pin(async move {
            let after = self.inner.delivered.lock().watermark;
            let events = self.history(after, 1_000).await?;
            Ok(self.deliver(events))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{BumpMode, PLAIN_MESSAGE_WINDOW};
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
        assert_eq!(i64::try_from(all.len()).unwrap(), LOG_LIMIT);
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
        // A temp dir left behind is untidy, not wrong.
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Regression (issue 10 B): the same plain payload published again after the delivery window
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
        clock.advance(PLAIN_MESSAGE_WINDOW + std::time::Duration::from_secs(1));
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
