//! Damaged checkpoint files on filesystem storage, with real heap snapshots
//! and operator state: for each kind of checkpoint file (`_metadata`, a keyed
//! state stream, an operator state stream), a flipped byte or a truncation
//! makes restore fall back to the previous retained checkpoint with exactly
//! its state, the damaged file is named by `select_for_restore`, by
//! `verify_checkpoint` and by a direct restore, and nothing panics.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use bytes::Bytes;
use state_core::{
    BackendContext, CheckpointId, CheckpointMetadata, CheckpointStorage, Checkpointable,
    CompletedCheckpointStore, EntryKey, ExternalizedCheckpointCleanup, JobId, KeyedStateBackend,
    ManualClock, MaxParallelism, OperatorId, OperatorSnapshot, OperatorStateMode,
    OperatorStateStore, SnapshotKind, SnapshotMode, StateDescriptor, StateKind, SubtaskSnapshot,
    handles_for_range, select_for_restore, verify_checkpoint,
};

const PARALLELISM: u32 = 2;
const KEYS: u32 = 200;

fn job() -> JobId {
    JobId::new("wordcount").unwrap()
}

fn max_parallelism() -> MaxParallelism {
    MaxParallelism::new(128).unwrap()
}

fn context(subtask: u32) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("count".into()),
        subtask,
        parallelism: PARALLELISM,
        max_parallelism: max_parallelism(),
        clock: Arc::new(ManualClock::new(1_000)),
    }
}

fn descriptor() -> StateDescriptor {
    StateDescriptor::new("count", StateKind::Value)
}

fn key_name(k: u32) -> String {
    format!("word-{k}")
}

/// The count of key `k` as of checkpoint `id`.
fn count(k: u32, id: u64) -> String {
    format!("{}", u64::from(k) * 1000 + id)
}

fn put_all(backends: &mut [HeapBackend], id: u64) {
    for k in 0..KEYS {
        let name = key_name(k);
        let kg = max_parallelism().key_group_of(name.as_bytes());
        let subtask = max_parallelism().subtask_for_key_group(PARALLELISM, kg) as usize;
        let backend = &mut backends[subtask];
        let state = backend.register_state(&descriptor()).unwrap();
        let key = EntryKey {
            key_group: kg,
            key: name.as_bytes(),
            namespace: b"",
        };
        backend.put(state, &key, Bytes::from(count(k, id))).unwrap();
    }
}

fn offsets(id: u64) -> Vec<u64> {
    vec![id * 10, id * 10 + 1]
}

/// Writes checkpoints 1..=3 of a job with a keyed "count" operator at
/// parallelism 2 and a "source" operator with offsets.
fn three_checkpoints(dir: &Path) -> Arc<FsCheckpointStorage> {
    let storage = Arc::new(FsCheckpointStorage::open(dir, job()).unwrap());
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 3, ExternalizedCheckpointCleanup::default())
            .unwrap();
    let mut backends: Vec<HeapBackend> = (0..PARALLELISM)
        .map(|i| HeapBackend::new(&context(i), HeapBackendOptions::default()).unwrap())
        .collect();
    let mut source = OperatorStateStore::new();
    source.set_stream_name("source-0-offsets").unwrap();
    source
        .register("offsets", OperatorStateMode::Split)
        .unwrap();
    for id in 1..=3 {
        put_all(&mut backends, id);
        source.update_typed("offsets", &offsets(id)).unwrap();
        let cid = CheckpointId(id);
        storage.initialize_checkpoint(cid).unwrap();
        let mut keyed_subtasks = Vec::new();
        for (i, backend) in backends.iter_mut().enumerate() {
            let pending = backend.snapshot(cid, SnapshotMode::Full).unwrap();
            let handle = pending.write(storage.as_ref()).unwrap().unwrap();
            keyed_subtasks.push(SubtaskSnapshot {
                subtask: i as u32,
                keyed: vec![handle],
                operator: None,
            });
        }
        let operator = source.snapshot(cid, storage.as_ref()).unwrap();
        store
            .complete(CheckpointMetadata {
                checkpoint_id: cid,
                job_id: job(),
                timestamp_millis: 1_000 + id,
                kind: SnapshotKind::Full,
                operators: vec![
                    OperatorSnapshot {
                        operator_id: OperatorId("count".into()),
                        parallelism: PARALLELISM,
                        max_parallelism: 128,
                        subtasks: keyed_subtasks,
                    },
                    OperatorSnapshot {
                        operator_id: OperatorId("source".into()),
                        parallelism: 1,
                        max_parallelism: 128,
                        subtasks: vec![SubtaskSnapshot {
                            subtask: 0,
                            keyed: Vec::new(),
                            operator,
                        }],
                    },
                ],
            })
            .unwrap();
    }
    storage
}

/// Restores both subtasks and the source from `metadata` and checks every
/// value is the one of checkpoint `id`.
fn restore_and_check(storage: &dyn CheckpointStorage, metadata: &CheckpointMetadata, id: u64) {
    let keyed: Vec<_> = metadata.operators[0]
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.iter())
        .collect();
    for subtask in 0..PARALLELISM {
        let ctx = context(subtask);
        let mut backend = HeapBackend::new(&ctx, HeapBackendOptions::default()).unwrap();
        let handles = handles_for_range(keyed.iter().copied(), ctx.key_group_range().unwrap());
        backend.restore(&handles, storage).unwrap();
        let state = backend.register_state(&descriptor()).unwrap();
        let range = ctx.key_group_range().unwrap();
        for k in 0..KEYS {
            let name = key_name(k);
            let kg = max_parallelism().key_group_of(name.as_bytes());
            if !range.contains(kg) {
                continue;
            }
            let key = EntryKey {
                key_group: kg,
                key: name.as_bytes(),
                namespace: b"",
            };
            let value = backend.get(state, &key).unwrap().unwrap();
            assert_eq!(&value[..], count(k, id).as_bytes(), "{name}");
        }
    }
    let handles: Vec<_> = metadata.operators[1]
        .subtasks
        .iter()
        .filter_map(|s| s.operator.clone())
        .collect();
    let source = OperatorStateStore::restore(&handles, storage, 1, 0).unwrap();
    assert_eq!(source.get_typed::<u64>("offsets").unwrap(), offsets(id));
}

fn flip_byte(path: &Path, from_end: bool) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if from_end {
        bytes.len() - 1
    } else {
        bytes.len() / 2
    };
    bytes[i] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() * 2 / 3]).unwrap();
}

type Damage = fn(&Path);

const DAMAGES: [(&str, Damage); 3] = [
    ("flip a middle byte", |p| flip_byte(p, false)),
    ("flip the last byte", |p| flip_byte(p, true)),
    ("truncate", truncate),
];

/// The files of checkpoint 3 that a damage test targets.
const FILES: [&str; 4] = [
    "chk-3/_metadata",
    "chk-3/count-0-keyed",
    "chk-3/count-1-keyed",
    "chk-3/source-0-offsets",
];

#[test]
fn the_layout_holds_the_expected_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_checkpoints(dir.path());
    for rel in FILES {
        assert!(storage.job_dir().join(rel).is_file(), "{rel}");
    }
    let sel = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(sel.checkpoint_id(), CheckpointId(3));
    assert!(sel.skipped.is_empty());
    restore_and_check(storage.as_ref(), &sel.metadata, 3);
}

#[test]
fn every_damaged_file_falls_back_to_the_previous_checkpoint() {
    for rel in FILES {
        for (how, damage) in DAMAGES {
            let what = format!("{how} of {rel}");
            let dir = tempfile::tempdir().unwrap();
            let storage = three_checkpoints(dir.path());
            // The metadata of 3 as written, to try a direct restore with it.
            let intact_metadata = storage.read_metadata(CheckpointId(3)).unwrap();
            damage(&storage.job_dir().join(rel));

            let sel = select_for_restore(storage.as_ref()).unwrap();
            assert_eq!(sel.checkpoint_id(), CheckpointId(2), "{what}");
            assert_eq!(sel.skipped.len(), 1, "{what}");
            assert_eq!(sel.skipped[0].0, CheckpointId(3), "{what}");
            let why = sel.skipped[0].1.to_string();
            assert!(why.contains(rel), "{what}: {why}");
            restore_and_check(storage.as_ref(), &sel.metadata, 2);

            let report = verify_checkpoint(storage.as_ref(), CheckpointId(3)).unwrap();
            let failed: Vec<&str> = report.failures().map(|f| f.path.as_str()).collect();
            assert_eq!(failed, [rel], "{what}");

            if rel.ends_with("_metadata") {
                let err = storage.read_metadata(CheckpointId(3)).unwrap_err();
                assert!(err.to_string().contains(rel), "{what}: {err}");
            } else if rel.contains("-keyed") {
                // Restoring the damaged checkpoint directly fails cleanly.
                let keyed: Vec<_> = intact_metadata.operators[0]
                    .subtasks
                    .iter()
                    .flat_map(|s| s.keyed.iter().cloned())
                    .collect();
                let subtask = if rel.contains("count-0") { 0 } else { 1 };
                let ctx = context(subtask);
                let mut backend = HeapBackend::new(&ctx, HeapBackendOptions::default()).unwrap();
                let handles = handles_for_range(&keyed, ctx.key_group_range().unwrap());
                let err = backend.restore(&handles, storage.as_ref()).unwrap_err();
                assert!(err.to_string().contains(rel), "{what}: {err}");
                assert_eq!(backend.entry_count(), 0, "{what}: half-restored");
            } else {
                let handles: Vec<_> = intact_metadata.operators[1]
                    .subtasks
                    .iter()
                    .filter_map(|s| s.operator.clone())
                    .collect();
                let err =
                    OperatorStateStore::restore(&handles, storage.as_ref(), 1, 0).unwrap_err();
                assert!(err.to_string().contains(rel), "{what}: {err}");
            }
        }
    }
}

#[test]
fn damaged_newest_checkpoints_are_named_until_an_intact_one() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_checkpoints(dir.path());
    truncate(&storage.job_dir().join("chk-3/count-1-keyed"));
    flip_byte(&storage.job_dir().join("chk-2/_metadata"), false);
    let sel = select_for_restore(storage.as_ref()).unwrap();
    assert_eq!(sel.checkpoint_id(), CheckpointId(1));
    let named: Vec<(u64, bool)> = sel
        .skipped
        .iter()
        .map(|(id, err)| {
            let file = if id.get() == 3 {
                "chk-3/count-1-keyed"
            } else {
                "chk-2/_metadata"
            };
            (id.get(), err.to_string().contains(file))
        })
        .collect();
    assert_eq!(named, [(3, true), (2, true)]);
    restore_and_check(storage.as_ref(), &sel.metadata, 1);

    // With checkpoint 1 damaged too there is nothing to restore, and the
    // error says so for each of them.
    flip_byte(&storage.job_dir().join("chk-1/source-0-offsets"), true);
    let err = select_for_restore(storage.as_ref()).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "checkpoint 3",
        "checkpoint 2",
        "checkpoint 1",
        "chk-1/source-0-offsets",
    ] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
}
