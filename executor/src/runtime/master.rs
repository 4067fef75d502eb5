//! The job master: runs attempts of a job, drives the checkpoint coordinator
//! with a real clock, and fails over and restarts per the restart strategy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use state_core::{CheckpointId, CheckpointMetadata};
use state_core::{CompletedCheckpointStore, JobTerminalStatus};

use super::attempt::Attempt;
use super::events::{JobEvent, JobResult, JobStatus};
use super::graph::RestoreState;
use super::job_state::{AttemptEnd, HandleCommand, JobShared, JobSpec, JobState};
use crate::config::CheckpointConfig;
use crate::error::{ExecutorError, Result};
use crate::restart::{RestartDecision, RestartStrategy};

/// The job master: owns the [`JobState`] and lends it to one attempt at a
/// time.
pub(crate) struct Master {
    job: JobState,
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
            job: JobState {
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
            },
        })
    }

    /// Runs the job to a terminal status.
    pub(crate) fn run(mut self) -> Result<JobResult> {
        let strategy_config = self.job.spec.config.effective_restart_strategy();
        let seed = self.job.spec.clock.now_millis();
        let mut strategy = RestartStrategy::new(&strategy_config, seed);
        let mut restarts = 0u32;
        let mut restore = self.job.spec.restore_from.clone();
        // Checkpoints whose restore found a damaged or missing file, with
        // what is wrong: never restored again.
        let mut corrupt: BTreeMap<CheckpointId, String> = BTreeMap::new();
        let mut failure = None;
        let terminal = loop {
            if let Some(metadata) = &restore {
                tracing::info!(
                    job = %self.job.spec.config.job_id,
                    "Restoring job {} from checkpoint {}.",
                    self.job.spec.config.job_id,
                    metadata.checkpoint_id
                );
                self.job.emit(JobEvent::Restored {
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
                    if let ExecutorError::Restore { checkpoint, source } = &err {
                        tracing::warn!(
                            job = %self.job.spec.config.job_id,
                            checkpoint_id = checkpoint.get(),
                            error = %source,
                            "Checkpoint {checkpoint} cannot be restored and is skipped from now on: {source}"
                        );
                        corrupt.insert(*checkpoint, source.to_string());
                    }
                    match strategy.on_failure(self.job.spec.clock.now_millis()) {
                        RestartDecision::Restart { delay } => {
                            // A restart needs something to restore (or
                            // never had anything): decide before counting it.
                            match self.restore_target(&corrupt) {
                                Ok(target) => restore = target,
                                Err(reason) => {
                                    tracing::warn!(job = %self.job.spec.config.job_id, %reason, error = %message, "job failed for good");
                                    failure = Some(format!("{message} ({reason})"));
                                    break JobStatus::Failed;
                                }
                            }
                            restarts += 1;
                            self.job.shared.metrics.update(|m| m.restarts = restarts);
                            self.job.set_status(JobStatus::Restarting);
                            tracing::info!(
                                job = %self.job.spec.config.job_id,
                                attempt = restarts,
                                delay_ms = delay.as_millis() as u64,
                                "Restarting job {} (restart {restarts}) in {} ms after: {message}",
                                self.job.spec.config.job_id,
                                delay.as_millis()
                            );
                            self.job.emit(JobEvent::Restarting {
                                attempt: restarts,
                                delay,
                            });
                            if self.wait_or_cancel(delay) {
                                break JobStatus::Canceled;
                            }
                        }
                        RestartDecision::Fail { reason } => {
                            tracing::warn!(job = %self.job.spec.config.job_id, %reason, error = %message, "job failed for good");
                            failure = Some(format!("{message} (restart strategy: {reason})"));
                            break JobStatus::Failed;
                        }
                    }
                }
            }
        };
        // No thread of a failed-over attempt may outlive the job.
        self.job.join_reapers();
        self.job.set_status(terminal);
        let shutdown = match terminal {
            JobStatus::Finished => JobTerminalStatus::Finished,
            JobStatus::Canceled => JobTerminalStatus::Canceled,
            _ => JobTerminalStatus::Failed,
        };
        if let Err(e) = self.job.store.shutdown(shutdown) {
            tracing::warn!(error = %e, "cleaning up checkpoints at job end failed");
        }
        self.job.shared.changed.notify_all();
        Ok(JobResult {
            status: terminal,
            restarts,
            failure,
            checkpoints: self.job.completed,
            metrics: self.job.shared.metrics.snapshot(),
        })
    }

    /// The checkpoint a restart restores: the newest retained one, then the
    /// one the job started from, passing over those found `corrupt`. `None`
    /// when there was never a checkpoint (the job starts empty again); an
    /// error naming each damaged checkpoint when all of them are.
    fn restore_target(
        &self,
        corrupt: &BTreeMap<CheckpointId, String>,
    ) -> std::result::Result<Option<CheckpointMetadata>, String> {
        let candidates: Vec<&CheckpointMetadata> = self
            .job
            .store
            .retained()
            .iter()
            .rev()
            .chain(self.job.spec.restore_from.as_ref())
            .collect();
        if let Some(intact) = candidates
            .iter()
            .find(|m| !corrupt.contains_key(&m.checkpoint_id))
        {
            if let Some(newest) = candidates.first()
                && newest.checkpoint_id != intact.checkpoint_id
            {
                tracing::warn!(
                    job = %self.job.spec.config.job_id,
                    checkpoint_id = intact.checkpoint_id.get(),
                    "Restoring checkpoint {} instead of the newer damaged ones.",
                    intact.checkpoint_id
                );
            }
            return Ok(Some((*intact).clone()));
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let damaged = corrupt
            .iter()
            .rev()
            .map(|(id, why)| format!("checkpoint {id}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(format!(
            "no intact checkpoint left to restore from: {damaged}"
        ))
    }

    /// Waits `delay`, serving handle commands; true if the job was cancelled.
    fn wait_or_cancel(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.job.commands.recv_timeout(left) {
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
        let attempt = Attempt::start(&mut self.job, restore);
        let mut attempt = match attempt {
            Ok(a) => a,
            Err(e) => {
                self.job.set_status(JobStatus::Failing);
                return AttemptEnd::Failed(e);
            }
        };
        self.job.set_status(JobStatus::Running);
        let end = attempt.drive(&mut self.job);
        attempt.stop(&mut self.job);
        end
    }
}
