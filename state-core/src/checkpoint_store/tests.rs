//! Tests of the completed-checkpoint store over a small in-memory storage
//! that keeps files by path, like a filesystem storage would.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::ErrorKind;
use crate::handle::{StateScope, StreamLocation};
use crate::ids::{JobId, OperatorId};
use crate::key_group::{KeyGroup, KeyGroupRange};
use crate::metadata::{
    IncrementalHandle, KeyGroupsHandle, OperatorSnapshot, SharedFile, SnapshotKind, SubtaskSnapshot,
};
use crate::storage::CheckpointOutput;

#[derive(Debug, Default)]
struct Files {
    files: BTreeMap<String, Vec<u8>>,
    fail_metadata: bool,
    fail_discard_checkpoint: bool,
}

#[derive(Debug, Default)]
struct PathStorage(Mutex<Files>);

impl PathStorage {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().files.keys().cloned().collect()
    }
    fn put(&self, path: &str, bytes: &[u8]) -> StreamHandle {
        self.0
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), bytes.to_vec());
        StreamHandle {
            location: StreamLocation::File(path.into()),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
    fn corrupt(&self, path: &str) {
        let mut files = self.0.lock().unwrap();
        let bytes = files.files.get_mut(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    }
}

struct Out;
impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl CheckpointOutput for Out {
    fn position(&self) -> u64 {
        0
    }
    fn close(self: Box<Self>) -> Result<StreamHandle> {
        Err(StateError::invalid("unused in these tests"))
    }
}

impl CheckpointStorage for PathStorage {
    fn describe(&self) -> String {
        "paths".into()
    }
    fn initialize_checkpoint(&self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
    fn create_output(
        &self,
        _id: CheckpointId,
        _scope: StateScope,
        _name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        Ok(Box::new(Out))
    }
    fn read(&self, handle: &StreamHandle) -> Result<Bytes> {
        let path = handle.file_path().unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .files
            .get(path)
            .map(|b| Bytes::copy_from_slice(b))
            .ok_or_else(|| StateError::corrupted(path, "file is missing"))
    }
    fn discard_stream(&self, handle: &StreamHandle) -> Result<()> {
        let path = handle.file_path().unwrap_or_default();
        self.0.lock().unwrap().files.remove(path);
        Ok(())
    }
    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        let mut files = self.0.lock().unwrap();
        if files.fail_metadata {
            return Err(StateError::io(
                "chk/_metadata",
                io::Error::other("disk full"),
            ));
        }
        let path = format!("{}/_metadata", metadata.checkpoint_id.dir_name());
        files.files.insert(path, metadata.encode()?);
        Ok(())
    }
    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        let path = format!("{}/_metadata", id.dir_name());
        let files = self.0.lock().unwrap();
        let bytes = files.files.get(&path).ok_or_else(|| StateError::NotFound {
            checkpoint: id,
            detail: path.clone(),
        })?;
        CheckpointMetadata::decode(bytes, &path)
    }
    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let files = self.0.lock().unwrap();
        let mut ids: Vec<CheckpointId> = files
            .files
            .keys()
            .filter_map(|p| {
                p.strip_suffix("/_metadata")?
                    .strip_prefix("chk-")?
                    .parse()
                    .ok()
            })
            .map(CheckpointId)
            .collect();
        ids.sort();
        Ok(ids)
    }
    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        let mut files = self.0.lock().unwrap();
        if files.fail_discard_checkpoint {
            return Err(StateError::io(id.dir_name(), io::Error::other("busy")));
        }
        let prefix = format!("{}/", id.dir_name());
        files.files.retain(|p, _| !p.starts_with(&prefix));
        Ok(())
    }
}

fn store(storage: &Arc<PathStorage>, retained: usize) -> CompletedCheckpointStore {
    CompletedCheckpointStore::new(
        storage.clone(),
        retained,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap()
}

fn metadata(id: u64, keyed: Vec<KeyedStateHandle>) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: CheckpointId(id),
        job_id: JobId::new("job").unwrap(),
        timestamp_millis: id,
        kind: SnapshotKind::Full,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("op".into()),
            parallelism: 1,
            max_parallelism: 4,
            subtasks: vec![SubtaskSnapshot {
                subtask: 0,
                keyed,
                operator: None,
            }],
        }],
    }
}

fn range() -> KeyGroupRange {
    KeyGroupRange::new(KeyGroup(0), KeyGroup(3))
}

/// A full checkpoint with one exclusive state file.
fn full(storage: &PathStorage, id: u64) -> CheckpointMetadata {
    let stream = storage.put(&format!("chk-{id}/state"), format!("state {id}").as_bytes());
    metadata(
        id,
        vec![KeyedStateHandle::KeyGroups(KeyGroupsHandle {
            backend: "test".into(),
            range: range(),
            stream,
            key_group_offsets: vec![0; 4],
        })],
    )
}

/// An incremental checkpoint referencing `shared` files, uploading those with
/// `uploaded_by == id`.
fn incremental(storage: &PathStorage, id: u64, shared: &[(&str, u64)]) -> KeyedStateHandle {
    let files = shared
        .iter()
        .map(|&(name, by)| {
            let path = format!("shared/{name}");
            let handle = if by == id {
                storage.put(&path, name.as_bytes())
            } else {
                StreamHandle {
                    location: StreamLocation::File(path),
                    size: name.len() as u64,
                    crc32: crc32fast::hash(name.as_bytes()),
                }
            };
            SharedFile {
                name: name.into(),
                handle,
                uploaded_by: CheckpointId(by),
            }
        })
        .collect();
    KeyedStateHandle::Incremental(IncrementalHandle {
        backend: "test".into(),
        backend_id: "b".into(),
        range: range(),
        checkpoint_id: CheckpointId(id),
        shared: files,
        private: Vec::new(),
        meta: storage.put(&format!("chk-{id}/meta"), b"meta"),
    })
}

#[test]
fn num_retained_zero_is_rejected() {
    let storage = Arc::new(PathStorage::default());
    let err = CompletedCheckpointStore::new(storage, 0, ExternalizedCheckpointCleanup::default())
        .unwrap_err();
    assert!(err.to_string().contains("num_retained"), "{err}");
}

#[test]
fn rotation_keeps_the_newest() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 2);
    assert!(s.complete(full(&storage, 1)).unwrap().is_empty());
    assert!(s.complete(full(&storage, 2)).unwrap().is_empty());
    assert_eq!(
        s.complete(full(&storage, 3)).unwrap(),
        vec![CheckpointId(1)]
    );
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(2), CheckpointId(3)]
    );
    assert_eq!(s.latest().unwrap().checkpoint_id, CheckpointId(3));
    assert_eq!(s.retained().len(), 2);
    assert!(!storage.paths().iter().any(|p| p.starts_with("chk-1/")));
    // Ids must increase.
    let err = s.complete(full(&storage, 3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// A deferred discard leaves the subsumed checkpoint in storage, no longer
/// retained, until `discard_subsumed`; the next completion and a shutdown
/// (even of a failed job, which keeps its retained checkpoints) do a
/// pending one themselves.
#[test]
fn a_deferred_discard_waits_for_discard_subsumed_or_the_next_completion() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 1);
    s.complete(full(&storage, 1)).unwrap();
    let subsumed = s.complete_deferring_discard(full(&storage, 2)).unwrap();
    assert_eq!(subsumed, [CheckpointId(1)]);
    assert_eq!(s.retained().len(), 1);
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(1), CheckpointId(2)]
    );
    assert_eq!(s.discard_subsumed(), [CheckpointId(1)]);
    assert_eq!(storage.list_checkpoints().unwrap(), [CheckpointId(2)]);
    assert!(s.discard_subsumed().is_empty(), "nothing left pending");

    s.complete_deferring_discard(full(&storage, 3)).unwrap();
    s.complete_deferring_discard(full(&storage, 4)).unwrap();
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(3), CheckpointId(4)],
        "the second completion deleted the first one's subsumed checkpoint"
    );
    assert!(s.shutdown(JobTerminalStatus::Failed).unwrap().is_empty());
    assert_eq!(storage.list_checkpoints().unwrap(), [CheckpointId(4)]);
    assert!(!storage.paths().iter().any(|p| p.starts_with("chk-3/")));
}

#[test]
fn shared_files_live_exactly_as_long_as_a_retained_checkpoint_uses_them() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 2);
    let h1 = incremental(&storage, 1, &[("a", 1), ("b", 1)]);
    s.complete(metadata(1, vec![h1])).unwrap();
    let h2 = incremental(&storage, 2, &[("b", 1), ("c", 2)]);
    s.complete(metadata(2, vec![h2])).unwrap();
    let h3 = incremental(&storage, 3, &[("c", 2), ("d", 3)]);
    s.complete(metadata(3, vec![h3])).unwrap();
    // Checkpoint 1 subsumed: `a` was only its own; `b` is still used by 2.
    let paths = storage.paths();
    assert!(!paths.contains(&"shared/a".to_string()), "{paths:?}");
    assert!(paths.contains(&"shared/b".to_string()), "{paths:?}");
    let h4 = incremental(&storage, 4, &[("d", 3)]);
    s.complete(metadata(4, vec![h4])).unwrap();
    let shared: Vec<String> = storage
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("shared/"))
        .collect();
    assert_eq!(shared, ["shared/c", "shared/d"]);
}

#[test]
fn abort_discards_only_unregistered_shared_files() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 1);
    let h1 = incremental(&storage, 1, &[("a", 1)]);
    s.complete(metadata(1, vec![h1])).unwrap();
    let h2 = incremental(&storage, 2, &[("a", 1), ("new", 2)]);
    s.abort(CheckpointId(2), &[h2]).unwrap();
    assert_eq!(
        storage.paths(),
        ["chk-1/_metadata", "chk-1/meta", "shared/a"]
    );
    let err = s.abort(CheckpointId(1), &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn failed_metadata_write_leaves_nothing() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 1);
    s.complete(full(&storage, 1)).unwrap();
    storage.0.lock().unwrap().fail_metadata = true;
    let h2 = incremental(&storage, 2, &[("x", 2)]);
    assert!(s.complete(metadata(2, vec![h2])).is_err());
    assert_eq!(s.latest().unwrap().checkpoint_id, CheckpointId(1));
    assert_eq!(storage.paths(), ["chk-1/_metadata", "chk-1/state"]);
}

#[test]
fn failed_subsumption_does_not_fail_the_new_checkpoint_and_keeps_shared_files() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 1);
    let h1 = incremental(&storage, 1, &[("a", 1)]);
    s.complete(metadata(1, vec![h1])).unwrap();
    storage.0.lock().unwrap().fail_discard_checkpoint = true;
    let h2 = incremental(&storage, 2, &[("b", 2)]);
    assert_eq!(
        s.complete(metadata(2, vec![h2])).unwrap(),
        [CheckpointId(1)]
    );
    // Checkpoint 1 is still there and still restorable.
    assert!(storage.paths().contains(&"shared/a".to_string()));
    // A recovery subsumes it for good.
    storage.0.lock().unwrap().fail_discard_checkpoint = false;
    let s = CompletedCheckpointStore::recover(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    assert_eq!(s.latest().unwrap().checkpoint_id, CheckpointId(2));
    assert_eq!(storage.list_checkpoints().unwrap(), [CheckpointId(2)]);
    assert!(!storage.paths().contains(&"shared/a".to_string()));
}

#[test]
fn recover_skips_unreadable_metadata_without_deleting_it() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 3);
    for id in 1..=3 {
        s.complete(full(&storage, id)).unwrap();
    }
    storage.corrupt("chk-3/_metadata");
    let s = CompletedCheckpointStore::recover(
        storage.clone(),
        3,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    let ids: Vec<_> = s.retained().iter().map(|m| m.checkpoint_id).collect();
    assert_eq!(ids, [CheckpointId(1), CheckpointId(2)]);
    assert_eq!(s.skipped_on_recovery().len(), 1);
    assert_eq!(s.skipped_on_recovery()[0].0, CheckpointId(3));
    assert!(storage.paths().contains(&"chk-3/_metadata".to_string()));
}

#[test]
fn shutdown_follows_the_cleanup_policy() {
    use ExternalizedCheckpointCleanup::*;
    use JobTerminalStatus::*;
    for (cleanup, status, deleted) in [
        (RetainOnCancellation, Finished, true),
        (RetainOnCancellation, Canceled, false),
        (RetainOnCancellation, Failed, false),
        (DeleteOnCancellation, Finished, true),
        (DeleteOnCancellation, Canceled, true),
        (DeleteOnCancellation, Failed, false),
    ] {
        let storage = Arc::new(PathStorage::default());
        let mut s = CompletedCheckpointStore::new(storage.clone(), 2, cleanup).unwrap();
        let h1 = incremental(&storage, 1, &[("a", 1)]);
        s.complete(metadata(1, vec![h1])).unwrap();
        s.complete(full(&storage, 2)).unwrap();
        let ids = s.shutdown(status).unwrap();
        assert_eq!(
            storage.paths().is_empty(),
            deleted,
            "{cleanup:?} {status:?}"
        );
        assert_eq!(ids.len(), if deleted { 2 } else { 0 });
    }
}

#[test]
fn select_for_restore_falls_back_and_names_the_file() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 3);
    for id in 1..=3 {
        s.complete(full(&storage, id)).unwrap();
    }
    storage.corrupt("chk-3/state");
    storage.corrupt("chk-2/_metadata");
    let sel = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(sel.checkpoint_id(), CheckpointId(1));
    assert_eq!(sel.skipped.len(), 2);
    assert_eq!(sel.skipped[0].0, CheckpointId(3));
    assert!(
        sel.skipped[0].1.to_string().contains("chk-3/state"),
        "{}",
        sel.skipped[0].1
    );
    assert!(sel.skipped[1].1.to_string().contains("chk-2/_metadata"));

    storage.corrupt("chk-1/state");
    let err = select_for_restore(storage.as_ref()).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "checkpoint 3",
        "checkpoint 2",
        "checkpoint 1",
        "chk-1/state",
    ] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
}

#[test]
fn select_for_restore_on_empty_storage_is_not_found() {
    let storage = PathStorage::default();
    let err = select_for_restore(&storage).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn verify_reports_every_file() {
    let storage = Arc::new(PathStorage::default());
    let mut s = store(&storage, 1);
    let h = incremental(&storage, 1, &[("a", 1), ("b", 1)]);
    s.complete(metadata(1, vec![h])).unwrap();
    let report = verify_checkpoint(storage.as_ref(), CheckpointId(1)).unwrap();
    assert!(report.is_ok());
    let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["chk-1/_metadata", "shared/a", "shared/b", "chk-1/meta"]
    );

    storage.corrupt("shared/b");
    let report = verify_checkpoint(storage.as_ref(), CheckpointId(1)).unwrap();
    let failed: Vec<&str> = report.failures().map(|f| f.path.as_str()).collect();
    assert_eq!(failed, ["shared/b"]);
    assert!(
        report.files[2]
            .error
            .as_ref()
            .unwrap()
            .to_string()
            .contains("checksum")
    );

    storage.corrupt("chk-1/_metadata");
    let report = verify_checkpoint(storage.as_ref(), CheckpointId(1)).unwrap();
    assert!(report.metadata.is_none());
    assert_eq!(report.failures().count(), 1);

    let err = verify_checkpoint(storage.as_ref(), CheckpointId(9)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Three completed incremental checkpoints sharing files, written by a run
/// with `num_retained = 3`: 1 {a, b}, 2 {b, c}, 3 {c, d}.
fn three_incremental(storage: &Arc<PathStorage>) -> Vec<CheckpointMetadata> {
    let mut s = store(storage, 3);
    let ckpts = vec![
        metadata(1, vec![incremental(storage, 1, &[("a", 1), ("b", 1)])]),
        metadata(2, vec![incremental(storage, 2, &[("b", 1), ("c", 2)])]),
        metadata(3, vec![incremental(storage, 3, &[("c", 2), ("d", 3)])]),
    ];
    for m in &ckpts {
        s.complete(m.clone()).unwrap();
    }
    ckpts
}

fn shared_paths(storage: &PathStorage) -> Vec<String> {
    storage
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("shared/"))
        .collect()
}

#[test]
fn recover_rebuilds_the_registry_with_true_counts() {
    let storage = Arc::new(PathStorage::default());
    three_incremental(&storage);
    let mut s = CompletedCheckpointStore::recover(
        storage.clone(),
        3,
        ExternalizedCheckpointCleanup::default(),
    )
    .unwrap();
    assert_eq!(
        s.registry().references("shared/c"),
        [CheckpointId(2), CheckpointId(3)]
    );
    // New checkpoints after the restart share `d` with 3: each subsumption
    // deletes exactly the files no retained checkpoint needs any more.
    let h4 = incremental(&storage, 4, &[("d", 3), ("e", 4)]);
    s.complete(metadata(4, vec![h4])).unwrap(); // subsumes 1: `a`
    assert_eq!(
        shared_paths(&storage),
        ["shared/b", "shared/c", "shared/d", "shared/e"]
    );
    let h5 = incremental(&storage, 5, &[("e", 4)]);
    s.complete(metadata(5, vec![h5])).unwrap(); // subsumes 2: `b`
    assert_eq!(shared_paths(&storage), ["shared/c", "shared/d", "shared/e"]);
    let h6 = incremental(&storage, 6, &[("e", 4)]);
    s.complete(metadata(6, vec![h6])).unwrap(); // subsumes 3: `c`; 4 keeps `d`
    assert_eq!(shared_paths(&storage), ["shared/d", "shared/e"]);
}

#[test]
fn no_claim_leaves_every_earlier_checkpoint_alone_through_every_deletion() {
    let storage = Arc::new(PathStorage::default());
    let ckpts = three_incremental(&storage);
    let restored = &ckpts[1]; // checkpoint 2 {b, c}
    let mut s = CompletedCheckpointStore::recover_restoring(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
        restored,
        RestoreMode::NoClaim,
    )
    .unwrap();
    let ids =
        |ms: &[CheckpointMetadata]| ms.iter().map(|m| m.checkpoint_id.get()).collect::<Vec<_>>();
    assert_eq!(ids(s.pinned()), [1, 2, 3]);
    assert!(s.retained().is_empty());
    // Abort of a checkpoint that (wrongly) lists `c`: `c` stays.
    let h4 = incremental(&storage, 4, &[("c", 2), ("x", 4)]);
    s.abort(CheckpointId(4), &[h4]).unwrap();
    // Subsumption and the FINISHED cleanup take only the new run's own.
    let h5 = incremental(&storage, 5, &[("y", 5)]);
    s.complete(metadata(5, vec![h5])).unwrap();
    let h6 = incremental(&storage, 6, &[("y", 5), ("z", 6)]);
    assert_eq!(
        s.complete(metadata(6, vec![h6])).unwrap(),
        [CheckpointId(5)]
    );
    assert_eq!(
        s.shutdown(JobTerminalStatus::Finished).unwrap(),
        [CheckpointId(6)]
    );
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(1), CheckpointId(2), CheckpointId(3)]
    );
    for id in 1..=3 {
        assert!(
            load_verified(storage.as_ref(), CheckpointId(id)).is_ok(),
            "checkpoint {id}"
        );
    }
    assert_eq!(
        shared_paths(&storage),
        ["shared/a", "shared/b", "shared/c", "shared/d"]
    );
}

#[test]
fn claim_keeps_the_restored_checkpoint_until_a_new_one_subsumes_it() {
    let storage = Arc::new(PathStorage::default());
    let ckpts = three_incremental(&storage);
    let mut s = CompletedCheckpointStore::recover_restoring(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
        &ckpts[1],
        RestoreMode::Claim,
    )
    .unwrap();
    assert_eq!(s.retained(), &ckpts[1..2]);
    assert_eq!(s.pinned().len(), 2);
    assert_eq!(
        s.registry().references("shared/c"),
        [CheckpointId(2), CheckpointId(3)]
    );
    // The new run builds on 2's `b` and `c`; when 4 completes, 2 goes and
    // only what nobody references any more: 2's own exclusive files.
    let h4 = incremental(&storage, 4, &[("b", 1), ("e", 4)]);
    assert_eq!(
        s.complete(metadata(4, vec![h4])).unwrap(),
        [CheckpointId(2)]
    );
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(1), CheckpointId(3), CheckpointId(4)]
    );
    assert!(!storage.paths().iter().any(|p| p.starts_with("chk-2/")));
    for id in [1, 3, 4] {
        assert!(
            load_verified(storage.as_ref(), CheckpointId(id)).is_ok(),
            "checkpoint {id}"
        );
    }
    // A claim over a store whose only checkpoint is the claimed one: the
    // FINISHED cleanup deletes it, as the job owns it.
    let alone = Arc::new(PathStorage::default());
    let only = full(&alone, 7);
    store(&alone, 1).complete(only.clone()).unwrap();
    let mut s = CompletedCheckpointStore::recover_restoring(
        alone.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
        &only,
        RestoreMode::Claim,
    )
    .unwrap();
    assert_eq!(
        s.shutdown(JobTerminalStatus::Finished).unwrap(),
        [CheckpointId(7)]
    );
    assert!(alone.paths().is_empty(), "{:?}", alone.paths());
}

#[test]
fn claim_refuses_a_checkpoint_of_another_storage() {
    let storage = Arc::new(PathStorage::default());
    let elsewhere = Arc::new(PathStorage::default());
    let ckpts = three_incremental(&elsewhere);
    let err = CompletedCheckpointStore::recover_restoring(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
        &ckpts[2],
        RestoreMode::Claim,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("checkpoint 3 cannot be claimed"),
        "{err}"
    );
    // No claim over another storage touches neither.
    let s = CompletedCheckpointStore::recover_restoring(
        storage.clone(),
        1,
        ExternalizedCheckpointCleanup::default(),
        &ckpts[2],
        RestoreMode::NoClaim,
    )
    .unwrap();
    assert!(s.pinned().is_empty() && s.retained().is_empty());
    assert_eq!(elsewhere.list_checkpoints().unwrap().len(), 3);
}
