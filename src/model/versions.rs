//! The version vector: which version of each warehouse table is current.
//!
//! Every table has a `u64` version that only ever goes up. A query's cache key carries the versions of
//! exactly the tables it reads, so bumping `sales` makes every key that reads `sales` miss while keys
//! that read only `inventory` keep hitting. A bump is O(1) whatever the number of cached entries: it
//! swaps one immutable [`VersionVector`] snapshot; old entries are never looked up again as fresh and
//! age out of the store on their own.
//!
//! [`VersionCell`] is the one place that owns the current snapshot. Readers call
//! [`VersionCell::load`] and never take a lock (an `arc_swap` load); writers are serialised by a
//! mutex so that a merge is a read-modify-write that cannot lose another writer's bump.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use parking_lot::Mutex;

use arc_swap::{ArcSwap, Guard};

use super::catalog::MAX_TABLES_PER_QUERY;
use super::clock::{Millis, format_batch_label};
use crate::model::entry::Stamp;

/// The index of a table in the catalog's table list.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct TableId(pub u16);

impl TableId {
    /// The position of the table in [`Tables`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The table at `index` of a [`Tables`] list (which holds at most `u16::MAX` names).
    pub fn at(index: usize) -> Self {
        TableId(u16::try_from(index).unwrap_or(u16::MAX))
    }
}

/// The warehouse tables the catalog knows, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    names: Vec<String>,
}

/// A table name that the catalog does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown table `{name}`; known tables: {known}")]
pub struct UnknownTable {
    /// The name asked for (control characters removed).
    pub name: String,
    /// The known tables, comma separated.
    pub known: String,
}

impl Tables {
    /// A table list; names must be unique and non-empty.
    pub fn new<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.len() > usize::from(u16::MAX) {
            return Err("too many tables".into());
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "table name `{}` must be non-empty ASCII letters, digits or `_`",
                    n.escape_default()
                ));
            }
            if names[..i].contains(n) {
                return Err(format!("table `{n}` is listed twice"));
            }
        }
        Ok(Self { names })
    }

    /// Looks a table up by name.
    pub fn id(&self, name: &str) -> Result<TableId, UnknownTable> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(TableId::at)
            .ok_or_else(|| UnknownTable {
                name: name.chars().filter(|c| !c.is_control()).take(64).collect(),
                known: self.names.join(", "),
            })
    }

    /// The name of a table.
    pub fn name(&self, id: TableId) -> &str {
        self.names
            .get(id.index())
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// All table ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = TableId> + '_ {
        (0..self.names.len()).map(TableId::at)
    }

    /// All table names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many tables there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no tables.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One immutable snapshot of every table's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionVector {
    versions: Box<[u64]>,
    updated_ms: Box<[Millis]>,
    batches: Box<[Arc<str>]>,
    /// The label of the last batch applied (`20241102-10:00`), as the baseline's `warehouse_version`.
    pub batch: Arc<str>,
    /// When the last bump was applied, in ms since the epoch (the baseline's `warehouse_last_update`).
    pub last_updated_ms: Millis,
    /// Bumps applied so far (0 for a fresh vector); only ever increases.
    pub generation: u64,
    /// Which restoration of the truth this is: a truth that lost its state and was put back by an
    /// instance gets a new random epoch (0 before any). An instance that sees the epoch change
    /// checks that no number it used is handed out again.
    pub epoch: u64,
    /// Hash of the minute-resolution label the baseline's versioned recipe puts in its keys. Two updates
    /// within one minute share it, which is exactly the baseline's flaw the `versioned` strategy keeps.
    pub baseline_label_hash: u64,
}

impl VersionVector {
    /// Version 0 of every table.
    pub fn initial(tables: usize) -> Self {
        Self {
            versions: vec![0; tables].into_boxed_slice(),
            updated_ms: vec![0; tables].into_boxed_slice(),
            batches: vec![Arc::from(""); tables].into_boxed_slice(),
            batch: Arc::from(""),
            last_updated_ms: 0,
            generation: 0,
            epoch: 0,
            baseline_label_hash: 0,
        }
    }

    /// The current version of a table (0 for a table this vector does not hold).
    pub fn version(&self, table: TableId) -> u64 {
        self.versions.get(table.index()).copied().unwrap_or(0)
    }

    /// When a table was last bumped (0 if never).
    pub fn table_updated_ms(&self, table: TableId) -> Millis {
        self.updated_ms.get(table.index()).copied().unwrap_or(0)
    }

    /// Every table's version, in table order.
    pub fn versions(&self) -> &[u64] {
        &self.versions
    }

    /// How many tables the vector holds.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether the vector holds no tables.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The last batch applied to a table (`""` if none).
    pub fn table_batch(&self, table: TableId) -> &str {
        self.batches.get(table.index()).map_or("", |b| b)
    }

    /// A vector from its parts (a version store's truth): per table `(version, batch, updated_ms)`.
    pub fn from_parts(
        tables: Vec<(u64, Arc<str>, Millis)>,
        batch: Arc<str>,
        last_updated_ms: Millis,
        generation: u64,
    ) -> Self {
        let baseline_label_hash = if last_updated_ms == 0 {
            0
        } else {
            baseline_label_hash(&format_batch_label(last_updated_ms))
        };
        Self {
            versions: tables.iter().map(|t| t.0).collect(),
            batches: tables.iter().map(|t| t.1.clone()).collect(),
            updated_ms: tables.iter().map(|t| t.2).collect(),
            batch,
            last_updated_ms,
            generation,
            epoch: 0,
            baseline_label_hash,
        }
    }

    /// Sets one table's version (a number the truth allocated); a table this vector does not
    /// hold is left alone.
    pub fn set_version(&mut self, table: TableId, version: u64) {
        if let Some(v) = self.versions.get_mut(table.index()) {
            *v = version;
        }
    }

    /// This vector with `tables` bumped by one whatever their batch (an operator's invalidation),
    /// at `now_ms`. Per-table batches stay as they are, so a later ETL batch still advances them;
    /// the global label moves to `batch` only if that is newer.
    pub fn bumped(&self, tables: &[TableId], batch: &str, now_ms: Millis) -> Self {
        let mut next = self.clone();
        for &t in tables {
            if let Some(v) = next.versions.get_mut(t.index()) {
                *v += 1;
                next.updated_ms[t.index()] = now_ms;
            }
        }
        next.stamp_update(batch, now_ms);
        next
    }

    /// This vector with each of `tables` whose last batch is older than `batch` bumped by one and
    /// moved to `batch`; returns it and the tables bumped. A batch applied twice, or a batch older
    /// than one already applied, bumps nothing: that is what makes duplicate, late and reordered
    /// `etl-complete` calls harmless.
    pub fn advanced_to(
        &self,
        tables: &[TableId],
        batch: &str,
        now_ms: Millis,
    ) -> (Self, Vec<TableId>) {
        let mut due: Vec<TableId> = tables
            .iter()
            .copied()
            .filter(|t| t.index() < self.len() && *self.batches[t.index()] < *batch)
            .collect();
        due.dedup();
        if due.is_empty() {
            return (self.clone(), due);
        }
        let mut next = self.bumped(&due, batch, now_ms);
        for t in &due {
            next.batches[t.index()] = Arc::from(batch);
        }
        (next, due)
    }

    /// This vector with the versions named in `by_name` raised to at least those values (the
    /// `versions` of a `warehouse_updated` message), labelled `batch` at `at_ms`. Unknown names are
    /// ignored: the message was checked before.
    pub fn with_versions(
        &self,
        tables: &Tables,
        by_name: &std::collections::BTreeMap<String, u64>,
        batch: &str,
        at_ms: Millis,
    ) -> Self {
        let mut next = self.clone();
        let mut raised = false;
        for (name, &v) in by_name {
            if let Ok(t) = tables.id(name)
                && t.index() < next.len()
                && v > next.versions[t.index()]
            {
                next.versions[t.index()] = v;
                next.updated_ms[t.index()] = at_ms;
                if *next.batches[t.index()] < *batch {
                    next.batches[t.index()] = Arc::from(batch);
                }
                raised = true;
            }
        }
        if raised {
            next.stamp_update(batch, at_ms);
        }
        next
    }

    /// This vector with every table at least at the version `other` has (versions never go back).
    /// Returns the merged vector and the tables whose version went up.
    pub fn merged(&self, other: &VersionVector) -> (Self, Vec<TableId>) {
        let mut next = self.clone();
        let mut raised = Vec::new();
        for (i, (&mine, &theirs)) in self.versions.iter().zip(other.versions.iter()).enumerate() {
            if theirs > mine {
                next.versions[i] = theirs;
                next.updated_ms[i] = next.updated_ms[i].max(other.updated_ms[i]);
                raised.push(TableId::at(i));
            }
            // A batch label learnt at the same version (a truth that adopted the warehouse's
            // update_log) is taken too; it changes no key.
            if theirs >= mine && other.batches[i] > next.batches[i] {
                next.batches[i] = other.batches[i].clone();
            }
        }
        if other.batch > next.batch {
            next.batch = other.batch.clone();
        }
        if !raised.is_empty() {
            next.last_updated_ms = self.last_updated_ms.max(other.last_updated_ms);
            next.generation = (self.generation + 1).max(other.generation);
            next.baseline_label_hash =
                baseline_label_hash(&format_batch_label(next.last_updated_ms));
        }
        (next, raised)
    }

    fn stamp_update(&mut self, batch: &str, now_ms: Millis) {
        if *batch > *self.batch {
            self.batch = Arc::from(batch);
        }
        self.last_updated_ms = now_ms;
        self.generation += 1;
        // The baseline keys on `datetime.now().strftime('%Y%m%d-%H:%M')`, not on the batch.
        self.baseline_label_hash = baseline_label_hash(&format_batch_label(now_ms));
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, v) in self.versions.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{v}")?;
        }
        write!(f, "] batch {}", self.batch)
    }
}

fn baseline_label_hash(label: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(label.as_bytes())
}

/// The one owner of the current [`VersionVector`].
///
/// Two views of one truth, both written under one mutex: the full snapshot in an `ArcSwap` (for
/// everything that wants the batch label and timestamps), and a seqlock-protected mirror of the
/// bare version numbers for the hit path, where [`VersionCell::stamp`] reads a consistent set of
/// versions with plain loads — no read-modify-write, so cores serving hits never contend.
#[derive(Debug)]
pub struct VersionCell {
    current: ArcSwap<VersionVector>,
    seq: AtomicU64,
    mirror: Box<[AtomicU64]>,
    writer: Mutex<()>,
}

impl VersionCell {
    /// A cell holding version 0 of `tables` tables.
    pub fn new(tables: usize) -> Self {
        Self {
            current: ArcSwap::from_pointee(VersionVector::initial(tables)),
            seq: AtomicU64::new(0),
            mirror: (0..tables).map(|_| AtomicU64::new(0)).collect(),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot; never blocks.
    pub fn load(&self) -> Guard<Arc<VersionVector>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<VersionVector> {
        self.current.load_full()
    }

    /// The current versions of `tables` (at most [`MAX_TABLES_PER_QUERY`], zero-padded), all from
    /// the same snapshot: a seqlock read, retried if a writer ran meanwhile, which a bump makes rare.
    #[inline]
    pub fn key_versions(&self, tables: &[TableId]) -> [u64; MAX_TABLES_PER_QUERY] {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut out = [0; MAX_TABLES_PER_QUERY];
            for (slot, t) in out.iter_mut().zip(tables) {
                *slot = self
                    .mirror
                    .get(t.index())
                    .map_or(0, |v| v.load(Ordering::Relaxed));
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return out;
            }
        }
    }

    /// [`VersionCell::key_versions`] as a [`Stamp`].
    pub fn stamp(&self, tables: &[TableId]) -> Stamp {
        let mut versions = self.key_versions(tables).into_iter();
        Stamp::from_fn(tables, |_| versions.next().unwrap_or(0))
    }

    /// Publishes `next`; the caller holds the writer lock.
    fn publish(&self, next: Arc<VersionVector>) {
        // Seqlock write (Boehm, "Can seqlocks get along with programming language memory
        // models?", MSPC 2012): odd sequence, release fence, data, even sequence with release.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, v) in self.mirror.iter().zip(next.versions()) {
            slot.store(*v, Ordering::Relaxed);
        }
        self.seq.store(s + 2, Ordering::Release);
        self.current.store(next);
    }

    /// Bumps `tables` by one and returns the new snapshot.
    pub fn bump(&self, tables: &[TableId], batch: &str, now_ms: Millis) -> Arc<VersionVector> {
        let _w = self.writer.lock();
        let next = Arc::new(self.current.load().bumped(tables, batch, now_ms));
        self.publish(next.clone());
        next
    }

    /// Moves `tables` to `batch` where they are behind it (see [`VersionVector::advanced_to`]);
    /// returns the new snapshot and the tables bumped.
    pub fn advance(
        &self,
        tables: &[TableId],
        batch: &str,
        now_ms: Millis,
    ) -> (Arc<VersionVector>, Vec<TableId>) {
        let _w = self.writer.lock();
        let (next, bumped) = self.current.load().advanced_to(tables, batch, now_ms);
        if bumped.is_empty() {
            return (self.current.load_full(), bumped);
        }
        let next = Arc::new(next);
        self.publish(next.clone());
        (next, bumped)
    }

    /// Raises every table to at least the version `incoming` holds; returns the tables that went up.
    /// Duplicate, late or reordered vectors change nothing, because versions only go up.
    pub fn merge(&self, incoming: &VersionVector) -> Vec<TableId> {
        let _w = self.writer.lock();
        let current = self.current.load_full();
        let (next, raised) = current.merged(incoming);
        if next != *current {
            self.publish(Arc::new(next));
        }
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_raises_only_named_tables() {
        let cell = VersionCell::new(3);
        let v = cell.bump(&[TableId(0), TableId(2)], "b1", 1_000);
        assert_eq!(v.versions(), &[1, 0, 1]);
        assert_eq!(&*v.batch, "b1");
        assert_eq!(v.table_updated_ms(TableId(0)), 1_000);
        assert_eq!(v.table_updated_ms(TableId(1)), 0);
    }

    #[test]
    fn merge_never_goes_back() {
        let cell = VersionCell::new(2);
        let old = cell.snapshot();
        cell.bump(&[TableId(0)], "b1", 10);
        cell.bump(&[TableId(0)], "b2", 20);
        assert!(
            cell.merge(&old).is_empty(),
            "an older vector changes nothing"
        );
        let newer = cell.load().bumped(&[TableId(1)], "b3", 30);
        assert_eq!(cell.merge(&newer), vec![TableId(1)]);
        assert!(cell.merge(&newer).is_empty(), "a duplicate changes nothing");
        assert_eq!(cell.load().versions(), &[2, 1]);
        assert_eq!(cell.stamp(&[TableId(1), TableId(0)]).versions(), &[1, 2]);
    }

    #[test]
    fn a_batch_advances_each_table_once() {
        let cell = VersionCell::new(3);
        let (v, bumped) = cell.advance(&[TableId(0), TableId(1)], "20261126-10:00", 5);
        assert_eq!(bumped, vec![TableId(0), TableId(1)]);
        assert_eq!(v.versions(), &[1, 1, 0]);
        assert_eq!(v.table_batch(TableId(0)), "20261126-10:00");
        // Duplicate: nothing.
        let (_, bumped) = cell.advance(&[TableId(0), TableId(1)], "20261126-10:00", 6);
        assert!(bumped.is_empty());
        // Late and reordered: an older batch after a newer one changes nothing.
        let (_, bumped) = cell.advance(&[TableId(0)], "20261126-09:00", 7);
        assert!(bumped.is_empty());
        // The table left behind catches up alone.
        let (v, bumped) = cell.advance(&[TableId(0), TableId(2)], "20261126-10:00", 8);
        assert_eq!(bumped, vec![TableId(2)]);
        assert_eq!(v.versions(), &[1, 1, 1]);
    }

    #[test]
    fn unknown_table_names_the_known_ones() {
        let tables = Tables::new(["sales", "inventory"]).unwrap();
        let err = tables.id("sa\x1b[2Jles").unwrap_err();
        assert_eq!(err.known, "sales, inventory");
        assert!(!err.to_string().contains('\x1b'));
        assert!(Tables::new(["a", "a"]).is_err());
        assert!(Tables::new(["bad name"]).is_err());
    }

    #[test]
    fn baseline_labels_collide_within_a_minute() {
        let v0 = VersionVector::initial(1);
        let a = v0.bumped(&[TableId(0)], "x", 1_730_541_600_000);
        let b = a.bumped(&[TableId(0)], "y", 1_730_541_630_000);
        assert_eq!(a.baseline_label_hash, b.baseline_label_hash);
        assert_ne!(a.version(TableId(0)), b.version(TableId(0)));
    }
}
