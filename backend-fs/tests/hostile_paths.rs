//! Checkpoint directories are input. A crafted job directory whose
//! `_metadata` files are valid (right CRC) but whose paths lead through
//! symbolic links out of it (a directory link and a file link in `shared/`,
//! a link as `chk-<n>`, a link as `_metadata`), or whose files are FIFOs:
//! verify, restore selection, retention, cancel and the orphan sweep never
//! read or remove a file outside the job directory, and never block.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_fs::{FsCheckpointStorage, JobLock, LockOwner, sweep_orphans};
use state_core::{
    CheckpointId, CheckpointStorage, CompletedCheckpointStore, ErrorKind,
    ExternalizedCheckpointCleanup, JobTerminalStatus, KeyedStateHandle, StreamLocation,
    load_verified, select_for_restore, verify_checkpoint,
};
use support::*;

/// Every file under the outside directory with its bytes: must never change.
fn outside_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// A job directory with checkpoint 1 intact, and checkpoint 2 crafted: its
/// incremental handle's shared files are `shared/evil/2.sst` (through a
/// directory link to `outside`) and `shared/link.sst` (a file link to a file
/// there), with their true sizes and CRCs, and a valid `_metadata`. Also a
/// `chk-7` that is a link to an outside copy of a checkpoint directory, and
/// a `chk-8` whose `_metadata` is a link.
fn crafted(tmp: &Path) -> (Arc<FsCheckpointStorage>, PathBuf) {
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let storage = Arc::new(FsCheckpointStorage::open(tmp.join("ck"), job()).unwrap());
    let mut store = CompletedCheckpointStore::new(
        storage.clone(),
        10,
        ExternalizedCheckpointCleanup::RetainOnCancellation,
    )
    .unwrap();
    let one = write_full(storage.as_ref(), 1).unwrap();
    store.complete(one).unwrap();

    let mut two = write_full(storage.as_ref(), 2).unwrap();
    let KeyedStateHandle::Incremental(mut handle) = write_incremental(storage.as_ref(), 2).unwrap()
    else {
        unreachable!("write_incremental writes an incremental handle")
    };
    let job_dir = storage.job_dir().to_path_buf();
    for (i, file) in handle.shared.iter_mut().enumerate() {
        let StreamLocation::File(path) = &file.handle.location else {
            continue;
        };
        let name = Path::new(path).file_name().unwrap().to_owned();
        let bytes = support::shared_payload(&file.name);
        std::fs::write(outside.join(&name), &bytes).unwrap();
        let _ = std::fs::remove_file(job_dir.join(path));
        file.handle.location = StreamLocation::File(if i % 2 == 0 {
            format!("shared/evil/{}", name.to_str().unwrap())
        } else {
            symlink(outside.join(&name), job_dir.join("shared").join("link.sst")).unwrap();
            "shared/link.sst".to_owned()
        });
    }
    symlink(&outside, job_dir.join("shared").join("evil")).unwrap();
    two.operators[0].subtasks[0]
        .keyed
        .push(KeyedStateHandle::Incremental(handle));
    storage.write_metadata(&two).unwrap();

    // chk-7 -> a copy of checkpoint 1 outside; chk-8/_metadata -> outside.
    let copy = outside.join("copy-of-chk-1");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        storage.metadata_path(CheckpointId(1)),
        copy.join("_metadata"),
    )
    .unwrap();
    symlink(&copy, job_dir.join("chk-7")).unwrap();
    std::fs::create_dir_all(job_dir.join("chk-8")).unwrap();
    symlink(
        copy.join("_metadata"),
        job_dir.join("chk-8").join("_metadata"),
    )
    .unwrap();
    (storage, outside)
}

#[test]
fn links_out_of_the_job_directory_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, outside) = crafted(tmp.path());
    let before = outside_tree(&outside);

    // Listing: links named like checkpoints are not checkpoints.
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(1), CheckpointId(2), CheckpointId(8)]
    );
    let err = storage.read_metadata(CheckpointId(8)).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // Verify names the link; restore refuses 2 and falls back to 1.
    let report = verify_checkpoint(storage.as_ref(), CheckpointId(2)).unwrap();
    let failures: Vec<String> = report.failures().map(|f| f.path.clone()).collect();
    assert!(
        failures.iter().any(|p| p.starts_with("shared/evil/")),
        "{failures:?}"
    );
    assert!(
        failures.contains(&"shared/link.sst".to_owned()),
        "{failures:?}"
    );
    let err = load_verified(storage.as_ref(), CheckpointId(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    let chosen = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(chosen.checkpoint_id(), CheckpointId(1));

    // Retention subsumes 2 (its deletions through the link are refused and
    // logged), and a cancel that deletes everything deletes nothing outside.
    let mut store = CompletedCheckpointStore::recover(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::DeleteOnCancellation,
    )
    .unwrap();
    let three = write_full(storage.as_ref(), 3).unwrap();
    store.complete(three).unwrap();
    store.shutdown(JobTerminalStatus::Canceled).unwrap();
    assert_eq!(outside_tree(&outside), before);

    // The sweep removes the links themselves, never what they point to.
    // While chk-8's `_metadata` cannot be read (a link), nothing in
    // `shared/` is removed: its references are unknown.
    let lock = JobLock::acquire(storage.job_dir(), &LockOwner::this_process(0)).unwrap();
    let report = sweep_orphans(&storage, &lock).unwrap();
    assert!(report.held_back.is_some(), "{report:?}");
    let gone = |link: &str| std::fs::symlink_metadata(storage.job_dir().join(link)).is_err();
    assert!(gone("chk-7"));
    assert!(!gone("shared/evil") && !gone("chk-8/_metadata"));
    // Once the operator removed the unreadable checkpoint, the rest goes.
    std::fs::remove_dir_all(storage.job_dir().join("chk-8")).unwrap();
    sweep_orphans(&storage, &lock).unwrap();
    for link in ["shared/evil", "shared/link.sst"] {
        assert!(gone(link), "{link} is still there");
    }
    assert_eq!(outside_tree(&outside), before);
    assert!(outside.join("copy-of-chk-1").join("_metadata").is_file());
}

#[test]
fn fifos_in_place_of_checkpoint_files_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(tmp.path(), job()).unwrap();
    let one = write_full(&storage, 1).unwrap();
    storage.write_metadata(&one).unwrap();
    let keyed = storage.checkpoint_dir(CheckpointId(1)).join("op-0-keyed");
    std::fs::remove_file(&keyed).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&keyed).status();
    assert!(made.unwrap().success(), "mkfifo (coreutils) failed");
    // Would block for ever if the FIFO were opened.
    let report = verify_checkpoint(&storage, CheckpointId(1)).unwrap();
    let failure = report.failures().next().unwrap();
    assert_eq!(failure.path, "chk-1/op-0-keyed");
    let why = failure.error.as_ref().unwrap().to_string();
    assert!(why.contains("not a regular file"), "{why}");

    let meta = storage.metadata_path(CheckpointId(1));
    std::fs::remove_file(&meta).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&meta).status();
    assert!(made.unwrap().success());
    let err = storage.read_metadata(CheckpointId(1)).unwrap_err();
    assert!(err.to_string().contains("chk-1/_metadata"), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}
