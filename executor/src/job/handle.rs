//! [`JobHandle`] and [`JobCanceller`]: a running job, seen from outside.

use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use state_core::CheckpointId;

use crate::error::{ExecutorError, Result};
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
