//! Errors of the executor.

use std::path::PathBuf;

use state_core::{CheckpointId, StateError};

/// Result alias of the executor.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

/// The error a user function returns to fail its task (Flink's "throw").
pub type UserError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong while building or running a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// State, checkpoint storage or a checkpoint file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A user function returned an error or panicked in a task.
    #[error("{operator} ({}/{parallelism}) failed: {message}", .subtask + 1)]
    Task {
        /// The operator uid.
        operator: String,
        /// The subtask index (0-based; shown 1-based as Flink does: `(1/2)`).
        subtask: u32,
        /// The operator's parallelism.
        parallelism: u32,
        /// The error or panic message.
        message: String,
    },
    /// The job graph or its configuration is invalid (names the option or operator).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A file or directory of a source or sink.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint could not be taken or completed.
    #[error("checkpoint {checkpoint} failed: {reason}")]
    Checkpoint {
        /// The checkpoint.
        checkpoint: CheckpointId,
        /// Why.
        reason: String,
    },
    /// The state of a checkpoint could not be restored: a file is damaged
    /// or missing. The job master never restores that checkpoint again.
    #[error("restoring checkpoint {checkpoint} failed: {source}")]
    Restore {
        /// The checkpoint restored from.
        checkpoint: CheckpointId,
        /// What is wrong; it names the file.
        #[source]
        source: StateError,
    },
    /// The job was cancelled.
    #[error("job was cancelled")]
    Canceled,
    /// An external system a sink writes (a database server or file) is
    /// unreachable or refused a statement; the attempt fails and the job
    /// restarts, losing nothing committed.
    #[error("sink target {target}: {reason}")]
    SinkTarget {
        /// What was written: host, port and table, or the database file and table.
        target: String,
        /// What failed, with the server's message.
        reason: String,
    },
}

impl ExecutorError {
    /// Whether no restart can fix this error: the job or its configuration
    /// is invalid (a mismatched max parallelism, a path that cannot be a
    /// sink's), or state it was given is refused as an invalid argument.
    /// The job master fails the job at once on such an error, whatever the
    /// restart strategy; task errors, I/O errors and damaged checkpoints
    /// (which a restart from another checkpoint may get past) are retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            ExecutorError::InvalidJob(_) => true,
            ExecutorError::State(e) => e.kind() == state_core::ErrorKind::InvalidArgument,
            _ => false,
        }
    }

    /// An [`ExecutorError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExecutorError::Io {
            path: path.into(),
            source,
        }
    }
}
