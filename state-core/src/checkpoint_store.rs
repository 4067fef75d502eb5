//! Completed checkpoints: retention, subsumption, abort, shutdown, and the
//! choice of checkpoint to restore from.
//!
//! [`CompletedCheckpointStore`] is the coordinator's record of the retained
//! checkpoints of one job (Flink's `CompletedCheckpointStore` plus its
//! `SharedStateRegistry`). It owns the life cycle of checkpoint files:
//!
//! - [`complete`](CompletedCheckpointStore::complete) writes a checkpoint's
//!   metadata (from then on the checkpoint exists), registers its shared
//!   files, and subsumes every checkpoint beyond `num_retained`: its exclusive
//!   location is deleted, then each shared file that no retained checkpoint
//!   references any more.
//! - [`abort`](CompletedCheckpointStore::abort) deletes what an aborted
//!   checkpoint wrote, keeping the shared files retained checkpoints use.
//! - [`shutdown`](CompletedCheckpointStore::shutdown) applies the
//!   externalized-checkpoint cleanup policy when the job ends.
//! - [`recover`](CompletedCheckpointStore::recover) rebuilds the store and the
//!   registry from the checkpoints already in storage whenever a job starts
//!   over them, so a restart never forgets a reference;
//!   [`recover_restoring`](CompletedCheckpointStore::recover_restoring) does
//!   the same for a job started from a checkpoint, claiming it or leaving it
//!   alone per the [`RestoreMode`].
//!
//! Restores pick their checkpoint with [`select_for_restore`], which verifies
//! every stream of a checkpoint before choosing it and falls back to older
//! ones; tools check a checkpoint with [`verify_checkpoint`].

mod verify;

use std::sync::Arc;

pub use verify::{
    FileCheck, RestoreSelection, VerifyReport, load_verified, select_for_restore, verify_checkpoint,
};

use crate::checkpoint_id::CheckpointId;
use crate::handle::StreamHandle;
use crate::metadata::{CheckpointMetadata, KeyedStateHandle};
use crate::registry::SharedStateRegistry;
use crate::storage::CheckpointStorage;
use crate::{Result, StateError};

/// What happens to retained checkpoints when a job is cancelled (Flink's
/// `ExternalizedCheckpointCleanup`). See [`CompletedCheckpointStore::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExternalizedCheckpointCleanup {
    /// Keep the retained checkpoints when the job is cancelled, so it can be
    /// resumed from them later.
    RetainOnCancellation,
    /// Delete the retained checkpoints when the job is cancelled; keep them
    /// when it fails, so a failed job can be restored (the default: Flink
    /// deletes checkpoints on cancellation unless told to retain them).
    #[default]
    DeleteOnCancellation,
}

/// What a job started from a checkpoint may do with that checkpoint (Flink's
/// `RestoreMode`, `execution.state-recovery.claim-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestoreMode {
    /// The job never deletes or rewrites anything of the checkpoint it
    /// restored from, and its checkpoints never reference that checkpoint's
    /// files: the first one after the restore writes every file anew (the
    /// default, as in Flink). The checkpoint may be in another storage.
    #[default]
    NoClaim,
    /// The job takes the checkpoint over: it joins the job's retained
    /// checkpoints with its shared files registered, and is subsumed and
    /// deleted like any of them. Only a checkpoint of the job's own storage
    /// can be claimed.
    Claim,
}

impl RestoreMode {
    /// The mode's name as the command line spells it (`no-claim`, `claim`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreMode::NoClaim => "no-claim",
            RestoreMode::Claim => "claim",
        }
    }
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job ended, which decides whether its checkpoints are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobTerminalStatus {
    /// Every source finished and the job completed.
    Finished,
    /// A user cancelled the job.
    Canceled,
    /// The job failed for good (the restart strategy gave up).
    Failed,
}

/// The retained completed checkpoints of one job and their shared files.
///
/// Not thread-safe by itself: the checkpoint coordinator owns it and calls it
/// from one thread (every mutating method takes `&mut self`).
#[derive(Debug)]
pub struct CompletedCheckpointStore {
    storage: Arc<dyn CheckpointStorage>,
    num_retained: usize,
    cleanup: ExternalizedCheckpointCleanup,
    /// Ascending by id; at most `num_retained` long.
    retained: Vec<CheckpointMetadata>,
    registry: SharedStateRegistry,
    /// Checkpoints that were in storage before a job restored from a
    /// checkpoint it does not own all of (see
    /// [`CompletedCheckpointStore::recover_restoring`]): not retained, never
    /// deleted, their shared files registered so that no deletion takes them.
    pinned: Vec<CheckpointMetadata>,
    /// Checkpoints [`CompletedCheckpointStore::recover`] found unreadable.
    skipped_on_recovery: Vec<(CheckpointId, StateError)>,
    /// Subsumed checkpoints, unregistered, whose storage is not deleted
    /// yet, oldest first, each with the shared files only it referenced
    /// (see [`CompletedCheckpointStore::discard_subsumed`]).
    subsumed: Vec<(CheckpointId, Vec<StreamHandle>)>,
}

/// The default number of retained checkpoints, as in Flink (`state.checkpoints.num-retained`).
pub const DEFAULT_NUM_RETAINED: usize = 1;

impl CompletedCheckpointStore {
    /// An empty store over `storage` keeping the newest `num_retained`
    /// completed checkpoints (at least 1; Flink's default is
    /// [`DEFAULT_NUM_RETAINED`]). Checkpoints already in `storage` are ignored;
    /// use [`CompletedCheckpointStore::recover`] after a restart.
    pub fn new(
        storage: Arc<dyn CheckpointStorage>,
        num_retained: usize,
        cleanup: ExternalizedCheckpointCleanup,
    ) -> Result<Self> {
        if num_retained == 0 {
            return Err(StateError::invalid(
                "num_retained (retained checkpoints) must be at least 1, got 0",
            ));
        }
        Ok(CompletedCheckpointStore {
            storage,
            num_retained,
            cleanup,
            retained: Vec::new(),
            registry: SharedStateRegistry::new(),
            pinned: Vec::new(),
            skipped_on_recovery: Vec::new(),
            subsumed: Vec::new(),
        })
    }

    /// A store holding the checkpoints already in `storage`, after a restart.
    ///
    /// Reads the metadata of every listed checkpoint, oldest first. Those whose
    /// metadata cannot be read or decoded are skipped, logged and reported by
    /// [`CompletedCheckpointStore::skipped_on_recovery`], and never deleted
    /// (an operator may want to inspect them). Of the readable ones, the newest
    /// `num_retained` are retained and the registry is rebuilt from them; older
    /// readable ones (left by a crash in the middle of a rotation) are
    /// subsumed, as they would have been without the crash.
    ///
    /// Only the metadata is checked here; [`select_for_restore`] verifies the
    /// state streams of the checkpoint it restores from.
    pub fn recover(
        storage: Arc<dyn CheckpointStorage>,
        num_retained: usize,
        cleanup: ExternalizedCheckpointCleanup,
    ) -> Result<Self> {
        Self::open(storage, num_retained, cleanup, None)
    }

    /// The store of a job that restores from `restored` (not resumes: see
    /// [`CompletedCheckpointStore::recover`] for that), which treats what is
    /// in storage per `mode`. The registry holds the shared files of every
    /// readable checkpoint in storage either way, with their true counts.
    ///
    /// - [`RestoreMode::NoClaim`]: every checkpoint already in storage,
    ///   `restored` among them if it is here, is pinned: never retained,
    ///   never deleted (not even by [`CompletedCheckpointStore::shutdown`]),
    ///   and its shared files are never deleted. The store retains and
    ///   deletes only the checkpoints the new run completes. A checkpoint of
    ///   another storage is not touched at all.
    /// - [`RestoreMode::Claim`]: `restored` must be a checkpoint of this
    ///   storage (its metadata as stored here), else
    ///   [`StateError::InvalidArgument`] naming it. It is the store's first
    ///   retained checkpoint and is subsumed and deleted like any later one,
    ///   as in Flink; the other checkpoints in storage are pinned.
    ///
    /// Nothing is deleted while the store opens.
    pub fn recover_restoring(
        storage: Arc<dyn CheckpointStorage>,
        num_retained: usize,
        cleanup: ExternalizedCheckpointCleanup,
        restored: &CheckpointMetadata,
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::open(storage, num_retained, cleanup, Some((restored, mode)))
    }

    fn open(
        storage: Arc<dyn CheckpointStorage>,
        num_retained: usize,
        cleanup: ExternalizedCheckpointCleanup,
        restored: Option<(&CheckpointMetadata, RestoreMode)>,
    ) -> Result<Self> {
        let span = tracing::info_span!("recover_checkpoints", storage = %storage.describe());
        let _entered = span.enter();
        let mut store = Self::new(storage, num_retained, cleanup)?;
        let ids = store.storage.list_checkpoints()?;
        let mut loaded = Vec::with_capacity(ids.len());
        for id in ids {
            match store.storage.read_metadata(id) {
                Ok(metadata) => loaded.push(metadata),
                Err(err) => {
                    tracing::warn!(
                        checkpoint_id = id.get(),
                        error = %err,
                        "skipping unreadable checkpoint on recovery; it is left in place"
                    );
                    store.skipped_on_recovery.push((id, err));
                }
            }
        }
        for metadata in &loaded {
            store.registry.register_checkpoint(metadata);
        }
        let subsumed = match restored {
            None => {
                store.retained = loaded;
                let subsumed = store.rotate();
                store.discard_subsumed();
                subsumed
            }
            Some((restored, mode)) => {
                let here = loaded.iter().position(|m| m == restored);
                if mode == RestoreMode::Claim {
                    let Some(pos) = here else {
                        return Err(StateError::invalid(format!(
                            "checkpoint {} cannot be claimed: it is not a checkpoint of {} \
                             (restore mode claim takes over only a checkpoint of the job's own \
                             checkpoint storage; restore it in no-claim mode instead)",
                            restored.checkpoint_id,
                            store.storage.describe()
                        )));
                    };
                    store.retained.push(loaded.remove(pos));
                }
                if !loaded.is_empty() {
                    tracing::info!(
                        pinned = ?loaded.iter().map(|m| m.checkpoint_id.get()).collect::<Vec<_>>(),
                        restore_mode = %mode,
                        "checkpoints that were in storage before the restore are left alone: never deleted, their files kept"
                    );
                }
                store.pinned = loaded;
                Vec::new()
            }
        };
        tracing::info!(
            storage = %store.storage.describe(),
            retained = store.retained.len(),
            subsumed = subsumed.len(),
            skipped = store.skipped_on_recovery.len(),
            shared_files = store.registry.len(),
            latest = store.latest().map(|m| m.checkpoint_id.get()),
            "recovered completed checkpoint store"
        );
        Ok(store)
    }

    /// Makes `metadata` a completed checkpoint and rotates the retained ones.
    ///
    /// Steps: the metadata is written through the storage (the moment the
    /// checkpoint exists), its shared files are registered, and every retained
    /// checkpoint beyond `num_retained` is subsumed: it is unregistered, its
    /// exclusive location is deleted, then the shared files nobody references
    /// any more. Returns the subsumed ids, oldest first.
    ///
    /// If the metadata cannot be written, everything the checkpoint wrote is
    /// discarded as by [`CompletedCheckpointStore::abort`] (best effort), no
    /// checkpoint becomes visible, and the error is returned. A failure while
    /// deleting a subsumed checkpoint is logged and does not fail the new one;
    /// a subsumed checkpoint whose location could not be deleted keeps its
    /// shared files, so it stays restorable until a later recovery subsumes it.
    ///
    /// `metadata.checkpoint_id` must be newer than [`CompletedCheckpointStore::latest`].
    /// A caller that notifies tasks of the completion uses
    /// [`CompletedCheckpointStore::complete_deferring_discard`] instead.
    pub fn complete(&mut self, metadata: CheckpointMetadata) -> Result<Vec<CheckpointId>> {
        let subsumed = self.complete_deferring_discard(metadata)?;
        self.discard_subsumed();
        Ok(subsumed)
    }

    /// [`CompletedCheckpointStore::complete`] without the deletions: the
    /// subsumed checkpoints are no longer retained and their shared files
    /// are unregistered, but their storage stays until
    /// [`CompletedCheckpointStore::discard_subsumed`], which the caller runs
    /// once it has told its tasks that the checkpoint completed. So an
    /// exactly-once sink commits without waiting for deletions, as in Flink,
    /// whose coordinator notifies first and leaves the deletion to its
    /// `CheckpointsCleaner`. A deletion still pending is done by the next
    /// completion (first thing) and by [`CompletedCheckpointStore::shutdown`].
    pub fn complete_deferring_discard(
        &mut self,
        metadata: CheckpointMetadata,
    ) -> Result<Vec<CheckpointId>> {
        self.discard_subsumed();
        let id = metadata.checkpoint_id;
        let span = tracing::info_span!(
            "complete_checkpoint",
            checkpoint_id = id.get(),
            bytes = metadata.checkpointed_size()
        );
        let _entered = span.enter();
        if let Some(latest) = self.latest()
            && id <= latest.checkpoint_id
        {
            return Err(StateError::invalid(format!(
                "checkpoint {id} cannot complete: checkpoint {} already completed and ids must increase",
                latest.checkpoint_id
            )));
        }
        if let Err(err) = self.storage.write_metadata(&metadata) {
            tracing::warn!(
                checkpoint_id = id.get(),
                error = %err,
                "writing checkpoint metadata failed; discarding the checkpoint"
            );
            let handles: Vec<KeyedStateHandle> = keyed_handles(&metadata).cloned().collect();
            if let Err(discard_err) = self.discard_unregistered(id, &handles) {
                tracing::warn!(
                    checkpoint_id = id.get(),
                    error = %discard_err,
                    "could not discard the failed checkpoint completely"
                );
            }
            return Err(err);
        }
        self.registry.register_checkpoint(&metadata);
        tracing::info!(
            checkpoint_id = id.get(),
            bytes = metadata.checkpointed_size(),
            state_bytes = metadata.state_size(),
            storage = %self.storage.describe(),
            "checkpoint completed"
        );
        self.retained.push(metadata);
        Ok(self.rotate())
    }

    /// Discards aborted checkpoint `id`: its exclusive location, and every
    /// shared file referenced by `handles` that no retained checkpoint
    /// references (the files this checkpoint uploaded itself). Idempotent.
    /// Every deletion is attempted; the first error is returned.
    ///
    /// Aborting a retained (completed) checkpoint is an error.
    pub fn abort(&mut self, id: CheckpointId, handles: &[KeyedStateHandle]) -> Result<()> {
        if self.retained.iter().any(|m| m.checkpoint_id == id) {
            return Err(StateError::invalid(format!(
                "checkpoint {id} is completed and retained; it cannot be aborted"
            )));
        }
        let span = tracing::info_span!("abort_checkpoint", checkpoint_id = id.get());
        let _entered = span.enter();
        tracing::info!("discarding aborted checkpoint");
        self.discard_unregistered(id, handles)
    }

    /// Applies the cleanup policy when the job reaches a terminal status, as
    /// Flink does for externalized checkpoints:
    ///
    /// | status     | `RetainOnCancellation` | `DeleteOnCancellation` |
    /// |------------|------------------------|------------------------|
    /// | `Finished` | delete all             | delete all             |
    /// | `Canceled` | keep all               | delete all             |
    /// | `Failed`   | keep all               | keep all               |
    ///
    /// A failed job keeps its checkpoints so it can be resumed from them; a
    /// finished one has nothing left to resume. Subsumed checkpoints whose
    /// deletion is still pending are deleted in every case. Returns the
    /// deleted retained ids. Every deletion is attempted; the first error is
    /// returned after all were tried.
    pub fn shutdown(&mut self, status: JobTerminalStatus) -> Result<Vec<CheckpointId>> {
        let delete = match status {
            JobTerminalStatus::Finished => true,
            JobTerminalStatus::Canceled => {
                self.cleanup == ExternalizedCheckpointCleanup::DeleteOnCancellation
            }
            JobTerminalStatus::Failed => false,
        };
        // Subsumed checkpoints go whatever the status: no job resumes them.
        self.discard_subsumed();
        tracing::info!(
            ?status,
            cleanup = ?self.cleanup,
            delete,
            retained = self.retained.len(),
            "shutting down completed checkpoint store"
        );
        if !delete {
            return Ok(Vec::new());
        }
        let mut first_err = None;
        let mut deleted = Vec::with_capacity(self.retained.len());
        for metadata in std::mem::take(&mut self.retained) {
            let id = metadata.checkpoint_id;
            if let Err(err) = self.discard_completed(id) {
                first_err.get_or_insert(err);
            }
            deleted.push(id);
        }
        match first_err {
            Some(err) => Err(err),
            None => Ok(deleted),
        }
    }

    /// The newest retained checkpoint.
    pub fn latest(&self) -> Option<&CheckpointMetadata> {
        self.retained.last()
    }

    /// The retained checkpoints, oldest first.
    pub fn retained(&self) -> &[CheckpointMetadata] {
        &self.retained
    }

    /// How many checkpoints are retained at most.
    pub fn num_retained(&self) -> usize {
        self.num_retained
    }

    /// The shared-state registry of the retained checkpoints.
    pub fn registry(&self) -> &SharedStateRegistry {
        &self.registry
    }

    /// The storage the checkpoints are in.
    pub fn storage(&self) -> &Arc<dyn CheckpointStorage> {
        &self.storage
    }

    /// The checkpoints the store never deletes: those that were in storage
    /// before a restore with [`CompletedCheckpointStore::recover_restoring`],
    /// except a claimed one. Ascending by id.
    pub fn pinned(&self) -> &[CheckpointMetadata] {
        &self.pinned
    }

    /// The checkpoints [`CompletedCheckpointStore::recover`] skipped because
    /// their metadata could not be read, with why.
    pub fn skipped_on_recovery(&self) -> &[(CheckpointId, StateError)] {
        &self.skipped_on_recovery
    }

    /// Subsumes every retained checkpoint beyond `num_retained`: no longer
    /// retained, its shared files unregistered, its deletion pending.
    fn rotate(&mut self) -> Vec<CheckpointId> {
        let excess = self.retained.len().saturating_sub(self.num_retained);
        let subsumed: Vec<CheckpointId> = self
            .retained
            .drain(..excess)
            .map(|m| m.checkpoint_id)
            .collect();
        for &id in &subsumed {
            let unreferenced = self.registry.unregister_checkpoint(id);
            self.subsumed.push((id, unreferenced));
        }
        subsumed
    }

    /// Deletes the storage of the checkpoints subsumed since the last call:
    /// each one's location first, then the shared files only it referenced
    /// (so a crash in between leaves no visible checkpoint whose files are
    /// missing). A failure is logged and does not fail anything: a subsumed
    /// checkpoint whose location could not be deleted keeps its shared
    /// files, so it stays restorable until a later recovery subsumes it.
    /// Returns the ids whose deletion was tried.
    pub fn discard_subsumed(&mut self) -> Vec<CheckpointId> {
        let pending = std::mem::take(&mut self.subsumed);
        let mut tried = Vec::with_capacity(pending.len());
        for (id, unreferenced) in pending {
            let result = self
                .storage
                .discard_checkpoint(id)
                .and_then(|()| discard_streams(self.storage.as_ref(), id, unreferenced.iter()));
            match result {
                Ok(()) => tracing::debug!(checkpoint_id = id.get(), "subsumed checkpoint"),
                Err(err) => tracing::warn!(
                    checkpoint_id = id.get(),
                    error = %err,
                    "could not delete subsumed checkpoint"
                ),
            }
            tried.push(id);
        }
        tried
    }

    /// Unregisters completed checkpoint `id` and deletes its location, then
    /// the shared files only it referenced. The location goes first so that a
    /// crash in between leaves no visible checkpoint whose files are missing;
    /// if it cannot be deleted the shared files are kept for the same reason.
    fn discard_completed(&mut self, id: CheckpointId) -> Result<()> {
        let unreferenced = self.registry.unregister_checkpoint(id);
        self.storage.discard_checkpoint(id)?;
        discard_streams(self.storage.as_ref(), id, unreferenced.iter())
    }

    /// Deletes the location of a checkpoint that never completed, and the
    /// shared files of `handles` that the registry does not hold.
    fn discard_unregistered(&self, id: CheckpointId, handles: &[KeyedStateHandle]) -> Result<()> {
        let location = self.storage.discard_checkpoint(id);
        let streams = handles
            .iter()
            .filter_map(|h| match h {
                KeyedStateHandle::Incremental(h) => Some(h.shared.iter()),
                KeyedStateHandle::KeyGroups(_) => None,
            })
            .flatten()
            .map(|f| &f.handle)
            .filter(|h| h.file_path().is_some_and(|p| !self.registry.contains(p)));
        let shared = discard_streams(self.storage.as_ref(), id, streams);
        location.and(shared)
    }
}

/// The keyed-state handles of every operator and subtask of a checkpoint.
fn keyed_handles(metadata: &CheckpointMetadata) -> impl Iterator<Item = &KeyedStateHandle> {
    metadata
        .operators
        .iter()
        .flat_map(|op| op.subtasks.iter())
        .flat_map(|st| st.keyed.iter())
}

/// Deletes every stream (in batches where the storage can), logging a
/// failure; returns the first error.
fn discard_streams<'a>(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
    streams: impl Iterator<Item = &'a StreamHandle>,
) -> Result<()> {
    let streams: Vec<&StreamHandle> = streams.collect();
    if streams.is_empty() {
        return Ok(());
    }
    storage.discard_streams(&streams).inspect_err(|err| {
        tracing::warn!(
            checkpoint_id = id.get(),
            streams = streams.len(),
            error = %err,
            "could not delete shared state files"
        );
    })
}

#[cfg(test)]
mod tests;
