//! [`JobHandle`] and [`JobCanceller`]: a running job, seen from outside.

use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use state_core::CheckpointId;

use crate::error::{ExecutorError, Result};
use crate::job::savepoint::{SavepointInfo, SavepointTarget};
use crate::metrics::JobMetrics;
use crate::runtime::events::{CompletedCheckpointInfo, JobEvent, JobResult, JobStatus};
use crate::runtime::job_state::{HandleCommand, JobShared};

/// Cancels a running job from any thread (see [`JobHandle::canceller`]).
///
/// ```
/// # use std::sync::Arc;
/// # use backend_heap::HeapBackendFactory;
/// # use executor::sink::collect::CollectSink;
/// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
/// # use executor::{JobConfig, StreamEnv};
/// # use state_core::OperatorStateStore;
/// # use state_core::{JobId, MemoryCheckpointStorage};
/// # struct Items<T>(std::vec::IntoIter<T>);
/// # impl<T: Send> Source<T> for Items<T> {
/// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
/// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
/// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
/// #     }
/// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
/// # }
/// # /// A bounded source of `items` (not checkpointed: a restart reads them again).
/// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
/// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let storage = Arc::new(MemoryCheckpointStorage::default());
/// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
/// let (sink, _out) = CollectSink::new();
/// env.source("numbers", items(vec![1_u64])).sink("collect", sink);
/// let handle = env.start()?;
/// let canceller = handle.canceller();
/// std::thread::spawn(move || canceller.cancel()).join().ok();
/// // Cancelled, or already finished: a job that ended ignores the cancel.
/// let status = handle.wait()?.status;
/// assert!(matches!(status, executor::JobStatus::Canceled | executor::JobStatus::Finished));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JobCanceller {
    commands: Sender<HandleCommand>,
}

impl JobCanceller {
    /// Asks the job to cancel; a job that already ended ignores it. The job
    /// then applies its externalized-checkpoint cleanup policy (retained
    /// checkpoints are kept with `RetainOnCancellation`).
    pub fn cancel(&self) {
        let _ = self.commands.send(HandleCommand::Cancel);
    }
}

/// A running job (see [`crate::StreamEnv::start`]): trigger checkpoints,
/// follow its events and metrics, cancel it, wait for its end.
///
/// ```
/// # use std::sync::Arc;
/// # use backend_heap::HeapBackendFactory;
/// # use executor::sink::collect::CollectSink;
/// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
/// # use executor::{JobConfig, StreamEnv};
/// # use state_core::OperatorStateStore;
/// # use state_core::{JobId, MemoryCheckpointStorage};
/// # struct Items<T>(std::vec::IntoIter<T>);
/// # impl<T: Send> Source<T> for Items<T> {
/// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
/// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
/// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
/// #     }
/// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
/// # }
/// # /// A bounded source of `items` (not checkpointed: a restart reads them again).
/// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
/// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let storage = Arc::new(MemoryCheckpointStorage::default());
/// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
/// let (sink, _out) = CollectSink::new();
/// env.source("numbers", items(vec![1, 2, 3])).sink("collect", sink);
/// let handle = env.start()?;
/// let events = handle.events();
/// let result = handle.wait()?;
/// assert_eq!(result.status, executor::JobStatus::Finished);
/// // The status changes, from CREATED to FINISHED, came as events.
/// assert!(events.try_iter().any(|e| matches!(e, executor::JobEvent::StatusChanged { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct JobHandle {
    commands: Sender<HandleCommand>,
    events: Receiver<JobEvent>,
    shared: Arc<JobShared>,
    thread: Option<ThreadHandle<Result<JobResult>>>,
}

/// Asks the job behind `commands` for a savepoint and waits for its outcome.
fn request_savepoint(
    commands: &Sender<HandleCommand>,
    target: SavepointTarget,
    stop: bool,
) -> Result<SavepointInfo> {
    let (reply, outcome) = crossbeam_channel::bounded(1);
    commands
        .send(HandleCommand::Savepoint {
            target,
            stop,
            reply,
        })
        .map_err(|_| ExecutorError::InvalidJob("the job is not running".into()))?;
    outcome.recv().map_err(|_| {
        ExecutorError::InvalidJob("the job ended before the savepoint completed".into())
    })?
}

/// Controls a running job from any thread (see [`JobHandle::controller`]):
/// savepoints, stop with a savepoint, cancel. What a job control API (HTTP,
/// a request file) calls.
#[derive(Debug, Clone)]
pub struct JobController {
    commands: Sender<HandleCommand>,
}

impl JobController {
    /// [`JobHandle::trigger_savepoint`] from another thread.
    pub fn trigger_savepoint(&self, target: SavepointTarget) -> Result<SavepointInfo> {
        request_savepoint(&self.commands, target, false)
    }

    /// [`JobHandle::stop_with_savepoint`] from another thread.
    pub fn stop_with_savepoint(&self, target: SavepointTarget) -> Result<SavepointInfo> {
        request_savepoint(&self.commands, target, true)
    }

    /// [`JobHandle::cancel`] from another thread.
    pub fn cancel(&self) {
        let _ = self.commands.send(HandleCommand::Cancel);
    }
}

impl JobHandle {
    /// The handle of the job whose master runs on `thread`.
    pub(super) fn new(
        commands: Sender<HandleCommand>,
        events: Receiver<JobEvent>,
        shared: Arc<JobShared>,
        thread: ThreadHandle<Result<JobResult>>,
    ) -> Self {
        JobHandle {
            commands,
            events,
            shared,
            thread: Some(thread),
        }
    }

    /// Triggers a checkpoint now (regardless of interval, min pause and max
    /// concurrent) and returns its id; see [`JobHandle::wait_for_checkpoint`].
    pub fn trigger_checkpoint(&self) -> Result<CheckpointId> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(HandleCommand::Trigger(tx))
            .map_err(|_| ExecutorError::InvalidJob("the job is not running".into()))?;
        rx.recv().map_err(|_| {
            ExecutorError::InvalidJob("the job ended before the checkpoint was triggered".into())
        })?
    }

    /// Takes a savepoint now and blocks until it completed (its info) or
    /// failed (an error with why; the job keeps running either way).
    ///
    /// A savepoint is a checkpoint the user owns: written to the target's
    /// storage instead of the job's, in the target's format (canonical:
    /// restores into any backend at any parallelism; native: the backend's
    /// own files), never rotated or deleted by the job, never the base of a
    /// later incremental checkpoint, and not counted among the tolerable
    /// checkpoint failures when it fails. Periodic checkpoints wait while it
    /// is in flight. Sinks are told it completed, as for a checkpoint, so
    /// two-phase-commit sinks commit what it covers.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use backend_heap::HeapBackendFactory;
    /// # use executor::source::{Source, SourceContext, SourcePoll};
    /// # use executor::sink::collect::CollectSink;
    /// # use executor::{JobConfig, SavepointTarget, StreamEnv};
    /// # use state_core::{CheckpointStorage, JobId, MemoryCheckpointStorage, OperatorStateStore, SavepointFormat};
    /// # struct Forever;
    /// # impl Source<u64> for Forever {
    /// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
    /// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<u64>> { Ok(SourcePoll::Idle) }
    /// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
    /// # let (sink, _out) = CollectSink::new();
    /// # env.source("numbers", |_: SourceContext| Ok(Box::new(Forever) as Box<dyn Source<u64>>))
    /// #     .key_by(|v: &u64| *v % 10)
    /// #     .sum("sum", |v: &u64| *v as i64, |v: &mut u64, s| *v = s as u64)
    /// #     .sink("collect", sink);
    /// let handle = env.start()?;
    /// // The savepoint's own storage (a directory with `backend-fs`).
    /// let savepoints = Arc::new(MemoryCheckpointStorage::default());
    /// let opened = savepoints.clone();
    /// let target = SavepointTarget::new(SavepointFormat::Canonical, move |_id| {
    ///     Ok(opened as Arc<dyn CheckpointStorage>)
    /// });
    /// let info = handle.trigger_savepoint(target)?;
    /// assert_eq!(savepoints.list_checkpoints()?, vec![info.id]);
    /// handle.cancel();
    /// handle.wait()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn trigger_savepoint(&self, target: SavepointTarget) -> Result<SavepointInfo> {
        request_savepoint(&self.commands, target, false)
    }

    /// Stop with savepoint (Flink's `stop`): the sources stop right after
    /// the savepoint's barrier, the savepoint is taken, every task is told
    /// it completed (two-phase-commit sinks commit their last transaction),
    /// and the job ends FINISHED. Returns once the savepoint completed;
    /// [`JobHandle::wait`] then returns the FINISHED result. If the
    /// savepoint fails, the sources resume and the job keeps running.
    pub fn stop_with_savepoint(&self, target: SavepointTarget) -> Result<SavepointInfo> {
        request_savepoint(&self.commands, target, true)
    }

    /// A cloneable controller for savepoints and cancellation from other
    /// threads (a job control API), while this handle waits in [`JobHandle::wait`].
    pub fn controller(&self) -> JobController {
        JobController {
            commands: self.commands.clone(),
        }
    }

    /// Blocks until checkpoint `id` completed (its info) or failed (an error
    /// with why), or the job ended without completing it.
    pub fn wait_for_checkpoint(&self, id: CheckpointId) -> Result<CompletedCheckpointInfo> {
        let mut outcomes = self
            .shared
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = outcomes.get(&id) {
                return outcome.clone().map_err(|reason| ExecutorError::Checkpoint {
                    checkpoint: id,
                    reason,
                });
            }
            if self.shared.status().is_terminal() {
                return Err(ExecutorError::Checkpoint {
                    checkpoint: id,
                    reason: format!(
                        "the job ended ({}) before it completed",
                        self.shared.status()
                    ),
                });
            }
            outcomes = self
                .shared
                .changed
                .wait_timeout(outcomes, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks the job to cancel; [`JobHandle::wait`] returns once it is CANCELED.
    pub fn cancel(&self) {
        let _ = self.commands.send(HandleCommand::Cancel);
    }

    /// A cloneable handle that cancels the job from another thread, such as a
    /// Ctrl-C handler, while this one waits in [`JobHandle::wait`].
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller {
            commands: self.commands.clone(),
        }
    }

    /// Blocks until the job reaches a terminal status.
    pub fn wait(mut self) -> Result<JobResult> {
        let Some(thread) = self.thread.take() else {
            return Err(ExecutorError::InvalidJob(
                "the job was already waited for".into(),
            ));
        };
        match thread.join() {
            Ok(result) => result,
            Err(payload) => Err(ExecutorError::InvalidJob(format!(
                "the job master panicked: {}",
                crate::runtime::task::panic_message(payload.as_ref())
            ))),
        }
    }

    /// The current status.
    pub fn status(&self) -> JobStatus {
        self.shared.status()
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> JobMetrics {
        self.shared.metrics.snapshot()
    }

    /// The job's events, in order. Every event is delivered once, to one of
    /// the receivers (take it once and keep it).
    pub fn events(&self) -> Receiver<JobEvent> {
        self.events.clone()
    }
}
