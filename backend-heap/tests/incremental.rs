//! Incremental checkpoints of the heap backend: a chain of a base and
//! deltas. A delta holds only what changed and restores, on its base, to
//! exactly what a full snapshot of the same moment restores; the chain is
//! compacted into a new base before its deltas outgrow the base; a delta
//! builds only on a confirmed checkpoint, so an aborted or failed one loses
//! nothing.

// Test-only crate: the helpers unwrap because a panic in them is a test
// failure with a backtrace, like an unwrap inside a #[test] fn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backend_heap::{HeapBackend, HeapBackendFactory, HeapBackendOptions};
use bytes::Bytes;
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointOutput, CheckpointStorage,
    Checkpointable, EntryKey, ErrorKind, KeyedStateBackend, KeyedStateHandle, ManualClock,
    MaxParallelism, MemoryCheckpointStorage, OperatorId, Result, SnapshotMode, StateDescriptor,
    StateError, StateId, StateKind, StateScope, handles_for_range,
};
use state_testkit::{Intercept, InterceptStorage};

const MAX: u32 = 128;

fn context(parallelism: u32, subtask: u32) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("counter".into()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(MAX).unwrap(),
        clock: Arc::new(ManualClock::new(0)),
    }
}

fn backend_with(options: HeapBackendOptions, parallelism: u32, subtask: u32) -> HeapBackend {
    HeapBackendFactory::new(options)
        .create(&context(parallelism, subtask))
        .unwrap()
}

fn backend() -> HeapBackend {
    backend_with(HeapBackendOptions::default(), 1, 0)
}

fn entry(key: &[u8]) -> EntryKey<'_> {
    EntryKey {
        key_group: MaxParallelism::new(MAX).unwrap().key_group_of(key),
        key,
        namespace: b"",
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:07}").into_bytes()
}

/// The three layouts of state the tests write.
struct States {
    value: StateId,
    list: StateId,
    map: StateId,
}

fn states(b: &mut HeapBackend) -> States {
    States {
        value: b
            .register_state(&StateDescriptor::new("value", StateKind::Value))
            .unwrap(),
        list: b
            .register_state(&StateDescriptor::new("list", StateKind::List))
            .unwrap(),
        map: b
            .register_state(&StateDescriptor::new("map", StateKind::Map))
            .unwrap(),
    }
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every entry of every state, as text: what a user reading the state sees.
fn dump(b: &mut HeapBackend) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let s = states(b);
    for (name, id) in [("value", s.value), ("list", s.list), ("map", s.map)] {
        let mut keys = Vec::new();
        b.keys(id, &mut |k| {
            keys.push((k.key.to_vec(), k.namespace.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        for (k, ns) in keys {
            let at = EntryKey {
                namespace: &ns,
                ..entry(&k)
            };
            let shown = match name {
                "value" => format!("{:?}", b.get(id, &at).unwrap()),
                "list" => format!("{:?}", b.get_list(id, &at).unwrap()),
                _ => {
                    let mut m = BTreeMap::new();
                    b.map_scan(id, &at, &mut |uk, v| {
                        m.insert(uk.to_vec(), v.to_vec());
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                    format!("{m:?}")
                }
            };
            out.insert(
                format!("{name}/{}/{}", String::from_utf8_lossy(&k), ns.len()),
                shown,
            );
        }
    }
    out
}

/// A 32-byte value that compresses about as well as real state does.
fn value(i: u64) -> Bytes {
    let mut rng = Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    Bytes::from(format!(
        "{:016x}{:016x}",
        rng.below(u64::MAX),
        rng.below(u64::MAX)
    ))
}

/// Loads `n` keys into the value state and every tenth into the list and
/// map states.
fn load(b: &mut HeapBackend, n: u64) {
    let s = states(b);
    for i in 0..n {
        let k = key(i);
        b.put(s.value, &entry(&k), value(i)).unwrap();
        if i % 10 == 0 {
            b.append(s.list, &entry(&k), Bytes::from(format!("e{i}")))
                .unwrap();
            b.map_put(s.map, &entry(&k), b"a", Bytes::from(format!("m{i}")))
                .unwrap();
        }
    }
}

/// Changes `n` random entries of the `keys` loaded: updates, removals,
/// appends, map puts and removes, and a few new keys.
fn churn(b: &mut HeapBackend, rng: &mut Rng, keys: u64, n: u64, round: u64) {
    let s = states(b);
    for _ in 0..n {
        let i = rng.below(keys);
        let k = key(i);
        let at = entry(&k);
        match rng.below(10) {
            0 => b.clear(s.value, &at).unwrap(),
            1 => b
                .append(s.list, &at, Bytes::from(format!("r{round}")))
                .unwrap(),
            2 => b
                .map_put(s.map, &at, b"b", Bytes::from(format!("r{round}")))
                .unwrap(),
            3 => b.map_remove(s.map, &at, b"a").unwrap(),
            4 => b.clear(s.list, &at).unwrap(),
            5 => {
                let new = key(keys + rng.below(keys));
                b.put(s.value, &entry(&new), Bytes::from_static(b"new"))
                    .unwrap();
            }
            _ => b.put(s.value, &at, value(i ^ (round << 40))).unwrap(),
        }
    }
}

/// Takes incremental checkpoint `id` and writes it (not yet confirmed).
fn write(b: &mut HeapBackend, id: u64, storage: &dyn CheckpointStorage) -> KeyedStateHandle {
    let id = CheckpointId(id);
    storage.initialize_checkpoint(id).unwrap();
    b.snapshot(id, SnapshotMode::Incremental)
        .unwrap()
        .write(storage)
        .unwrap()
        .expect("the backend holds state")
}

/// Takes incremental checkpoint `id`, writes it and confirms it.
fn checkpoint(b: &mut HeapBackend, id: u64, storage: &dyn CheckpointStorage) -> KeyedStateHandle {
    let handle = write(b, id, storage);
    b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
    handle
}

/// The size of a full snapshot of `b` now (a canonical savepoint, which
/// leaves the incremental chain alone).
fn full_size(b: &mut HeapBackend) -> u64 {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let id = CheckpointId(1_000_000);
    b.snapshot(id, SnapshotMode::CanonicalSavepoint)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap()
        .state_size()
}

fn restored(handle: &KeyedStateHandle, storage: &dyn CheckpointStorage) -> HeapBackend {
    let mut r = backend();
    r.restore(std::slice::from_ref(handle), storage).unwrap();
    r
}

/// The names of the chain's streams, base first.
fn chain(handle: &KeyedStateHandle) -> Vec<String> {
    match handle {
        KeyedStateHandle::Incremental(h) => h.shared.iter().map(|f| f.name.clone()).collect(),
        KeyedStateHandle::KeyGroups(_) => panic!("a full snapshot: {handle:?}"),
    }
}

#[test]
fn a_delta_writes_only_what_changed_and_restores_like_a_full_snapshot() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    let keys = 50_000;
    load(&mut b, keys);
    let base = checkpoint(&mut b, 1, &storage);
    assert_eq!(chain(&base), ["base-1"]);
    let full = base.state_size();
    let mut rng = Rng(0x5eed);
    for id in 2..=6 {
        // 1% of the keys change between checkpoints.
        churn(&mut b, &mut rng, keys, keys / 100, id);
        let handle = checkpoint(&mut b, id, &storage);
        let names: Vec<String> = std::iter::once("base-1".to_owned())
            .chain((2..=id).map(|d| format!("delta-{d}")))
            .collect();
        assert_eq!(chain(&handle), names);
        let written = handle.checkpointed_size(CheckpointId(id));
        assert!(
            written * 50 <= full,
            "checkpoint {id} wrote {written} bytes, over 2% of the full {full}"
        );
        let expected = dump(&mut b);
        assert_eq!(
            dump(&mut restored(&handle, &storage)),
            expected,
            "checkpoint {id}"
        );
    }
}

#[test]
fn the_chain_is_compacted_into_a_new_base_before_its_deltas_outgrow_the_base() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    let keys = 5_000;
    load(&mut b, keys);
    checkpoint(&mut b, 1, &storage);
    let mut rng = Rng(7);
    let mut rebased = Vec::new();
    for id in 2..=16 {
        // A fifth of the keys change: the budget lasts a few deltas.
        churn(&mut b, &mut rng, keys, keys / 5, id);
        let handle = checkpoint(&mut b, id, &storage);
        let names = chain(&handle);
        if names == [format!("base-{id}")] {
            rebased.push(id);
        }
        let full = full_size(&mut b);
        assert!(
            handle.state_size() <= 2 * full + full / 10,
            "checkpoint {id}: chain {names:?} of {} bytes for a full size of {full}",
            handle.state_size()
        );
        let expected = dump(&mut b);
        assert_eq!(
            dump(&mut restored(&handle, &storage)),
            expected,
            "checkpoint {id}"
        );
    }
    assert!(rebased.len() >= 2, "new bases at {rebased:?}");
}

#[test]
fn a_zero_budget_writes_a_base_every_time() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend_with(
        HeapBackendOptions::default().with_delta_budget_percent(0),
        1,
        0,
    );
    load(&mut b, 100);
    checkpoint(&mut b, 1, &storage);
    churn(&mut b, &mut Rng(3), 100, 1, 2);
    assert_eq!(chain(&checkpoint(&mut b, 2, &storage)), ["base-2"]);
}

#[test]
fn a_delta_builds_on_the_newest_confirmed_checkpoint_only() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    let s = states(&mut b);
    load(&mut b, 1_000);
    // Not confirmed: the next snapshot is a base too.
    write(&mut b, 1, &storage);
    assert_eq!(chain(&checkpoint(&mut b, 2, &storage)), ["base-2"]);
    // Checkpoint 3 is written but aborted; 4 is taken while 3 is pending.
    b.put(s.value, &entry(b"only-in-3"), Bytes::from_static(b"3"))
        .unwrap();
    b.clear(s.value, &entry(&key(1))).unwrap();
    write(&mut b, 3, &storage);
    b.put(s.value, &entry(b"after-3"), Bytes::from_static(b"4"))
        .unwrap();
    let fourth = write(&mut b, 4, &storage);
    b.notify_checkpoint_aborted(CheckpointId(3)).unwrap();
    b.notify_checkpoint_complete(CheckpointId(4)).unwrap();
    // 4 builds on 2, not on the pending 3, and holds 3's changes too.
    assert_eq!(chain(&fourth), ["base-2", "delta-4"]);
    let r = &mut restored(&fourth, &storage);
    let rs = states(r);
    assert_eq!(
        r.get(rs.value, &entry(b"only-in-3")).unwrap().as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(r.get(rs.value, &entry(&key(1))).unwrap(), None);
    assert_eq!(dump(r), dump(&mut b));
    // 5 builds on the confirmed 4.
    b.put(s.value, &entry(b"five"), Bytes::from_static(b"5"))
        .unwrap();
    let fifth = checkpoint(&mut b, 5, &storage);
    assert_eq!(chain(&fifth), ["base-2", "delta-4", "delta-5"]);
    assert_eq!(dump(&mut restored(&fifth, &storage)), dump(&mut b));
}

#[test]
fn no_delta_is_taken_on_a_chain_a_pending_base_replaces() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    load(&mut b, 1_000);
    checkpoint(&mut b, 1, &storage);
    // Every key changes: 2 must be a new base.
    churn(&mut b, &mut Rng(11), 1_000, 3_000, 2);
    assert_eq!(chain(&write(&mut b, 2, &storage)), ["base-2"]);
    // While 2 is pending, its completion would delete chain 1's files: 3
    // must not build on them.
    churn(&mut b, &mut Rng(12), 1_000, 1, 3);
    let third = write(&mut b, 3, &storage);
    assert_eq!(chain(&third), ["base-3"]);
    b.notify_checkpoint_complete(CheckpointId(2)).unwrap();
    b.notify_checkpoint_complete(CheckpointId(3)).unwrap();
    assert_eq!(dump(&mut restored(&third, &storage)), dump(&mut b));
}

#[test]
fn an_unchanged_backend_writes_no_new_stream() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    load(&mut b, 1_000);
    let first = checkpoint(&mut b, 1, &storage);
    let second = checkpoint(&mut b, 2, &storage);
    assert_eq!(chain(&second), ["base-1"]);
    let KeyedStateHandle::Incremental(h) = &second else {
        panic!("incremental");
    };
    assert_eq!(second.checkpointed_size(CheckpointId(2)), h.meta.size);
    assert_eq!(
        dump(&mut restored(&second, &storage)),
        dump(&mut restored(&first, &storage))
    );
}

#[test]
fn removing_most_of_a_key_group_resets_it_and_restores_exactly() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    let s = states(&mut b);
    load(&mut b, 20_000);
    checkpoint(&mut b, 1, &storage);
    // Empty one key group almost entirely (past the half that makes the
    // delta write it whole), and put a few keys back.
    let kg = entry(&key(0)).key_group;
    let in_kg: Vec<u64> = (0..20_000)
        .filter(|&i| entry(&key(i)).key_group == kg)
        .collect();
    for &i in &in_kg {
        b.clear(s.value, &entry(&key(i))).unwrap();
    }
    for &i in in_kg.iter().take(3) {
        b.put(s.value, &entry(&key(i)), Bytes::from_static(b"back"))
            .unwrap();
    }
    let handle = checkpoint(&mut b, 2, &storage);
    assert_eq!(chain(&handle), ["base-1", "delta-2"]);
    let r = &mut restored(&handle, &storage);
    assert_eq!(dump(r), dump(&mut b));
    let rs = states(r);
    assert_eq!(
        r.get(rs.value, &entry(&key(in_kg[0]))).unwrap().as_deref(),
        Some(&b"back"[..])
    );
    assert_eq!(r.get(rs.value, &entry(&key(in_kg[5]))).unwrap(), None);
}

#[test]
fn chains_restore_at_another_parallelism() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut old: Vec<HeapBackend> = (0..2)
        .map(|i| backend_with(HeapBackendOptions::default(), 2, i))
        .collect();
    let mut rng = Rng(99);
    let keys = 4_000u64;
    let owner = |i: u64, p: u32| {
        let kg = entry(&key(i)).key_group;
        MaxParallelism::new(MAX)
            .unwrap()
            .subtask_for_key_group(p, kg) as usize
    };
    let mut expected = BTreeMap::new();
    for i in 0..keys {
        let b = &mut old[owner(i, 2)];
        let v = states(b).value;
        b.put(v, &entry(&key(i)), value(i)).unwrap();
        expected.insert(i, value(i));
    }
    for round in 1..=3u64 {
        for _ in 0..100 {
            let i = rng.below(keys);
            let b = &mut old[owner(i, 2)];
            let v = states(b).value;
            let value = value(i + round * keys);
            b.put(v, &entry(&key(i)), value.clone()).unwrap();
            expected.insert(i, value);
        }
        for b in &mut old {
            checkpoint(b, round, &storage);
        }
    }
    let handles: Vec<KeyedStateHandle> =
        old.iter_mut().map(|b| checkpoint(b, 4, &storage)).collect();
    let chains: Vec<Vec<String>> = handles.iter().map(chain).collect();
    assert!(chains.iter().all(|c| c.len() == 3), "{chains:?}");
    for p in [1u32, 3] {
        for subtask in 0..p {
            let mut b = backend_with(HeapBackendOptions::default(), p, subtask);
            let mine = handles_for_range(&handles, b.key_group_range());
            b.restore(&mine, &storage).unwrap();
            let v = states(&mut b).value;
            for (&i, value) in &expected {
                let got = b.get(v, &entry(&key(i)));
                if owner(i, p) == subtask as usize {
                    assert_eq!(got.unwrap().as_ref(), Some(value), "key {i} at {p}");
                } else {
                    assert!(got.is_err(), "key {i} is outside subtask {subtask} of {p}");
                }
            }
        }
    }
}

#[test]
fn a_restored_chain_is_built_on_and_local_recovery_takes_the_kept_copy() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let factory = HeapBackendFactory::new(HeapBackendOptions::default().with_local_recovery(true));
    let mut b = factory.create(&context(1, 0)).unwrap();
    load(&mut b, 2_000);
    checkpoint(&mut b, 1, &storage);
    churn(&mut b, &mut Rng(5), 2_000, 20, 2);
    let second = checkpoint(&mut b, 2, &storage);
    let expected = dump(&mut b);
    // A successor from the same factory restores from memory.
    let mut local = factory.create(&context(1, 0)).unwrap();
    local
        .restore(std::slice::from_ref(&second), &storage)
        .unwrap();
    let stats = local.last_restore_stats().unwrap();
    assert_eq!((stats.local_handles, stats.storage_handles), (1, 0));
    assert_eq!(dump(&mut local), expected);
    // Either way, the next checkpoint is a delta on the restored chain.
    let mut remote = restored(&second, &storage);
    assert_eq!(remote.last_restore_stats().unwrap().local_handles, 0);
    for r in [&mut local, &mut remote] {
        let s = states(r);
        r.put(s.value, &entry(b"after-restore"), Bytes::from_static(b"1"))
            .unwrap();
        let third = checkpoint(r, 3, &storage);
        assert_eq!(chain(&third), ["base-1", "delta-2", "delta-3"]);
        let want = dump(r);
        assert_eq!(dump(&mut restored(&third, &storage)), want);
    }
}

#[test]
fn a_full_checkpoint_ends_the_chain() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    load(&mut b, 500);
    checkpoint(&mut b, 1, &storage);
    storage.initialize_checkpoint(CheckpointId(2)).unwrap();
    let full = b
        .snapshot(CheckpointId(2), SnapshotMode::Full)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap();
    b.notify_checkpoint_complete(CheckpointId(2)).unwrap();
    assert!(matches!(full, KeyedStateHandle::KeyGroups(_)));
    // Checkpoint 2 may have subsumed chain 1: 3 starts a new one.
    churn(&mut b, &mut Rng(1), 500, 5, 3);
    assert_eq!(chain(&checkpoint(&mut b, 3, &storage)), ["base-3"]);
}

/// Fails opening shared streams while `failing` is set.
#[derive(Default)]
struct FailShared {
    failing: AtomicBool,
}

impl Intercept for FailShared {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        if scope == StateScope::Shared && self.failing.load(Ordering::SeqCst) {
            return Err(StateError::io(
                name,
                std::io::Error::other("injected: storage unavailable"),
            ));
        }
        inner.create_output(id, scope, name)
    }
}

#[test]
fn a_failed_delta_loses_no_change_and_the_next_one_carries_it() {
    let storage = InterceptStorage::new(
        Arc::new(MemoryCheckpointStorage::new(u64::MAX)),
        FailShared::default(),
    );
    let mut b = backend();
    let s = states(&mut b);
    load(&mut b, 1_000);
    checkpoint(&mut b, 1, &storage);
    b.put(
        s.value,
        &entry(b"in-the-failed-one"),
        Bytes::from_static(b"2"),
    )
    .unwrap();
    storage.intercept().failing.store(true, Ordering::SeqCst);
    storage.initialize_checkpoint(CheckpointId(2)).unwrap();
    let err = b
        .snapshot(CheckpointId(2), SnapshotMode::Incremental)
        .unwrap()
        .write(&storage)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("delta"), "{err}");
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    storage.intercept().failing.store(false, Ordering::SeqCst);
    let third = checkpoint(&mut b, 3, &storage);
    assert_eq!(chain(&third), ["base-1", "delta-3"]);
    let r = &mut restored(&third, &storage);
    let rs = states(r);
    assert_eq!(
        r.get(rs.value, &entry(b"in-the-failed-one"))
            .unwrap()
            .as_deref(),
        Some(&b"2"[..])
    );
}

#[test]
fn a_damaged_chain_is_refused_and_leaves_the_backend_empty() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let mut b = backend();
    load(&mut b, 1_000);
    checkpoint(&mut b, 1, &storage);
    churn(&mut b, &mut Rng(2), 1_000, 10, 2);
    let good = checkpoint(&mut b, 2, &storage);
    // A delta left out of the handle: the chain and the handle disagree.
    let KeyedStateHandle::Incremental(mut h) = good.clone() else {
        panic!("incremental");
    };
    h.shared.pop();
    let mut r = restored(&good, &storage);
    let err = r
        .restore(&[KeyedStateHandle::Incremental(h)], &storage)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(err.to_string().contains("chain lists 2 streams"), "{err}");
    assert_eq!(r.entry_count(), 0);
    // A RocksDB handle is refused by name.
    let KeyedStateHandle::Incremental(mut h) = good else {
        panic!("incremental");
    };
    h.backend = "rocks".into();
    let err = r
        .restore(&[KeyedStateHandle::Incremental(h)], &storage)
        .unwrap_err();
    assert!(err.to_string().contains("\"rocks\""), "{err}");
}
