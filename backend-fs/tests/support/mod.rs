//! Writing checkpoints through `FsCheckpointStorage` without a state backend:
//! full checkpoints with one keyed and one operator-state stream, and
//! incremental ones that upload and reference files in `shared/`.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, IncrementalHandle, JobId, KeyGroup,
    KeyGroupRange, KeyGroupsHandle, KeyedStateHandle, OperatorId, OperatorSnapshot,
    OperatorStateHandle, Result, SharedFile, SnapshotKind, StateError, StateScope, StreamHandle,
    StreamLocation, SubtaskSnapshot,
};

pub(crate) fn job() -> JobId {
    JobId::new("job-1").unwrap()
}

pub(crate) fn range() -> KeyGroupRange {
    KeyGroupRange::new(KeyGroup(0), KeyGroup(3))
}

/// The keyed state checkpoint `id` holds; large enough to be memory-mapped
/// for some ids.
pub(crate) fn keyed_payload(id: u64) -> Vec<u8> {
    let len = if id.is_multiple_of(2) {
        100 * 1024
    } else {
        300
    };
    format!("keyed state of checkpoint {id};")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

pub(crate) fn operator_payload(id: u64) -> Vec<u8> {
    format!("source offsets at checkpoint {id}").into_bytes()
}

/// The bytes of shared file `name`, so a later checkpoint can reference it
/// by recomputing its handle.
pub(crate) fn shared_payload(name: &str) -> Vec<u8> {
    format!("sst {name} ").repeat(50).into_bytes()
}

pub(crate) fn shared_handle(name: &str) -> StreamHandle {
    let bytes = shared_payload(name);
    StreamHandle {
        location: StreamLocation::File(format!("shared/{name}")),
        size: bytes.len() as u64,
        crc32: crc32fast_hash(&bytes),
    }
}

fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

pub(crate) fn write_stream(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
    scope: StateScope,
    name: &str,
    bytes: &[u8],
) -> Result<StreamHandle> {
    let mut out = storage.create_output(id, scope, name)?;
    // Several writes, so a fault can hit the middle of a stream.
    for chunk in bytes.chunks(40 * 1024) {
        out.write_all(chunk).map_err(|e| StateError::io(name, e))?;
    }
    out.close()
}

pub(crate) fn metadata(
    id: u64,
    kind: SnapshotKind,
    keyed: Vec<KeyedStateHandle>,
    operator: Option<OperatorStateHandle>,
) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: CheckpointId(id),
        job_id: job(),
        timestamp_millis: 1_000 + id,
        kind,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("op".into()),
            parallelism: 1,
            max_parallelism: 4,
            subtasks: vec![SubtaskSnapshot {
                subtask: 0,
                keyed,
                operator,
            }],
        }],
    }
}

/// Writes the state of full checkpoint `id`: `chk-<id>/op-0-keyed` and
/// `chk-<id>/op-0-operator`.
pub(crate) fn write_full(storage: &dyn CheckpointStorage, id: u64) -> Result<CheckpointMetadata> {
    let cid = CheckpointId(id);
    storage.initialize_checkpoint(cid)?;
    let stream = write_stream(
        storage,
        cid,
        StateScope::Exclusive,
        "op-0-keyed",
        &keyed_payload(id),
    )?;
    let keyed = KeyedStateHandle::KeyGroups(KeyGroupsHandle {
        backend: "test".into(),
        range: range(),
        stream,
        key_group_offsets: vec![0; 4],
    });
    let operator = OperatorStateHandle {
        stream: write_stream(
            storage,
            cid,
            StateScope::Exclusive,
            "op-0-operator",
            &operator_payload(id),
        )?,
        states: Vec::new(),
    };
    Ok(metadata(
        id,
        SnapshotKind::Full,
        vec![keyed],
        Some(operator),
    ))
}

/// The shared files incremental checkpoint `id` references: the one it
/// uploads (`<id>.sst`) and those uploaded by the two checkpoints before it.
pub(crate) fn incremental_files(id: u64) -> Vec<(String, u64)> {
    (id.saturating_sub(2).max(1)..=id)
        .map(|by| (format!("{by}.sst"), by))
        .collect()
}

/// Writes incremental checkpoint `id`. On error, returns the handle of what
/// was uploaded so far, for `abort`.
pub(crate) fn write_incremental(
    storage: &dyn CheckpointStorage,
    id: u64,
) -> std::result::Result<KeyedStateHandle, (StateError, Vec<KeyedStateHandle>)> {
    let cid = CheckpointId(id);
    let mut handle = IncrementalHandle {
        backend: "test".into(),
        backend_id: "backend-0".into(),
        range: range(),
        checkpoint_id: cid,
        shared: Vec::new(),
        private: Vec::new(),
        meta: shared_handle("placeholder"),
    };
    let partial = |handle: &IncrementalHandle, err: StateError| {
        (err, vec![KeyedStateHandle::Incremental(handle.clone())])
    };
    if let Err(e) = storage.initialize_checkpoint(cid) {
        return Err(partial(&handle, e));
    }
    for (name, by) in incremental_files(id) {
        let stream = if by == id {
            match write_stream(
                storage,
                cid,
                StateScope::Shared,
                &name,
                &shared_payload(&name),
            ) {
                Ok(s) => s,
                Err(e) => return Err(partial(&handle, e)),
            }
        } else {
            shared_handle(&name)
        };
        handle.shared.push(SharedFile {
            name,
            handle: stream,
            uploaded_by: CheckpointId(by),
        });
    }
    match write_stream(
        storage,
        cid,
        StateScope::Exclusive,
        "op-0-meta",
        &keyed_payload(id),
    ) {
        Ok(meta) => handle.meta = meta,
        Err(e) => return Err(partial(&handle, e)),
    }
    Ok(KeyedStateHandle::Incremental(handle))
}

/// Every file and directory under `dir`, relative, sorted (`a/`, `a/b`).
pub(crate) fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Flips one bit of byte `at` (from the end if negative) of a file.
pub(crate) fn flip_byte(path: &Path, at: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs() as usize
    } else {
        at as usize
    };
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Cuts a file to half its length.
pub(crate) fn truncate_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}
