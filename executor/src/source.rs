//! Sources: replayable, partitioned inputs whose read positions are checkpointed.

use state_core::OperatorStateStore;

use crate::error::Result;

/// Where a source subtask runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceContext {
    /// This subtask's index.
    pub subtask: u32,
    /// The source's parallelism.
    pub parallelism: u32,
}

/// What a source yields when polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePoll<T> {
    /// The next record.
    Record(T),
    /// Nothing to read right now (an unbounded source waiting for input);
    /// the task will check for checkpoints and cancellation, then poll again.
    Idle,
    /// The input is exhausted (a bounded source at its end); the subtask finishes.
    End,
}

/// One subtask's reader of a replayable input (Flink's `SourceFunction` /
/// `SourceReader`). The runtime calls it from the subtask's thread only.
///
/// Exactly-once needs a source that can rewind: the read position is saved in
/// operator state when a checkpoint is triggered
/// ([`Source::snapshot_state`]), and a restarted job hands that state back to
/// [`Source::open`] so the source seeks to it.
pub trait Source<T>: Send {
    /// Prepares to read. `restored` is the operator state this subtask gets
    /// back from the checkpoint being restored (redistributed if the
    /// parallelism changed), or `None` on a fresh start.
    fn open(&mut self, context: SourceContext, restored: Option<&OperatorStateStore>)
    -> Result<()>;

    /// The next record, [`SourcePoll::Idle`] or [`SourcePoll::End`]. Should not
    /// block for long: the task polls checkpoint triggers between calls.
    fn poll_next(&mut self) -> Result<SourcePoll<T>>;

    /// Writes the current read position into `state`, as of the last record
    /// returned by [`Source::poll_next`]. Called on the subtask thread when a
    /// checkpoint is triggered, just before the barrier is emitted.
    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<()>;

    /// The checkpoint completed (for sources that commit positions externally).
    fn notify_checkpoint_complete(&mut self, _checkpoint: state_core::CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Creates one [`Source`] per subtask, for every (re)start of the job.
pub trait SourceFactory<T>: Send + Sync {
    /// A reader for one subtask.
    fn create(&self, context: SourceContext) -> Result<Box<dyn Source<T>>>;
}

impl<T, F> SourceFactory<T> for F
where
    F: Fn(SourceContext) -> Result<Box<dyn Source<T>>> + Send + Sync,
{
    fn create(&self, context: SourceContext) -> Result<Box<dyn Source<T>>> {
        self(context)
    }
}
