//! Savepoints in flight: which checkpoint ids of an attempt are savepoints,
//! where each one writes and in which snapshot mode.
//!
//! A savepoint travels through the job as an ordinary checkpoint barrier
//! with an id from the same counter (as in Flink). What differs is decided
//! where the bytes are written: every task looks its id up here, writes the
//! keyed state in the savepoint's [`SnapshotMode`] and every stream into the
//! savepoint's own storage, never into the job's checkpoint directory.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::Sender;
use state_core::{CheckpointId, CheckpointStorage, SavepointFormat, SnapshotMode};

use crate::error::Result;
use crate::job::savepoint::SavepointInfo;

/// A savepoint in flight, as the attempt keeps it.
#[derive(Debug)]
pub(crate) struct PendingSavepoint {
    pub storage: Arc<dyn CheckpointStorage>,
    pub format: SavepointFormat,
    /// Stop with savepoint: the sources stopped after its barrier.
    pub stop: bool,
    pub reply: Sender<Result<SavepointInfo>>,
}

/// Where one savepoint writes.
#[derive(Debug, Clone)]
struct Target {
    storage: Arc<dyn CheckpointStorage>,
    mode: SnapshotMode,
}

/// The savepoints of one attempt, shared by the master and every task of it
/// (cloning shares the same set). A savepoint stays in the set for the rest
/// of the attempt once triggered: its completion or abort reaches the tasks
/// after the master decided it, and they must still know it was one. Ids
/// are never reused, and savepoints are few.
#[derive(Debug, Clone, Default)]
pub(crate) struct SavepointTargets(Arc<RwLock<BTreeMap<CheckpointId, Target>>>);

impl SavepointTargets {
    /// Checkpoint `id` is a savepoint written to `storage` in `mode`.
    pub(crate) fn insert(
        &self,
        id: CheckpointId,
        storage: Arc<dyn CheckpointStorage>,
        mode: SnapshotMode,
    ) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Target { storage, mode });
    }

    /// Whether checkpoint `id` is a savepoint in flight.
    pub(crate) fn contains(&self, id: CheckpointId) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    /// The snapshot mode of checkpoint `id`: the savepoint's, or `default`
    /// for an ordinary checkpoint.
    pub(crate) fn mode(&self, id: CheckpointId, default: SnapshotMode) -> SnapshotMode {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map_or(default, |t| t.mode)
    }

    /// The storage checkpoint `id` writes to: the savepoint's, or `default`.
    pub(crate) fn storage(
        &self,
        id: CheckpointId,
        default: &Arc<dyn CheckpointStorage>,
    ) -> Arc<dyn CheckpointStorage> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map_or_else(|| default.clone(), |t| t.storage.clone())
    }
}

#[cfg(test)]
mod tests {
    use state_core::MemoryCheckpointStorage;

    use super::*;

    #[test]
    fn ordinary_checkpoints_keep_the_job_defaults() {
        let job: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
        let savepoint: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new(7));
        let targets = SavepointTargets::default();
        targets.insert(
            CheckpointId(4),
            savepoint.clone(),
            SnapshotMode::NativeSavepoint,
        );
        let shared = targets.clone();
        assert!(shared.contains(CheckpointId(4)));
        assert!(!shared.contains(CheckpointId(3)));
        assert_eq!(
            shared.mode(CheckpointId(4), SnapshotMode::Incremental),
            SnapshotMode::NativeSavepoint
        );
        assert_eq!(
            shared.mode(CheckpointId(5), SnapshotMode::Incremental),
            SnapshotMode::Incremental
        );
        assert!(Arc::ptr_eq(
            &shared.storage(CheckpointId(4), &job),
            &savepoint
        ));
        assert!(Arc::ptr_eq(&shared.storage(CheckpointId(5), &job), &job));
    }
}
