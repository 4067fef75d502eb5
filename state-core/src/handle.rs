//! Where a checkpoint's bytes are: the plain data that both the checkpoint
//! metadata ([`crate::CheckpointMetadata`]) and the storage
//! ([`crate::CheckpointStorage`]) speak about.
//!
//! A [`StreamHandle`] names one finished stream (its location, length and
//! CRC-32); [`StateScope`] says who owns it, which decides where it lives and
//! when it is deleted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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
        self.check_crc(crc32fast::hash(bytes))
    }

    /// Checks that the file at `path` holds this stream's bytes, as
    /// [`StreamHandle::check`] does, reading it in 1 MiB chunks (no more of
    /// it in memory at once). An unreadable file is an I/O error naming it.
    pub fn check_file(&self, path: &std::path::Path) -> Result<()> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path).map_err(|e| StateError::io(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut crc, mut len) = (crc32fast::Hasher::new(), 0u64);
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = buf.get(..n).unwrap_or_default();
                    crc.update(chunk);
                    len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StateError::io(path, e)),
            }
        }
        if len != self.size {
            return Err(StateError::corrupted(
                self.describe(),
                format!("expected {} bytes, found {len}", self.size),
            ));
        }
        self.check_crc(crc.finalize())
    }

    fn check_crc(&self, crc: u32) -> Result<()> {
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
