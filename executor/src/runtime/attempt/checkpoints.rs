//! The checkpoint side of an attempt: triggering at the sources, discarding
//! failed checkpoints, and completing acknowledged ones.

use std::time::Duration;

use state_core::OperatorSnapshot;
use state_core::{CheckpointId, CheckpointMetadata, KeyedStateHandle, OperatorId, SnapshotKind};

use super::{Attempt, FINAL_CHECKPOINT_RETRY_MS, FinalCheckpoint};
use crate::error::ExecutorError;
use crate::runtime::coordinator::FailedCheckpoint;
use crate::runtime::events::{CompletedCheckpointInfo, JobEvent};
use crate::runtime::job_state::{JobState, elapsed_millis};
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
        let timestamp = job.spec.clock.now_millis();
        if let Err(e) = job.spec.storage.initialize_checkpoint(id) {
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
            "Triggering checkpoint {id} (type=CHECKPOINT) @ {timestamp} for job {}.",
            job.spec.config.job_id
        );
        job.emit(JobEvent::CheckpointTriggered {
            id,
            timestamp_millis: timestamp,
        });
        for &s in &self.sources {
            if let Some((_, _, tx)) = self.tasks.get(s) {
                let _ = tx.send(TaskCommand::Trigger { id, timestamp });
            }
        }
        None
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
        let older: Vec<CheckpointId> = self
            .coordinator
            .pending()
            .into_iter()
            .filter(|&id| id < completed)
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

    pub(super) fn finalize(
        &mut self,
        job: &mut JobState,
        id: CheckpointId,
        acks: Vec<Vec<AckedState>>,
        duration: Duration,
    ) -> Option<ExecutorError> {
        let timestamp = self.timestamps.remove(&id).unwrap_or(0);
        let mut operators: Vec<OperatorSnapshot> = Vec::new();
        let order: Vec<&OperatorId> = job.spec.graph.operators.iter().map(|(u, _)| u).collect();
        let mut incremental = false;
        for state in acks.into_iter().flatten() {
            incremental |= state
                .snapshot
                .keyed
                .iter()
                .any(|h| matches!(h, KeyedStateHandle::Incremental(_)));
            match operators
                .iter_mut()
                .find(|o| o.operator_id == state.operator)
            {
                Some(op) => op.subtasks.push(state.snapshot),
                None => operators.push(OperatorSnapshot {
                    operator_id: state.operator,
                    parallelism: state.parallelism,
                    max_parallelism: state.max_parallelism,
                    subtasks: vec![state.snapshot],
                }),
            }
        }
        operators.sort_by_key(|o| order.iter().position(|u| **u == o.operator_id));
        for op in &mut operators {
            op.subtasks.sort_by_key(|s| s.subtask);
        }
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            job_id: job.spec.config.job_id.clone(),
            timestamp_millis: timestamp,
            kind: if incremental {
                SnapshotKind::Incremental
            } else {
                SnapshotKind::Full
            },
            operators,
        };
        let bytes = metadata.checkpointed_size();
        let state_size = metadata.state_size();
        let subsumed = match job.store.complete(metadata) {
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
        for (_, _, tx) in &self.tasks {
            let _ = tx.send(TaskCommand::Complete(id));
            for old in &subsumed {
                let _ = tx.send(TaskCommand::Subsumed(*old));
            }
        }
        None
    }
}
