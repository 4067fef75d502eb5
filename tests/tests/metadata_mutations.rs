//! `_metadata` is input: a valid checksum says the bytes are as written,
//! not that what was written is sound. These properties mutate a real
//! checkpoint's metadata semantically — key-group ranges (inverted, out of
//! range), offsets, sizes, parallelism, subtask indexes, handle kinds — and
//! re-encode it with a valid CRC: every mutant is either refused as corrupt
//! when read, or restores to exactly the original state; never a wrong
//! result, never a panic. And decoding arbitrary bytes never panics.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_heap::HeapBackendFactory;
use proptest::prelude::*;
use serde_json::Value;
use state_core::typed::ValueStateDescriptor;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, ErrorKind, JobId, KeyedStateBackend,
    KeyedStateHandle, ManualClock, MemoryCheckpointStorage, OperatorId, OperatorSnapshot,
    SnapshotKind, SnapshotMode, SubtaskSnapshot,
};
use state_testkit::Setup;
use state_testkit::conformance::{MAX_PARALLELISM, create_subtask, restore_subtask, snapshot_all};

const KEYS: u32 = 300;
const PARALLELISM: u32 = 2;

/// A heap checkpoint of `KEYS` values over two subtasks, its metadata, and
/// the state it holds.
struct Fixture {
    setup: Setup<HeapBackendFactory>,
    clock: Arc<ManualClock>,
    metadata: CheckpointMetadata,
    state: BTreeMap<u32, u64>,
}

fn fixture() -> Fixture {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new(64 << 20));
    let setup = Setup::new(HeapBackendFactory::default(), storage);
    let clock = Arc::new(ManualClock::new(1_000));
    let desc = ValueStateDescriptor::<u64>::new("v");
    let mut subtasks: Vec<_> = (0..PARALLELISM)
        .map(|i| create_subtask(&setup, i, PARALLELISM, &clock).unwrap())
        .collect();
    let mut state = BTreeMap::new();
    for key in 0..KEYS {
        let value = u64::from(key) * 7 + 1;
        let owner = subtasks
            .iter_mut()
            .find(|st| {
                let kg = st
                    .backend()
                    .max_parallelism()
                    .key_group_of(&postcard::to_stdvec(&key).unwrap());
                st.backend().key_group_range().contains(kg)
            })
            .unwrap();
        let v = owner.value_state(&desc).unwrap();
        owner.set_current_key(&key).unwrap();
        v.update(owner, &value).unwrap();
        state.insert(key, value);
    }
    let handles = snapshot_all(
        &mut subtasks,
        setup.storage.as_ref(),
        CheckpointId(1),
        SnapshotMode::Full,
    )
    .unwrap();
    let metadata = CheckpointMetadata {
        checkpoint_id: CheckpointId(1),
        job_id: JobId::new("mutations").unwrap(),
        timestamp_millis: 1,
        kind: SnapshotKind::Full,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("op".into()),
            parallelism: PARALLELISM,
            max_parallelism: MAX_PARALLELISM,
            subtasks: handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| SubtaskSnapshot {
                    subtask: u32::try_from(i).unwrap(),
                    keyed: vec![h],
                    operator: None,
                })
                .collect(),
        }],
    };
    Fixture {
        setup,
        clock,
        metadata,
        state,
    }
}

/// The state a restore of `metadata`'s handles at the fixture's parallelism
/// gives, or the restore's error.
fn restore(f: &Fixture, metadata: &CheckpointMetadata) -> state_core::Result<BTreeMap<u32, u64>> {
    let handles: Vec<KeyedStateHandle> = metadata
        .operators
        .iter()
        .flat_map(|op| op.subtasks.iter())
        .flat_map(|s| s.keyed.iter().cloned())
        .collect();
    let desc = ValueStateDescriptor::<u64>::new("v");
    let mut out = BTreeMap::new();
    for i in 0..PARALLELISM {
        let mut st = restore_subtask(&f.setup, &handles, i, PARALLELISM, &f.clock)?;
        let v = st.value_state(&desc)?;
        for key in 0..KEYS {
            let kg = st
                .backend()
                .max_parallelism()
                .key_group_of(&postcard::to_stdvec(&key).unwrap());
            if !st.backend().key_group_range().contains(kg) {
                continue;
            }
            st.set_current_key(&key)?;
            if let Some(value) = v.value(&mut st)? {
                out.insert(key, value);
            }
        }
    }
    Ok(out)
}

/// A semantic mutation of the metadata's JSON form.
#[derive(Debug, Clone, Copy)]
enum Field {
    RangeStart,
    RangeEnd,
    /// One key-group offset (index `value % 64`, set to `value / 64`).
    Offset,
    StreamSize,
    Parallelism,
    MaxParallelism,
    SubtaskIndex,
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Sets one semantic field of subtask `i`'s handle (or of the operator).
    Field { field: Field, i: usize, value: u64 },
    /// Swaps the two subtasks' handles' ranges.
    SwapRanges,
    /// Turns handle `i` into an incremental handle with the same stream.
    Recast { i: usize },
}

fn mutate(metadata: &CheckpointMetadata, m: &Mutation) -> Option<CheckpointMetadata> {
    let mut json = serde_json::to_value(metadata).unwrap();
    match m {
        Mutation::Field { field, i, value } => {
            let op = &mut json["operators"][0];
            let st = &mut op["subtasks"][i % 2];
            let v = Value::from(*value);
            match field {
                Field::RangeStart => st["keyed"][0]["KeyGroups"]["range"]["start"] = v,
                Field::RangeEnd => st["keyed"][0]["KeyGroups"]["range"]["end_exclusive"] = v,
                Field::Offset => {
                    let offsets =
                        st["keyed"][0]["KeyGroups"]["key_group_offsets"].as_array_mut()?;
                    let at = (*value as usize) % offsets.len().max(1);
                    *offsets.get_mut(at)? = Value::from(*value / 64);
                }
                Field::StreamSize => st["keyed"][0]["KeyGroups"]["stream"]["size"] = v,
                Field::SubtaskIndex => st["subtask"] = v,
                Field::Parallelism => op["parallelism"] = v,
                Field::MaxParallelism => op["max_parallelism"] = v,
            }
        }
        Mutation::SwapRanges => {
            let subtasks = json["operators"][0]["subtasks"].as_array_mut()?;
            let a = subtasks.first()?["keyed"][0]["KeyGroups"]["range"].clone();
            let b = subtasks.get(1)?["keyed"][0]["KeyGroups"]["range"].clone();
            subtasks[0]["keyed"][0]["KeyGroups"]["range"] = b;
            subtasks[1]["keyed"][0]["KeyGroups"]["range"] = a;
        }
        Mutation::Recast { i } => {
            let subtask = &mut json["operators"][0]["subtasks"][i % 2]["keyed"][0];
            let h = subtask["KeyGroups"].clone();
            *subtask = serde_json::json!({"Incremental": {
                "backend": h["backend"], "backend_id": "b", "range": h["range"],
                "checkpoint_id": 1, "shared": [], "private": [], "meta": h["stream"],
            }});
        }
    }
    serde_json::from_value(json).ok()
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(63),
        Just(64),
        Just(127),
        Just(128),
        Just(129),
        Just(200),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        0u64..100_000,
    ];
    prop_oneof![
        8 => (
            prop_oneof![
                Just(Field::RangeStart),
                Just(Field::RangeEnd),
                Just(Field::Offset),
                Just(Field::StreamSize),
                Just(Field::Parallelism),
                Just(Field::MaxParallelism),
                Just(Field::SubtaskIndex),
            ],
            0usize..2,
            interesting,
        )
            .prop_map(|(field, i, value)| Mutation::Field { field, i, value }),
        1 => Just(Mutation::SwapRanges),
        1 => (0usize..2).prop_map(|i| Mutation::Recast { i }),
    ]
}

#[test]
fn the_fixture_restores_and_round_trips() {
    let f = fixture();
    let bytes = f.metadata.encode().unwrap();
    let back = CheckpointMetadata::decode(&bytes, "chk-1/_metadata").unwrap();
    assert_eq!(back, f.metadata);
    assert_eq!(restore(&f, &back).unwrap(), f.state);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutant_is_refused_or_restores_the_exact_state(m in mutation()) {
        let f = fixture();
        let Some(mutant) = mutate(&f.metadata, &m) else {
            // Not representable (a number out of its type's range): the
            // decoder refuses such bytes, as the next property checks.
            return Ok(());
        };
        let bytes = mutant.encode().unwrap();
        match CheckpointMetadata::decode(&bytes, "chk-1/_metadata") {
            Err(e) => prop_assert!(
                matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::IncompatibleFormat),
                "{m:?}: refused with {e}"
            ),
            Ok(decoded) => {
                if let Ok(state) = restore(&f, &decoded) {
                    prop_assert_eq!(state, f.state, "{:?} restored a wrong result", m);
                }
            }
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        keep_header in any::<bool>(),
    ) {
        let f = fixture();
        let valid = f.metadata.encode().unwrap();
        // Either wholly random bytes, or a valid header (magic, version)
        // over random ones, with a matching length and CRC so the body parser
        // itself sees them.
        let bytes = if keep_header {
            let mut out = valid[..10].to_vec();
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&body);
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_le_bytes());
            out
        } else {
            body
        };
        let _ = CheckpointMetadata::decode(&bytes, "chk-1/_metadata");
    }

    #[test]
    fn restoring_a_stream_of_arbitrary_bytes_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        keep_prefix in 0usize..64,
    ) {
        // The first subtask's real stream with its tail replaced, or random
        // bytes: with a matching size and CRC, so the stream decoder itself
        // (headers, key-group blocks, varints, zstd) sees them.
        let f = fixture();
        let mut metadata = f.metadata.clone();
        let KeyedStateHandle::KeyGroups(h) = &mut metadata.operators[0].subtasks[0].keyed[0] else {
            unreachable!("the heap backend writes key-group streams")
        };
        let original = f.setup.storage.read(&h.stream).unwrap();
        let mut bytes = original.get(..keep_prefix.min(original.len())).unwrap_or_default().to_vec();
        bytes.extend_from_slice(&body);
        h.stream = state_core::StreamHandle {
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            location: state_core::StreamLocation::Inline(bytes.into()),
        };
        let n = h.key_group_offsets.len();
        h.key_group_offsets = vec![0; n];
        let _ = restore(&f, &metadata);
    }
}
