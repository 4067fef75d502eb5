//! One checkpoint of the `state-size` run, measured: the synchronous and
//! asynchronous phases of every subtask, completion through the
//! [`CompletedCheckpointStore`], and the bytes left in storage.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backend_fs::FsCheckpointStorage;
use state_core::CompletedCheckpointStore;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, Checkpointable, Clock, JobId,
    KeyedStateHandle, MaxParallelism, OperatorId, SavepointFormat, SnapshotKind, SnapshotMode,
    StreamLocation,
};
use state_core::{OperatorSnapshot, SubtaskSnapshot};

use super::lsm::{FileHistory, Observation, observe};
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

/// One snapshot of every subtask: its metadata, the slowest subtask's
/// synchronous and asynchronous phases, and the RocksDB subtasks'
/// databases right after their snapshot was written.
struct Snapshot {
    metadata: CheckpointMetadata,
    sync: Duration,
    written: Duration,
    observed: Vec<(u32, Observation)>,
}

/// Snapshots every subtask for `id` in `mode` into `storage` (synchronous
/// part, then the write, on the subtask's thread).
fn snapshot_all<B: Checkpointable + Send + 'static>(
    ctx: &CheckpointCtx<'_>,
    subtasks: &mut [Subtask<B>],
    id: CheckpointId,
    mode: SnapshotMode,
    storage: &dyn CheckpointStorage,
) -> anyhow::Result<Snapshot> {
    storage.initialize_checkpoint(id)?;
    let timestamp_millis = ctx.clock.now_millis();
    let results = std::sync::Mutex::new(Vec::new());
    parallel(subtasks, |sub| {
        let t = Instant::now();
        let pending = sub.backend.snapshot(id, mode)?;
        let sync = t.elapsed();
        let t = Instant::now();
        let handle = pending.write(storage)?;
        let written = t.elapsed();
        let observed = observe(&sub.backend)?;
        let subtask = sub.index;
        results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((subtask, sync, written, handle, observed));
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
    let mut snapshots = Vec::with_capacity(results.len());
    let mut observed = Vec::new();
    for (subtask, _, _, handle, seen) in results {
        snapshots.push(SubtaskSnapshot {
            subtask,
            keyed: handle.into_iter().collect(),
            operator: None,
        });
        observed.extend(seen.map(|s| (subtask, s)));
    }
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
            subtasks: snapshots,
        }],
    };
    Ok(Snapshot {
        metadata,
        sync,
        written,
        observed,
    })
}

/// Takes checkpoint `id` of every subtask, completes it in `store`, and
/// measures it.
pub(super) fn checkpoint<B: Checkpointable + Send + 'static>(
    ctx: &CheckpointCtx<'_>,
    store: &mut CompletedCheckpointStore,
    subtasks: &mut [Subtask<B>],
    id: CheckpointId,
    files: &mut FileHistory,
) -> anyhow::Result<CheckpointReport> {
    check_interrupted()?;
    let started = Instant::now();
    let Snapshot {
        metadata,
        sync,
        written,
        observed,
    } = snapshot_all(ctx, subtasks, id, ctx.mode, ctx.storage)?;
    let rocks = files.figures(observed);
    let (full_bytes, written_bytes) = (metadata.state_size(), metadata.checkpointed_size());
    // As the executor's coordinator: the backends hear of the completion,
    // then the subsumed checkpoints are deleted (measured on its own).
    let subsumed = store.complete_deferring_discard(metadata)?;
    for sub in subtasks.iter_mut() {
        sub.backend.notify_checkpoint_complete(id)?;
        for old in &subsumed {
            sub.backend.notify_checkpoint_subsumed(*old)?;
        }
    }
    let duration = started.elapsed();
    let discard_started = Instant::now();
    store.discard_subsumed();
    let discard = discard_started.elapsed();
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
        discard_ms: Some(ms(discard)),
        storage_bytes: Some(storage_bytes),
        rocks,
    })
}

/// A savepoint of the run, measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct SavepointReport {
    /// `canonical` or `native`.
    pub format: &'static str,
    /// Bytes it wrote (all of its files: a savepoint shares none).
    pub bytes: u64,
    /// Files in its directory.
    pub files: u64,
    /// The synchronous phase, slowest subtask.
    pub sync_ms: f64,
    /// The asynchronous phase, slowest subtask.
    pub async_ms: f64,
    /// From the start to its metadata written.
    pub duration_ms: f64,
}

/// Takes savepoint `id` in `format` of every subtask into a savepoint
/// directory under `dir` and measures it, as the executor does: written to
/// its own storage, its metadata last, and the backends told it was aborted
/// (nothing builds on a savepoint).
pub(super) fn savepoint<B: Checkpointable + Send + 'static>(
    ctx: &CheckpointCtx<'_>,
    subtasks: &mut [Subtask<B>],
    id: CheckpointId,
    format: SavepointFormat,
    dir: &Path,
) -> anyhow::Result<SavepointReport> {
    check_interrupted()?;
    let started = Instant::now();
    let storage =
        FsCheckpointStorage::create_savepoint(dir, ctx.job_id, id, ctx.clock.now_millis())?;
    let snapshot = snapshot_all(ctx, subtasks, id, format.snapshot_mode(), &storage)?;
    storage.write_metadata(&snapshot.metadata)?;
    let duration = started.elapsed();
    for sub in subtasks.iter_mut() {
        sub.backend.notify_checkpoint_aborted(id)?;
    }
    let (bytes, files) = dir_bytes_and_files(storage.job_dir())?;
    Ok(SavepointReport {
        format: format.name(),
        bytes,
        files,
        sync_ms: ms(snapshot.sync),
        async_ms: ms(snapshot.written),
        duration_ms: ms(duration),
    })
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    Ok(dir_bytes_and_files(dir)?.0)
}

/// Bytes and number of the files under `dir`.
fn dir_bytes_and_files(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut total, mut files) = (0, 0);
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
                files += 1;
            }
        }
    }
    Ok((total, files))
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
