//! Sinks: where a job's results leave it. This module holds the [`Sink`]
//! contract the runtime drives; [`committing`] holds the two-phase-commit
//! model (Flink's Sink V2) that exactly-once sinks are written in. Each
//! ready-made sink is in its own module, with its guarantee:
//!
//! - [`print::PrintSink`]: one line per record on stdout (Flink's
//!   `print()`); at-least-once: what it printed between the last completed
//!   checkpoint and a failure is printed again after the restart.
//! - [`file::FileSink`]: part files committed by atomic rename at each
//!   completed checkpoint (Flink's `FileSink`); exactly-once.
//! - [`write_ahead::WriteAheadSink`]: records held in the checkpoint until
//!   it completes, then appended to a file (Flink's `GenericWriteAheadSink`);
//!   exactly-once except for one documented window.
//! - `postgres::PostgresSink` (feature `postgres`): one PostgreSQL
//!   transaction per subtask and checkpoint, prepared at the barrier
//!   (`PREPARE TRANSACTION`) and committed (`COMMIT PREPARED`) when the
//!   checkpoint completes; exactly-once.
//! - `sqlite::SqliteSink` (feature `sqlite`): each checkpoint's rows held in
//!   the checkpoint, then applied in one SQLite transaction that also
//!   records the checkpoint, so none is applied twice; exactly-once.
//! - [`collect::CollectSink`]: every record in a shared vector, for tests
//!   and demos; at-least-once.

use std::sync::{Mutex, MutexGuard};

use state_core::CheckpointId;
use state_core::OperatorStateStore;

use crate::error::Result;

pub mod collect;
pub mod committing;
pub mod file;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod print;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod write_ahead;

/// Locks a mutex shared by the subtasks of a sink. A panic in another
/// subtask while it held the lock leaves the data usable (lines or records
/// already written stay written).
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a sink subtask runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkContext {
    /// This subtask's index.
    pub subtask: u32,
    /// The sink's parallelism.
    pub parallelism: u32,
    /// Whether the job takes checkpoints (and a final one at the end of a
    /// bounded input); without, a two-phase-commit sink commits at the end
    /// of the input.
    pub checkpointing: bool,
    /// The checkpoint this attempt restored from, `None` on a fresh start.
    pub restored: Option<CheckpointId>,
}

impl SinkContext {
    /// Subtask `subtask` of `parallelism` of a job that takes checkpoints,
    /// starting fresh; see the fields for the rest.
    pub fn new(subtask: u32, parallelism: u32) -> Self {
        SinkContext {
            subtask,
            parallelism,
            checkpointing: true,
            restored: None,
        }
    }

    /// The same subtask after a restore from `checkpoint`.
    pub fn restored_from(self, checkpoint: Option<CheckpointId>) -> Self {
        SinkContext {
            restored: checkpoint,
            ..self
        }
    }

    /// The same subtask in a job with (`true`) or without checkpoints.
    pub fn with_checkpointing(self, checkpointing: bool) -> Self {
        SinkContext {
            checkpointing,
            ..self
        }
    }
}

/// One subtask's writer (Flink's `SinkFunction` / `SinkWriter`), called from
/// the subtask's thread only.
///
/// Without checkpoint hooks a sink is at-least-once: records between the last
/// completed checkpoint and a failure are written again after the restart
/// (as `print()` does in the WordCount failure-and-recovery walk-through of
/// `cairn demo`). A two-phase-commit sink pre-commits in
/// [`Sink::snapshot_state`] and commits in [`Sink::notify_checkpoint_complete`].
pub trait Sink<T>: Send {
    /// Prepares to write; `restored` is this subtask's operator state from the
    /// checkpoint being restored, or `None` on a fresh start.
    fn open(&mut self, context: SinkContext, restored: Option<&OperatorStateStore>) -> Result<()>;

    /// Writes one record.
    fn write(&mut self, record: T) -> Result<()>;

    /// A checkpoint barrier reached the sink: flush or pre-commit what was
    /// written since the last one and record what is needed to commit or roll
    /// back in `state`.
    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut OperatorStateStore,
    ) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint` completed: commit what it covers.
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// The input ended (bounded job finished): flush everything.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Creates one [`Sink`] per subtask, for every (re)start of the job.
pub trait SinkFactory<T>: Send + Sync {
    /// A writer for one subtask.
    fn create(&self, context: SinkContext) -> Result<Box<dyn Sink<T>>>;
}

impl<T, F> SinkFactory<T> for F
where
    F: Fn(SinkContext) -> Result<Box<dyn Sink<T>>> + Send + Sync,
{
    fn create(&self, context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        self(context)
    }
}
