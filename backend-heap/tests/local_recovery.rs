//! Local recovery of the heap backend: snapshots kept in memory by the
//! backends of one factory, restored without reading checkpoint storage, and
//! dropped as their checkpoints are aborted or subsumed.

// Test-only crate: the helpers below unwrap because a panic in them is a
// test failure with a backtrace, like an unwrap inside a #[test] fn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use backend_heap::{HeapBackend, HeapBackendFactory, HeapBackendOptions};
use bytes::Bytes;
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, EntryKey,
    KeyGroupsHandle, KeyedStateBackend, KeyedStateHandle, ManualClock, MaxParallelism,
    MemoryCheckpointStorage, OperatorId, SnapshotMode, StateDescriptor, StateKind, StreamHandle,
    StreamLocation,
};

const MAX: u32 = 32;

fn context(parallelism: u32, subtask: u32) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("counter".into()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(MAX).unwrap(),
        clock: Arc::new(ManualClock::new(0)),
    }
}

fn factory(local_recovery: bool) -> HeapBackendFactory {
    HeapBackendFactory::new(HeapBackendOptions::default().with_local_recovery(local_recovery))
}

fn entry(key: &[u8]) -> EntryKey<'_> {
    EntryKey {
        key_group: MaxParallelism::new(MAX).unwrap().key_group_of(key),
        key,
        namespace: b"",
    }
}

fn count_state(b: &mut HeapBackend) -> state_core::StateId {
    b.register_state(&StateDescriptor::new("count", StateKind::Value))
        .unwrap()
}

/// Puts `key-i` = `value` for every i < n that falls in `b`'s key groups.
fn put_all(b: &mut HeapBackend, n: u32, value: &str) {
    let id = count_state(b);
    for i in 0..n {
        let key = format!("key-{i}");
        let e = entry(key.as_bytes());
        if b.key_group_range().contains(e.key_group) {
            b.put(id, &e, Bytes::from(format!("{value}-{i}"))).unwrap();
        }
    }
}

/// Every (key, value) of the `count` state.
fn contents(b: &mut HeapBackend) -> BTreeMap<String, String> {
    let id = count_state(b);
    let mut keys = Vec::new();
    b.keys(id, &mut |k| {
        keys.push(k.key.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    keys.into_iter()
        .map(|k| {
            let v = b.get(id, &entry(&k)).unwrap().unwrap();
            (
                String::from_utf8(k).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn checkpoint(b: &mut HeapBackend, id: u64, storage: &dyn CheckpointStorage) -> KeyGroupsHandle {
    let pending = b.snapshot(CheckpointId(id), SnapshotMode::Full).unwrap();
    match pending.write(storage).unwrap() {
        Some(KeyedStateHandle::KeyGroups(h)) => h,
        other => panic!("expected a key-group handle, got {other:?}"),
    }
}

/// A handle that still identifies the snapshot but whose bytes are gone, so
/// a restore that reads checkpoint storage fails.
fn without_bytes(h: &KeyGroupsHandle) -> KeyedStateHandle {
    let mut h = h.clone();
    if let StreamLocation::Inline(bytes) = &mut h.stream.location {
        *bytes = vec![0; bytes.len()].into();
    }
    KeyedStateHandle::KeyGroups(h)
}

#[test]
fn restore_takes_the_kept_snapshot_and_reads_nothing_from_storage() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let factory = factory(true);
    let mut first = factory.create(&context(1, 0)).unwrap();
    put_all(&mut first, 500, "v1");
    let expected = contents(&mut first);
    let h = checkpoint(&mut first, 1, &storage);
    first.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    assert_eq!(first.local_checkpoints(), vec![CheckpointId(1)]);
    // Writes after the checkpoint must not leak into the kept copy.
    put_all(&mut first, 600, "v2");
    drop(first);

    let mut second = factory.create(&context(1, 0)).unwrap();
    second.restore(&[without_bytes(&h)], &storage).unwrap();
    let stats = second.last_restore_stats().unwrap();
    assert_eq!((stats.local_handles, stats.storage_handles), (1, 0));
    assert_eq!(stats.storage_bytes, 0);
    assert_eq!(contents(&mut second), expected);

    // The restored backend writes on its own copy: a second restore of the
    // same handle still gets the checkpoint's state.
    put_all(&mut second, 500, "v3");
    let mut third = factory.create(&context(1, 0)).unwrap();
    third.restore(&[without_bytes(&h)], &storage).unwrap();
    assert_eq!(contents(&mut third), expected);
}

#[test]
fn without_local_recovery_the_stream_is_read_from_storage() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let factory = factory(false);
    let mut first = factory.create(&context(1, 0)).unwrap();
    put_all(&mut first, 200, "v1");
    let expected = contents(&mut first);
    let h = checkpoint(&mut first, 1, &storage);
    first.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    assert!(first.local_checkpoints().is_empty());

    let mut second = factory.create(&context(1, 0)).unwrap();
    let err = second.restore(&[without_bytes(&h)], &storage).unwrap_err();
    assert!(err.to_string().contains("inline"), "{err}");
    second
        .restore(&[KeyedStateHandle::KeyGroups(h.clone())], &storage)
        .unwrap();
    let stats = second.last_restore_stats().unwrap();
    assert_eq!((stats.local_handles, stats.storage_handles), (0, 1));
    assert_eq!(stats.storage_bytes, h.stream.size);
    assert_eq!(contents(&mut second), expected);
}

#[test]
fn a_handle_the_process_did_not_write_is_read_from_storage() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let writer_factory = factory(true);
    let mut first = writer_factory.create(&context(1, 0)).unwrap();
    put_all(&mut first, 200, "v1");
    let expected = contents(&mut first);
    let h = checkpoint(&mut first, 1, &storage);
    first.notify_checkpoint_complete(CheckpointId(1)).unwrap();

    // Another factory (another process, as far as local copies go).
    let mut other = factory(true).create(&context(1, 0)).unwrap();
    other
        .restore(&[KeyedStateHandle::KeyGroups(h.clone())], &storage)
        .unwrap();
    assert_eq!(other.last_restore_stats().unwrap().storage_handles, 1);
    assert_eq!(contents(&mut other), expected);

    // A handle that differs from the written one (here its CRC field) is
    // not matched to the kept copy: it is read from storage.
    let mut changed = h.clone();
    changed.stream = StreamHandle {
        crc32: h.stream.crc32 ^ 1,
        ..h.stream.clone()
    };
    let mut second = writer_factory.create(&context(1, 0)).unwrap();
    second
        .restore(&[KeyedStateHandle::KeyGroups(changed)], &storage)
        .unwrap();
    let stats = second.last_restore_stats().unwrap();
    assert_eq!((stats.local_handles, stats.storage_handles), (0, 1));
    assert_eq!(contents(&mut second), expected);
}

#[test]
fn copies_follow_the_checkpoint_lifecycle() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let factory = factory(true);
    let mut b = factory.create(&context(1, 0)).unwrap();
    put_all(&mut b, 100, "v1");
    let h1 = checkpoint(&mut b, 1, &storage);
    put_all(&mut b, 100, "v2");
    let _h2 = checkpoint(&mut b, 2, &storage);
    assert_eq!(
        b.local_checkpoints(),
        vec![CheckpointId(1), CheckpointId(2)]
    );

    // Checkpoint 2 is aborted; 1 completes.
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    b.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    assert_eq!(b.local_checkpoints(), vec![CheckpointId(1)]);

    // 3 is written but never completes; 4 completes and subsumes it.
    put_all(&mut b, 100, "v3");
    let _h3 = checkpoint(&mut b, 3, &storage);
    put_all(&mut b, 100, "v4");
    let h4 = checkpoint(&mut b, 4, &storage);
    b.notify_checkpoint_complete(CheckpointId(4)).unwrap();
    assert_eq!(
        b.local_checkpoints(),
        vec![CheckpointId(1), CheckpointId(4)]
    );

    // Retention drops 1: its copy goes, and a restore of it reads storage.
    b.notify_checkpoint_subsumed(CheckpointId(1)).unwrap();
    assert_eq!(b.local_checkpoints(), vec![CheckpointId(4)]);
    let mut r = factory.create(&context(1, 0)).unwrap();
    r.restore(&[KeyedStateHandle::KeyGroups(h1)], &storage)
        .unwrap();
    assert_eq!(r.last_restore_stats().unwrap().storage_handles, 1);
    r.restore(&[without_bytes(&h4)], &storage).unwrap();
    assert_eq!(r.last_restore_stats().unwrap().local_handles, 1);
}

#[test]
fn rescaled_restore_shares_the_key_groups_of_each_subtask() {
    let storage = MemoryCheckpointStorage::new(u64::MAX);
    let factory = factory(true);
    let mut single = factory.create(&context(1, 0)).unwrap();
    put_all(&mut single, 1000, "v1");
    let all = contents(&mut single);
    let h = checkpoint(&mut single, 1, &storage);
    single.notify_checkpoint_complete(CheckpointId(1)).unwrap();

    let mut seen = BTreeMap::new();
    for subtask in 0..3 {
        let mut b = factory.create(&context(3, subtask)).unwrap();
        b.restore(&[without_bytes(&h)], &storage).unwrap();
        assert_eq!(b.last_restore_stats().unwrap().local_handles, 1);
        let part = contents(&mut b);
        assert!(!part.is_empty(), "subtask {subtask} got no keys");
        for k in part.keys() {
            assert!(b.key_group_range().contains(entry(k.as_bytes()).key_group));
        }
        seen.extend(part);
    }
    assert_eq!(seen, all);
}
