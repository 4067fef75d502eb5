//! One attempt of a job: its tasks on threads, the channels between them,
//! and the checkpoint coordinator driving their checkpoints.

mod checkpoints;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use state_core::{CheckpointId, ErrorKind};

use super::coordinator::{AckOutcome, CheckpointCoordinator};
use super::events::{JobEvent, JobStatus};
use super::graph::{AttemptShared, RestoreState, TaskEnv};
use super::job_state::{AttemptEnd, HandleCommand, JobState, elapsed_millis};
use super::savepoint::{PendingSavepoint, SavepointTargets};
use super::task::{
    AckedState, SnapshotThreads, Task, TaskCommand, TaskReport, TaskRuntime, panic_message,
};
use crate::error::{ExecutorError, Result};

pub(super) struct Attempt {
    number: u32,
    tasks: Vec<(usize, String, Sender<TaskCommand>)>,
    sources: Vec<usize>,
    threads: Vec<JoinHandle<()>>,
    /// The asynchronous snapshot threads the tasks started.
    snapshots: SnapshotThreads,
    /// One message from each task thread once it stopped processing; it
    /// frees its state (chain, backends, channels) after sending it.
    stopped: Receiver<()>,
    reports: Receiver<(u32, TaskReport)>,
    cancel: Arc<AtomicBool>,
    coordinator: CheckpointCoordinator<Vec<AckedState>>,
    timestamps: BTreeMap<CheckpointId, u64>,
    commands_open: bool,
    /// The sources whose input ended (each waits for `TaskCommand::Finish`).
    ended_sources: BTreeSet<usize>,
    /// The final checkpoint of a bounded job.
    final_checkpoint: FinalCheckpoint,
    /// The stop-with-savepoint that completed: the sources were told to end.
    stopped_with_savepoint: Option<CheckpointId>,
    /// Every savepoint of this attempt (shared with the tasks).
    savepoints: SavepointTargets,
    /// The savepoints in flight, with whoever waits for them.
    pending_savepoints: BTreeMap<CheckpointId, PendingSavepoint>,
}

/// Where a job whose sources all ended stands with its final checkpoint
/// (Flink 1.14+'s checkpoint after the end of data): it is taken after every
/// record went through, so two-phase-commit sinks commit their last
/// transactions before the job is FINISHED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinalCheckpoint {
    /// Some source still has input: periodic checkpoints go on.
    NotYet,
    /// Every input ended; the next try is due at this job time (ms).
    Wanted { at: u64 },
    /// This checkpoint is the final one, in flight.
    InFlight(CheckpointId),
    /// Completed (or not needed: checkpointing is off); the sources were
    /// told to end the stream.
    Done,
}

/// How long after a failed final checkpoint the next one is tried.
const FINAL_CHECKPOINT_RETRY_MS: u64 = 100;

static NEXT_ATTEMPT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Attempt {
    pub(super) fn start(job: &mut JobState, restore: Option<Arc<RestoreState>>) -> Result<Self> {
        let spec = &job.spec;
        let number = NEXT_ATTEMPT.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(AtomicBool::new(false));
        let (report_tx, report_rx) = crossbeam_channel::unbounded();
        let (stopped_tx, stopped_rx) = crossbeam_channel::unbounded();
        let snapshots = SnapshotThreads::default();
        let savepoints = SavepointTargets::default();
        let shared = AttemptShared {
            clock: spec.clock.clone(),
            checkpointing: spec.config.checkpointing.is_some(),
            restore,
            max_parallelism: spec.max_parallelism,
            batch_size: spec.config.batch_size.max(1),
            mode: job.checkpoint_config.mode,
            snapshot_mode: spec.snapshot_mode,
            savepoints: savepoints.clone(),
            cancel: cancel.clone(),
            metrics: job.shared.metrics.clone(),
        };
        let default_p = spec.config.parallelism.max(1);
        let parallelism = |stage: usize| {
            spec.graph
                .stages
                .get(stage)
                .and_then(|s| s.parallelism)
                .unwrap_or(default_p)
        };
        // Channels of every exchange.
        let mut outputs: HashMap<usize, Vec<Option<Box<dyn std::any::Any + Send>>>> =
            HashMap::new();
        let mut inputs: HashMap<usize, Vec<Option<Box<dyn std::any::Any + Send>>>> = HashMap::new();
        for (e, edge) in spec.graph.edges.iter().enumerate() {
            let (tx, rx) = (edge.make_channels)(
                parallelism(edge.from),
                parallelism(edge.to),
                spec.config.channel_capacity.max(1),
            );
            outputs.insert(e, tx.into_iter().map(Some).collect());
            inputs.insert(e, rx.into_iter().map(Some).collect());
        }
        let mut tasks = Vec::new();
        let mut sources = Vec::new();
        let mut threads = Vec::new();
        let mut index = 0usize;
        for (s, stage) in spec.graph.stages.iter().enumerate() {
            let Some(make) = stage.make.clone() else {
                return Err(ExecutorError::InvalidJob(format!(
                    "the stream after operator {:?} has no sink",
                    stage.name
                )));
            };
            let p = parallelism(s);
            for subtask in 0..p {
                let take =
                    |map: &mut HashMap<usize, Vec<Option<Box<dyn std::any::Any + Send>>>>,
                     edge: Option<usize>| {
                        edge.and_then(|e| map.get_mut(&e))
                            .and_then(|v| v.get_mut(subtask as usize))
                            .and_then(Option::take)
                    };
                let mut env = TaskEnv {
                    shared: shared.clone(),
                    subtask,
                    parallelism: p,
                    inputs: take(&mut inputs, stage.input_edge),
                    outputs: take(&mut outputs, stage.output_edge),
                };
                let (control_tx, control_rx) = crossbeam_channel::unbounded();
                let name = format!("{} ({}/{p})", stage.name, subtask + 1);
                let rt = TaskRuntime {
                    task: index,
                    control: control_rx,
                    reports: report_tx.clone(),
                    attempt: number,
                    cancel: cancel.clone(),
                    storage: spec.storage.clone(),
                    savepoints: savepoints.clone(),
                    clock: spec.clock.clone(),
                    snapshots: snapshots.clone(),
                };
                let make = make.clone();
                let stopped = stopped_tx.clone();
                let (task_name, stage_name) = (name.clone(), stage.name.clone());
                let thread = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        let mut task: Option<Box<dyn Task>> = None;
                        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            let made = make(&mut env).map_err(|e| restore_error(&env, e))?;
                            task.insert(made).run(&rt)
                        }));
                        let result = match run {
                            Ok(result) => result,
                            Err(payload) => Err(ExecutorError::Task {
                                operator: stage_name,
                                subtask,
                                parallelism: p,
                                message: format!("panicked: {}", panic_message(payload.as_ref())),
                            }),
                        };
                        if let Err(e) = &result
                            && !matches!(e, ExecutorError::Canceled)
                        {
                            tracing::warn!(task = %task_name, error = %e, "task failed");
                        }
                        rt.report(TaskReport::Exited {
                            task: index,
                            result,
                        });
                        // Processing is over: a failover need not wait for
                        // freeing the state (a large heap backend takes
                        // hundreds of milliseconds).
                        let _ = stopped.send(());
                        drop(task);
                        drop(env);
                    })
                    .map_err(|e| {
                        ExecutorError::InvalidJob(format!("cannot start task {name}: {e}"))
                    })?;
                threads.push(thread);
                if stage.input_edge.is_none() {
                    sources.push(index);
                }
                tasks.push((index, name, control_tx));
                index += 1;
            }
        }
        let periodic = spec.config.checkpointing.is_some();
        let coordinator = CheckpointCoordinator::new(
            &job.checkpoint_config,
            periodic,
            tasks.len(),
            job.next_id,
            elapsed_millis(job.started),
        );
        Ok(Attempt {
            number,
            tasks,
            sources,
            threads,
            snapshots,
            stopped: stopped_rx,
            reports: report_rx,
            cancel,
            coordinator,
            timestamps: BTreeMap::new(),
            commands_open: true,
            ended_sources: BTreeSet::new(),
            final_checkpoint: FinalCheckpoint::NotYet,
            stopped_with_savepoint: None,
            savepoints,
            pending_savepoints: BTreeMap::new(),
        })
    }

    /// Runs until the attempt finishes, fails or is cancelled.
    pub(super) fn drive(&mut self, job: &mut JobState) -> AttemptEnd {
        let mut running = self.tasks.len();
        let mut any_finished = false;
        loop {
            let now = elapsed_millis(job.started);
            // Periodic checkpoints wait while a savepoint is in flight: a
            // newer checkpoint completing first would overtake it.
            if !any_finished
                && self.final_checkpoint == FinalCheckpoint::NotYet
                && self.pending_savepoints.is_empty()
                && let Some(id) = self.coordinator.trigger_due(now)
                && let Some(e) = self.trigger(job, id)
            {
                return self.fail(job, e);
            }
            // The final checkpoint waits for the one in flight: triggered
            // beside it, it could complete first and fail the older one
            // ("ids must increase"), and a two-phase-commit sink would
            // pre-commit it before the older one's commit.
            if let FinalCheckpoint::Wanted { at } = self.final_checkpoint
                && now >= at
                && self.coordinator.pending().is_empty()
                && let Some(e) = self.trigger_final(job, now)
            {
                return self.fail(job, e);
            }
            for failed in self.coordinator.check_timeouts(now) {
                if let Some(e) = self.failed_checkpoint(job, failed) {
                    return self.fail(job, e);
                }
            }
            let wait = self
                .coordinator
                .next_wakeup()
                .map_or(50, |at| at.saturating_sub(now))
                .min(match self.final_checkpoint {
                    FinalCheckpoint::Wanted { at } => at.saturating_sub(now),
                    _ => 50,
                })
                .clamp(1, 50);
            let commands = if self.commands_open {
                job.commands.clone()
            } else {
                crossbeam_channel::never()
            };
            select! {
                recv(self.reports) -> msg => {
                    let Ok((number, report)) = msg else { continue };
                    if number != self.number {
                        continue;
                    }
                    let now = elapsed_millis(job.started);
                    match report {
                        TaskReport::Ack { task, id, states } => {
                            match self.coordinator.acknowledge(id, task, states, now) {
                                AckOutcome::Pending => {}
                                AckOutcome::Completed(done) => {
                                    let id = done.id;
                                    if let Some(e) = self.finalize(job, id, done.acks, done.duration) {
                                        return self.fail(job, e);
                                    }
                                    if let Some(e) = self.abort_overtaken(job, id) {
                                        return self.fail(job, e);
                                    }
                                    if self.final_checkpoint == FinalCheckpoint::InFlight(id)
                                        && job.store.latest().is_some_and(|m| m.checkpoint_id == id)
                                    {
                                        self.finish_sources(job);
                                    }
                                    if self.stopped_with_savepoint == Some(id) {
                                        self.finish_sources(job);
                                    }
                                }
                                AckOutcome::Unknown(states) => self.discard_late_ack(job, id, &states),
                            }
                        }
                        TaskReport::Decline { id, reason, counted } => {
                            let failed = if counted && !self.savepoints.contains(id) {
                                self.coordinator.fail(id, reason, now)
                            } else {
                                self.coordinator.abort(id, reason)
                            };
                            if let Some(failed) = failed
                                && let Some(e) = self.failed_checkpoint(job, failed) {
                                    return self.fail(job, e);
                                }
                        }
                        TaskReport::InputEnded { task } => {
                            self.ended_sources.insert(task);
                            if self.ended_sources.len() == self.sources.len()
                                && self.final_checkpoint == FinalCheckpoint::NotYet
                            {
                                if job.spec.config.checkpointing.is_some() {
                                    let now = elapsed_millis(job.started);
                                    if !self.coordinator.pending().is_empty() {
                                        self.final_checkpoint = FinalCheckpoint::Wanted { at: now };
                                    } else if let Some(e) = self.trigger_final(job, now) {
                                        return self.fail(job, e);
                                    }
                                } else {
                                    self.finish_sources(job);
                                }
                            }
                        }
                        TaskReport::Exited { task, result } => {
                            running = running.saturating_sub(1);
                            match result {
                                Ok(()) => {
                                    if !any_finished {
                                        any_finished = true;
                                        for failed in self.coordinator.abort_all(checkpoints::ENDED_BEFORE_COMPLETION) {
                                            let _ = self.failed_checkpoint(job, failed);
                                        }
                                    }
                                    tracing::info!(task = self.tasks.get(task).map(|t| t.1.as_str()), "task finished");
                                    if running == 0 {
                                        return AttemptEnd::Finished;
                                    }
                                }
                                Err(ExecutorError::Canceled) => {
                                    if running == 0 {
                                        return self.fail(job, ExecutorError::InvalidJob("every task stopped without finishing".into()));
                                    }
                                }
                                Err(e) => return self.fail(job, e),
                            }
                        }
                    }
                }
                recv(commands) -> cmd => {
                    match cmd {
                        Ok(HandleCommand::Trigger(reply)) => {
                            if self.final_checkpoint != FinalCheckpoint::NotYet {
                                let _ = reply.send(Err(ExecutorError::InvalidJob(
                                    "cannot trigger a checkpoint: every input ended and the job is taking its final checkpoint".into(),
                                )));
                            } else if any_finished {
                                let _ = reply.send(Err(ExecutorError::InvalidJob(
                                    "cannot trigger a checkpoint: some tasks already finished".into(),
                                )));
                            } else {
                                let id = self.coordinator.trigger_now(elapsed_millis(job.started));
                                let err = self.trigger(job, id);
                                let _ = reply.send(Ok(id));
                                if let Some(e) = err {
                                    return self.fail(job, e);
                                }
                            }
                        }
                        Ok(HandleCommand::Savepoint { target, stop, reply }) => {
                            let refused = if self.final_checkpoint != FinalCheckpoint::NotYet || any_finished {
                                Some("every input of the job ended; it takes no more savepoints")
                            } else if stop && self.pending_savepoints.values().any(|p| p.stop) {
                                Some("the job is already stopping with a savepoint")
                            } else {
                                None
                            };
                            if let Some(why) = refused {
                                let _ = reply.send(Err(ExecutorError::InvalidJob(format!("cannot take a savepoint: {why}"))));
                            } else if let Some(e) = self.trigger_savepoint(job, target, stop, reply) {
                                return self.fail(job, e);
                            }
                        }
                        Ok(HandleCommand::Cancel) => {
                            tracing::info!(job = %job.spec.config.job_id, "cancelling job");
                            return AttemptEnd::Canceled;
                        }
                        // The handle was dropped: the job runs on unattended.
                        Err(_) => self.commands_open = false,
                    }
                }
                default(Duration::from_millis(wait)) => {}
            }
        }
    }

    fn fail(&mut self, job: &mut JobState, error: ExecutorError) -> AttemptEnd {
        let task = match &error {
            ExecutorError::Task {
                operator,
                subtask,
                parallelism,
                ..
            } => {
                format!("{operator} ({}/{parallelism})", subtask + 1)
            }
            _ => "job".to_owned(),
        };
        let message = match &error {
            ExecutorError::Task { message, .. } => message.clone(),
            other => other.to_string(),
        };
        tracing::warn!(job = %job.spec.config.job_id, %task, %message, "{task} switched from RUNNING to FAILED: {message}");
        job.emit(JobEvent::TaskFailed { task, message });
        job.set_status(JobStatus::Failing);
        AttemptEnd::Failed(error)
    }

    /// The snapshot threads started so far; call once the tasks stopped
    /// processing (a stopped task starts none).
    fn take_snapshot_threads(&self) -> Vec<JoinHandle<()>> {
        let mut threads = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *threads)
    }

    /// Cancels every task and waits until each stopped processing, and
    /// aborts the checkpoints in flight. When the job is failing over, the
    /// task threads free their state in the background (see [`REAPERS`]);
    /// otherwise they, and those of earlier attempts, are joined.
    pub(super) fn stop(mut self, job: &mut JobState) {
        self.cancel.store(true, Ordering::Relaxed);
        self.tasks.clear();
        let threads = std::mem::take(&mut self.threads);
        if job.status == JobStatus::Failing {
            // Every thread sends once; a thread that died before sending
            // drops its sender, and all gone ends the wait.
            for _ in 0..threads.len() {
                if self.stopped.recv().is_err() {
                    break;
                }
            }
            // Don't wait for them to free their state: the next attempt
            // restores meanwhile. Forget the ones already done.
            job.reapers.retain(|t| !t.is_finished());
            job.reapers.extend(threads);
            job.reapers.extend(self.take_snapshot_threads());
        } else {
            // The tasks first: a task that is snapshotting starts no new
            // snapshot thread once it has stopped.
            for thread in threads {
                let _ = thread.join();
            }
            // Then every snapshot still writing, before the checkpoints in
            // flight are aborted and their files removed below.
            for thread in self.take_snapshot_threads() {
                let _ = thread.join();
            }
            job.join_reapers();
        }
        let reason = match job.status {
            JobStatus::Failing => "the job is failing over",
            _ => checkpoints::JOB_STOPPED,
        };
        for failed in self.coordinator.abort_all(reason) {
            let _ = self.failed_checkpoint(job, failed);
        }
        // Acknowledgements still arriving from snapshot threads of this attempt.
        while let Ok((number, report)) = self.reports.try_recv() {
            if number != self.number {
                continue;
            }
            if let TaskReport::Ack { id, states, .. } = report {
                self.discard_late_ack(job, id, &states);
            }
        }
        job.next_id = self.coordinator.next_checkpoint_id();
    }
}

/// A task's set-up error while restoring a checkpoint, as
/// [`ExecutorError::Restore`] when the checkpoint itself is at fault (a
/// damaged or missing file, a foreign format): the master then never
/// restores that checkpoint again. Other errors (I/O, user code) stay as
/// they are and a restart may try the same checkpoint again.
fn restore_error(env: &TaskEnv, error: ExecutorError) -> ExecutorError {
    match (error, &env.shared.restore) {
        (ExecutorError::State(source), Some(restore))
            if matches!(
                source.kind(),
                ErrorKind::Corrupted | ErrorKind::IncompatibleFormat
            ) =>
        {
            ExecutorError::Restore {
                checkpoint: restore.metadata.checkpoint_id,
                source,
            }
        }
        (error, _) => error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex};

    use backend_heap::HeapBackendFactory;
    use state_core::OperatorStateStore;
    use state_core::{JobId, MemoryCheckpointStorage};

    use crate::sink::{Sink, SinkContext};
    use crate::source::{Source, SourceContext, SourcePoll};
    use crate::{JobConfig, JobStatus, RestartStrategyConfig, StreamEnv, UserError};

    use super::*;

    /// Whether the second attempt wrote a record, and what the first
    /// attempt's sink saw when it was freed.
    #[derive(Default)]
    struct Gate {
        written: Mutex<bool>,
        changed: Condvar,
        freed_after_restart: Mutex<Option<bool>>,
    }

    struct Numbers(u64);

    impl Source<u64> for Numbers {
        fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> Result<()> {
            Ok(())
        }

        fn poll_next(&mut self) -> Result<SourcePoll<u64>> {
            self.0 += 1;
            Ok(if self.0 <= 3 {
                SourcePoll::Record(self.0)
            } else {
                SourcePoll::End
            })
        }

        fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> Result<()> {
            Ok(())
        }
    }

    /// The first attempt's sink blocks in `Drop` until the second attempt
    /// wrote (or 30 s passed): a failover that waited for freeing the failed
    /// attempt's tasks would never get there.
    struct GateSink {
        gate: Arc<Gate>,
        first: bool,
    }

    impl Sink<u64> for GateSink {
        fn open(&mut self, _: SinkContext, _: Option<&OperatorStateStore>) -> Result<()> {
            Ok(())
        }

        fn write(&mut self, _: u64) -> Result<()> {
            if !self.first {
                *self.gate.written.lock().unwrap() = true;
                self.gate.changed.notify_all();
            }
            Ok(())
        }
    }

    impl Drop for GateSink {
        fn drop(&mut self) {
            if !self.first {
                return;
            }
            let written = self.gate.written.lock().unwrap();
            let (written, _) = self
                .gate
                .changed
                .wait_timeout_while(written, Duration::from_secs(30), |w| !*w)
                .unwrap();
            *self.gate.freed_after_restart.lock().unwrap() = Some(*written);
        }
    }

    #[test]
    fn a_restart_does_not_wait_for_the_failed_attempt_to_free_its_tasks() {
        let mut config = JobConfig::new(JobId::new("reaper").unwrap());
        config.restart = Some(RestartStrategyConfig::FixedDelay {
            attempts: 1,
            delay: Duration::from_millis(1),
        });
        let env = StreamEnv::new(
            config,
            HeapBackendFactory::default(),
            Arc::new(MemoryCheckpointStorage::default()),
        );
        let gate = Arc::new(Gate::default());
        let sinks = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let sink_gate = gate.clone();
        env.source("numbers", |_: SourceContext| {
            Ok(Box::new(Numbers(0)) as Box<dyn Source<u64>>)
        })
        .map("fail-once", move |v| {
            if failed.swap(true, Ordering::Relaxed) {
                Ok(v)
            } else {
                Err(UserError::from("the first attempt fails"))
            }
        })
        .sink("gate", move |_: SinkContext| {
            Ok(Box::new(GateSink {
                gate: sink_gate.clone(),
                first: sinks.fetch_add(1, Ordering::Relaxed) == 0,
            }) as Box<dyn Sink<u64>>)
        });
        let result = env.start().unwrap().wait().unwrap();
        assert_eq!(result.status, JobStatus::Finished);
        assert_eq!(result.restarts, 1);
        // The job joined the failed attempt's thread before returning.
        assert_eq!(*gate.freed_after_restart.lock().unwrap(), Some(true));
    }
}
