//! The in-process store: versions, eviction, bounds and the store contract.
use super::*;
use crate::model::entry::Stamp;
use crate::model::versions::VersionCell;

fn entry(vv: &VersionVector, tables: &[TableId], created: Millis, size: usize) -> Arc<Entry> {
    Arc::new(Entry {
        value: Arc::from("x".repeat(size)),
        versions: Stamp::of(tables, vv),
        created_ms: created,
        load_ms: 10,
        fresh_until: created + 1_000,
        keep_until: created + 10_000,
    })
}

fn key(fp: u128, vv: &VersionVector, tables: &[TableId]) -> EntryKey {
    let s = Stamp::of(tables, vv);
    let mut v = [0; 4];
    v[..s.versions().len()].copy_from_slice(s.versions());
    EntryKey::new(fp, v)
}

#[test]
fn holds_versions_side_by_side_and_counts_them() {
    let cell = VersionCell::new(2);
    let store = MemoryStore::new(MemoryStoreConfig::default());
    let t = [TableId(0)];
    let v0 = cell.snapshot();
    store.put(key(1, &v0, &t), entry(&v0, &t, 100, 10), 100);
    let v1 = cell.bump(&t, "b1", 200);
    let k1 = key(1, &v1, &t);
    assert!(store.get(&k1).is_none());
    let prev = store.previous(&k1).expect("old version still held");
    assert_eq!(prev.versions.versions(), &[0]);
    store.put(k1, entry(&v1, &t, 300, 10), 300);
    assert_eq!(store.get(&k1).unwrap().created_ms, 300);
    let counts = store.table_keys(&v1);
    assert_eq!(counts[0], TableKeys { current: 1, old: 1 });
    assert_eq!(counts[1], TableKeys::default());
}

#[test]
fn an_older_answer_never_replaces_a_newer_one() {
    let cell = VersionCell::new(1);
    let store = MemoryStore::new(MemoryStoreConfig::default());
    let t = [TableId(0)];
    let v = cell.snapshot();
    let k = key(7, &v, &t);
    store.put(k, entry(&v, &t, 500, 1), 500);
    assert_eq!(
        store.put(k, entry(&v, &t, 400, 1), 500),
        PutOutcome::KeptNewer
    );
    assert_eq!(store.get(&k).unwrap().created_ms, 500);
}

/// A key of request `fp` at `version` of its one table, and an entry of it created at `created`.
fn at(fp: u128, version: u64, created: Millis) -> (EntryKey, Arc<Entry>) {
    let t = [TableId(0)];
    let cell = VersionCell::new(1);
    let mut vv = cell.snapshot();
    for i in 0..version {
        vv = cell.bump(&t, "b", i);
    }
    (key(fp, &vv, &t), entry(&vv, &t, created, 1))
}

#[test]
fn a_late_older_version_never_shadows_a_newer_one_as_previous() {
    let store = MemoryStore::new(MemoryStoreConfig::default());
    let (k1, e1) = at(9, 1, 400);
    store.put(k1, e1, 400);
    // A slow loader of version 0 finishes after version 1 was stored.
    let (k0, e0) = at(9, 0, 500);
    store.put(k0, e0, 500);
    let (k2, _) = at(9, 2, 600);
    let prev = store.previous(&k2).expect("a previous version is held");
    assert_eq!(
        prev.versions.versions(),
        &[1],
        "the newest version, not the latest-created"
    );
}

#[test]
fn a_late_older_version_never_replaces_a_newer_one_when_slots_are_full() {
    let store = MemoryStore::new(MemoryStoreConfig::default());
    for v in 1..=MAX_VERSIONS_PER_REQUEST as u64 {
        let (k, e) = at(11, v, 100 * v);
        store.put(k, e, 100 * v);
    }
    let (k0, e0) = at(11, 0, 1_000);
    assert_eq!(store.put(k0, e0, 1_000), PutOutcome::KeptNewer);
    assert!(store.get(&k0).is_none());
    for v in 1..=MAX_VERSIONS_PER_REQUEST as u64 {
        assert!(
            store.get(&at(11, v, 0).0).is_some(),
            "version {v} was dropped"
        );
    }
    // A newer version still pushes out the oldest version (not the oldest-created entry).
    let (k9, e9) = at(11, 9, 50);
    assert!(matches!(store.put(k9, e9, 50), PutOutcome::Stored { .. }));
    assert!(store.get(&at(11, 1, 0).0).is_none());
    assert!(store.get(&at(11, 2, 0).0).is_some());
}

#[test]
fn eviction_treats_the_older_version_as_superseded_not_the_older_entry() {
    // Two entries per shard; fingerprints 1 and 2 share shard 0.
    let store = MemoryStore::new(MemoryStoreConfig {
        max_entries: SHARDS * 2,
        max_bytes: usize::MAX / 2,
    });
    let (k1, e1) = at(1, 1, 400);
    store.put(k1, e1, 400);
    let (k0, e0) = at(1, 0, 500);
    store.put(k0, e0, 500);
    assert!(store.get(&k1).is_some(), "read: referenced");
    let (other, e) = at(2, 0, 600);
    store.put(other, e, 600);
    assert!(store.get(&k1).is_some(), "the newer version was evicted");
    assert!(store.get(&k0).is_none(), "the superseded version was kept");
}

#[test]
fn respects_entry_and_byte_bounds() {
    let cell = VersionCell::new(1);
    let v = cell.snapshot();
    let t = [TableId(0)];
    let store = MemoryStore::new(MemoryStoreConfig {
        max_entries: 640,
        max_bytes: usize::MAX / 2,
    });
    for i in 0..10_000u128 {
        store.put(
            key(
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                &v,
                &t,
            ),
            entry(&v, &t, 1, 1),
            1,
        );
    }
    assert!(store.len() <= 640, "len {}", store.len());
    assert!(store.evictions() >= 10_000 - 640);

    let small = MemoryStore::new(MemoryStoreConfig {
        max_entries: 1_000_000,
        max_bytes: 64 * 4096,
    });
    for i in 0..2_000u128 {
        small.put(
            key(
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                &v,
                &t,
            ),
            entry(&v, &t, 1, 1000),
            1,
        );
    }
    assert!(small.bytes() <= 64 * 4096, "bytes {}", small.bytes());
    assert_eq!(
        small.put(key(1, &v, &t), entry(&v, &t, 1, 1 << 20), 1),
        PutOutcome::TooLarge
    );
}

#[test]
fn referenced_entries_survive_a_sweep() {
    let cell = VersionCell::new(1);
    let v = cell.snapshot();
    let t = [TableId(0)];
    // One shard's worth: fingerprints with equal top bits land in the same shard.
    let store = MemoryStore::new(MemoryStoreConfig {
        max_entries: 64 * 4,
        max_bytes: usize::MAX / 2,
    });
    let keys: Vec<EntryKey> = (0..4u128).map(|i| key(i, &v, &t)).collect();
    for k in &keys {
        store.put(*k, entry(&v, &t, 1, 1), 1);
    }
    assert!(store.get(&keys[0]).is_some());
    store.put(key(99, &v, &t), entry(&v, &t, 2, 1), 2);
    assert!(
        store.get(&keys[0]).is_some(),
        "the referenced entry was evicted"
    );
    assert_eq!(store.len(), 4);
}

#[test]
fn expired_entries_are_purged_in_bounded_batches() {
    let cell = VersionCell::new(1);
    let v = cell.snapshot();
    let t = [TableId(0)];
    let store = MemoryStore::new(MemoryStoreConfig::default());
    for i in 0..100u128 {
        store.put(key(i << 100, &v, &t), entry(&v, &t, 1, 1), 1);
    }
    assert_eq!(store.purge_expired(5_000, 1000), 0);
    let first = store.purge_expired(20_000, 30);
    assert!(first <= 30 && first > 0);
    let mut total = first;
    while total < 100 {
        let n = store.purge_expired(20_000, 30);
        assert!(n > 0);
        total += n;
    }
    assert!(store.is_empty());
    assert_eq!(store.table_keys(&v)[0], TableKeys::default());
}
