//! The checkpoint side of an attempt: triggering at the sources, discarding
//! failed checkpoints, and completing acknowledged ones.

use std::time::Duration;

use crossbeam_channel::Sender;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, KeyedStateHandle, OperatorId,
};

use super::{Attempt, FINAL_CHECKPOINT_RETRY_MS, FinalCheckpoint};
use crate::error::{ExecutorError, Result};
use crate::job::savepoint::{SavepointInfo, SavepointTarget};
use crate::runtime::coordinator::FailedCheckpoint;
use crate::runtime::events::{CompletedCheckpointInfo, JobEvent};
use crate::runtime::job_state::{JobState, elapsed_millis};
use crate::runtime::savepoint::PendingSavepoint;
use crate::runtime::task::{AckedState, TaskCommand};

/// Why in-flight checkpoints are aborted once a task finished (no
/// checkpoints after a task ended, as in Flink before 1.14).
pub(super) const ENDED_BEFORE_COMPLETION: &str = "a task finished before the checkpoint completed";

/// Why in-flight checkpoints are aborted when the job is cancelled or ends.
pub(super) const JOB_STOPPED: &str = "the job stopped";

/// How the reason for aborting a checkpoint overtaken by a newer one ends.
const OVERTAKEN: &str = "completed first";

impl Attempt {
    pub(super) fn trigger(
        &mut self,
        job: &mut JobState,
        id: CheckpointId,
    ) -> Option<ExecutorError> {
        let storage = job.spec.storage.clone();
        self.trigger_into(job, id, storage.as_ref(), "CHECKPOINT", false)
    }

    /// Triggers checkpoint `id` at the sources, its streams going to
    /// `storage`; with `stop`, the sources stop reading after its barrier.
    fn trigger_into(
        &mut self,
        job: &mut JobState,
        id: CheckpointId,
        storage: &dyn CheckpointStorage,
        kind: &str,
        stop: bool,
    ) -> Option<ExecutorError> {
        let timestamp = job.spec.clock.now_millis();
        if let Err(e) = storage.initialize_checkpoint(id) {
            let now = elapsed_millis(job.started);
            let failed = self.coordinator.fail(
                id,
                format!("cannot initialize the checkpoint location: {e}"),
                now,
            )?;
            return self.failed_checkpoint(job, failed);
        }
        self.timestamps.insert(id, timestamp);
        tracing::info!(
            job = %job.spec.config.job_id,
            checkpoint_id = id.get(),
            "Triggering checkpoint {id} (type={kind}) @ {timestamp} for job {}.",
            job.spec.config.job_id
        );
        job.emit(JobEvent::CheckpointTriggered {
            id,
            timestamp_millis: timestamp,
        });
        for &s in &self.sources {
            if let Some((_, _, tx)) = self.tasks.get(s) {
                let _ = tx.send(TaskCommand::Trigger {
                    id,
                    timestamp,
                    stop,
                });
            }
        }
        None
    }

    /// Takes a savepoint: opens its storage for the next checkpoint id and
    /// triggers it; `reply` gets the outcome. A storage that cannot be
    /// opened fails the savepoint, never the job.
    pub(super) fn trigger_savepoint(
        &mut self,
        job: &mut JobState,
        target: SavepointTarget,
        stop: bool,
        reply: Sender<Result<SavepointInfo>>,
    ) -> Option<ExecutorError> {
        let format = target.format();
        let id = self.coordinator.next_checkpoint_id();
        let storage = match target.open(id) {
            Ok(storage) => storage,
            Err(e) => {
                let _ = reply.send(Err(ExecutorError::Checkpoint {
                    checkpoint: id,
                    reason: format!("cannot open the savepoint's storage: {e}"),
                }));
                return None;
            }
        };
        let id = self.coordinator.trigger_now(elapsed_millis(job.started));
        tracing::info!(
            job = %job.spec.config.job_id,
            checkpoint_id = id.get(),
            %format,
            stop,
            "Triggering a {format} savepoint {id} into {}{}.",
            storage.describe(),
            if stop { " and stopping the job after it" } else { "" }
        );
        self.savepoints
            .insert(id, storage.clone(), format.snapshot_mode());
        self.pending_savepoints.insert(
            id,
            PendingSavepoint {
                storage: storage.clone(),
                format,
                stop,
                reply,
            },
        );
        let kind = if stop {
            "SUSPEND_SAVEPOINT"
        } else {
            "SAVEPOINT"
        };
        self.trigger_into(job, id, storage.as_ref(), kind, stop)
    }

    /// An acknowledgement of a checkpoint that is no longer pending (it
    /// failed or was aborted meanwhile): its files go, unless it is retained.
    pub(super) fn discard_late_ack(
        &self,
        job: &mut JobState,
        id: CheckpointId,
        states: &[AckedState],
    ) {
        let handles: Vec<KeyedStateHandle> = states
            .iter()
            .flat_map(|s| s.snapshot.keyed.iter().cloned())
            .collect();
        if self.savepoints.contains(id) {
            let storage = self.savepoints.storage(id, &job.spec.storage);
            discard_savepoint(storage.as_ref(), id, &handles);
        } else if !job.store.retained().iter().any(|m| m.checkpoint_id == id) {
            let _ = job.store.abort(id, &handles);
        }
    }

    /// Checkpoint `completed` completed: older checkpoints still in flight
    /// can no longer complete (ids must increase) and are aborted without
    /// counting as failures, as Flink subsumes them. Their files go; a
    /// sink's pending output of theirs was committed with `completed`.
    pub(super) fn abort_overtaken(
        &mut self,
        job: &mut JobState,
        completed: CheckpointId,
    ) -> Option<ExecutorError> {
        // A savepoint is not overtaken: its files are its own, and
        // checkpoints wait while it is in flight.
        let older: Vec<CheckpointId> = self
            .coordinator
            .pending()
            .into_iter()
            .filter(|&id| id < completed && !self.savepoints.contains(id))
            .collect();
        for id in older {
            let reason = format!("checkpoint {completed}, triggered after it, {OVERTAKEN}");
            if let Some(failed) = self.coordinator.abort(id, reason)
                && let Some(e) = self.failed_checkpoint(job, failed)
            {
                return Some(e);
            }
        }
        None
    }

    /// Every input ended: triggers the final checkpoint now.
    pub(super) fn trigger_final(&mut self, job: &mut JobState, now: u64) -> Option<ExecutorError> {
        let id = self.coordinator.trigger_now(now);
        tracing::info!(
            job = %job.spec.config.job_id,
            checkpoint_id = id.get(),
            "Every input of job {} ended: taking the final checkpoint {id}.",
            job.spec.config.job_id
        );
        self.final_checkpoint = FinalCheckpoint::InFlight(id);
        self.trigger(job, id)
    }

    /// Tells the sources to end the stream: the final checkpoint completed
    /// (and its completion was sent to every task before this), or the job
    /// takes no checkpoints.
    pub(super) fn finish_sources(&mut self, job: &JobState) {
        tracing::debug!(job = %job.spec.config.job_id, "ending the streams");
        self.final_checkpoint = FinalCheckpoint::Done;
        for &s in &self.sources {
            if let Some((_, _, tx)) = self.tasks.get(s) {
                let _ = tx.send(TaskCommand::Finish);
            }
        }
    }

    /// Discards a failed checkpoint; returns the error that fails the job
    /// when too many failed in a row.
    pub(super) fn failed_checkpoint(
        &mut self,
        job: &mut JobState,
        failed: FailedCheckpoint<Vec<AckedState>>,
    ) -> Option<ExecutorError> {
        let FailedCheckpoint {
            id,
            reason,
            acks,
            fail_job,
        } = failed;
        if let Some(savepoint) = self.pending_savepoints.remove(&id) {
            self.failed_savepoint(job, id, savepoint, reason, &acks);
            return None;
        }
        if reason == ENDED_BEFORE_COMPLETION || reason == JOB_STOPPED || reason.ends_with(OVERTAKEN)
        {
            // Expected at the end of every bounded job: not worth a warning.
            tracing::info!(checkpoint_id = id.get(), %reason, "Checkpoint {id} of job {} aborted: {reason}", job.spec.config.job_id);
        } else {
            tracing::warn!(checkpoint_id = id.get(), %reason, "Checkpoint {id} of job {} failed: {reason}", job.spec.config.job_id);
        }
        self.timestamps.remove(&id);
        if self.final_checkpoint == FinalCheckpoint::InFlight(id) {
            let at = elapsed_millis(job.started) + FINAL_CHECKPOINT_RETRY_MS;
            self.final_checkpoint = FinalCheckpoint::Wanted { at };
        }
        let handles: Vec<KeyedStateHandle> = acks
            .iter()
            .flatten()
            .flat_map(|s| s.snapshot.keyed.iter().cloned())
            .collect();
        if let Err(e) = job.store.abort(id, &handles) {
            tracing::warn!(checkpoint_id = id.get(), error = %e, "discarding the failed checkpoint failed");
        }
        for (_, _, tx) in &self.tasks {
            let _ = tx.send(TaskCommand::Abort(id));
        }
        job.shared.metrics.update(|m| m.checkpoints_failed += 1);
        job.shared.record(id, Err(reason.clone()));
        job.emit(JobEvent::CheckpointFailed {
            id,
            reason: reason.clone(),
        });
        fail_job.then(|| ExecutorError::Checkpoint {
            checkpoint: id,
            reason: format!(
                "{reason}; exceeded the tolerable failed checkpoints ({})",
                job.checkpoint_config.tolerable_failures
            ),
        })
    }

    /// Savepoint `id` failed: its files go, whoever waits is told why, the
    /// tasks are told it was aborted (stopped sources read on), and the job
    /// runs on: a failed savepoint never counts as a failed checkpoint.
    fn failed_savepoint(
        &mut self,
        job: &mut JobState,
        id: CheckpointId,
        savepoint: PendingSavepoint,
        reason: String,
        acks: &[Vec<AckedState>],
    ) {
        tracing::warn!(checkpoint_id = id.get(), %reason, "Savepoint {id} of job {} failed: {reason}", job.spec.config.job_id);
        self.timestamps.remove(&id);
        let handles: Vec<KeyedStateHandle> = acks
            .iter()
            .flatten()
            .flat_map(|s| s.snapshot.keyed.iter().cloned())
            .collect();
        discard_savepoint(savepoint.storage.as_ref(), id, &handles);
        for (_, _, tx) in &self.tasks {
            let _ = tx.send(TaskCommand::Abort(id));
        }
        job.shared.record(id, Err(reason.clone()));
        job.emit(JobEvent::CheckpointFailed {
            id,
            reason: reason.clone(),
        });
        let _ = savepoint.reply.send(Err(ExecutorError::Checkpoint {
            checkpoint: id,
            reason,
        }));
    }

    /// Writes savepoint `id`'s metadata into its own storage (never the
    /// job's store: the job neither retains nor deletes it) and tells every
    /// task it completed.
    fn finalize_savepoint(
        &mut self,
        job: &mut JobState,
        savepoint: PendingSavepoint,
        metadata: CheckpointMetadata,
        duration: Duration,
    ) {
        let id = metadata.checkpoint_id;
        let bytes = metadata.checkpointed_size();
        if let Err(e) = savepoint.storage.write_metadata(&metadata) {
            let reason = format!("writing the savepoint metadata failed: {e}");
            let handles: Vec<KeyedStateHandle> = metadata
                .operators
                .iter()
                .flat_map(|op| &op.subtasks)
                .flat_map(|s| s.keyed.iter().cloned())
                .collect();
            discard_savepoint(savepoint.storage.as_ref(), id, &handles);
            self.failed_savepoint(job, id, savepoint, reason, &[]);
            return;
        }
        let location = savepoint.storage.describe();
        tracing::info!(
            job = %job.spec.config.job_id,
            checkpoint_id = id.get(),
            bytes,
            duration_ms = duration.as_millis() as u64,
            "Completed {} savepoint {id} for job {} at {location} ({bytes} bytes in {} ms).",
            savepoint.format,
            job.spec.config.job_id,
            duration.as_millis()
        );
        for (_, _, tx) in &self.tasks {
            let _ = tx.send(TaskCommand::Complete(id));
        }
        if savepoint.stop {
            self.stopped_with_savepoint = Some(id);
        }
        let info = SavepointInfo {
            id,
            format: savepoint.format,
            location,
            bytes,
            duration,
        };
        let _ = savepoint.reply.send(Ok(info));
    }

    pub(super) fn finalize(
        &mut self,
        job: &mut JobState,
        id: CheckpointId,
        acks: Vec<Vec<AckedState>>,
        duration: Duration,
    ) -> Option<ExecutorError> {
        let timestamp = self.timestamps.remove(&id).unwrap_or(0);
        let order: Vec<&OperatorId> = job.spec.graph.operators.iter().map(|(u, _)| u).collect();
        let metadata = CheckpointMetadata::from_parts(
            id,
            job.spec.config.job_id.clone(),
            timestamp,
            acks.into_iter().flatten(),
            |uid| order.iter().position(|u| *u == uid),
        );
        if let Some(savepoint) = self.pending_savepoints.remove(&id) {
            self.finalize_savepoint(job, savepoint, metadata, duration);
            return None;
        }
        let bytes = metadata.checkpointed_size();
        let state_size = metadata.state_size();
        let subsumed = match job.store.complete_deferring_discard(metadata) {
            Ok(subsumed) => subsumed,
            Err(e) => {
                let now = elapsed_millis(job.started);
                let fail_job = self.coordinator.record_finalize_failure(now);
                let reason = format!("writing the checkpoint metadata failed: {e}");
                return self.failed_checkpoint(
                    job,
                    FailedCheckpoint {
                        id,
                        reason,
                        acks: Vec::new(),
                        fail_job,
                    },
                );
            }
        };
        // The tasks hear first (an exactly-once sink commits on it), then
        // the subsumed checkpoints are deleted, then the job records the
        // completion (so whoever waits for it sees the rotated storage).
        for (_, _, tx) in &self.tasks {
            let _ = tx.send(TaskCommand::Complete(id));
            for old in &subsumed {
                let _ = tx.send(TaskCommand::Subsumed(*old));
            }
        }
        job.store.discard_subsumed();
        tracing::info!(
            job = %job.spec.config.job_id,
            checkpoint_id = id.get(),
            bytes,
            duration_ms = duration.as_millis() as u64,
            "Completed checkpoint {id} for job {} ({bytes} bytes in {} ms).",
            job.spec.config.job_id,
            duration.as_millis()
        );
        let info = CompletedCheckpointInfo {
            id,
            timestamp_millis: timestamp,
            bytes,
            state_size,
            duration,
        };
        job.shared.metrics.update(|m| {
            m.checkpoints_completed += 1;
            m.last_checkpoint_duration = Some(duration);
            m.last_checkpoint_size = Some(bytes);
            m.state_size = Some(state_size);
        });
        job.completed.push(info.clone());
        job.shared.record(id, Ok(info.clone()));
        job.emit(JobEvent::CheckpointCompleted(info));
        None
    }
}

/// Deletes what an unfinished savepoint wrote into its own storage: its
/// keyed streams (a native savepoint's `shared/` files are its own) and its
/// `chk-<n>` location. Failures are logged: the savepoint is not one, and
/// what is left is in the user's directory, never the job's.
fn discard_savepoint(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
    handles: &[KeyedStateHandle],
) {
    for handle in handles {
        for stream in handle.streams() {
            if let Err(e) = storage.discard_stream(stream) {
                tracing::warn!(checkpoint_id = id.get(), stream = %stream.describe(), error = %e, "could not delete a file of a failed savepoint");
            }
        }
    }
    if let Err(e) = storage.discard_checkpoint(id) {
        tracing::warn!(checkpoint_id = id.get(), error = %e, "could not delete a failed savepoint");
    }
}
