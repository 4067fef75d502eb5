//! Job statuses, the events a running job reports, and its result.

use std::fmt;
use std::time::Duration;

use state_core::CheckpointId;

use crate::metrics::JobMetrics;

/// The status of a job (Flink's `JobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Built, not started.
    Created,
    /// Every task is running.
    Running,
    /// A task failed; the tasks are being cancelled.
    Failing,
    /// Waiting out the restart delay before recreating the tasks.
    Restarting,
    /// Cancelled by the user (terminal).
    Canceled,
    /// Failed for good: the restart strategy gave up (terminal).
    Failed,
    /// Every bounded input ended and every task drained (terminal).
    Finished,
}

impl JobStatus {
    /// Whether the job can no longer change status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Canceled | JobStatus::Failed | JobStatus::Finished
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Failed => "FAILED",
            JobStatus::Finished => "FINISHED",
        })
    }
}

/// A completed checkpoint, as the job reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpointInfo {
    /// The checkpoint.
    pub id: CheckpointId,
    /// When it was triggered, by the job's clock (ms).
    pub timestamp_millis: u64,
    /// Bytes this checkpoint wrote.
    pub bytes: u64,
    /// Full state size (shared files included).
    pub state_size: u64,
    /// From trigger to completion.
    pub duration: Duration,
}

/// Something that happened to a running job, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The job changed status.
    StatusChanged {
        /// The status before.
        from: JobStatus,
        /// The status now.
        to: JobStatus,
    },
    /// Checkpoint `id` was triggered at the sources.
    CheckpointTriggered {
        /// The checkpoint.
        id: CheckpointId,
        /// Its timestamp, by the job's clock (ms).
        timestamp_millis: u64,
    },
    /// Checkpoint `id` completed; its metadata is durable.
    CheckpointCompleted(CompletedCheckpointInfo),
    /// Checkpoint `id` failed, expired or was aborted; its files were discarded.
    CheckpointFailed {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
    },
    /// A task failed, failing the job attempt.
    TaskFailed {
        /// The task (`uid (subtask/parallelism)`) or operator.
        task: String,
        /// The error.
        message: String,
    },
    /// The restart strategy decided to restart.
    Restarting {
        /// The restart number (1 for the first restart).
        attempt: u32,
        /// The wait before the restart.
        delay: Duration,
    },
    /// The tasks of a new attempt restore from checkpoint `id`.
    Restored {
        /// The checkpoint restored from.
        checkpoint: CheckpointId,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The terminal status.
    pub status: JobStatus,
    /// Restarts that happened.
    pub restarts: u32,
    /// The error that failed the job for good (status FAILED), or the last
    /// failure when the restart strategy gave up.
    pub failure: Option<String>,
    /// Whether the failure is one no restart can fix
    /// ([`ExecutorError::is_permanent`](crate::ExecutorError::is_permanent)):
    /// the job failed at once, without restarting. `cairn run` exits 2 then.
    pub permanent_failure: bool,
    /// Every checkpoint completed during the run, in order.
    pub checkpoints: Vec<CompletedCheckpointInfo>,
    /// The final metrics.
    pub metrics: JobMetrics,
}
