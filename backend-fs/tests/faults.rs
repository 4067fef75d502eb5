//! Fault injection: a checkpoint (state streams, then `complete`) is run with
//! an I/O failure, or a crash, at every one of its mutating file operations.
//! Whatever happens, storage holds no new visible checkpoint or a complete
//! one, and a fresh storage and store on the same directory (real file
//! system) recover the last completed checkpoint with its exact state.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use backend_fs::{FsCheckpointStorage, FsStorageOptions, MappedFs};
use state_core::backend_support::Fs;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, CompletedCheckpointStore,
    ExternalizedCheckpointCleanup, KeyedStateHandle, Result, SnapshotKind, select_for_restore,
};
use state_testkit::{FaultMode, FaultyFs};
use support::*;

/// Checkpoints 1..=3 exist before the workload; the workload takes 4.
const BEFORE: u64 = 3;
const NEXT: u64 = 4;
/// Flink's default: completing 4 subsumes 3 and deletes `1.sst`.
const RETAINED: usize = 1;

fn store(storage: Arc<dyn CheckpointStorage>) -> CompletedCheckpointStore {
    CompletedCheckpointStore::recover(storage, RETAINED, ExternalizedCheckpointCleanup::default())
        .unwrap()
}

/// A checkpoint with a full keyed stream, an operator stream and an
/// incremental handle (shared files).
fn write_checkpoint(storage: &dyn CheckpointStorage, id: u64) -> Result<CheckpointMetadata> {
    write_checkpoint_or_partial(storage, id).map_err(|(e, _)| e)
}

fn write_checkpoint_or_partial(
    storage: &dyn CheckpointStorage,
    id: u64,
) -> std::result::Result<CheckpointMetadata, (state_core::StateError, Vec<KeyedStateHandle>)> {
    let mut m = write_full(storage, id).map_err(|e| (e, Vec::new()))?;
    let keyed = &mut m.operators[0].subtasks[0].keyed;
    match write_incremental(storage, id) {
        Ok(handle) => keyed.push(handle),
        Err((e, partial)) => {
            let mut handles = keyed.clone();
            handles.extend(partial);
            return Err((e, handles));
        }
    }
    m.kind = SnapshotKind::Incremental;
    Ok(m)
}

fn setup(dir: &Path) {
    let storage = Arc::new(FsCheckpointStorage::open(dir, job()).unwrap());
    let mut s = store(storage.clone());
    for id in 1..=BEFORE {
        s.complete(write_checkpoint(storage.as_ref(), id).unwrap())
            .unwrap();
    }
}

/// What the coordinator does for one checkpoint: write the state, complete
/// it, or abort it on failure. Returns whether it completed.
fn workload(storage: &dyn CheckpointStorage, s: &mut CompletedCheckpointStore) -> bool {
    match write_checkpoint_or_partial(storage, NEXT) {
        Ok(m) => s.complete(m).is_ok(),
        Err((_, handles)) => {
            let _ = s.abort(CheckpointId(NEXT), &handles);
            false
        }
    }
}

fn faulty_storage(dir: &Path, fs: &Arc<FaultyFs>) -> Arc<FsCheckpointStorage> {
    let options = FsStorageOptions::new(dir, job()).with_fs(fs.clone() as Arc<dyn Fs>);
    Arc::new(FsCheckpointStorage::with_options(options).unwrap())
}

/// Counts the mutating operations of the workload on a clean run.
fn count_ops() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let fs = Arc::new(FaultyFs::new(Arc::new(MappedFs)));
    let storage = faulty_storage(dir.path(), &fs);
    let mut s = store(storage.clone());
    let before = fs.op_count();
    assert!(workload(storage.as_ref(), &mut s));
    fs.op_count() - before
}

/// Recovers with a real file system and checks the restored checkpoint.
fn recover_and_check(dir: &Path, expected: &[u64], context: &str) -> u64 {
    let storage = Arc::new(FsCheckpointStorage::open(dir, job()).unwrap());
    let mut s = store(storage.clone());
    assert!(s.skipped_on_recovery().is_empty(), "{context}");
    let latest = s.latest().unwrap().checkpoint_id;
    let sel = select_for_restore(storage.as_ref()).unwrap();
    assert!(
        sel.skipped.is_empty(),
        "{context}: damaged checkpoint visible: {:?}",
        sel.skipped
    );
    assert_eq!(sel.checkpoint_id(), latest, "{context}");
    let id = latest.get();
    assert!(
        expected.contains(&id),
        "{context}: recovered {id}, expected one of {expected:?}"
    );
    // The restored state is the state of that checkpoint.
    let keyed = match &sel.metadata.operators[0].subtasks[0].keyed[0] {
        KeyedStateHandle::KeyGroups(h) => storage.read(&h.stream).unwrap(),
        other => panic!("{context}: unexpected handle {other:?}"),
    };
    assert_eq!(&keyed[..], &keyed_payload(id)[..], "{context}");
    // Every shared file a retained checkpoint references is on disk.
    for m in s.retained() {
        for stream in m.streams() {
            storage.read(stream).unwrap();
        }
    }
    // And the job continues: the next checkpoint completes and restores.
    let next = id + 1;
    s.complete(write_checkpoint(storage.as_ref(), next).unwrap())
        .unwrap();
    assert_eq!(
        select_for_restore(storage.as_ref())
            .unwrap()
            .checkpoint_id(),
        CheckpointId(next),
        "{context}"
    );
    id
}

fn run_with_fault_at_every_op(mode: FaultMode) {
    let ops = count_ops();
    assert!(ops > 20, "the workload has {ops} mutating operations");
    let mut recovered_new = 0;
    for n in 1..=ops {
        let context = format!("{mode:?} at operation {n} of {ops}");
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let job_dir = dir.path().join(job().as_str());
        let tree_before = tree(&job_dir);

        let fs = Arc::new(FaultyFs::new(Arc::new(MappedFs)));
        let storage = faulty_storage(dir.path(), &fs);
        let mut s = store(storage.clone());
        fs.arm(n, None, mode);
        let completed = workload(storage.as_ref(), &mut s);
        assert_eq!(fs.faults_fired(), 1, "{context}");
        drop(s);
        drop(storage);

        let expected: &[u64] = match (mode, completed) {
            (_, true) => &[NEXT],
            (FaultMode::Fail, false) => &[BEFORE],
            (FaultMode::Crash, false) => &[BEFORE, NEXT],
        };
        if mode == FaultMode::Fail && !completed {
            // A failed checkpoint is cleaned up completely.
            assert_eq!(tree(&job_dir), tree_before, "{context}");
        }
        if recover_and_check(dir.path(), expected, &context) == NEXT {
            recovered_new += 1;
        }
    }
    // Faults late in the workload (after the metadata rename) still complete.
    assert!(recovered_new > 0);
}

#[test]
fn failing_every_operation_leaves_no_or_a_complete_checkpoint() {
    run_with_fault_at_every_op(FaultMode::Fail);
}

#[test]
fn crashing_at_every_operation_recovers_the_last_completed_checkpoint() {
    run_with_fault_at_every_op(FaultMode::Crash);
}

#[test]
fn crashing_at_every_operation_of_a_recovery_rotation_still_recovers() {
    // A crash between writing checkpoint 4's metadata and subsuming 3 leaves
    // both visible; the recovery subsumes 3. Crash that recovery everywhere.
    let make = |dir: &Path| {
        setup(dir);
        let storage = Arc::new(FsCheckpointStorage::open(dir, job()).unwrap());
        let mut s = CompletedCheckpointStore::recover(
            storage.clone(),
            2,
            ExternalizedCheckpointCleanup::default(),
        )
        .unwrap();
        s.complete(write_checkpoint(storage.as_ref(), NEXT).unwrap())
            .unwrap();
        assert_eq!(storage.list_checkpoints().unwrap().len(), 2);
    };
    let ops = {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path());
        let fs = Arc::new(FaultyFs::new(Arc::new(MappedFs)));
        let storage = faulty_storage(dir.path(), &fs);
        let before = fs.op_count();
        store(storage);
        fs.op_count() - before
    };
    assert!(ops >= 3, "rotation has {ops} operations");
    for n in 1..=ops {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path());
        let fs = Arc::new(FaultyFs::new(Arc::new(MappedFs)));
        let storage = faulty_storage(dir.path(), &fs);
        fs.crash_at(n, None);
        // A crash during rotation does not fail the recovery itself: the
        // deletion failures are only logged.
        let s = store(storage);
        assert_eq!(s.latest().unwrap().checkpoint_id, CheckpointId(NEXT));
        assert!(fs.has_crashed());
        recover_and_check(dir.path(), &[NEXT], &format!("crash at {n} of {ops}"));
    }
}
