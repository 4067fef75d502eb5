//! Directory layout, listing, retention, shared-file lifetime and abort of
//! `FsCheckpointStorage` driven through `CompletedCheckpointStore`.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use state_core::{
    CheckpointId, CheckpointStorage, CompletedCheckpointStore, ExternalizedCheckpointCleanup,
    JobTerminalStatus, KeyedStateHandle, SnapshotKind, StateScope, select_for_restore,
};
use support::*;

fn open(dir: &std::path::Path) -> Arc<FsCheckpointStorage> {
    Arc::new(FsCheckpointStorage::open(dir, job()).unwrap())
}

fn store(storage: &Arc<FsCheckpointStorage>, retained: usize) -> CompletedCheckpointStore {
    CompletedCheckpointStore::new(
        storage.clone(),
        retained,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn layout_is_flinks_and_handles_are_relative() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let job_dir = dir.path().join("job-1");
    assert_eq!(storage.job_dir(), job_dir);
    assert_eq!(tree(&job_dir), set(&["shared/", "taskowned/"]));

    let mut m = write_full(storage.as_ref(), 1).unwrap();
    let owned = write_stream(
        storage.as_ref(),
        CheckpointId(1),
        StateScope::TaskOwned,
        "changelog-0",
        b"log",
    )
    .unwrap();
    let shared = write_incremental(storage.as_ref(), 1).unwrap();
    m.operators[0].subtasks[0].keyed.push(shared);
    m.operators[0].subtasks[0].operator.as_mut().unwrap().stream = owned.clone();
    store(&storage, 1).complete(m).unwrap();

    assert_eq!(owned.file_path(), Some("taskowned/changelog-0"));
    assert_eq!(
        tree(&job_dir),
        set(&[
            "chk-1/",
            "chk-1/_metadata",
            "chk-1/op-0-keyed",
            "chk-1/op-0-meta",
            "chk-1/op-0-operator",
            "shared/",
            "shared/1.sst",
            "taskowned/",
            "taskowned/changelog-0",
        ])
    );
    assert_eq!(storage.describe(), format!("file://{}", job_dir.display()));

    // The job directory can be moved: handles are relative to it.
    let moved = dir.path().join("moved-job");
    std::fs::rename(&job_dir, &moved).unwrap();
    let reopened = FsCheckpointStorage::for_job_dir(&moved).unwrap();
    let sel = select_for_restore(&reopened).unwrap();
    assert_eq!(sel.checkpoint_id(), CheckpointId(1));
    assert!(sel.skipped.is_empty());
}

#[test]
fn list_ignores_junk_and_incomplete_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut s = store(&storage, 5);
    for id in [2, 10] {
        s.complete(write_full(storage.as_ref(), id).unwrap())
            .unwrap();
    }
    let job_dir = storage.job_dir().to_path_buf();
    // An in-progress checkpoint: state written, metadata not yet.
    write_full(storage.as_ref(), 11).unwrap();
    // One that crashed while writing its metadata.
    std::fs::create_dir(job_dir.join("chk-12")).unwrap();
    std::fs::write(job_dir.join("chk-12/._metadata.inprogress"), b"CAIRN").unwrap();
    for junk_dir in ["chk-abc", "chk-007", "chk--1", "savepoint-1", ".chk-3.tmp"] {
        std::fs::create_dir(job_dir.join(junk_dir)).unwrap();
        std::fs::write(job_dir.join(junk_dir).join("_metadata"), b"x").unwrap();
    }
    std::fs::write(job_dir.join("chk-13"), b"a file, not a directory").unwrap();
    std::fs::create_dir_all(job_dir.join("chk-14/_metadata")).unwrap();
    std::fs::write(job_dir.join("README"), b"notes").unwrap();

    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(2), CheckpointId(10)]
    );
    assert_eq!(
        select_for_restore(storage.as_ref())
            .unwrap()
            .checkpoint_id(),
        CheckpointId(10)
    );
}

#[test]
fn twenty_checkpoints_retain_exactly_three_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut s = store(&storage, 3);
    for id in 1..=20 {
        let subsumed = s
            .complete(write_full(storage.as_ref(), id).unwrap())
            .unwrap();
        let expected: Vec<CheckpointId> = if id > 3 {
            vec![CheckpointId(id - 3)]
        } else {
            Vec::new()
        };
        assert_eq!(subsumed, expected, "checkpoint {id}");
    }
    let mut expected = set(&["shared/", "taskowned/"]);
    for id in 18..=20 {
        for f in ["", "_metadata", "op-0-keyed", "op-0-operator"] {
            expected.insert(format!("chk-{id}/{f}"));
        }
    }
    assert_eq!(tree(storage.job_dir()), expected);
    let ids: Vec<_> = s.retained().iter().map(|m| m.checkpoint_id).collect();
    assert_eq!(ids, [CheckpointId(18), CheckpointId(19), CheckpointId(20)]);

    // A restarted coordinator sees the same three.
    let recovered = CompletedCheckpointStore::recover(
        open(dir.path()),
        3,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    assert_eq!(recovered.retained(), s.retained());

    // Finishing the job deletes them all.
    s.shutdown(JobTerminalStatus::Finished).unwrap();
    assert_eq!(tree(storage.job_dir()), set(&["shared/", "taskowned/"]));
}

fn shared_on_disk(storage: &FsCheckpointStorage) -> BTreeSet<String> {
    tree(&storage.job_dir().join("shared"))
}

fn referenced_by_retained(s: &CompletedCheckpointStore) -> BTreeSet<String> {
    s.retained()
        .iter()
        .flat_map(|m| m.streams())
        .filter_map(|h| h.file_path()?.strip_prefix("shared/").map(str::to_owned))
        .collect()
}

#[test]
fn shared_files_are_deleted_exactly_when_no_retained_checkpoint_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut s = store(&storage, 2);
    for id in 1..=8 {
        let handle = write_incremental(storage.as_ref(), id).unwrap();
        s.complete(metadata(id, SnapshotKind::Incremental, vec![handle], None))
            .unwrap();
        // Every referenced file exists and nothing else does.
        assert_eq!(
            shared_on_disk(&storage),
            referenced_by_retained(&s),
            "after {id}"
        );
        for name in referenced_by_retained(&s) {
            assert!(s.registry().contains(&format!("shared/{name}")));
        }
    }
    // Checkpoints 7 and 8 are retained; 8 references 6.sst, 7.sst, 8.sst and
    // 7 references 5.sst too.
    assert_eq!(
        shared_on_disk(&storage),
        set(&["5.sst", "6.sst", "7.sst", "8.sst"])
    );
    // A restore rebuilds the registry and keeps the same files alive.
    let mut recovered = CompletedCheckpointStore::recover(
        open(dir.path()),
        2,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    let handle = write_incremental(storage.as_ref(), 9).unwrap();
    recovered
        .complete(metadata(9, SnapshotKind::Incremental, vec![handle], None))
        .unwrap();
    assert_eq!(
        shared_on_disk(&storage),
        set(&["6.sst", "7.sst", "8.sst", "9.sst"])
    );
    assert_eq!(shared_on_disk(&storage), referenced_by_retained(&recovered));
}

#[test]
fn abort_removes_everything_the_checkpoint_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut s = store(&storage, 1);
    let handle = write_incremental(storage.as_ref(), 1).unwrap();
    s.complete(metadata(1, SnapshotKind::Incremental, vec![handle], None))
        .unwrap();
    let before = tree(storage.job_dir());

    // Checkpoint 2 uploads 2.sst, references 1.sst and writes exclusive state.
    let full = write_full(storage.as_ref(), 2).unwrap();
    let mut handles: Vec<KeyedStateHandle> = full.operators[0].subtasks[0].keyed.clone();
    handles.push(write_incremental(storage.as_ref(), 2).unwrap());
    assert_ne!(tree(storage.job_dir()), before);
    s.abort(CheckpointId(2), &handles).unwrap();
    assert_eq!(tree(storage.job_dir()), before);
    // Idempotent.
    s.abort(CheckpointId(2), &handles).unwrap();

    // A checkpoint that never got as far as handles: its directory goes.
    write_full(storage.as_ref(), 3).unwrap();
    s.abort(CheckpointId(3), &[]).unwrap();
    assert_eq!(tree(storage.job_dir()), before);
    assert_eq!(
        select_for_restore(storage.as_ref())
            .unwrap()
            .checkpoint_id(),
        CheckpointId(1)
    );
}

#[test]
fn cancel_keeps_or_deletes_per_policy() {
    for (cleanup, kept) in [
        (ExternalizedCheckpointCleanup::RetainOnCancellation, true),
        (ExternalizedCheckpointCleanup::DeleteOnCancellation, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        let mut s = CompletedCheckpointStore::new(storage.clone(), 2, cleanup).unwrap();
        for id in 1..=3 {
            let handle = write_incremental(storage.as_ref(), id).unwrap();
            s.complete(metadata(id, SnapshotKind::Incremental, vec![handle], None))
                .unwrap();
        }
        s.shutdown(JobTerminalStatus::Canceled).unwrap();
        assert_eq!(
            storage.list_checkpoints().unwrap().len(),
            if kept { 2 } else { 0 }
        );
        assert_eq!(shared_on_disk(&storage).is_empty(), !kept, "{cleanup:?}");
    }
}
