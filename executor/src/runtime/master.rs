//! The job master: runs attempts of a job, drives the checkpoint coordinator
//! with a real clock, and fails over and restarts per the restart strategy.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, Clock, MaxParallelism, SnapshotMode,
};
use state_core::{CompletedCheckpointStore, JobTerminalStatus};

use super::attempt::Attempt;
use super::events::{CompletedCheckpointInfo, JobEvent, JobResult, JobStatus};
use super::graph::{JobGraph, RestoreState};
use crate::config::{CheckpointConfig, JobConfig};
use crate::error::{ExecutorError, Result};
use crate::metrics::MetricsRegistry;
use crate::restart::{RestartDecision, RestartStrategy};

/// A command from a [`crate::job::JobHandle`].
#[derive(Debug)]
pub(crate) enum HandleCommand {
    Trigger(Sender<Result<CheckpointId>>),
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

    pub(super) fn record(
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
    pub restore_from: Option<CheckpointMetadata>,
    pub snapshot_mode: SnapshotMode,
    pub max_parallelism: MaxParallelism,
}

pub(crate) enum AttemptEnd {
    Finished,
    Canceled,
    Failed(ExecutorError),
}

pub(crate) struct Master {
    pub(super) spec: JobSpec,
    pub(super) shared: Arc<JobShared>,
    pub(super) events: Sender<JobEvent>,
    pub(super) commands: Receiver<HandleCommand>,
    pub(super) store: CompletedCheckpointStore,
    pub(super) next_id: CheckpointId,
    pub(super) completed: Vec<CompletedCheckpointInfo>,
    pub(super) status: JobStatus,
    pub(super) started: Instant,
    pub(super) checkpoint_config: CheckpointConfig,
    /// Task threads of failed-over attempts still freeing their state. A
    /// failover does not wait for them; an attempt that ends other than by
    /// failing, and the end of the job, join them.
    pub(super) reapers: Vec<std::thread::JoinHandle<()>>,
}

pub(super) fn elapsed_millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Master {
    pub(crate) fn new(
        spec: JobSpec,
        shared: Arc<JobShared>,
        events: Sender<JobEvent>,
        commands: Receiver<HandleCommand>,
    ) -> Result<Self> {
        let checkpoint_config =
            spec.config.checkpointing.clone().unwrap_or_else(|| {
                CheckpointConfig::every(Duration::from_secs(u64::from(u32::MAX)))
            });
        let store = CompletedCheckpointStore::new(
            spec.storage.clone(),
            checkpoint_config.retained,
            checkpoint_config.cleanup,
        )?;
        let listed = spec
            .storage
            .list_checkpoints()?
            .last()
            .map_or(0, |id| id.get());
        let restored = spec
            .restore_from
            .as_ref()
            .map_or(0, |m| m.checkpoint_id.get());
        Ok(Master {
            next_id: CheckpointId(listed.max(restored) + 1),
            spec,
            shared,
            events,
            commands,
            store,
            completed: Vec::new(),
            status: JobStatus::Created,
            started: Instant::now(),
            checkpoint_config,
            reapers: Vec::new(),
        })
    }

    pub(super) fn set_status(&mut self, to: JobStatus) {
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

    pub(super) fn emit(&self, event: JobEvent) {
        let _ = self.events.send(event);
    }

    /// Runs the job to a terminal status.
    pub(crate) fn run(mut self) -> Result<JobResult> {
        let strategy_config = self.spec.config.effective_restart_strategy();
        let seed = self.spec.clock.now_millis();
        let mut strategy = RestartStrategy::new(&strategy_config, seed);
        let mut restarts = 0u32;
        let mut restore = self.spec.restore_from.clone();
        let mut failure = None;
        let terminal = loop {
            if let Some(metadata) = &restore {
                tracing::info!(
                    job = %self.spec.config.job_id,
                    "Restoring job {} from checkpoint {}.",
                    self.spec.config.job_id,
                    metadata.checkpoint_id
                );
                self.emit(JobEvent::Restored {
                    checkpoint: metadata.checkpoint_id,
                });
            }
            let restore_state = restore
                .clone()
                .map(|metadata| Arc::new(RestoreState { metadata }));
            match self.run_attempt(restore_state) {
                AttemptEnd::Finished => break JobStatus::Finished,
                AttemptEnd::Canceled => break JobStatus::Canceled,
                AttemptEnd::Failed(err) => {
                    let message = err.to_string();
                    match strategy.on_failure(self.spec.clock.now_millis()) {
                        RestartDecision::Restart { delay } => {
                            restarts += 1;
                            self.shared.metrics.update(|m| m.restarts = restarts);
                            self.set_status(JobStatus::Restarting);
                            tracing::info!(
                                job = %self.spec.config.job_id,
                                attempt = restarts,
                                delay_ms = delay.as_millis() as u64,
                                "Restarting job {} (restart {restarts}) in {} ms after: {message}",
                                self.spec.config.job_id,
                                delay.as_millis()
                            );
                            self.emit(JobEvent::Restarting {
                                attempt: restarts,
                                delay,
                            });
                            if self.wait_or_cancel(delay) {
                                break JobStatus::Canceled;
                            }
                            restore = self
                                .store
                                .latest()
                                .cloned()
                                .or_else(|| self.spec.restore_from.clone());
                        }
                        RestartDecision::Fail { reason } => {
                            tracing::warn!(job = %self.spec.config.job_id, %reason, error = %message, "job failed for good");
                            failure = Some(format!("{message} (restart strategy: {reason})"));
                            break JobStatus::Failed;
                        }
                    }
                }
            }
        };
        // No thread of a failed-over attempt may outlive the job.
        super::attempt::join_reapers(&mut self);
        self.set_status(terminal);
        let shutdown = match terminal {
            JobStatus::Finished => JobTerminalStatus::Finished,
            JobStatus::Canceled => JobTerminalStatus::Canceled,
            _ => JobTerminalStatus::Failed,
        };
        if let Err(e) = self.store.shutdown(shutdown) {
            tracing::warn!(error = %e, "cleaning up checkpoints at job end failed");
        }
        self.shared.changed.notify_all();
        Ok(JobResult {
            status: terminal,
            restarts,
            failure,
            checkpoints: self.completed,
            metrics: self.shared.metrics.snapshot(),
        })
    }

    /// Waits `delay`, serving handle commands; true if the job was cancelled.
    fn wait_or_cancel(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.commands.recv_timeout(left) {
                Ok(HandleCommand::Cancel) => return true,
                Ok(HandleCommand::Trigger(reply)) => {
                    let _ = reply.send(Err(ExecutorError::InvalidJob(
                        "cannot trigger a checkpoint while the job is restarting".into(),
                    )));
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
                // The handle is gone: keep waiting out the delay.
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    return false;
                }
            }
        }
    }

    fn run_attempt(&mut self, restore: Option<Arc<RestoreState>>) -> AttemptEnd {
        let attempt = Attempt::start(self, restore);
        let mut attempt = match attempt {
            Ok(a) => a,
            Err(e) => {
                self.set_status(JobStatus::Failing);
                return AttemptEnd::Failed(e);
            }
        };
        self.set_status(JobStatus::Running);
        let end = attempt.drive(self);
        attempt.stop(self);
        end
    }
}
