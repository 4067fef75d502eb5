//! Incremental checkpoints of the RocksDB backend driven through
//! `CompletedCheckpointStore`: the SST-diff chain, rotation of retained
//! checkpoints with local copies, local recovery and failed uploads.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backend_rocks::{RestoreSource, RocksBackend};
use state_core::{
    CheckpointId, CheckpointStorage, Checkpointable, CompletedCheckpointStore,
    ExternalizedCheckpointCleanup, IncrementalHandle, KeyedStateBackend, KeyedStateHandle,
    ManualClock, SnapshotMode, StateDescriptor, StateId, StateKind,
};
use support::*;

const KEYS: u32 = 2_000;

fn key_bytes(k: u32) -> [u8; 4] {
    k.to_be_bytes()
}

fn put(b: &mut RocksBackend, state: StateId, k: u32, value: &str) {
    b.put(state, &entry(&key_bytes(k)), bytes(value.to_string()))
        .unwrap();
}

fn get(b: &RocksBackend, state: StateId, k: u32) -> Option<String> {
    b.get(state, &entry(&key_bytes(k)))
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

fn value_state(b: &mut RocksBackend) -> StateId {
    b.register_state(&StateDescriptor::new("v", StateKind::Value))
        .unwrap()
}

/// Takes checkpoint `id` of `b` into `storage` and returns its handle.
fn checkpoint(
    b: &mut RocksBackend,
    storage: &dyn CheckpointStorage,
    id: u64,
) -> state_core::Result<IncrementalHandle> {
    match snapshot_in(b, storage, id, SnapshotMode::Incremental)? {
        Some(KeyedStateHandle::Incremental(h)) => Ok(h),
        other => panic!("expected an incremental handle, got {other:?}"),
    }
}

/// Takes snapshot `id` of `b` in `mode` into `storage`.
fn snapshot_in(
    b: &mut RocksBackend,
    storage: &dyn CheckpointStorage,
    id: u64,
    mode: SnapshotMode,
) -> state_core::Result<Option<KeyedStateHandle>> {
    let id = CheckpointId(id);
    storage.initialize_checkpoint(id)?;
    b.snapshot(id, mode)?.write(storage)
}

/// Completes checkpoint `h` in `store` and tells the backend, as the coordinator would.
fn complete(b: &mut RocksBackend, store: &mut CompletedCheckpointStore, h: &IncrementalHandle) {
    let id = h.checkpoint_id;
    let subsumed = store
        .complete(metadata(
            id,
            1,
            vec![KeyedStateHandle::Incremental(h.clone())],
        ))
        .unwrap();
    b.notify_checkpoint_complete(id).unwrap();
    for s in subsumed {
        b.notify_checkpoint_subsumed(s).unwrap();
    }
}

/// A backend of `f` holding `first-<k>` for every key, and its confirmed
/// checkpoint 1 in `storage`.
fn first_checkpoint(
    f: &backend_rocks::RocksBackendFactory,
    clock: &Arc<ManualClock>,
    storage: &dyn CheckpointStorage,
) -> (RocksBackend, StateId, IncrementalHandle) {
    let mut a = create(f, 0, 1, clock);
    let v = value_state(&mut a);
    for k in 0..KEYS {
        put(&mut a, v, k, &format!("first-{k}"));
    }
    let h1 = checkpoint(&mut a, storage, 1).unwrap();
    a.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    (a, v, h1)
}

fn restored(
    f: &backend_rocks::RocksBackendFactory,
    clock: &Arc<ManualClock>,
    h: &IncrementalHandle,
    storage: &dyn CheckpointStorage,
) -> (RocksBackend, StateId) {
    let mut b = create(f, 0, 1, clock);
    b.restore(&[KeyedStateHandle::Incremental(h.clone())], storage)
        .unwrap();
    let v = value_state(&mut b);
    (b, v)
}

/// One backend with a value state over fresh directories under `dir`, its
/// checkpoints completed in a store that retains `retained` of them.
struct Fixture {
    factory: backend_rocks::RocksBackendFactory,
    storage: Arc<backend_fs::FsCheckpointStorage>,
    store: CompletedCheckpointStore,
    clock: Arc<ManualClock>,
    backend: RocksBackend,
    state: StateId,
}

fn fixture(dir: &std::path::Path, local_recovery: bool, retained: usize) -> Fixture {
    let factory = factory(&dir.join("local"), local_recovery);
    let storage = fs_storage(&dir.join("storage"));
    let store = CompletedCheckpointStore::new(
        storage.clone(),
        retained,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut backend = create(&factory, 0, 1, &clock);
    let state = value_state(&mut backend);
    Fixture {
        factory,
        storage,
        store,
        clock,
        backend,
        state,
    }
}

#[test]
fn incremental_chain_uploads_only_new_ssts_and_restores_each_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let Fixture {
        factory: f,
        storage,
        mut store,
        clock,
        backend: mut b,
        state: v,
    } = fixture(dir.path(), false, 5);
    let mut expected: BTreeMap<u32, String> = BTreeMap::new();
    let mut snapshots = Vec::new();
    let mut prev: Option<IncrementalHandle> = None;
    for round in 1..=5u64 {
        let changed: Vec<u32> = if round == 1 {
            (0..KEYS).collect()
        } else {
            (0..20)
                .map(|i| (i * 97 + round as u32 * 13) % KEYS)
                .collect()
        };
        for k in changed {
            let value = format!("value-{k}-{round}-{}", "x".repeat(40));
            put(&mut b, v, k, &value);
            expected.insert(k, value);
        }
        let h = checkpoint(&mut b, storage.as_ref(), round).unwrap();
        let prev_names: BTreeMap<&str, &state_core::SharedFile> = prev
            .iter()
            .flat_map(|p| p.shared.iter().map(|f| (f.name.as_str(), f)))
            .collect();
        for f in &h.shared {
            if f.uploaded_by == h.checkpoint_id {
                assert!(
                    !prev_names.contains_key(f.name.as_str()),
                    "round {round}: {} uploaded again",
                    f.name
                );
            } else {
                assert_eq!(
                    prev_names.get(f.name.as_str()).map(|p| &p.handle),
                    Some(&f.handle),
                    "round {round}: {} reused but not in the previous checkpoint",
                    f.name
                );
            }
        }
        let new_files = h
            .shared
            .iter()
            .filter(|f| f.uploaded_by == h.checkpoint_id)
            .count();
        // Rounds 2 and 3 leave fewer than 4 L0 files (RocksDB's compaction
        // trigger), so they must reuse the earlier files and upload little;
        // later rounds may compact everything into new files.
        if round == 2 || round == 3 {
            assert!(
                h.shared.iter().any(|f| f.uploaded_by != h.checkpoint_id),
                "round {round} reused nothing"
            );
            let full: u64 = h.shared.iter().map(|f| f.handle.size).sum();
            let new: u64 = h
                .shared
                .iter()
                .filter(|f| f.uploaded_by == h.checkpoint_id)
                .map(|f| f.handle.size)
                .sum();
            assert!(
                new * 10 < full,
                "round {round}: uploaded {new} of {full} bytes"
            );
        }
        assert!(new_files >= 1, "round {round} uploaded no new SST");
        complete(&mut b, &mut store, &h);
        snapshots.push((h.clone(), expected.clone()));
        prev = Some(h);
        // Storage holds exactly the files of the retained checkpoints.
        assert_eq!(
            tree_files(storage.job_dir()),
            referenced_files(store.retained()),
            "round {round}"
        );
    }
    for (h, state) in &snapshots {
        let (r, v) = restored(&f, &clock, h, storage.as_ref());
        for k in 0..KEYS {
            assert_eq!(
                get(&r, v, k).as_ref(),
                state.get(&k),
                "checkpoint {} key {k}",
                h.checkpoint_id
            );
        }
    }
}

#[test]
fn rotation_of_50_checkpoints_keeps_exactly_the_retained_files_and_local_copies() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), true);
    let storage = fs_storage(&dir.path().join("storage"));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 3, ExternalizedCheckpointCleanup::default())
            .unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = create(&f, 0, 1, &clock);
    let v = value_state(&mut b);
    let mut last = None;
    for id in 1..=50u64 {
        for i in 0..40u32 {
            let k = (i * 31 + id as u32 * 7) % 500;
            put(&mut b, v, k, &format!("{k}-{id}"));
        }
        let h = checkpoint(&mut b, storage.as_ref(), id).unwrap();
        complete(&mut b, &mut store, &h);
        last = Some(h);
    }
    let retained: BTreeSet<String> = store
        .retained()
        .iter()
        .map(|m| m.checkpoint_id.dir_name())
        .collect();
    assert_eq!(
        retained,
        ["chk-48", "chk-49", "chk-50"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        tree_files(storage.job_dir()),
        referenced_files(store.retained())
    );
    let local: BTreeSet<String> = std::fs::read_dir(b.instance_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    assert_eq!(local, retained);
    // The newest restores, from its local copy.
    let mut r = create(&f, 0, 1, &clock);
    r.restore(
        &[KeyedStateHandle::Incremental(last.unwrap())],
        storage.as_ref(),
    )
    .unwrap();
    assert_eq!(
        r.last_restore_stats().unwrap().source(),
        RestoreSource::LocalCopy
    );
    let rv = value_state(&mut r);
    for k in 0..500 {
        assert_eq!(get(&r, rv, k), get(&b, v, k), "key {k}");
    }
}

#[test]
fn local_recovery_reads_nothing_from_storage_and_falls_back_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), true);
    let fs = fs_storage(&dir.path().join("storage"));
    let storage = Flaky::new(fs.clone());
    let clock = Arc::new(ManualClock::new(1_000));
    let (mut a, v, h1) = first_checkpoint(&f, &clock, &storage);
    let check = |r: &RocksBackend, rv: StateId, prefix: &str| {
        for k in 0..KEYS {
            assert_eq!(get(r, rv, k), Some(format!("{prefix}-{k}")), "key {k}");
        }
    };

    // Intact local copy: nothing read from storage.
    storage.reads.store(0, Ordering::SeqCst);
    let (r, rv) = restored(&f, &clock, &h1, &storage);
    assert_eq!(storage.reads.load(Ordering::SeqCst), 0);
    let stats = r.last_restore_stats().unwrap();
    assert_eq!(
        (stats.source(), stats.bytes_from_storage),
        (RestoreSource::LocalCopy, 0)
    );
    check(&r, rv, "first");
    drop(r);

    // Local copy deleted: everything from storage, same state.
    std::fs::remove_dir_all(a.instance_dir().join("chk-1")).unwrap();
    let (r, rv) = restored(&f, &clock, &h1, &storage);
    assert!(storage.reads.load(Ordering::SeqCst) > 0);
    assert_eq!(
        r.last_restore_stats().unwrap().source(),
        RestoreSource::Storage
    );
    check(&r, rv, "first");
    drop(r);

    // One byte of the local copy flipped: from storage, same state. The
    // copy's files are hard links of the live database's, so `a` is not
    // used after this.
    for k in 0..KEYS {
        put(&mut a, v, k, &format!("second-{k}"));
    }
    let h2 = checkpoint(&mut a, &storage, 2).unwrap();
    drop(a);
    let copy = dir.path().join("local").join(&h2.backend_id).join("chk-2");
    let victim = copy.join(&h2.shared[0].name);
    let mut data = std::fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&victim, &data).unwrap();
    storage.reads.store(0, Ordering::SeqCst);
    let (r, rv) = restored(&f, &clock, &h2, &storage);
    assert!(storage.reads.load(Ordering::SeqCst) > 0);
    assert_eq!(
        r.last_restore_stats().unwrap().source(),
        RestoreSource::Storage
    );
    check(&r, rv, "second");
}

#[test]
fn local_files_checksummed_before_are_trusted_until_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), true);
    let storage = fs_storage(&dir.path().join("storage"));
    let clock = Arc::new(ManualClock::new(1_000));
    let (mut a, v, _) = first_checkpoint(&f, &clock, storage.as_ref());
    // Files are noted only once their mtime is older than the read by the
    // timestamp race margin; let checkpoint 1's files settle, so the next
    // snapshot's scrub notes them.
    std::thread::sleep(Duration::from_millis(150));
    for k in 0..KEYS / 10 {
        put(&mut a, v, k, &format!("second-{k}"));
    }
    let h2 = checkpoint(&mut a, storage.as_ref(), 2).unwrap();
    a.notify_checkpoint_complete(CheckpointId(2)).unwrap();
    drop(a);
    let expect = |k: u32| {
        if k < KEYS / 10 {
            format!("second-{k}")
        } else {
            format!("first-{k}")
        }
    };

    // The SSTs of checkpoint 1 are trusted without reading them again; the
    // new one is checksummed. Nothing from storage, every key right.
    let (r, rv) = restored(&f, &clock, &h2, storage.as_ref());
    let stats = r.last_restore_stats().unwrap().clone();
    assert_eq!(stats.source(), RestoreSource::LocalCopy, "{stats:?}");
    assert!(stats.local_files_trusted >= 1, "{stats:?}");
    assert!(
        stats.local_files_trusted < stats.files_from_local,
        "{stats:?}"
    );
    for k in 0..KEYS {
        assert_eq!(get(&r, rv, k), Some(expect(k)), "key {k}");
    }
    drop(r);

    // Change one byte of a trusted file (a write updates its mtime): the
    // restore checksums it, finds the damage and reads storage instead.
    let copy = dir.path().join("local").join(&h2.backend_id).join("chk-2");
    let victim = h2
        .shared
        .iter()
        .find(|s| s.uploaded_by == CheckpointId(1))
        .map(|s| copy.join(&s.name))
        .unwrap();
    let mut data = std::fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&victim, &data).unwrap();
    let (r, rv) = restored(&f, &clock, &h2, storage.as_ref());
    let stats = r.last_restore_stats().unwrap();
    assert_eq!(stats.source(), RestoreSource::Storage, "{stats:?}");
    assert_eq!(stats.local_files_trusted, 0, "{stats:?}");
    for k in 0..KEYS {
        assert_eq!(get(&r, rv, k), Some(expect(k)), "key {k}");
    }
}

#[test]
fn failed_upload_leaves_no_checkpoint_and_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), false);
    let fs = fs_storage(&dir.path().join("storage"));
    let storage = Arc::new(Flaky::new(fs.clone()));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 1, ExternalizedCheckpointCleanup::default())
            .unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = create(&f, 0, 1, &clock);
    let v = value_state(&mut b);
    let w = b
        .register_state(&StateDescriptor::new("w", StateKind::Value))
        .unwrap();
    for k in 0..500 {
        put(&mut b, v, k, &format!("one-{k}"));
        put(&mut b, w, k, &format!("one-{k}"));
    }
    let h1 = checkpoint(&mut b, storage.as_ref(), 1).unwrap();
    complete(&mut b, &mut store, &h1);

    // Checkpoint 2 has two new SSTs (one per state); the second upload fails.
    for k in 0..500 {
        put(&mut b, v, k, &format!("two-{k}"));
        put(&mut b, w, k, &format!("two-{k}"));
    }
    storage.shared_left.store(1, Ordering::SeqCst);
    let err = checkpoint(&mut b, storage.as_ref(), 2).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    storage.shared_left.store(usize::MAX, Ordering::SeqCst);
    store.abort(CheckpointId(2), &[]).unwrap();
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();
    assert_eq!(storage.list_checkpoints().unwrap(), vec![CheckpointId(1)]);
    let failed_prefix = format!("shared/{}-2-", b.backend_id());
    assert!(
        tree_files(fs.job_dir())
            .iter()
            .all(|p| !p.starts_with(&failed_prefix))
    );

    // The backend keeps working and the next checkpoint succeeds.
    assert_eq!(get(&b, v, 7).as_deref(), Some("two-7"));
    put(&mut b, v, 7, "three-7");
    let h3 = checkpoint(&mut b, storage.as_ref(), 3).unwrap();
    complete(&mut b, &mut store, &h3);
    let files = tree_files(fs.job_dir());
    assert_eq!(files, referenced_files(store.retained()));
    assert!(
        files
            .iter()
            .all(|p| !p.starts_with(&failed_prefix) && !p.starts_with("chk-2/")),
        "{files:?}"
    );
    assert!(!b.instance_dir().join("chk-2").exists());
    let (r, rv) = restored(&f, &clock, &h3, storage.as_ref());
    assert_eq!(get(&r, rv, 7).as_deref(), Some("three-7"));
    assert_eq!(get(&r, rv, 8).as_deref(), Some("two-8"));
}

/// The instance names of the local directory's entries.
fn local_entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn dead_instances_are_swept_but_for_retained_copies_and_an_adopter_protects_its_copies() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let f = factory(&local, true);
    let storage = fs_storage(&dir.path().join("storage"));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())
            .unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut a = create(&f, 0, 1, &clock);
    let v = value_state(&mut a);
    let mut newest = None;
    for id in 1..=3u64 {
        put(&mut a, v, id as u32, &format!("v{id}"));
        let h = checkpoint(&mut a, storage.as_ref(), id).unwrap();
        complete(&mut a, &mut store, &h);
        newest = Some(h);
    }
    // Checkpoint 4 never completes: its local copy is left over.
    put(&mut a, v, 4, "v4");
    checkpoint(&mut a, storage.as_ref(), 4).unwrap();
    let a_dir = a.instance_dir().to_path_buf();
    let swept = f.sweep_dead_instances(&[]).unwrap();
    assert_eq!(swept.live, vec![a_dir.clone()], "a live instance was swept");
    assert!(swept.removed.is_empty());

    // Dropped (as a killed process would leave it, its lock free): dead.
    drop(a);
    let left = local_entries(&a_dir);
    assert_eq!(
        left,
        ["_lock", "chk-2", "chk-3", "chk-4"]
            .map(String::from)
            .into()
    );
    let retained = [CheckpointId(2), CheckpointId(3)];
    let swept = f.sweep_dead_instances(&retained).unwrap();
    assert_eq!(swept.removed, [a_dir.join("chk-4")]);
    assert_eq!(swept.kept, [a_dir.join("chk-2"), a_dir.join("chk-3")]);

    // A backend restoring from the dead instance's copy adopts (locks) its directory.
    let (r, rv) = restored(&f, &clock, newest.as_ref().unwrap(), storage.as_ref());
    assert_eq!(
        r.last_restore_stats().unwrap().source(),
        RestoreSource::LocalCopy
    );
    assert_eq!(get(&r, rv, 3).as_deref(), Some("v3"));
    let swept = f.sweep_dead_instances(&[]).unwrap();
    assert_eq!(
        swept.live,
        [a_dir.clone(), r.instance_dir().to_path_buf()]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(swept.removed.is_empty(), "{swept:?}");
    // Without local copies of its own, a dropped backend leaves nothing.
    let r_dir = r.instance_dir().to_path_buf();
    drop(r);
    assert!(!r_dir.exists());

    // Once nothing is retained, the dead directory goes whole.
    let swept = f.sweep_dead_instances(&[]).unwrap();
    assert_eq!(swept.removed, vec![a_dir.clone()]);
    assert!(!a_dir.exists());
    assert!(local_entries(&local).is_empty());
}

#[test]
fn savepoints_are_self_contained_and_never_a_base_for_incremental_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), true);
    let storage = fs_storage(&dir.path().join("storage"));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 5, ExternalizedCheckpointCleanup::default())
            .unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = create(&f, 0, 1, &clock);
    let v = value_state(&mut b);
    for k in 0..KEYS {
        put(&mut b, v, k, &format!("one-{k}"));
    }
    let first = checkpoint(&mut b, storage.as_ref(), 1).unwrap();
    complete(&mut b, &mut store, &first);

    // A native savepoint into its own storage uploads every SST file,
    // the ones checkpoint 1 already has included.
    let native_storage = fs_storage(&dir.path().join("native"));
    let native = match snapshot_in(
        &mut b,
        native_storage.as_ref(),
        2,
        SnapshotMode::NativeSavepoint,
    )
    .unwrap()
    {
        Some(KeyedStateHandle::Incremental(h)) => h,
        other => panic!("expected RocksDB's own files, got {other:?}"),
    };
    assert!(!native.shared.is_empty());
    assert!(
        native
            .shared
            .iter()
            .all(|f| f.uploaded_by == CheckpointId(2))
    );
    // The executor tells backends a completed savepoint was aborted.
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();

    // A canonical savepoint is a key-group stream even on an incremental backend.
    let canonical_storage = fs_storage(&dir.path().join("canonical"));
    let canonical = snapshot_in(
        &mut b,
        canonical_storage.as_ref(),
        3,
        SnapshotMode::CanonicalSavepoint,
    )
    .unwrap()
    .unwrap();
    assert!(matches!(canonical, KeyedStateHandle::KeyGroups(_)));
    b.notify_checkpoint_aborted(CheckpointId(3)).unwrap();

    // The next incremental checkpoint builds on checkpoint 1, never on a
    // savepoint's files.
    put(&mut b, v, 0, "two-0");
    let next = checkpoint(&mut b, storage.as_ref(), 4).unwrap();
    assert!(
        next.shared
            .iter()
            .all(|f| matches!(f.uploaded_by, CheckpointId(1) | CheckpointId(4))),
        "{:?}",
        next.shared
    );

    // Each savepoint restores on its own, from its own storage.
    let (native_b, nv) = restored(&f, &clock, &native, native_storage.as_ref());
    assert_eq!(get(&native_b, nv, 7).as_deref(), Some("one-7"));
    let mut canonical_b = create(&f, 0, 1, &clock);
    canonical_b
        .restore(&[canonical], canonical_storage.as_ref())
        .unwrap();
    let cv = value_state(&mut canonical_b);
    assert_eq!(get(&canonical_b, cv, 7).as_deref(), Some("one-7"));
    assert_eq!(get(&canonical_b, cv, 0).as_deref(), Some("one-0"));
}

/// Checkpoints that overlap (the next one taken before the previous one
/// is confirmed, as with two epochs in flight on timely or concurrent
/// checkpoints) never reference a file that a completion deleted.
///
/// The sequence that lost data before: checkpoint 2 is taken before 1 is
/// confirmed, so it uploads its SSTs again under its own names; 3 is taken
/// after 1 is confirmed but before 2 is, and reused 1's files; 2's
/// completion subsumed 1 and deleted those files, which 3 then completed
/// with. A snapshot taken while an earlier one is pending now reuses
/// nothing.
#[test]
fn overlapping_checkpoints_never_reference_a_file_a_completion_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = fixture(dir.path(), false, 1);
    let storage = fx.storage.clone();
    let v = fx.state;
    let mut expected: BTreeMap<u32, String> = BTreeMap::new();
    let mut write_round = |b: &mut RocksBackend, round: u32, keys: std::ops::Range<u32>| {
        for k in keys {
            let value = format!("value-{k}-{round}");
            put(b, v, k, &value);
            expected.insert(k, value);
        }
    };
    write_round(&mut fx.backend, 1, 0..KEYS);
    let h1 = checkpoint(&mut fx.backend, storage.as_ref(), 1).unwrap();
    write_round(&mut fx.backend, 2, 0..20);
    let h2 = checkpoint(&mut fx.backend, storage.as_ref(), 2).unwrap();
    complete(&mut fx.backend, &mut fx.store, &h1);
    write_round(&mut fx.backend, 3, 20..40);
    let h3 = checkpoint(&mut fx.backend, storage.as_ref(), 3).unwrap();
    complete(&mut fx.backend, &mut fx.store, &h2);
    complete(&mut fx.backend, &mut fx.store, &h3);

    let report = state_core::verify_checkpoint(storage.as_ref(), CheckpointId(3)).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (r, rv) = restored(&fx.factory, &fx.clock, &h3, storage.as_ref());
    for k in 0..KEYS {
        assert_eq!(get(&r, rv, k).as_ref(), expected.get(&k), "key {k}");
    }
    assert!(
        h3.shared.iter().all(|f| f.uploaded_by == h3.checkpoint_id),
        "taken while checkpoint 2 was pending, 3 reuses nothing: {:?}",
        h3.shared
    );
    // Once nothing is pending, the next checkpoint reuses files again.
    put(&mut fx.backend, v, 7, "later");
    let h4 = checkpoint(&mut fx.backend, storage.as_ref(), 4).unwrap();
    assert!(
        h4.shared.iter().any(|f| f.uploaded_by != h4.checkpoint_id),
        "checkpoint 4 reused nothing"
    );
}

/// Every `.sst` file below `dir`, by name, with its inode.
fn sst_inodes(dir: &std::path::Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut found = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "sst") {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                found.insert(name, std::fs::metadata(&p).unwrap().ino());
            }
        }
    }
    found
}

#[test]
fn a_restore_from_filesystem_storage_links_its_sst_files_and_never_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), false);
    let storage = fs_storage(&dir.path().join("storage"));
    let clock = Arc::new(ManualClock::new(1_000));
    let (a, _, h1) = first_checkpoint(&f, &clock, storage.as_ref());
    drop(a);
    let shared: Vec<(std::path::PathBuf, Vec<u8>)> = h1
        .shared
        .iter()
        .map(|s| {
            let path = storage.resolve(s.handle.file_path().unwrap()).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(!shared.is_empty());

    let (mut r, rv) = restored(&f, &clock, &h1, storage.as_ref());
    assert_eq!(
        r.last_restore_stats().unwrap().source(),
        RestoreSource::Storage
    );
    // The working database's SST files are the checkpoint's, linked.
    let working = sst_inodes(r.instance_dir());
    let in_storage: BTreeSet<u64> = sst_inodes(&dir.path().join("storage"))
        .into_values()
        .collect();
    assert_eq!(working.len(), shared.len(), "{working:?}");
    for (name, inode) in &working {
        assert!(in_storage.contains(inode), "{name} is not linked");
    }
    for k in 0..KEYS {
        assert_eq!(get(&r, rv, k), Some(format!("first-{k}")), "key {k}");
    }

    // The restored job overwrites every key, flushes and compacts (which
    // deletes the linked files from the working database), and checkpoints.
    for k in 0..KEYS {
        put(&mut r, rv, k, &format!("second-{k}"));
    }
    checkpoint(&mut r, storage.as_ref(), 2).unwrap();
    assert!(r.wait_for_compactions(Duration::from_secs(300)).unwrap());
    drop(r);

    // The checkpoint it restored from is byte for byte as it was, and
    // restores again.
    for (path, bytes) in &shared {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    let (again, av) = restored(&f, &clock, &h1, storage.as_ref());
    for k in 0..KEYS {
        assert_eq!(get(&again, av, k), Some(format!("first-{k}")), "key {k}");
    }
}
