//! Checkpoint storage: where snapshot bytes and checkpoint metadata go.
//!
//! Backends write their snapshots through [`CheckpointStorage`] and never
//! touch files themselves, so any backend runs on any storage: in memory
//! ([`crate::MemoryCheckpointStorage`]), on a filesystem (`backend-fs`), and
//! later on object stores. A checkpoint exists once
//! [`CheckpointStorage::write_metadata`] has returned; everything written for
//! it before that is invisible to restore and is discarded if it never
//! completes.

use std::fmt::Debug;
use std::io::Write;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::CheckpointId;
use crate::metadata::CheckpointMetadata;
use crate::{Result, StateError};

/// Who owns a stream, which decides its location and when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateScope {
    /// Belongs to one checkpoint only (`chk-<n>/`); deleted with it.
    Exclusive,
    /// May be referenced by several checkpoints (`shared/`), such as the SST
    /// files of incremental snapshots; deleted by the shared-state registry
    /// when no retained checkpoint references it.
    Shared,
    /// Owned by a task rather than the checkpoint (`taskowned/`); never deleted
    /// by checkpoint retention.
    TaskOwned,
}

/// Where a stream's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamLocation {
    /// Small state kept inside the checkpoint metadata itself (in-memory
    /// storage). Shared bytes: cloning a handle, as every restore does,
    /// does not copy the stream. (Encoded like a `Vec<u8>`.)
    Inline(Bytes),
    /// A file, by its path relative to the job's checkpoint directory, with
    /// `/` separators (for example `chk-3/op-count-0-keyed` or `shared/0007.sst`).
    File(String),
}

/// A finished stream of snapshot bytes: where it is, how long, and its CRC-32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHandle {
    /// Where the bytes are.
    pub location: StreamLocation,
    /// Length in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of all bytes.
    pub crc32: u32,
}

impl StreamHandle {
    /// A short human name for messages: the file path, or `inline`.
    pub fn describe(&self) -> String {
        match &self.location {
            StreamLocation::Inline(_) => format!("inline state ({} bytes)", self.size),
            StreamLocation::File(path) => path.clone(),
        }
    }

    /// The file path relative to the job directory, if the stream is a file.
    pub fn file_path(&self) -> Option<&str> {
        match &self.location {
            StreamLocation::File(p) => Some(p),
            StreamLocation::Inline(_) => None,
        }
    }

    /// Checks that `bytes` are this stream's bytes: same length and CRC-32.
    /// The error names the stream and what differs.
    pub fn check(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 != self.size {
            return Err(StateError::corrupted(
                self.describe(),
                format!("expected {} bytes, found {}", self.size, bytes.len()),
            ));
        }
        let crc = crc32fast::hash(bytes);
        if crc != self.crc32 {
            return Err(StateError::corrupted(
                self.describe(),
                format!(
                    "checksum mismatch: expected crc32 {:08x}, found {crc:08x}",
                    self.crc32
                ),
            ));
        }
        Ok(())
    }
}

/// A stream being written; [`CheckpointOutput::close`] finishes it.
///
/// Dropping an output without closing it abandons it; the storage removes what
/// it can and the checkpoint's cleanup removes the rest.
pub trait CheckpointOutput: Write + Send {
    /// Bytes written so far.
    fn position(&self) -> u64;
    /// Finishes the stream (durably, for storages that persist) and returns
    /// its handle. Fails with [`StateError::LimitExceeded`] when a storage
    /// limit is exceeded.
    fn close(self: Box<Self>) -> Result<StreamHandle>;
}

/// Where snapshots and checkpoint metadata are kept.
///
/// Thread-safety: shared between task threads, the asynchronous snapshot
/// threads and the checkpoint coordinator, so every method takes `&self`.
pub trait CheckpointStorage: Send + Sync + Debug {
    /// A short description for logs (`memory (max 5242880 bytes)`, `file:///data/ckpt/job-1`).
    fn describe(&self) -> String;

    /// Prepares the location of checkpoint `id`; called once before any task
    /// writes state for it. Idempotent.
    fn initialize_checkpoint(&self, id: CheckpointId) -> Result<()>;

    /// Opens a new stream for state of checkpoint `id`. `name` is a file-name
    /// hint (ASCII letters, digits, `-`, `_`, `.`) that the caller keeps unique
    /// within the checkpoint and scope; for [`StateScope::Shared`] it must be
    /// unique across the job.
    fn create_output(
        &self,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>>;

    /// Reads a whole stream. Does not check the CRC (see [`read_verified`]).
    fn read(&self, handle: &StreamHandle) -> Result<Bytes>;

    /// Deletes one stream (a shared file no checkpoint references any more).
    /// Deleting a stream that is already gone succeeds.
    fn discard_stream(&self, handle: &StreamHandle) -> Result<()>;

    /// Writes the metadata of a checkpoint durably and atomically; from its
    /// return on, the checkpoint exists.
    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()>;

    /// Reads and checks the metadata of checkpoint `id`.
    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata>;

    /// The ids of checkpoints whose metadata exists, ascending. Says nothing
    /// about whether their metadata or state is intact.
    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>>;

    /// Deletes checkpoint `id`'s exclusive location: its metadata and every
    /// exclusive stream. Shared streams are left to the shared-state registry.
    /// Deleting a checkpoint that is already gone succeeds.
    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()>;
}

/// Reads a stream and checks its length and CRC-32 against the handle.
pub fn read_verified(storage: &dyn CheckpointStorage, handle: &StreamHandle) -> Result<Bytes> {
    let bytes = storage.read(handle)?;
    handle.check(&bytes)?;
    Ok(bytes)
}

/// Whether `name` is safe as a file name on any filesystem cairn writes
/// to: 1 to 200 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks that `name` is a safe file-name hint for [`CheckpointStorage::create_output`].
pub fn check_stream_name(name: &str) -> Result<()> {
    if is_safe_file_name(name) {
        Ok(())
    } else {
        Err(StateError::invalid(format!(
            "stream name {name:?} must be ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}
