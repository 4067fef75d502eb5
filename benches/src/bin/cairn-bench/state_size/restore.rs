//! The restores of a `state-size` run: the last checkpoint into fresh
//! backends, from the local checkpoint copies or from storage alone, and the
//! check that each read only from where it was meant to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use state_core::{
    BackendContext, BackendFactory, CheckpointStorage, Checkpointable, KeyedStateHandle, StateId,
    handles_for_range,
};

use super::subtasks::{Subtask, parallel};

/// Restores `handles` into fresh backends, one per context, on one thread
/// each; returns them and the wall time of the restore.
pub(super) fn restore_fresh<F: BackendFactory>(
    factory: &F,
    contexts: &[BackendContext],
    handles: &[KeyedStateHandle],
    storage: &dyn CheckpointStorage,
) -> anyhow::Result<(Vec<Subtask<F::Backend>>, Duration)> {
    let mut restored = Vec::with_capacity(contexts.len());
    for context in contexts {
        restored.push(Subtask {
            index: context.subtask,
            backend: factory.create(context)?,
            state: StateId(0),
            range: context.key_group_range()?,
        });
    }
    let started = Instant::now();
    parallel(&mut restored, |sub| {
        let mine = handles_for_range(handles, sub.range);
        sub.backend.restore(&mine, storage)?;
        Ok(())
    })?;
    Ok((restored, started.elapsed()))
}

/// The local copies (`<local dir>/<backend id>/chk-<n>`) of the
/// incremental handles; empty without a local directory.
pub(super) fn local_copy_dirs(
    local_dir: Option<&Path>,
    handles: &[KeyedStateHandle],
) -> Vec<PathBuf> {
    let Some(local_dir) = local_dir else {
        return Vec::new();
    };
    handles
        .iter()
        .filter_map(|h| match h {
            KeyedStateHandle::Incremental(h) => Some(
                local_dir
                    .join(&h.backend_id)
                    .join(h.checkpoint_id.dir_name()),
            ),
            KeyedStateHandle::KeyGroups(_) => None,
        })
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Where a restore was meant to read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The local checkpoint copies (on disk for rocks, in memory for heap and fs).
    LocalCopy,
    /// The checkpoint storage alone.
    Storage,
}

/// Checks that every restored backend read only from `want` (a subtask
/// that got no handle read nothing), so the two restore times measure what
/// their names say.
pub(super) fn check_source<B: 'static>(
    restored: &[Subtask<B>],
    want: Source,
) -> anyhow::Result<()> {
    for sub in restored {
        let any = &sub.backend as &dyn std::any::Any;
        if let Some(heap) = any.downcast_ref::<backend_heap::HeapBackend>() {
            let stats = heap.last_restore_stats().unwrap_or_default();
            let ok = match want {
                Source::LocalCopy => stats.storage_handles == 0,
                Source::Storage => stats.local_handles == 0,
            };
            anyhow::ensure!(
                ok,
                "subtask {}: the restore meant to read {want:?} took {} handles from in-memory copies and {} from storage",
                sub.index,
                stats.local_handles,
                stats.storage_handles
            );
        } else {
            check_rocks_source(sub, want)?;
        }
    }
    Ok(())
}

#[cfg(feature = "rocks")]
fn check_rocks_source<B: 'static>(sub: &Subtask<B>, want: Source) -> anyhow::Result<()> {
    use backend_rocks::{RestoreSource, RocksBackend};
    let Some(rocks) = (&sub.backend as &dyn std::any::Any).downcast_ref::<RocksBackend>() else {
        anyhow::bail!("only the heap and rocks backends restore from local copies");
    };
    let stats = rocks.last_restore_stats().cloned().unwrap_or_default();
    let ok = matches!(
        (want, stats.source()),
        (_, RestoreSource::Nothing)
            | (Source::LocalCopy, RestoreSource::LocalCopy)
            | (Source::Storage, RestoreSource::Storage)
    );
    anyhow::ensure!(
        ok,
        "subtask {}: the restore meant to read {want:?} read {} files ({} bytes) from local copies and {} bytes from storage",
        sub.index,
        stats.files_from_local,
        stats.bytes_from_local,
        stats.bytes_from_storage
    );
    Ok(())
}

/// Without the rocks backend, only heap backends keep local copies.
#[cfg(not(feature = "rocks"))]
fn check_rocks_source<B: 'static>(_sub: &Subtask<B>, want: Source) -> anyhow::Result<()> {
    anyhow::bail!("cannot tell whether a restore read {want:?}: this build has no rocks backend")
}
