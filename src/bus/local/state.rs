//! The embedded bus's state: the SQLite schema, and every read and write of the version truth,
//! the reserved numbers, the event log and the instance reports. Each write is one transaction;
//! a bump is one `BEGIN IMMEDIATE` transaction: versions, the baseline's `warehouse_version` and
//! `warehouse_last_update`, and the event-log entry commit together or not at all.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{Inner, LOG_LIMIT};
use crate::bus::{
    BumpMode, BumpOutcome, BumpRequest, BusError, InstanceReport, PLAIN_MESSAGE_WINDOW,
    versions_by_name,
};
use crate::model::clock::format_rfc3339;
use crate::model::events::{Event, EventKind};
use crate::model::versions::VersionVector;

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

pub(super) fn err(e: rusqlite::Error) -> BusError {
    BusError(format!("state store: {e}"))
}

/// Creates the tables a new state needs; returns the sequence number of the last event logged.
pub(super) fn prepare(conn: &Connection) -> Result<u64, BusError> {
    // Fails only on a closed connection, which the next statement reports.
    let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
    conn.execute_batch(SCHEMA).map_err(err)?;
    let last = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(err)?
        .max(0)
        .unsigned_abs();
    Ok(last)
}

pub(super) fn read_versions(inner: &Inner, conn: &Connection) -> Result<VersionVector, BusError> {
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
                version.max(0).unsigned_abs(),
                Arc::from(batch),
                updated.max(0).unsigned_abs(),
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
    Ok(v.unwrap_or(0).max(0).unsigned_abs())
}

fn log_event(
    inner: &Inner,
    tx: &rusqlite::Transaction<'_>,
    kind: EventKind,
) -> Result<Event, BusError> {
    let (mut event, body) = crate::bus::draft_event(inner.clock.now_ms(), &inner.origin, kind)?;
    tx.execute(
        "INSERT INTO events (at_ms, body) VALUES (?1, ?2)",
        rusqlite::params![crate::model::num::to_i64(event.at_ms), body],
    )
    .map_err(err)?;
    event.seq = tx.last_insert_rowid().max(0).unsigned_abs();
    tx.execute(
        "DELETE FROM events WHERE seq <= ?1",
        [crate::model::num::to_i64(event.seq) - LOG_LIMIT],
    )
    .map_err(err)?;
    Ok(event)
}

/// The one bump primitive (see [`BumpRequest`]), as one transaction.
pub(super) fn bump(
    inner: &Inner,
    conn: &mut Connection,
    request: BumpRequest<'_>,
) -> Result<BumpOutcome, BusError> {
    let BumpRequest {
        tables,
        batch,
        mode,
        test,
        reserved: wanted,
        once,
    } = request;
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
        let window = crate::model::num::to_i64(crate::model::num::ms(PLAIN_MESSAGE_WINDOW));
        let marked = tx
            .execute(
                "INSERT INTO delivered (id, at_ms) VALUES (?1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms \
                 WHERE delivered.at_ms <= ?2 - ?3",
                rusqlite::params![
                    crate::model::num::to_i64(id),
                    crate::model::num::to_i64(now),
                    window
                ],
            )
            .map_err(err)?;
        tx.execute(
            "DELETE FROM delivered WHERE at_ms < ?1",
            [crate::model::num::to_i64(now) - window],
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
        for &t in tables {
            if current.table_batch(t).is_empty() {
                tx.execute(
                    "INSERT INTO versions (table_name, version, batch, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(table_name) DO UPDATE SET \
                     batch = excluded.batch WHERE versions.batch = ''",
                    rusqlite::params![
                        inner.tables.name(t),
                        crate::model::num::to_i64(current.version(t)),
                        batch,
                        crate::model::num::to_i64(current.table_updated_ms(t))
                    ],
                )
                .map_err(err)?;
                adopted.push(t);
            }
        }
        // The baseline's warehouse_version, when the truth has none yet.
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('warehouse_version', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value \
             WHERE meta.value < excluded.value",
            [batch],
        )
        .map_err(err)?;
        let versions = Arc::new(read_versions(inner, &tx)?);
        tx.commit().map_err(err)?;
        let mut outcome = nothing(versions);
        outcome.bumped = adopted;
        return Ok(outcome);
    }
    let (next, bumped) = match mode {
        BumpMode::Advance => current.advanced_to(tables, batch, now),
        _ => (current.bumped(tables, batch, now), tables.to_vec()),
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
            rusqlite::params![inner.tables.name(t), crate::model::num::to_i64(v)],
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
                crate::model::num::to_i64(next.version(t)),
                next.table_batch(t),
                crate::model::num::to_i64(next.table_updated_ms(t))
            ],
        )
        .map_err(err)?;
    }
    for (key, value) in [
        ("warehouse_version", next.batch.to_string()),
        // The baseline's key holds epoch seconds.
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
            batch: batch.to_string(),
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
}

/// The highest number reserved for each table (table order).
pub(super) fn reserved(inner: &Inner, conn: &Connection) -> Result<Vec<u64>, BusError> {
    inner
        .tables
        .names()
        .iter()
        .map(|name| reserved_of(conn, name))
        .collect()
}

/// Reserves the next number of each table named, above its version and every number reserved.
pub(super) fn reserve(
    inner: &Inner,
    conn: &mut Connection,
    names: Vec<String>,
) -> Result<Vec<u64>, BusError> {
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
            rusqlite::params![name, crate::model::num::to_i64(v)],
        )
        .map_err(err)?;
        out.push(v);
    }
    tx.commit().map_err(err)?;
    Ok(out)
}

/// Logs an event.
pub(super) fn publish(
    inner: &Inner,
    conn: &mut Connection,
    kind: EventKind,
) -> Result<Event, BusError> {
    let tx = conn.transaction().map_err(err)?;
    let e = log_event(inner, &tx, kind)?;
    tx.commit().map_err(err)?;
    Ok(e)
}

/// Up to `limit` logged events with `seq > after`, oldest first.
pub(super) fn history(conn: &Connection, after: u64, limit: usize) -> Result<Vec<Event>, BusError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(err)?;
    let rows = stmt
        .query_map(
            rusqlite::params![
                crate::model::num::to_i64(after),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, body) = row.map_err(err)?;
        // A body this version cannot read (written by another version) is skipped.
        if let Ok(mut e) = serde_json::from_str::<Event>(&body) {
            e.seq = seq.max(0).unsigned_abs();
            out.push(e);
        }
    }
    Ok(out)
}

/// Records an instance's report (its heartbeat).
pub(super) fn report(conn: &Connection, id: String, at: i64, body: String) -> Result<(), BusError> {
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
}

/// Forgets instance `id`'s report.
pub(super) fn leave(conn: &Connection, id: &str) -> Result<(), BusError> {
    conn.execute("DELETE FROM instances WHERE id = ?1", [id])
        .map_err(err)?;
    Ok(())
}

/// The latest report of every instance heard from within `live_ms`.
pub(super) fn reports(
    inner: &Inner,
    conn: &Connection,
    live_ms: u64,
) -> Result<Vec<InstanceReport>, BusError> {
    let since = crate::model::num::to_i64(inner.clock.now_ms().saturating_sub(live_ms));
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
}

/// Raises every table named to at least its version and batch in `wanted`, and records `epoch`.
pub(super) fn raise(
    conn: &mut Connection,
    wanted: Vec<(String, u64, String)>,
    epoch: String,
) -> Result<usize, BusError> {
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
                rusqlite::params![name, crate::model::num::to_i64(v), batch],
            )
            .map_err(err)?;
        // Numbers a lost truth had handed out are never handed out again.
        tx.execute(
            "INSERT INTO reserved (table_name, version) VALUES (?1, ?2) \
             ON CONFLICT(table_name) DO UPDATE SET version = excluded.version \
             WHERE reserved.version < excluded.version",
            rusqlite::params![name, crate::model::num::to_i64(v)],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(raised)
}
