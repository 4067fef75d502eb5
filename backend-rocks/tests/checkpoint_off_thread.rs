//! The native checkpoint taken off the task thread: writes of every state
//! kind made between `snapshot` and the asynchronous part's end stay out of
//! the checkpoint and in the backend; a native checkpoint that fails fails
//! its snapshot by name and leaves the backend writable; a backend dropped
//! with one still being taken waits for it and cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

mod support;

use std::sync::Arc;

use bytes::Bytes;
use state_core::{
    CheckpointId, CheckpointStorage, Checkpointable, KeyedStateBackend, ManualClock, SnapshotMode,
    StateDescriptor, StateId, StateKind,
};
use support::*;

struct States {
    value: StateId,
    list: StateId,
    map: StateId,
}

fn register(b: &mut backend_rocks::RocksBackend) -> States {
    States {
        value: b
            .register_state(&StateDescriptor::new("v", StateKind::Value))
            .unwrap(),
        list: b
            .register_state(&StateDescriptor::new("l", StateKind::List))
            .unwrap(),
        map: b
            .register_state(&StateDescriptor::new("m", StateKind::Map))
            .unwrap(),
    }
}

/// Writes round `r` of every state for `keys` keys (value, list append,
/// map entry; round 1 also writes keys the cache has never seen).
fn write_round(b: &mut backend_rocks::RocksBackend, s: &States, r: u32, keys: u32) {
    for k in 0..keys {
        let key = format!("k{k:05}");
        let e = entry(key.as_bytes());
        b.put(s.value, &e, Bytes::from(format!("v{r}"))).unwrap();
        b.append(s.list, &e, Bytes::from(format!("l{r}"))).unwrap();
        b.map_put(s.map, &e, b"u", Bytes::from(format!("m{r}")))
            .unwrap();
    }
}

/// Asserts every key holds round `r`'s value, the lists rounds `1..=r`, and
/// the map round `r`'s entry.
fn assert_round(b: &backend_rocks::RocksBackend, s: &States, r: u32, keys: u32) {
    for k in 0..keys {
        let key = format!("k{k:05}");
        let e = entry(key.as_bytes());
        assert_eq!(
            b.get(s.value, &e).unwrap(),
            Some(Bytes::from(format!("v{r}"))),
            "{key}"
        );
        let list: Vec<Bytes> = (1..=r).map(|i| Bytes::from(format!("l{i}"))).collect();
        assert_eq!(b.get_list(s.list, &e).unwrap(), list, "{key}");
        assert_eq!(
            b.map_get(s.map, &e, b"u").unwrap(),
            Some(Bytes::from(format!("m{r}"))),
            "{key}"
        );
    }
}

/// A temp directory with checkpoint storage and a factory without local recovery.
struct Setup {
    _dir: tempfile::TempDir,
    storage: Arc<backend_fs::FsCheckpointStorage>,
    clock: Arc<ManualClock>,
    factory: backend_rocks::RocksBackendFactory,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Setup {
            storage: fs_storage(&dir.path().join("chk")),
            clock: Arc::new(ManualClock::new(0)),
            factory: factory(&dir.path().join("local"), false),
            _dir: dir,
        }
    }

    fn backend(&self) -> backend_rocks::RocksBackend {
        create(&self.factory, 0, 1, &self.clock)
    }
}

/// Restores `handle` into a fresh backend of `f` and asserts it holds round `r`.
fn assert_restores(
    f: &backend_rocks::RocksBackendFactory,
    clock: &Arc<ManualClock>,
    handle: state_core::KeyedStateHandle,
    storage: &dyn CheckpointStorage,
    r: u32,
    keys: u32,
) {
    let mut restored = create(f, 0, 1, clock);
    restored.restore(&[handle], storage).unwrap();
    let s = register(&mut restored);
    assert_round(&restored, &s, r, keys);
}

#[test]
fn writes_between_the_snapshot_and_its_upload_stay_out_of_the_checkpoint() {
    const KEYS: u32 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"));
    let clock = Arc::new(ManualClock::new(0));
    for incremental in [true, false] {
        let f = backend_rocks::RocksBackendFactory::new(
            options(&dir.path().join(format!("local-{incremental}"))).with_incremental(incremental),
        )
        .unwrap();
        let mut b = create(&f, 0, 1, &clock);
        let s = register(&mut b);
        write_round(&mut b, &s, 1, KEYS);
        let id = CheckpointId(if incremental { 1 } else { 2 });
        storage.initialize_checkpoint(id).unwrap();
        let pending = b.snapshot(id, SnapshotMode::Full).unwrap();
        // The native checkpoint is being taken now: these writes either wait
        // in the value cache or wait for it to be taken.
        write_round(&mut b, &s, 2, KEYS);
        let handle = pending.write(storage.as_ref()).unwrap().unwrap();
        assert_eq!(
            matches!(handle, state_core::KeyedStateHandle::Incremental(_)),
            incremental
        );
        assert_round(&b, &s, 2, KEYS);

        assert_restores(&f, &clock, handle, storage.as_ref(), 1, KEYS);
    }
}

#[test]
fn a_failed_native_checkpoint_fails_its_snapshot_by_name_and_the_next_one_works() {
    let t = Setup::new();
    let (storage, mut b) = (&t.storage, t.backend());
    let s = register(&mut b);
    write_round(&mut b, &s, 1, 100);
    // RocksDB builds a checkpoint in `<dir>.tmp` and renames it: a file in
    // that place makes the native checkpoint of 1 fail on its thread.
    let blocker = b.instance_dir().join("chk-1.tmp");
    std::fs::write(&blocker, b"in the way").unwrap();
    storage.initialize_checkpoint(CheckpointId(1)).unwrap();
    let pending = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
    let err = pending.write(storage.as_ref()).unwrap_err().to_string();
    assert!(err.contains("chk-1"), "{err}");
    b.notify_checkpoint_aborted(CheckpointId(1)).unwrap();

    // The backend takes writes of every kind again, and checkpoint 2 holds them.
    write_round(&mut b, &s, 2, 100);
    let handle = checkpoint(&mut b, storage.as_ref(), 2, SnapshotMode::Full);
    assert_restores(&t.factory, &t.clock, handle, storage.as_ref(), 2, 100);
}

#[test]
fn a_backend_dropped_while_its_native_checkpoint_is_taken_leaves_nothing_behind() {
    let t = Setup::new();
    let (storage, mut b) = (&t.storage, t.backend());
    let s = register(&mut b);
    write_round(&mut b, &s, 1, 2_000);
    let instance = b.instance_dir().to_path_buf();
    storage.initialize_checkpoint(CheckpointId(1)).unwrap();
    let pending = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
    drop(b);
    assert!(!instance.exists(), "{} is left", instance.display());
    // The asynchronous part of a dropped backend finds its checkpoint gone
    // with the instance directory, and says so rather than hanging.
    let err = pending.write(storage.as_ref()).unwrap_err().to_string();
    assert!(err.contains("chk-1"), "{err}");
}
