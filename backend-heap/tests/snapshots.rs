//! Snapshot and restore behaviour specific to the heap backend: copy-on-write
//! isolation, processing while the asynchronous part runs, the in-memory
//! storage limit, and restore at another parallelism.

// Test-only crate: the helpers below unwrap because a panic in them is a
// test failure with a backtrace, like an unwrap inside a #[test] fn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_heap::{HeapBackend, HeapBackendFactory, HeapBackendOptions};
use bytes::Bytes;
use state_core::backend_support::wrap_ttl;
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointOutput, CheckpointStorage,
    Checkpointable, EntryKey, ErrorKind, KeyedStateBackend, KeyedStateHandle, ManualClock,
    MaxParallelism, MemoryCheckpointStorage, OperatorId, Result, SnapshotMode, StateDescriptor,
    StateKind, StateScope, StreamHandle, TtlConfig, handles_for_range,
};
use state_testkit::{Intercept, InterceptStorage};

const MAX: u32 = 32;

fn context(parallelism: u32, subtask: u32, clock: Arc<ManualClock>) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("counter".into()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(MAX).unwrap(),
        clock,
    }
}

fn backend(parallelism: u32, subtask: u32) -> HeapBackend {
    HeapBackendFactory::new(HeapBackendOptions::default())
        .create(&context(
            parallelism,
            subtask,
            Arc::new(ManualClock::new(0)),
        ))
        .unwrap()
}

fn entry(key: &[u8]) -> EntryKey<'_> {
    EntryKey {
        key_group: MaxParallelism::new(MAX).unwrap().key_group_of(key),
        key,
        namespace: b"ns",
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// The keys `0..n` that belong to `b`'s key groups.
fn own_keys(b: &HeapBackend, n: u32) -> Vec<u32> {
    (0..n)
        .filter(|&i| b.key_group_range().contains(entry(&key(i)).key_group))
        .collect()
}

fn value_state(b: &mut HeapBackend) -> state_core::StateId {
    b.register_state(&StateDescriptor::new("count", StateKind::Value))
        .unwrap()
}

#[test]
fn writes_after_the_synchronous_part_are_not_in_the_snapshot() {
    let mut b = backend(1, 0);
    let v = value_state(&mut b);
    let l = b
        .register_state(&StateDescriptor::new("events", StateKind::List))
        .unwrap();
    let m = b
        .register_state(&StateDescriptor::new("attrs", StateKind::Map))
        .unwrap();
    for i in 0..100 {
        let k = key(i);
        b.put(v, &entry(&k), Bytes::from(format!("v{i}"))).unwrap();
        b.append(l, &entry(&k), Bytes::from_static(b"e1")).unwrap();
        b.map_put(m, &entry(&k), b"a", Bytes::from_static(b"1"))
            .unwrap();
    }
    let pending = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
    // Overwrite, delete, append and add after the synchronous part.
    for i in 0..100 {
        let k = key(i);
        b.put(v, &entry(&k), Bytes::from_static(b"changed"))
            .unwrap();
        b.append(l, &entry(&k), Bytes::from_static(b"e2")).unwrap();
        b.map_remove(m, &entry(&k), b"a").unwrap();
    }
    b.put(v, &entry(b"new"), Bytes::from_static(b"x")).unwrap();
    let storage = MemoryCheckpointStorage::default();
    let handle = pending.write(&storage).unwrap().unwrap();
    // The live backend has the new writes.
    assert_eq!(
        b.get(v, &entry(&key(7))).unwrap().as_deref(),
        Some(&b"changed"[..])
    );
    let mut r = backend(1, 0);
    r.restore(&[handle], &storage).unwrap();
    assert_eq!(r.states().len(), 3, "states are registered from the stream");
    let (v, l, m) = (
        value_state(&mut r),
        r.register_state(&StateDescriptor::new("events", StateKind::List))
            .unwrap(),
        r.register_state(&StateDescriptor::new("attrs", StateKind::Map))
            .unwrap(),
    );
    for i in 0..100 {
        let k = key(i);
        let want = format!("v{i}");
        assert_eq!(
            r.get(v, &entry(&k)).unwrap().as_deref(),
            Some(want.as_bytes())
        );
        assert_eq!(
            r.get_list(l, &entry(&k)).unwrap(),
            vec![Bytes::from_static(b"e1")]
        );
        assert_eq!(
            r.map_get(m, &entry(&k), b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }
    assert_eq!(r.get(v, &entry(b"new")).unwrap(), None);
    assert_eq!(r.entry_count(), 300);
}

/// Outputs that block inside `write` until the test releases them.
struct Gate {
    entered: Mutex<Sender<()>>,
    release: Arc<Mutex<Receiver<()>>>,
}

struct GatedOutput {
    inner: Box<dyn CheckpointOutput>,
    entered: Sender<()>,
    release: Arc<Mutex<Receiver<()>>>,
    waited: bool,
}

impl Write for GatedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.waited {
            self.waited = true;
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointOutput for GatedOutput {
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn close(self: Box<Self>) -> Result<StreamHandle> {
        self.inner.close()
    }
}

impl Intercept for Gate {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        Ok(Box::new(GatedOutput {
            inner: inner.create_output(id, scope, name)?,
            entered: self.entered.lock().unwrap().clone(),
            release: Arc::clone(&self.release),
            waited: false,
        }))
    }
}

#[test]
fn processing_continues_while_the_asynchronous_part_is_blocked() {
    let (entered_tx, entered_rx) = channel();
    let (release_tx, release_rx) = channel();
    let storage = Arc::new(InterceptStorage::new(
        Arc::new(MemoryCheckpointStorage::default()),
        Gate {
            entered: Mutex::new(entered_tx),
            release: Arc::new(Mutex::new(release_rx)),
        },
    ));
    let mut b = backend(1, 0);
    let v = value_state(&mut b);
    for i in 0..1_000 {
        b.put(v, &entry(&key(i)), Bytes::from_static(b"before"))
            .unwrap();
    }
    let pending = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
    let writer_storage = Arc::clone(&storage);
    let writer = std::thread::spawn(move || pending.write(&*writer_storage));
    // The asynchronous part is now inside `write`, held there.
    entered_rx.recv().unwrap();
    let mut done = 0;
    for i in 0..1_000 {
        let k = key(i);
        b.put(v, &entry(&k), Bytes::from_static(b"after")).unwrap();
        assert_eq!(
            b.get(v, &entry(&k)).unwrap().as_deref(),
            Some(&b"after"[..])
        );
        done += 1;
    }
    for i in 1_000..2_000 {
        b.put(v, &entry(&key(i)), Bytes::from_static(b"new"))
            .unwrap();
        done += 1;
    }
    assert!(!writer.is_finished(), "the write is still held");
    assert_eq!(
        done, 2_000,
        "all puts and gets completed while the write was held"
    );
    release_tx.send(()).unwrap();
    let handle = writer.join().unwrap().unwrap().unwrap();
    let mut r = backend(1, 0);
    r.restore(&[handle], storage.as_ref()).unwrap();
    let v = value_state(&mut r);
    assert_eq!(r.entry_count(), 1_000);
    assert_eq!(
        r.get(v, &entry(&key(5))).unwrap().as_deref(),
        Some(&b"before"[..])
    );
}

#[test]
fn memory_limit_fails_the_checkpoint_and_the_backend_keeps_working() {
    let storage = MemoryCheckpointStorage::new(16 * 1024);
    let mut b = backend(1, 0);
    let v = value_state(&mut b);
    // Incompressible values well over the limit.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200 {
        let value: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        b.put(v, &entry(&key(i)), Bytes::from(value)).unwrap();
    }
    let err = b
        .snapshot(CheckpointId(1), SnapshotMode::Full)
        .unwrap()
        .write(&storage)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    let msg = err.to_string();
    assert!(
        msg.contains("checkpoint 1") && msg.contains("16384") && msg.contains("in-memory"),
        "{msg}"
    );
    // The backend keeps working: reads, writes, and a smaller checkpoint.
    assert_eq!(b.entry_count(), 200);
    for i in 10..200 {
        b.clear(v, &entry(&key(i))).unwrap();
    }
    b.put(v, &entry(b"k"), Bytes::from_static(b"v")).unwrap();
    assert_eq!(b.get(v, &entry(b"k")).unwrap().as_deref(), Some(&b"v"[..]));
    let handle = b
        .snapshot(CheckpointId(2), SnapshotMode::Incremental)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap();
    let mut r = backend(1, 0);
    r.restore(&[handle], &storage).unwrap();
    assert_eq!(r.entry_count(), 11);
}

/// Snapshots `old_p` subtasks holding keys 0..n, restores at `new_p`, and
/// checks each new subtask holds exactly its own keys.
fn rescale(old_p: u32, new_p: u32) {
    let n = 500;
    let storage = MemoryCheckpointStorage::default();
    let mut handles: Vec<KeyedStateHandle> = Vec::new();
    for s in 0..old_p {
        let mut b = backend(old_p, s);
        let v = value_state(&mut b);
        for i in own_keys(&b, n) {
            b.put(v, &entry(&key(i)), Bytes::from(i.to_le_bytes().to_vec()))
                .unwrap();
        }
        let pending = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
        handles.extend(pending.write(&storage).unwrap());
    }
    let mut total = 0;
    for s in 0..new_p {
        let mut r = backend(new_p, s);
        let mine = handles_for_range(&handles, r.key_group_range());
        r.restore(&mine, &storage).unwrap();
        let v = value_state(&mut r);
        let own = own_keys(&r, n);
        assert_eq!(r.entry_count(), own.len(), "subtask {s} of {new_p}");
        for i in own {
            assert_eq!(
                r.get(v, &entry(&key(i))).unwrap().as_deref(),
                Some(&i.to_le_bytes()[..])
            );
        }
        let mut outside = 0;
        r.keys(v, &mut |k| {
            if !r.key_group_range().contains(k.key_group) {
                outside += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(outside, 0);
        total += r.entry_count();
    }
    assert_eq!(total, n as usize);
}

#[test]
fn restore_at_other_parallelism_keeps_only_own_key_groups() {
    rescale(2, 3);
    rescale(3, 2);
    rescale(4, 1);
    rescale(1, 5);
}

#[test]
fn failed_restore_leaves_the_backend_empty() {
    let storage = MemoryCheckpointStorage::default();
    let mut b = backend(1, 0);
    let v = value_state(&mut b);
    b.put(v, &entry(b"a"), Bytes::from_static(b"1")).unwrap();
    let handle = b
        .snapshot(CheckpointId(1), SnapshotMode::Full)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap();
    let KeyedStateHandle::KeyGroups(mut bad) = handle.clone() else {
        panic!("heap writes key-group handles");
    };
    bad.stream.size += 1;
    let mut r = backend(1, 0);
    let v = value_state(&mut r);
    r.put(v, &entry(b"old"), Bytes::from_static(b"x")).unwrap();
    r.restore(std::slice::from_ref(&handle), &storage).unwrap();
    let err = r
        .restore(&[handle, KeyedStateHandle::KeyGroups(bad)], &storage)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert_eq!(r.entry_count(), 0, "no half-restored state");
    // Still usable, with the same state ids.
    r.put(v, &entry(b"a"), Bytes::from_static(b"2")).unwrap();
    assert_eq!(r.get(v, &entry(b"a")).unwrap().as_deref(), Some(&b"2"[..]));

    // Another max parallelism cannot restore.
    let other = BackendContext {
        max_parallelism: MaxParallelism::new(64).unwrap(),
        ..context(1, 0, Arc::new(ManualClock::new(0)))
    };
    let handle = b
        .snapshot(CheckpointId(2), SnapshotMode::Full)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap();
    let mut r = HeapBackend::new(&other, HeapBackendOptions::default()).unwrap();
    let err = r.restore(&[handle], &storage).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleFormat);
    assert!(err.to_string().contains("max parallelism"), "{err}");
}

#[test]
fn empty_backend_writes_nothing_and_ttl_is_cleaned_in_snapshots() {
    let storage = MemoryCheckpointStorage::default();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b =
        HeapBackend::new(&context(1, 0, clock.clone()), HeapBackendOptions::default()).unwrap();
    assert!(
        b.snapshot(CheckpointId(1), SnapshotMode::Full)
            .unwrap()
            .write(&storage)
            .unwrap()
            .is_none()
    );
    let ttl = TtlConfig::new(Duration::from_millis(100)).unwrap();
    let s = b
        .register_state(&StateDescriptor {
            name: "session".into(),
            kind: StateKind::Value,
            ttl: Some(ttl),
            ..StateDescriptor::new("session", StateKind::Value)
        })
        .unwrap();
    b.put(s, &entry(b"old"), Bytes::from(wrap_ttl(800, b"x")))
        .unwrap();
    b.put(s, &entry(b"fresh"), Bytes::from(wrap_ttl(950, b"y")))
        .unwrap();
    let pending = b.snapshot(CheckpointId(2), SnapshotMode::Full).unwrap();
    // The snapshot's time is the synchronous part's.
    clock.advance(1_000);
    let handle = pending.write(&storage).unwrap().unwrap();
    let mut r = backend(1, 0);
    r.restore(&[handle], &storage).unwrap();
    assert_eq!(r.states()[0].ttl, Some(ttl));
    assert_eq!(r.entry_count(), 1);
    assert!(r.get(s, &entry(b"fresh")).unwrap().is_some());
}
