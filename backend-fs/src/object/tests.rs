//! The object storage over `file://` (the object_store crate's local
//! store): layout, commit, listing, discard, orphans and the lock without a
//! server. The same code against S3 servers is tested in `tests/`.

use std::io::Write;

use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, ErrorKind, JobId, OperatorId,
    OperatorSnapshot, OperatorStateHandle, SnapshotKind, StateScope, StreamHandle, StreamLocation,
    SubtaskSnapshot,
};

use super::*;
use crate::lock::LockOwner;
use crate::{find_orphans, sweep_orphans};

/// A storage that uploads every stream, however small (these tests are
/// about objects; inline streams have their own test).
fn storage(dir: &tempfile::TempDir, part_size: usize) -> ObjectCheckpointStorage {
    let url = ObjectUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
    let options = ObjectStorageOptions::new(url, JobId::new("job").unwrap())
        .with_part_size(part_size)
        .with_inline_threshold(0);
    ObjectCheckpointStorage::open(options).unwrap()
}

fn write(
    s: &ObjectCheckpointStorage,
    id: u64,
    scope: StateScope,
    name: &str,
    bytes: &[u8],
) -> StreamHandle {
    let mut out = s.create_output(CheckpointId(id), scope, name).unwrap();
    out.write_all(bytes).unwrap();
    out.close().unwrap()
}

fn metadata(id: u64, streams: Vec<StreamHandle>) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: CheckpointId(id),
        job_id: JobId::new("job").unwrap(),
        timestamp_millis: 0,
        kind: SnapshotKind::Full,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("op".into()),
            parallelism: u32::try_from(streams.len().max(1)).unwrap(),
            max_parallelism: 128,
            subtasks: streams
                .into_iter()
                .enumerate()
                .map(|(i, stream)| SubtaskSnapshot {
                    subtask: u32::try_from(i).unwrap(),
                    keyed: Vec::new(),
                    operator: Some(OperatorStateHandle {
                        stream,
                        states: Vec::new(),
                    }),
                })
                .collect(),
        }],
    }
}

#[test]
fn streams_and_metadata_land_in_the_filesystem_layout() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let small = write(&s, 1, StateScope::Exclusive, "op-0-operator", b"offsets");
    // Several parts, uploaded in parallel.
    let big: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let large = write(&s, 1, StateScope::Shared, "000007.sst", &big);
    assert_eq!(large.size, big.len() as u64);
    assert_eq!(large.crc32, crc32fast::hash(&big));
    s.write_metadata(&metadata(1, vec![small.clone(), large.clone()]))
        .unwrap();

    let job = dir.path().join("job");
    assert!(job.join("chk-1/_metadata").is_file());
    assert_eq!(
        std::fs::read(job.join("chk-1/op-0-operator")).unwrap(),
        b"offsets"
    );
    assert_eq!(std::fs::read(job.join("shared/000007.sst")).unwrap(), big);
    assert!(!job.join("_probe").exists(), "the open probe is deleted");
    assert_eq!(s.list_checkpoints().unwrap(), [CheckpointId(1)]);
    assert_eq!(&s.read(&large).unwrap()[..], &big[..]);
    assert_eq!(
        s.read_metadata(CheckpointId(1)).unwrap(),
        metadata(1, vec![small, large])
    );
    assert_eq!(s.describe(), format!("file://{}/job", dir.path().display()));
}

#[test]
fn metadata_is_never_overwritten_and_a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let first = metadata(3, vec![]);
    s.write_metadata(&first).unwrap();
    // The same bytes again (a retried PUT that had landed) succeed.
    s.write_metadata(&first).unwrap();
    let other = storage(&dir, 1024);
    let h = write(&other, 3, StateScope::Exclusive, "op-0-operator", b"theirs");
    let err = other.write_metadata(&metadata(3, vec![h])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let msg = err.to_string();
    assert!(
        msg.contains("chk-3/_metadata") && msg.contains("another writer"),
        "{msg}"
    );
    assert_eq!(s.read_metadata(CheckpointId(3)).unwrap(), first);
}

#[test]
fn a_missing_or_altered_object_is_corrupt_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let h = write(&s, 2, StateScope::Exclusive, "state", b"hello");
    std::fs::write(dir.path().join("job/chk-2/state"), b"hellO").unwrap();
    let err = s.read(&h).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    s.discard_stream(&h).unwrap();
    s.discard_stream(&h).unwrap();
    let err = s.read(&h).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("chk-2/state"), "{err}");
    let err = s.read_metadata(CheckpointId(9)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn discard_removes_metadata_and_exclusive_objects_and_keeps_shared() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let own = write(&s, 4, StateScope::Exclusive, "a", b"a");
    let shared = write(&s, 4, StateScope::Shared, "b.sst", b"b");
    s.write_metadata(&metadata(4, vec![own, shared.clone()]))
        .unwrap();
    write(&s, 5, StateScope::Exclusive, "torn", b"t");
    assert_eq!(
        s.list_checkpoints().unwrap(),
        [CheckpointId(4)],
        "no _metadata, no checkpoint"
    );
    s.discard_checkpoint(CheckpointId(4)).unwrap();
    s.discard_checkpoint(CheckpointId(4)).unwrap();
    assert!(s.list_checkpoints().unwrap().is_empty());
    assert!(!dir.path().join("job/chk-4/a").exists());
    assert_eq!(&s.read(&shared).unwrap()[..], b"b");
}

#[test]
fn orphans_are_found_and_swept_through_listing_and_batched_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let kept = write(&s, 1, StateScope::Shared, "kept.sst", b"kept");
    s.write_metadata(&metadata(1, vec![kept])).unwrap();
    write(&s, 2, StateScope::Shared, "stray.sst", b"stray");
    write(&s, 2, StateScope::Exclusive, "op-0-keyed", b"torn");
    write(&s, 1, StateScope::Exclusive, "extra", b"x");

    let report = find_orphans(&s).unwrap();
    let paths: Vec<String> = report
        .orphans
        .iter()
        .map(crate::Orphan::display_path)
        .collect();
    assert_eq!(
        paths,
        [
            "chk-1/extra",
            "chk-2/op-0-keyed",
            "chk-2/",
            "shared/stray.sst"
        ]
    );
    let lock = ObjectJobLock::acquire(&s, &LockOwner::this_process(0)).unwrap();
    let removed = sweep_orphans(&s, &lock).unwrap();
    assert_eq!(removed, report);
    assert_eq!(find_orphans(&s).unwrap().orphans, []);
    assert!(dir.path().join("job/shared/kept.sst").is_file());
    assert!(dir.path().join("job/_lock").is_file());
    drop(lock);
    assert!(
        !dir.path().join("job/_lock").exists(),
        "a clean release deletes the lock"
    );
}

#[test]
fn a_second_lock_is_refused_naming_the_owner_and_a_dead_owners_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    let first = ObjectJobLock::acquire(&s, &LockOwner::this_process(7)).unwrap();
    let err = ObjectJobLock::acquire(&s, &LockOwner::this_process(8))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("_lock"),
        "{err}"
    );
    drop(first);
    // What a killed owner of this host leaves: its record, nobody running.
    let mut dead = LockOwner::this_process(1);
    dead.pid = u32::MAX - 1;
    // The job directory went with its last object, as a prefix does.
    std::fs::create_dir_all(dir.path().join("job")).unwrap();
    std::fs::write(dir.path().join("job/_lock"), dead.encode()).unwrap();
    let lock = ObjectJobLock::acquire(&s, &LockOwner::this_process(9)).unwrap();
    assert_eq!(lock.taken_over_from(), Some(&dead));
    // Another host's lock is never taken over.
    drop(lock);
    let mut remote = dead.clone();
    remote.host = "elsewhere".into();
    std::fs::create_dir_all(dir.path().join("job")).unwrap();
    std::fs::write(dir.path().join("job/_lock"), remote.encode()).unwrap();
    let err = ObjectJobLock::acquire(&s, &LockOwner::this_process(10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("host elsewhere"), "{err}");
}

#[test]
fn locations_open_from_job_and_checkpoint_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1024);
    s.write_metadata(&metadata(6, vec![])).unwrap();
    let job = s.job_url().clone();
    let again = ObjectCheckpointStorage::for_job_url(&job).unwrap();
    assert_eq!(again.list_checkpoints().unwrap(), [CheckpointId(6)]);
    for url in [
        job.join("chk-6").unwrap(),
        job.join("chk-6").unwrap().join("_metadata").unwrap(),
    ] {
        let (st, id) = ObjectCheckpointStorage::for_checkpoint_url(&url).unwrap();
        assert_eq!((st.job_url(), id), (&job, CheckpointId(6)));
    }
    let err = ObjectCheckpointStorage::for_checkpoint_url(&job.join("chk-7").unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("chk-7 is not a checkpoint: no _metadata"),
        "{err}"
    );
    let empty = ObjectUrl::parse(&format!("file://{}/nothing", dir.path().display())).unwrap();
    let err = ObjectCheckpointStorage::for_job_url(&empty).unwrap_err();
    assert!(
        err.to_string()
            .contains("not a cairn job checkpoint location"),
        "{err}"
    );
}

#[test]
fn bad_options_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = ObjectUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
    let o = ObjectStorageOptions::new(url, JobId::new("j").unwrap()).with_part_size(0);
    let err = ObjectCheckpointStorage::open(o).unwrap_err().to_string();
    assert!(err.contains("part_size"), "{err}");
    let s3 = ObjectUrl::parse("s3://b/p?no_such_option=1").unwrap();
    let err =
        ObjectCheckpointStorage::open(ObjectStorageOptions::new(s3, JobId::new("j").unwrap()))
            .unwrap_err()
            .to_string();
    assert!(err.contains("no_such_option"), "{err}");
    let url = ObjectUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
    let o = ObjectStorageOptions::new(url, JobId::new("j").unwrap())
        .with_inline_threshold(MAX_INLINE_THRESHOLD + 1);
    let err = ObjectCheckpointStorage::open(o).unwrap_err().to_string();
    assert!(err.contains("inline_threshold 1048577"), "{err}");
}

/// Streams smaller than the inline threshold make no object: their bytes
/// travel in the handle, so inside `_metadata`, and read back from it; one
/// of the threshold's size is an object. Threshold 0 uploads even an empty
/// stream.
#[test]
fn small_streams_stay_inline_in_metadata_and_make_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let url = ObjectUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
    let s = ObjectCheckpointStorage::open(ObjectStorageOptions::new(
        url.clone(),
        JobId::new("job").unwrap(),
    ))
    .unwrap();
    assert_eq!(DEFAULT_INLINE_THRESHOLD, 20 * 1024);
    let at = vec![7u8; DEFAULT_INLINE_THRESHOLD - 1];
    let above = vec![8u8; DEFAULT_INLINE_THRESHOLD];
    let inline = write(&s, 1, StateScope::Exclusive, "op-0-meta", &at);
    let empty = write(&s, 1, StateScope::Shared, "CURRENT", b"");
    let file = write(&s, 1, StateScope::Exclusive, "op-0-keyed", &above);
    assert!(
        matches!(inline.location, StreamLocation::Inline(_)),
        "{inline:?}"
    );
    assert!(
        matches!(empty.location, StreamLocation::Inline(_)),
        "{empty:?}"
    );
    assert_eq!(file.file_path(), Some("chk-1/op-0-keyed"));
    assert_eq!(inline.crc32, crc32fast::hash(&at));
    let job = dir.path().join("job");
    assert!(!job.join("chk-1/op-0-meta").exists());
    assert!(
        !job.join("shared").exists(),
        "no object for the empty stream"
    );
    assert_eq!(std::fs::read(job.join("chk-1/op-0-keyed")).unwrap(), above);

    let streams = vec![inline, empty, file];
    s.write_metadata(&metadata(1, streams.clone())).unwrap();
    let back = s.read_metadata(CheckpointId(1)).unwrap();
    assert_eq!(back, metadata(1, streams));
    let read: Vec<Vec<u8>> = back
        .streams()
        .into_iter()
        .map(|h| s.read(h).unwrap().to_vec())
        .collect();
    assert_eq!(read, vec![at, Vec::new(), above]);

    let uploads_all = ObjectCheckpointStorage::open(
        ObjectStorageOptions::new(url, JobId::new("job").unwrap()).with_inline_threshold(0),
    )
    .unwrap();
    let h = write(&uploads_all, 2, StateScope::Exclusive, "op-0-meta", b"");
    assert_eq!(h.file_path(), Some("chk-2/op-0-meta"));
    assert!(job.join("chk-2/op-0-meta").is_file());
}

/// The storage of an `hdfs://` job URL is built (the client connects on its
/// first request, so no name node is needed here) and names the URL; what
/// it does against a name node is untested (no HDFS server runs here).
#[cfg(feature = "hdfs")]
#[test]
fn an_hdfs_job_url_builds_its_storage_without_a_name_node() {
    for text in [
        "hdfs://127.0.0.1:1/ckpt/job",
        "hdfs://ns1/ckpt/job?dfs.ha.namenodes.ns1=nn1&dfs.namenode.rpc-address.ns1.nn1=127.0.0.1:1",
    ] {
        let url = ObjectUrl::parse(text).unwrap();
        let storage = ObjectCheckpointStorage::at_job_url(&url).unwrap();
        assert_eq!(storage.describe(), text.split('?').next().unwrap());
    }
}

/// Discarding several streams is one batch of deletes: every one goes,
/// missing ones count as gone.
#[test]
fn discard_streams_deletes_every_stream_and_ignores_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir, 1 << 20);
    let handles: Vec<StreamHandle> = (0..5)
        .map(|i| write(&s, 1, StateScope::Shared, &format!("f{i}"), b"bytes"))
        .collect();
    s.discard_stream(&handles[0]).unwrap();
    let refs: Vec<&StreamHandle> = handles.iter().collect();
    s.discard_streams(&refs).unwrap();
    assert!(s.list_below("shared").unwrap().is_empty());
}
