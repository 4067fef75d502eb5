//! `FsCheckpointStorage::place_read_only`, as a RocksDB restore places the
//! SST files of a checkpoint in its new working directory: a hard link on
//! the same filesystem, checked against the handle's CRC-32; a checked copy
//! when the link is refused; and a damaged or missing stream refused by
//! name with nothing left at the destination. Removing the placed file
//! leaves the checkpoint's intact.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use backend_fs::{FsCheckpointStorage, FsStorageOptions, MappedFs};
use state_core::backend_support::{Fs, read_verified};
use state_core::{CheckpointId, CheckpointStorage, StateScope, StreamHandle};
use state_testkit::{FaultyFs, FsOp};
use support::job;

/// 200 KiB: large enough to be read through a memory map.
fn sst_bytes() -> Vec<u8> {
    (0..200u32 * 1024).map(|i| (i % 251) as u8).collect()
}

fn write_sst(storage: &dyn CheckpointStorage) -> StreamHandle {
    storage.initialize_checkpoint(CheckpointId(1)).unwrap();
    let mut out = storage
        .create_output(CheckpointId(1), StateScope::Shared, "000007.sst")
        .unwrap();
    out.write_all(&sst_bytes()).unwrap();
    out.close().unwrap()
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_stream_is_hard_linked_and_checked_on_the_same_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(dir.path().join("checkpoints"), job()).unwrap();
    let handle = write_sst(&storage);
    let src = storage.resolve(handle.file_path().unwrap()).unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir(&db).unwrap();
    let dst = db.join("000007.sst");

    storage.place_read_only(&handle, &dst).unwrap();
    assert_eq!(inode(&dst), inode(&src), "placed by a hard link");
    assert_eq!(std::fs::read(&dst).unwrap(), sst_bytes());

    // The working directory deletes its file (a compaction): the
    // checkpoint's stays, intact.
    std::fs::remove_file(&dst).unwrap();
    assert_eq!(read_verified(&storage, &handle).unwrap(), sst_bytes());
}

#[test]
fn a_refused_link_falls_back_to_a_checked_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultyFs::new(Arc::new(MappedFs)));
    let options = FsStorageOptions::new(dir.path().join("checkpoints"), job())
        .with_fs(fs.clone() as Arc<dyn Fs>);
    let storage = FsCheckpointStorage::with_options(options).unwrap();
    let handle = write_sst(&storage);
    let src = storage.resolve(handle.file_path().unwrap()).unwrap();
    let dst = dir.path().join("000007.sst");

    // As a link across filesystems (EXDEV) is refused.
    fs.fail_at(1, Some(FsOp::HardLink));
    storage.place_read_only(&handle, &dst).unwrap();
    assert_eq!(fs.faults_fired(), 1);
    assert_ne!(inode(&dst), inode(&src), "copied, not linked");
    assert_eq!(std::fs::read(&dst).unwrap(), sst_bytes());
}

#[test]
fn a_damaged_or_missing_stream_is_refused_by_name_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(dir.path().join("checkpoints"), job()).unwrap();
    let handle = write_sst(&storage);
    let src = storage.resolve(handle.file_path().unwrap()).unwrap();
    let dst = dir.path().join("000007.sst");

    let mut bytes = std::fs::read(&src).unwrap();
    bytes[100_000] ^= 0x40;
    std::fs::write(&src, bytes).unwrap();
    let err = storage.place_read_only(&handle, &dst).unwrap_err();
    assert!(err.to_string().contains("shared/000007.sst"), "{err}");
    assert!(!dst.exists(), "the damaged file's link was removed");
    // The checkpoint's file is left as it was found, for inspection.
    assert!(src.exists());

    std::fs::remove_file(&src).unwrap();
    let err = storage.place_read_only(&handle, &dst).unwrap_err();
    assert!(
        err.to_string().contains("shared/000007.sst") && err.to_string().contains("missing"),
        "{err}"
    );
    assert!(!dst.exists());
}
