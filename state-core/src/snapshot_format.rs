//! cairn's full key-group snapshot stream, shared by every backend.
//!
//! Heap, filesystem and (full-mode) RocksDB backends write the same bytes, so
//! a savepoint moves between backends and a rescaled restore reads only the
//! blocks of its own key groups. Layout (integers little-endian, `varint` is
//! unsigned LEB128 of at most 10 bytes):
//!
//! ```text
//! stream header
//!   magic        8 bytes  "CAIRNKGS"
//!   version      u16      SNAPSHOT_FORMAT_VERSION (2; version 1 is read too)
//!   max_par      u32      the job's number of key groups
//!   first_kg     u16      first key group of the range
//!   kg_count     u32      number of key groups (= number of blocks)
//!   desc_len     u32      length of the descriptors
//!   descriptors  desc_len postcard encoding of Vec<StateDescriptor> (name, kind,
//!                         ttl, type_name); version 1 has no type_name (read as None)
//!   header_crc   u32      CRC-32 of every header byte before it
//! one block per key group of the range, in order
//!   key_group    u16
//!   raw_len      u32      length of the records once decompressed
//!   comp_len     u32      length of the compressed records (0 when raw_len is 0)
//!   block_crc    u32      CRC-32 of key_group, raw_len, comp_len and the compressed bytes
//!   compressed   comp_len one zstd frame holding the records
//! record (inside a decompressed block)
//!   state        varint   index into the descriptors
//!   key          varint length + bytes
//!   namespace    varint length + bytes
//!   value layout varint length + bytes
//!   list layout  varint count (>= 1), then count x (varint length + bytes)
//!   map layout   varint count (>= 1), then count x (user key, value), each varint length + bytes
//! ```
//!
//! The offset of every block is recorded in
//! [`KeyGroupsHandle::key_group_offsets`](crate::metadata::KeyGroupsHandle::key_group_offsets); the stream's length must equal the
//! handle's size. The whole-stream CRC in the handle is not needed to read:
//! every byte is covered by the header CRC or by its block's CRC, so a reader
//! of a few key groups touches only those blocks (useful when the stream is a
//! memory map). A stream not starting with the magic, or of another version,
//! is [`StateError::IncompatibleFormat`]; everything else that is wrong is
//! [`StateError::Corrupted`], naming the stream and key group.
//!
//! The writer applies TTL cleanup: a state whose descriptor has
//! `ttl: Some(cfg)` with `cfg.cleanup_in_full_snapshot` loses every value,
//! list element and map value that [`TtlConfig::is_expired`](crate::TtlConfig::is_expired) at the snapshot
//! time; a key whose list or map becomes empty is not written.

use std::io;

use serde::Deserialize;

use crate::StateError;
use crate::backend::{StateDescriptor, StateKind};
use crate::ttl::TtlConfig;

/// A state descriptor as the first formats stored it (key-group stream
/// version 1, RocksDB meta version 1): no type name. For readers of those
/// versions only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LegacyStateDescriptor {
    /// The state's name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Its time-to-live.
    pub ttl: Option<TtlConfig>,
}

impl From<LegacyStateDescriptor> for StateDescriptor {
    fn from(old: LegacyStateDescriptor) -> Self {
        StateDescriptor {
            ttl: old.ttl,
            ..StateDescriptor::new(old.name, old.kind)
        }
    }
}

/// Decodes the descriptors of a stream header of `version` (already known
/// to be one this build reads).
pub(crate) fn decode_descriptors(
    version: u16,
    bytes: &[u8],
) -> std::result::Result<Vec<StateDescriptor>, postcard::Error> {
    if version == SNAPSHOT_FORMAT_VERSION_V1 {
        let old: Vec<LegacyStateDescriptor> = postcard::from_bytes(bytes)?;
        Ok(old.into_iter().map(StateDescriptor::from).collect())
    } else {
        postcard::from_bytes(bytes)
    }
}

mod reader;
mod writer;

pub use reader::{KeyGroupStreamReader, Record, RecordEntry};
pub use writer::KeyGroupStreamWriter;

/// The first bytes of every key-group snapshot stream.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNKGS";
/// The stream format version this build writes. It reads this one and
/// [`SNAPSHOT_FORMAT_VERSION_V1`].
pub const SNAPSHOT_FORMAT_VERSION: u16 = 2;
/// The first stream format version: its state descriptors record no type
/// name ([`LegacyStateDescriptor`]).
pub const SNAPSHOT_FORMAT_VERSION_V1: u16 = 1;
/// The zstd level used when none is given: fast, as befits a state backend.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Length of the fixed part of the stream header before the descriptors.
const FIXED_HEADER_LEN: usize = 8 + 2 + 4 + 2 + 4 + 4;
/// Length of a block header.
const BLOCK_HEADER_LEN: usize = 2 + 4 + 4 + 4;
pub(crate) use crate::varint::{put_bytes, put_varint, take_bytes, take_varint};

/// Turns an error from a [`crate::CheckpointOutput`]'s `write` into a
/// [`StateError`]: a storage that fails a write because of a [`StateError`]
/// (such as a size limit) wraps it in the `io::Error`, and it is unwrapped
/// here so the caller sees the storage's own error.
pub fn output_error(e: io::Error, stream: &str) -> StateError {
    if e.get_ref().is_some_and(|inner| inner.is::<StateError>()) {
        if let Some(Ok(inner)) = e.into_inner().map(|i| i.downcast::<StateError>()) {
            return *inner;
        }
        return StateError::io(
            stream,
            io::Error::other("storage error lost while unwrapping"),
        );
    }
    StateError::io(stream, e)
}

#[cfg(test)]
mod tests;
