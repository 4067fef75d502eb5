//! Tests of the savepoint reader and writer.

use std::sync::Arc;

use super::*;
use crate::backend::{StateDescriptor, StateKind};
use crate::checkpoint_id::CheckpointId;
use crate::handle::{StreamHandle, StreamLocation};
use crate::ids::{JobId, OperatorId};
use crate::key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::memory_storage::MemoryCheckpointStorage;
use crate::metadata::{CheckpointMetadata, KeyedStateHandle};
use crate::metadata::{IncrementalHandle, OperatorStateMode};
use crate::operator_state::OperatorStateStore;
use crate::storage::CheckpointStorage;

fn max() -> MaxParallelism {
    MaxParallelism::new(16).unwrap()
}

fn states() -> Vec<StateDescriptor> {
    vec![
        StateDescriptor::new("count", StateKind::Value).with_type_name("u64"),
        StateDescriptor::new("seen", StateKind::List).with_type_name("u32"),
    ]
}

/// Writes keys `k0..k{n}` with count `i` and list `[i, i+1]` at `parallelism`.
fn write(storage: Arc<dyn CheckpointStorage>, parallelism: u32, n: u32) -> CheckpointMetadata {
    let mut writer =
        SavepointWriter::new(storage, JobId::new("job").unwrap(), CheckpointId(1), 0).unwrap();
    let mut keys: Vec<(KeyGroup, Vec<u8>, u32)> = (0..n)
        .map(|i| {
            let key = format!("k{i}").into_bytes();
            (max().key_group_of(&key), key, i)
        })
        .collect();
    keys.sort();
    let mut op = writer
        .keyed_operator(OperatorId("op".into()), max(), parallelism, &states())
        .unwrap();
    let mut last = None;
    for (kg, key, i) in &keys {
        if last != Some(*kg) {
            op.begin_key_group(*kg).unwrap();
            last = Some(*kg);
        }
        op.write_value(0, key, b"", &u64::from(*i).to_le_bytes())
            .unwrap();
        let (a, b) = (i.to_le_bytes(), (i + 1).to_le_bytes());
        op.write_list(1, key, b"", [&a[..], &b[..]]).unwrap();
    }
    op.finish().unwrap();
    writer.finish().unwrap()
}

fn counts(reader: &SavepointReader, range: Option<KeyGroupRange>) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    reader
        .read_state("op", "count", range, &mut |r| {
            let v: [u8; 8] = r.entry.value().unwrap().try_into().unwrap();
            out.push((r.key.to_vec(), u64::from_le_bytes(v)));
            Ok(())
        })
        .unwrap();
    out.sort();
    out
}

#[test]
fn written_state_reads_back_by_state_and_key_group() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let metadata = write(storage.clone(), 3, 50);
    assert_eq!(metadata.operators[0].parallelism, 3);
    assert!(metadata.operators[0].subtasks.len() <= 3);
    for st in &metadata.operators[0].subtasks {
        let range = max().range_for_subtask(3, st.subtask).unwrap();
        assert_eq!(st.keyed[0].key_groups(), range);
    }
    let reader = SavepointReader::open(storage, CheckpointId(1)).unwrap();
    assert_eq!(reader.states("op").unwrap(), states());
    let all = counts(&reader, None);
    assert_eq!(all.len(), 50);
    let mut expected: Vec<(Vec<u8>, u64)> = (0..50u64)
        .map(|i| (format!("k{i}").into_bytes(), i))
        .collect();
    expected.sort();
    assert_eq!(all, expected);
    // One key group only.
    let kg = max().key_group_of(b"k7");
    let one = counts(&reader, Some(KeyGroupRange::new(kg, kg)));
    assert!(one.contains(&(b"k7".to_vec(), 7)));
    assert!(one.iter().all(|(k, _)| max().key_group_of(k) == kg));
    // Visits ascend by key group across subtasks' streams.
    let mut groups = Vec::new();
    reader
        .read_keyed("op", None, &mut |_, r| {
            groups.push(r.key_group);
            Ok(())
        })
        .unwrap();
    assert!(groups.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(groups.len(), 100);
}

#[test]
fn unknown_operator_and_state_are_named() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    write(storage.clone(), 1, 3);
    let reader = SavepointReader::open(storage, CheckpointId(1)).unwrap();
    let err = reader.states("nope").unwrap_err().to_string();
    assert!(
        err.contains("\"nope\"") && err.contains("operators op"),
        "{err}"
    );
    let err = reader
        .read_state("op", "total", None, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"total\"") && err.contains("count, seen"),
        "{err}"
    );
}

#[test]
fn native_handles_are_refused_until_converted() {
    let canonical: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let written = write(canonical.clone(), 1, 5);
    let KeyedStateHandle::KeyGroups(kg_handle) = written.operators[0].subtasks[0].keyed[0].clone()
    else {
        panic!("canonical")
    };
    let mut metadata = written.clone();
    let empty = StreamHandle {
        location: StreamLocation::Inline(Default::default()),
        size: 0,
        crc32: 0,
    };
    metadata.operators[0].subtasks[0].keyed[0] = KeyedStateHandle::Incremental(IncrementalHandle {
        backend: "rocks".into(),
        backend_id: "b".into(),
        range: kg_handle.range,
        checkpoint_id: CheckpointId(1),
        shared: Vec::new(),
        private: Vec::new(),
        meta: empty,
    });
    let mut reader = SavepointReader::new(Arc::new(MemoryCheckpointStorage::default()), metadata);
    assert_eq!(reader.native_handles(), 1);
    let err = reader.states("op").unwrap_err().to_string();
    assert!(err.contains("native rocks snapshot"), "{err}");
    let mut calls = 0;
    reader
        .convert_native(None, &mut |native| {
            calls += 1;
            assert_eq!(native.subtask, 0);
            assert_eq!(native.operator.operator_id.0, "op");
            Ok((kg_handle.clone(), canonical.clone()))
        })
        .unwrap();
    assert_eq!((calls, reader.native_handles()), (1, 0));
    assert_eq!(counts(&reader, None).len(), 5);
}

#[test]
fn operator_state_redistributes_as_a_restore() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let mut writer = SavepointWriter::new(
        storage.clone(),
        JobId::new("job").unwrap(),
        CheckpointId(2),
        0,
    )
    .unwrap();
    let uid = OperatorId("source".into());
    for subtask in 0..2u32 {
        let mut store = OperatorStateStore::new();
        store.register("split", OperatorStateMode::Split).unwrap();
        store.register("union", OperatorStateMode::Union).unwrap();
        store.add_typed("split", &subtask).unwrap();
        store.add_typed("union", &(10 + subtask)).unwrap();
        writer
            .write_operator_state(&uid, max(), 2, subtask, &store)
            .unwrap();
    }
    assert!(
        writer
            .write_operator_state(&uid, max(), 3, 0, &OperatorStateStore::new())
            .is_err(),
        "another parallelism for the same operator"
    );
    writer.finish().unwrap();
    let reader = SavepointReader::open(storage, CheckpointId(2)).unwrap();
    let mut split = Vec::new();
    for subtask in 0..3 {
        let store = reader
            .operator_state("source", 3, subtask)
            .unwrap()
            .unwrap();
        split.extend(store.get_typed::<u32>("split").unwrap());
        assert_eq!(store.get_typed::<u32>("union").unwrap(), vec![10, 11]);
    }
    split.sort_unstable();
    assert_eq!(split, vec![0, 1]);
}

#[test]
fn key_groups_must_ascend_across_subtasks() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let mut writer =
        SavepointWriter::new(storage, JobId::new("job").unwrap(), CheckpointId(1), 0).unwrap();
    let mut op = writer
        .keyed_operator(OperatorId("op".into()), max(), 2, &states())
        .unwrap();
    op.begin_key_group(KeyGroup(12)).unwrap();
    let err = op.begin_key_group(KeyGroup(1)).unwrap_err().to_string();
    assert!(err.contains("must ascend"), "{err}");
}
