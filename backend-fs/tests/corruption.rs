//! Damaged checkpoint files: restore falls back to the previous intact
//! checkpoint and names what is damaged; verify reports the file.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use state_core::{
    CheckpointId, CompletedCheckpointStore, ErrorKind, ExternalizedCheckpointCleanup,
    select_for_restore, verify_checkpoint,
};
use support::*;

/// Three retained full checkpoints 1..=3.
fn three_checkpoints() -> (tempfile::TempDir, Arc<FsCheckpointStorage>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsCheckpointStorage::open(dir.path(), job()).unwrap());
    let mut s =
        CompletedCheckpointStore::new(storage.clone(), 3, ExternalizedCheckpointCleanup::default())
            .unwrap();
    for id in 1..=3 {
        s.complete(write_full(storage.as_ref(), id).unwrap())
            .unwrap();
    }
    (dir, storage)
}

fn file(storage: &FsCheckpointStorage, rel: &str) -> PathBuf {
    storage.job_dir().join(rel)
}

type Damage = fn(&std::path::Path);

const DAMAGES: [(&str, Damage); 3] = [
    ("flip a middle byte", |p| flip_byte(p, 12)),
    ("flip the last byte", |p| flip_byte(p, -1)),
    ("truncate", truncate_half),
];

#[test]
fn restore_falls_back_from_each_damaged_file_and_names_it() {
    for rel in ["chk-3/_metadata", "chk-3/op-0-keyed", "chk-3/op-0-operator"] {
        for (how, damage) in DAMAGES {
            let context = format!("{how} {rel}");
            let (_dir, storage) = three_checkpoints();
            damage(&file(&storage, rel));

            let sel = select_for_restore(storage.as_ref()).unwrap();
            assert_eq!(sel.checkpoint_id(), CheckpointId(2), "{context}");
            assert_eq!(sel.skipped.len(), 1, "{context}");
            let (id, err) = &sel.skipped[0];
            assert_eq!(*id, CheckpointId(3), "{context}");
            assert!(err.to_string().contains(rel), "{context}: {err}");

            let report = verify_checkpoint(storage.as_ref(), CheckpointId(3)).unwrap();
            assert!(!report.is_ok(), "{context}");
            let failed: Vec<&str> = report.failures().map(|f| f.path.as_str()).collect();
            assert_eq!(failed, [rel], "{context}");
            assert!(
                verify_checkpoint(storage.as_ref(), CheckpointId(2))
                    .unwrap()
                    .is_ok()
            );

            // A restarted store skips a damaged metadata file without deleting it.
            let s = CompletedCheckpointStore::recover(
                storage.clone(),
                3,
                ExternalizedCheckpointCleanup::default(),
            )
            .unwrap();
            if rel.ends_with("_metadata") {
                assert_eq!(s.skipped_on_recovery().len(), 1, "{context}");
                assert!(file(&storage, rel).exists());
            }
        }
    }
}

#[test]
fn a_missing_state_file_is_reported_by_name() {
    let (_dir, storage) = three_checkpoints();
    std::fs::remove_file(file(&storage, "chk-3/op-0-keyed")).unwrap();
    let sel = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(sel.checkpoint_id(), CheckpointId(2));
    let msg = sel.skipped[0].1.to_string();
    assert!(
        msg.contains("chk-3/op-0-keyed") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn every_checkpoint_damaged_is_a_clear_error() {
    let (_dir, storage) = three_checkpoints();
    for id in 1..=3 {
        flip_byte(&file(&storage, &format!("chk-{id}/op-0-keyed")), 0);
    }
    let err = select_for_restore(storage.as_ref()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    let msg = err.to_string();
    for id in 1..=3 {
        assert!(msg.contains(&format!("checkpoint {id}: ")), "{msg}");
        assert!(msg.contains(&format!("chk-{id}/op-0-keyed")), "{msg}");
    }
}

#[test]
fn verify_lists_every_file_with_size_and_crc() {
    let (_dir, storage) = three_checkpoints();
    let report = verify_checkpoint(storage.as_ref(), CheckpointId(2)).unwrap();
    assert!(report.is_ok());
    let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["chk-2/_metadata", "chk-2/op-0-keyed", "chk-2/op-0-operator"]
    );
    assert_eq!(report.files[1].size, Some(keyed_payload(2).len() as u64));
    assert_eq!(
        report.files[1].crc32,
        Some(crc32fast::hash(&keyed_payload(2)))
    );
    let err = verify_checkpoint(storage.as_ref(), CheckpointId(9)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
