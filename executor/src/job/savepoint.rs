//! What a caller gives and gets back for a savepoint
//! ([`crate::JobHandle::trigger_savepoint`], [`crate::JobHandle::stop_with_savepoint`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use state_core::{CheckpointId, CheckpointStorage, SavepointFormat};

/// Opens the storage one savepoint is written to, once the job has given it
/// its checkpoint id (savepoints take ids from the checkpoints' counter, as
/// in Flink, so the caller can name the directory after it).
///
/// The storage must be the savepoint's own: never the job's checkpoint
/// storage, whose retention would delete it. Every stream of the savepoint
/// is written into it, so a storage whose locations are relative to one
/// directory (`backend-fs`) makes the savepoint relocatable.
pub struct SavepointTarget {
    open: Box<dyn FnOnce(CheckpointId) -> state_core::Result<Arc<dyn CheckpointStorage>> + Send>,
    format: SavepointFormat,
}

impl SavepointTarget {
    /// A savepoint in `format`, written to the storage `open` returns for its id.
    pub fn new(
        format: SavepointFormat,
        open: impl FnOnce(CheckpointId) -> state_core::Result<Arc<dyn CheckpointStorage>>
        + Send
        + 'static,
    ) -> Self {
        SavepointTarget {
            open: Box::new(open),
            format,
        }
    }

    /// The savepoint's format.
    pub fn format(&self) -> SavepointFormat {
        self.format
    }

    /// Opens the storage for savepoint `id`.
    pub(crate) fn open(self, id: CheckpointId) -> state_core::Result<Arc<dyn CheckpointStorage>> {
        (self.open)(id)
    }
}

impl fmt::Debug for SavepointTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavepointTarget")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A completed savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointInfo {
    /// Its checkpoint id (also the `chk-<n>` directory inside the savepoint).
    pub id: CheckpointId,
    /// Its format.
    pub format: SavepointFormat,
    /// Where it is, as its storage describes itself (`file:///…`).
    pub location: String,
    /// Bytes written.
    pub bytes: u64,
    /// From trigger to completion.
    pub duration: Duration,
}
