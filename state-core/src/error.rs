//! The one error type of the state layer.
//!
//! Variants are coarse and tell the caller what to do: retry or fix the disk
//! ([`StateError::Io`]), fall back to another checkpoint
//! ([`StateError::Corrupted`], [`StateError::IncompatibleFormat`]), fix the
//! call ([`StateError::InvalidArgument`]), stop using the object
//! ([`StateError::Closed`]), or give the storage more room
//! ([`StateError::LimitExceeded`]). Each carries the path, checkpoint or option
//! it is about, so the message alone names what is wrong.

use std::path::PathBuf;

use crate::checkpoint_id::CheckpointId;

/// Result alias used throughout cairn's state crates.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// What went wrong in a state backend, checkpoint storage or checkpoint file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes fail a checksum, are truncated, or do not decode.
    #[error("corrupted {what}: {detail}")]
    Corrupted {
        /// The file, handle or checkpoint that is corrupt (for example `chk-3/_metadata`).
        what: String,
        /// What exactly is wrong.
        detail: String,
    },
    /// Bytes written by another program or by an unsupported format version.
    #[error("incompatible format in {what}: {detail}")]
    IncompatibleFormat {
        /// The file or handle.
        what: String,
        /// Found versus expected.
        detail: String,
    },
    /// The caller passed something that cannot work (an unknown state, a key
    /// outside this backend's key groups, a bad option value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A checkpoint exceeded a configured size limit.
    #[error("checkpoint {checkpoint}: {what} of {size} bytes exceeds the limit of {limit} bytes")]
    LimitExceeded {
        /// The checkpoint that was being written.
        checkpoint: CheckpointId,
        /// What was measured (for example "in-memory checkpoint state").
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A checkpoint does not exist or is not complete (no `_metadata`).
    #[error("checkpoint {checkpoint} not found: {detail}")]
    NotFound {
        /// The checkpoint asked for.
        checkpoint: CheckpointId,
        /// Where it was looked for.
        detail: String,
    },
    /// The backend or storage was closed or disposed of.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl StateError {
    /// An [`StateError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`StateError::Corrupted`] about `what`.
    pub fn corrupted(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StateError::Corrupted {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// An [`StateError::IncompatibleFormat`] about `what`.
    pub fn incompatible(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StateError::IncompatibleFormat {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// An [`StateError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        StateError::InvalidArgument(msg.into())
    }

    /// The coarse kind, for callers that branch on what to do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StateError::Io { .. } => ErrorKind::Io,
            StateError::Corrupted { .. } => ErrorKind::Corrupted,
            StateError::IncompatibleFormat { .. } => ErrorKind::IncompatibleFormat,
            StateError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            StateError::LimitExceeded { .. } => ErrorKind::LimitExceeded,
            StateError::NotFound { .. } => ErrorKind::NotFound,
            StateError::Closed(_) => ErrorKind::Closed,
        }
    }
}

/// The coarse kind of a [`StateError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`StateError::Io`].
    Io,
    /// See [`StateError::Corrupted`].
    Corrupted,
    /// See [`StateError::IncompatibleFormat`].
    IncompatibleFormat,
    /// See [`StateError::InvalidArgument`].
    InvalidArgument,
    /// See [`StateError::LimitExceeded`].
    LimitExceeded,
    /// See [`StateError::NotFound`].
    NotFound,
    /// See [`StateError::Closed`].
    Closed,
}
