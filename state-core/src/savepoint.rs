//! [`SavepointReader`] and [`SavepointWriter`]: a checkpoint's keyed and
//! operator state read and written offline, without running the job
//! (Flink's State Processor API).
//!
//! Both speak the canonical format: every keyed handle a
//! [`crate::KeyedStateHandle::KeyGroups`] stream (cairn's full key-group stream,
//! [`crate::backend_support::KeyGroupStreamReader`]), which restores into
//! any backend at any parallelism. A reader of a checkpoint holding native
//! handles (RocksDB's incremental files) needs them converted first, by the
//! layer that knows the backend ([`SavepointReader::convert_native`]); the
//! `cairn` command restores each into a temporary RocksDB instance and takes
//! a full snapshot of it.
//!
//! Reading streams one key group at a time: memory holds one decompressed
//! block, never the whole state. Writing buffers one key group's records.

mod reader;
mod writer;

pub use reader::{CanonicalStream, NativeHandle, SavepointReader};
pub use writer::{KeyedOperatorWriter, SavepointWriter};

#[cfg(test)]
mod tests;
