//! One checkpoint of the `state-size` run, measured: the synchronous and
//! asynchronous phases of every subtask, completion through the
//! [`CompletedCheckpointStore`], and the bytes left in storage.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use state_core::CompletedCheckpointStore;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, Checkpointable, Clock, JobId,
    KeyedStateHandle, MaxParallelism, OperatorId, SnapshotKind, SnapshotMode, StreamLocation,
};
use state_core::{OperatorSnapshot, SubtaskSnapshot};

use super::subtasks::{Subtask, parallel};
use crate::report::{CheckpointReport, ms};
use crate::scratch::check_interrupted;

/// What every checkpoint of a run shares.
pub(super) struct CheckpointCtx<'a> {
    pub(super) storage: &'a dyn CheckpointStorage,
    pub(super) job_id: &'a JobId,
    pub(super) operator: &'a OperatorId,
    pub(super) parallelism: u32,
    pub(super) max_parallelism: MaxParallelism,
    pub(super) clock: &'a dyn Clock,
    pub(super) mode: SnapshotMode,
    pub(super) job_dir: Option<&'a Path>,
}

/// Takes checkpoint `id` of every subtask (synchronous part, then the write,
/// on the subtask's thread), completes it in `store`, and measures it.
pub(super) fn checkpoint<B: Checkpointable + Send>(
    ctx: &CheckpointCtx<'_>,
    store: &mut CompletedCheckpointStore,
    subtasks: &mut [Subtask<B>],
    id: CheckpointId,
) -> anyhow::Result<CheckpointReport> {
    check_interrupted()?;
    let started = Instant::now();
    ctx.storage.initialize_checkpoint(id)?;
    let timestamp_millis = ctx.clock.now_millis();
    let results = std::sync::Mutex::new(Vec::new());
    parallel(subtasks, |sub| {
        let t = Instant::now();
        let pending = sub.backend.snapshot(id, ctx.mode)?;
        let sync = t.elapsed();
        let t = Instant::now();
        let handle = pending.write(ctx.storage)?;
        let written = t.elapsed();
        let subtask = sub.index;
        results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((subtask, sync, written, handle));
        Ok(())
    })?;
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|r| r.0);
    let sync = results.iter().map(|r| r.1).max().unwrap_or(Duration::ZERO);
    let written = results.iter().map(|r| r.2).max().unwrap_or(Duration::ZERO);
    let incremental = results
        .iter()
        .any(|r| matches!(r.3, Some(KeyedStateHandle::Incremental(_))));
    let metadata = CheckpointMetadata {
        checkpoint_id: id,
        job_id: ctx.job_id.clone(),
        timestamp_millis,
        kind: if incremental {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        },
        operators: vec![OperatorSnapshot {
            operator_id: ctx.operator.clone(),
            parallelism: ctx.parallelism,
            max_parallelism: ctx.max_parallelism.get(),
            subtasks: results
                .into_iter()
                .map(|(subtask, _, _, handle)| SubtaskSnapshot {
                    subtask,
                    keyed: handle.into_iter().collect(),
                    operator: None,
                })
                .collect(),
        }],
    };
    let (full_bytes, written_bytes) = (metadata.state_size(), metadata.checkpointed_size());
    let subsumed = store.complete(metadata)?;
    for sub in subtasks.iter_mut() {
        sub.backend.notify_checkpoint_complete(id)?;
        for old in &subsumed {
            sub.backend.notify_checkpoint_subsumed(*old)?;
        }
    }
    let duration = started.elapsed();
    let storage_bytes = match ctx.job_dir {
        Some(dir) => dir_bytes(dir)?,
        None => retained_stream_bytes(store),
    };
    Ok(CheckpointReport {
        id: id.get(),
        full_bytes,
        written_bytes,
        sync_ms: Some(ms(sync)),
        async_ms: Some(ms(written)),
        duration_ms: Some(ms(duration)),
        storage_bytes: Some(storage_bytes),
    })
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", d.display()))),
        };
        for entry in entries {
            let entry = entry.with_context(|| d.display().to_string())?;
            let meta = entry
                .metadata()
                .with_context(|| entry.path().display().to_string())?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Bytes of the distinct streams the retained checkpoints reference (for
/// storage that is not a directory).
fn retained_stream_bytes(store: &CompletedCheckpointStore) -> u64 {
    let mut files = std::collections::HashSet::new();
    let mut total = 0;
    for metadata in store.retained() {
        for stream in metadata.streams() {
            let counted = match &stream.location {
                StreamLocation::File(path) => files.insert(path.clone()),
                StreamLocation::Inline(_) => true,
            };
            if counted {
                total += stream.size;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_sums_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(dir_bytes(dir.path()).unwrap(), 42);
        assert_eq!(dir_bytes(&dir.path().join("missing")).unwrap(), 0);
    }
}
