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
use std::path::Path;

use bytes::Bytes;

use crate::checkpoint_id::CheckpointId;
use crate::handle::{StateScope, StreamHandle};
use crate::metadata::CheckpointMetadata;
use crate::{Result, StateError};

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

    /// Places stream `handle` at `dst`, a file that does not exist yet on
    /// this machine, checked against the handle's length and CRC-32 (on a
    /// failed check `dst` is removed). The caller promises to read `dst` and
    /// to delete it, never to write to it: a storage whose streams are
    /// files on this machine may hard-link its own file there instead of
    /// copying it (a RocksDB restore places SST files this way). The
    /// default reads the stream and writes `dst`.
    fn place_read_only(&self, handle: &StreamHandle, dst: &Path) -> Result<()> {
        write_verified_copy(self, handle, dst)
    }

    /// Deletes one stream (a shared file no checkpoint references any more).
    /// Deleting a stream that is already gone succeeds.
    fn discard_stream(&self, handle: &StreamHandle) -> Result<()>;

    /// Deletes several streams as [`CheckpointStorage::discard_stream`]
    /// does, trying every one, and returns the first error. The default
    /// deletes one after another; object storages delete in batches.
    fn discard_streams(&self, handles: &[&StreamHandle]) -> Result<()> {
        let mut first_err = None;
        for handle in handles {
            if let Err(e) = self.discard_stream(handle) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

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

/// Reads a stream, checks it as [`read_verified`] does and writes it to the
/// file `dst`: [`CheckpointStorage::place_read_only`] by a copy, for
/// storages that cannot link.
pub fn write_verified_copy<S: CheckpointStorage + ?Sized>(
    storage: &S,
    handle: &StreamHandle,
    dst: &Path,
) -> Result<()> {
    let bytes = storage.read(handle)?;
    handle.check(&bytes)?;
    std::fs::write(dst, &bytes).map_err(|e| StateError::io(dst, e))
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

/// Turns `part` (an operator id, say) into a piece of a file name that
/// [`is_safe_file_name`] accepts: its first `max_chars` characters, each one
/// other than an ASCII letter, digit, `-`, `_` (or `.`, with `keep_dots`)
/// replaced by `_`, and an `o` put in front of an empty result or one that
/// starts with `.`.
///
/// Backends name their snapshot streams and local directories with it, so
/// the names (which are on disk) must not change for the same input.
pub fn file_name_part(part: &str, max_chars: usize, keep_dots: bool) -> String {
    let mut out: String = part
        .chars()
        .take(max_chars)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') || (keep_dots && c == '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, 'o');
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_part_is_safe_and_stable() {
        assert_eq!(file_name_part("count words", 120, true), "count_words");
        assert_eq!(file_name_part("a.b/c", 120, true), "a.b_c");
        assert_eq!(file_name_part("a.b/c", 80, false), "a_b_c");
        assert_eq!(file_name_part("", 80, false), "o");
        assert_eq!(file_name_part(".hidden", 120, true), "o.hidden");
        assert_eq!(file_name_part("é", 120, true), "_");
        assert_eq!(file_name_part(&"x".repeat(300), 80, false).len(), 80);
        for s in ["", ".", "..", "a/b", "日本"] {
            assert!(is_safe_file_name(&file_name_part(s, 120, true)), "{s:?}");
        }
    }
}
