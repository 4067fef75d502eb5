//! The job master: runs attempts of a job, drives the checkpoint coordinator
//! with a real clock, and fails over and restarts per the restart strategy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use state_core::CheckpointId;
use state_core::{CompletedCheckpointStore, JobTerminalStatus, RestoreMode, load_verified};

use super::attempt::Attempt;
use super::events::{JobEvent, JobResult, JobStatus};
use super::graph::{RestoreState, check_restored_operators};
use super::job_state::{AttemptEnd, HandleCommand, JobShared, JobSpec, JobState, StartFrom};
use crate::config::CheckpointConfig;
use crate::error::{ExecutorError, Result};
use crate::restart::{RestartDecision, RestartStrategy};

/// The job master: owns the [`JobState`] and lends it to one attempt at a
/// time.
pub(crate) struct Master {
    job: JobState,
    /// What the first attempt restores.
    first: Option<Arc<RestoreState>>,
    /// A checkpoint the job restored from that is not one of its retained
    /// ones (no-claim mode): the fallback for failover until one completes.
    unowned: Option<Arc<RestoreState>>,
    /// Checkpoints whose restore found a damaged or missing file, with what
    /// is wrong: never restored again.
    corrupt: BTreeMap<CheckpointId, String>,
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
        let listed = spec.storage.list_checkpoints()?;
        let (store, first, corrupt) = open_store(&spec, &checkpoint_config, &listed)?;
        if let Some(restore) = &first {
            check_restored_operators(
                &spec.graph,
                &restore.metadata,
                spec.config.allow_non_restored_state,
            )?;
            check_max_parallelism(&spec, &restore.metadata)?;
        }
        let newest_listed = listed.last().map_or(0, |id| id.get());
        let restored = first.as_ref().map_or(0, |r| r.metadata.checkpoint_id.get());
        let unowned = first.clone().filter(|r| !r.owned);
        Ok(Master {
            job: JobState {
                next_id: CheckpointId(newest_listed.max(restored) + 1),
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
            first,
            unowned,
            corrupt,
        })
    }

    /// Runs the job to a terminal status.
    pub(crate) fn run(mut self) -> Result<JobResult> {
        let strategy_config = self.job.spec.config.effective_restart_strategy();
        let seed = self.job.spec.clock.now_millis();
        let mut strategy = RestartStrategy::new(&strategy_config, seed);
        let mut restarts = 0u32;
        let mut restore = self.first.take();
        let mut failure = None;
        let mut permanent_failure = false;
        let terminal = loop {
            if let Some(r) = &restore {
                tracing::info!(
                    job = %self.job.spec.config.job_id,
                    "Restoring job {} from checkpoint {}.",
                    self.job.spec.config.job_id,
                    r.metadata.checkpoint_id
                );
                self.job.emit(JobEvent::Restored {
                    checkpoint: r.metadata.checkpoint_id,
                });
            }
            match self.run_attempt(restore.clone()) {
                AttemptEnd::Finished => break JobStatus::Finished,
                AttemptEnd::Canceled => break JobStatus::Canceled,
                AttemptEnd::Failed(err) if err.is_permanent() => {
                    let message = err.to_string();
                    tracing::warn!(
                        job = %self.job.spec.config.job_id,
                        error = %message,
                        "Job {} failed for good: no restart can fix this: {message}",
                        self.job.spec.config.job_id
                    );
                    failure = Some(format!(
                        "{message} (not restarted: no restart can fix this)"
                    ));
                    permanent_failure = true;
                    break JobStatus::Failed;
                }
                AttemptEnd::Failed(err) => {
                    let message = err.to_string();
                    if let ExecutorError::Restore { checkpoint, source } = &err {
                        tracing::warn!(
                            job = %self.job.spec.config.job_id,
                            checkpoint_id = checkpoint.get(),
                            error = %source,
                            "Checkpoint {checkpoint} cannot be restored and is skipped from now on: {source}"
                        );
                        self.corrupt.insert(*checkpoint, source.to_string());
                    }
                    match strategy.on_failure(self.job.spec.clock.now_millis()) {
                        RestartDecision::Restart { delay } => {
                            // A restart needs something to restore (or
                            // never had anything): decide before counting it.
                            match self.restore_target() {
                                Ok(target) => restore = target,
                                Err(reason) => {
                                    tracing::warn!(job = %self.job.spec.config.job_id, %reason, error = %message, "job failed for good");
                                    failure = Some(format!("{message} ({reason})"));
                                    // Restarting cannot bring a damaged checkpoint back.
                                    permanent_failure = true;
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
            permanent_failure,
            checkpoints: self.job.completed,
            metrics: self.job.shared.metrics.snapshot(),
        })
    }

    /// The checkpoint a restart restores: the newest retained one, then the
    /// unowned one the job started from (no-claim), passing over those found
    /// corrupt. `None` when there was never a checkpoint (the job starts
    /// empty again); an error naming each damaged checkpoint when all of
    /// them are.
    fn restore_target(&self) -> std::result::Result<Option<Arc<RestoreState>>, String> {
        let storage = &self.job.spec.storage;
        let candidates: Vec<Arc<RestoreState>> = self
            .job
            .store
            .retained()
            .iter()
            .rev()
            .map(|metadata| {
                Arc::new(RestoreState {
                    metadata: metadata.clone(),
                    storage: storage.clone(),
                    owned: true,
                })
            })
            .chain(self.unowned.clone())
            .collect();
        if let Some(intact) = candidates
            .iter()
            .find(|r| !self.corrupt.contains_key(&r.metadata.checkpoint_id))
        {
            if let Some(newest) = candidates.first()
                && newest.metadata.checkpoint_id != intact.metadata.checkpoint_id
            {
                tracing::warn!(
                    job = %self.job.spec.config.job_id,
                    checkpoint_id = intact.metadata.checkpoint_id.get(),
                    "Restoring checkpoint {} instead of the newer damaged ones.",
                    intact.metadata.checkpoint_id
                );
            }
            return Ok(Some(intact.clone()));
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        Err(format!(
            "no intact checkpoint left to restore from: {}",
            describe_damaged(&self.corrupt)
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
                Ok(HandleCommand::Savepoint { reply, .. }) => {
                    let _ = reply.send(Err(ExecutorError::InvalidJob(
                        "cannot take a savepoint while the job is restarting; try again once it runs"
                            .into(),
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

/// `checkpoint 9: <why>; checkpoint 8: <why>`, newest first.
fn describe_damaged(corrupt: &BTreeMap<CheckpointId, String>) -> String {
    corrupt
        .iter()
        .rev()
        .map(|(id, why)| format!("checkpoint {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The completed-checkpoint store of a starting job, recovered from what
/// its storage holds, with what the first attempt restores and the
/// checkpoints found damaged on the way.
type OpenedStore = (
    CompletedCheckpointStore,
    Option<Arc<RestoreState>>,
    BTreeMap<CheckpointId, String>,
);

/// Opens the job's store over its storage (the registry then holds every
/// retained checkpoint's shared files) per how the job starts.
fn open_store(
    spec: &JobSpec,
    config: &CheckpointConfig,
    listed: &[CheckpointId],
) -> Result<OpenedStore> {
    let job = &spec.config.job_id;
    let storage = &spec.storage;
    let recover =
        || CompletedCheckpointStore::recover(storage.clone(), config.retained, config.cleanup);
    match &spec.start {
        StartFrom::Empty => {
            if !listed.is_empty() {
                let ids = listed
                    .iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ExecutorError::InvalidJob(format!(
                    "{} already holds completed checkpoints of job {job} ({ids}): resume from the \
                     newest (resume, `--resume`), restore one (restore_from, `--from`), or start \
                     in another checkpoint directory or under another job id; starting empty \
                     would delete them",
                    storage.describe()
                )));
            }
            Ok((recover()?, None, BTreeMap::new()))
        }
        StartFrom::Checkpoint {
            metadata,
            storage: from,
            mode,
        } => {
            let (store, restore_storage, owned) = match from {
                None => {
                    let store = CompletedCheckpointStore::recover_restoring(
                        storage.clone(),
                        config.retained,
                        config.cleanup,
                        metadata,
                        *mode,
                    )?;
                    (store, storage.clone(), *mode == RestoreMode::Claim)
                }
                Some(from) => {
                    if *mode == RestoreMode::Claim {
                        return Err(ExecutorError::InvalidJob(format!(
                            "checkpoint {} is in {}, not in the job's checkpoint storage {}: \
                             restore mode claim takes over only a checkpoint of the job's own \
                             storage; restore it in no-claim mode",
                            metadata.checkpoint_id,
                            from.describe(),
                            storage.describe()
                        )));
                    }
                    // What is already in the job's own storage is left alone too.
                    let store = CompletedCheckpointStore::recover_restoring(
                        storage.clone(),
                        config.retained,
                        config.cleanup,
                        metadata,
                        RestoreMode::NoClaim,
                    )?;
                    (store, from.clone(), false)
                }
            };
            tracing::info!(
                job = %job,
                checkpoint_id = metadata.checkpoint_id.get(),
                restore_mode = %mode,
                "Restoring job {job} from checkpoint {} in restore mode {mode}.",
                metadata.checkpoint_id
            );
            let restore = Arc::new(RestoreState {
                metadata: metadata.clone(),
                storage: restore_storage,
                owned,
            });
            Ok((store, Some(restore), BTreeMap::new()))
        }
        StartFrom::Resume => {
            let store = recover()?;
            let mut corrupt = BTreeMap::new();
            for (id, err) in store.skipped_on_recovery() {
                corrupt.insert(*id, err.to_string());
            }
            let mut chosen = None;
            for metadata in store.retained().iter().rev() {
                let id = metadata.checkpoint_id;
                match load_verified(storage.as_ref(), id) {
                    Ok(metadata) => {
                        chosen = Some(metadata);
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(
                            job = %job,
                            checkpoint_id = id.get(),
                            error = %err,
                            "Checkpoint {id} is damaged and is passed over: {err}"
                        );
                        corrupt.insert(id, err.to_string());
                    }
                }
            }
            let Some(metadata) = chosen else {
                if corrupt.is_empty() {
                    tracing::info!(
                        job = %job,
                        "No completed checkpoint of job {job} in {}: starting with empty state.",
                        storage.describe()
                    );
                    return Ok((store, None, corrupt));
                }
                return Err(ExecutorError::InvalidJob(format!(
                    "cannot resume job {job} from {}: no intact checkpoint left to restore from: {}",
                    storage.describe(),
                    describe_damaged(&corrupt)
                )));
            };
            tracing::info!(
                job = %job,
                checkpoint_id = metadata.checkpoint_id.get(),
                passed_over = corrupt.len(),
                "Resuming job {job} from checkpoint {}.",
                metadata.checkpoint_id
            );
            let restore = Arc::new(RestoreState {
                metadata,
                storage: storage.clone(),
                owned: true,
            });
            Ok((store, Some(restore), corrupt))
        }
    }
}

/// Keyed state cannot change its number of key groups: a restored keyed
/// operator's max parallelism must be the job's. Checked before the job
/// starts, since no restart can fix it.
fn check_max_parallelism(spec: &JobSpec, metadata: &state_core::CheckpointMetadata) -> Result<()> {
    let job = spec.max_parallelism.get();
    for op in &metadata.operators {
        let keyed = op.subtasks.iter().any(|s| !s.keyed.is_empty());
        let in_job = spec
            .graph
            .operators
            .iter()
            .any(|(uid, _)| *uid == op.operator_id);
        if keyed && in_job && op.max_parallelism != job {
            return Err(ExecutorError::InvalidJob(format!(
                "operator {}: checkpoint {} was taken with max parallelism {}, the job has {job}; \
                 the max parallelism of a keyed operator cannot change (--max-parallelism {})",
                op.operator_id, metadata.checkpoint_id, op.max_parallelism, op.max_parallelism
            )));
        }
    }
    Ok(())
}
