//! The plain state of a running job that the job master and its attempts
//! both work on: the job's spec, what the master shares with the
//! [`crate::JobHandle`], and [`JobState`], which the master lends to each
//! attempt (so an attempt never sees the master's restart loop).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use state_core::CompletedCheckpointStore;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, Clock, MaxParallelism, RestoreMode,
    SnapshotMode,
};

use super::events::{CompletedCheckpointInfo, JobEvent, JobStatus};
use super::graph::JobGraph;
use crate::config::{CheckpointConfig, JobConfig};
use crate::error::{ExecutorError, Result};
use crate::job::savepoint::{SavepointInfo, SavepointTarget};
use crate::metrics::MetricsRegistry;

/// A command from a [`crate::JobHandle`].
#[derive(Debug)]
pub(crate) enum HandleCommand {
    Trigger(Sender<Result<CheckpointId>>),
    /// A savepoint; with `stop`, the job ends FINISHED once it completed.
    Savepoint {
        target: SavepointTarget,
        stop: bool,
        reply: Sender<Result<SavepointInfo>>,
    },
    Cancel,
}

/// State shared between the master and the job handle.
#[derive(Debug)]
pub(crate) struct JobShared {
    pub status: Mutex<JobStatus>,
    /// Outcome of every checkpoint: `Ok` completed, `Err` failed.
    pub checkpoints:
        Mutex<HashMap<CheckpointId, std::result::Result<CompletedCheckpointInfo, String>>>,
    pub changed: Condvar,
    pub metrics: Arc<MetricsRegistry>,
}

impl JobShared {
    pub(crate) fn new(metrics: Arc<MetricsRegistry>) -> Self {
        JobShared {
            status: Mutex::new(JobStatus::Created),
            checkpoints: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            metrics,
        }
    }

    pub(crate) fn status(&self) -> JobStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(
        &self,
        id: CheckpointId,
        outcome: std::result::Result<CompletedCheckpointInfo, String>,
    ) {
        self.checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, outcome);
        self.changed.notify_all();
    }
}

/// Everything the master needs to run a job.
pub(crate) struct JobSpec {
    pub graph: JobGraph,
    pub config: JobConfig,
    pub storage: Arc<dyn CheckpointStorage>,
    pub clock: Arc<dyn Clock>,
    pub start: StartFrom,
    pub snapshot_mode: SnapshotMode,
    pub max_parallelism: MaxParallelism,
}

/// What state a job starts with.
pub(crate) enum StartFrom {
    /// Empty state; refused when the job's storage already holds checkpoints.
    Empty,
    /// A checkpoint the user named: in the job's storage (`storage` `None`)
    /// or in another one.
    Checkpoint {
        metadata: CheckpointMetadata,
        storage: Option<Arc<dyn CheckpointStorage>>,
        mode: RestoreMode,
    },
    /// The newest intact retained checkpoint of the job's storage, or empty
    /// state when there is none.
    Resume,
}

/// How an attempt ended.
pub(crate) enum AttemptEnd {
    Finished,
    Canceled,
    Failed(ExecutorError),
}

/// What the job master keeps of a running job, lent to each attempt: its
/// spec, what it shares with the handle, the checkpoint store, and the
/// progress that outlives attempts (checkpoint ids, completed checkpoints,
/// status, task threads still freeing their state).
pub(crate) struct JobState {
    /// The job.
    pub(crate) spec: JobSpec,
    /// Shared with the job handle.
    pub(crate) shared: Arc<JobShared>,
    pub(crate) events: Sender<JobEvent>,
    pub(crate) commands: Receiver<HandleCommand>,
    pub(crate) store: CompletedCheckpointStore,
    pub(crate) next_id: CheckpointId,
    pub(crate) completed: Vec<CompletedCheckpointInfo>,
    pub(crate) status: JobStatus,
    pub(crate) started: Instant,
    pub(crate) checkpoint_config: CheckpointConfig,
    /// Task threads of failed-over attempts still freeing their state. A
    /// failover does not wait for them; an attempt that ends other than by
    /// failing, and the end of the job, join them.
    pub(crate) reapers: Vec<std::thread::JoinHandle<()>>,
}

/// Milliseconds since `since`, saturating.
pub(crate) fn elapsed_millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl JobState {
    pub(crate) fn set_status(&mut self, to: JobStatus) {
        let from = self.status;
        if from == to {
            return;
        }
        self.status = to;
        *self.shared.status.lock().unwrap_or_else(|p| p.into_inner()) = to;
        self.shared.changed.notify_all();
        tracing::info!(job = %self.spec.config.job_id, "Job {} switched from state {from} to {to}.", self.spec.config.job_id);
        self.emit(JobEvent::StatusChanged { from, to });
    }

    pub(crate) fn emit(&self, event: JobEvent) {
        let _ = self.events.send(event);
    }

    /// Joins the task threads of this job's failed-over attempts that are
    /// still freeing their state (see [`JobState::reapers`]), so none
    /// outlives the job.
    pub(crate) fn join_reapers(&mut self) {
        for thread in self.reapers.drain(..) {
            let _ = thread.join();
        }
    }
}
