//! A replayable, partitioned log on local files, like a Kafka topic, and
//! [`LogSource`], the source that reads it with checkpointed offsets.
//!
//! # Layout
//!
//! ```text
//! <dir>/<topic>/topic.meta        descriptor: partition count, format version
//! <dir>/<topic>/partition-0.log   append-only records of partition 0
//! <dir>/<topic>/partition-1.log   ...
//! ```
//!
//! The descriptor (integers little-endian) is written once, durably and
//! atomically:
//!
//! ```text
//! magic       8 bytes  "CAIRNLOG"
//! version     u16      LOG_FORMAT_VERSION
//! partitions  u32
//! crc32       u32      CRC-32 of the bytes before it
//! ```
//!
//! Each record of a partition file:
//!
//! ```text
//! length      u32      length of the body
//! crc32       u32      CRC-32 of the length bytes and the body
//! body
//!   timestamp u64      milliseconds since the Unix epoch
//!   key len   u32      u32::MAX = no key
//!   key       key len bytes
//!   value     the rest of the body
//! ```
//!
//! A record's offset is its index in the partition (0, 1, 2, ...), as in
//! Kafka. A torn last record (a crash in the middle of an append: too short
//! for its length, or a checksum mismatch at the very end of the file) is the
//! end of the partition for readers, and the next [`TopicWriter`] truncates
//! it. Any other damage (a bad checksum with records after it, a length
//! beyond [`MAX_RECORD_BYTES`]) is an error naming the file and byte offset.
//!
//! One [`TopicWriter`] per topic at a time; any number of readers, which see
//! appended records as soon as [`TopicWriter::append`] returns (tailing).

mod format;
mod reader;
mod record;
mod source;
mod topic;
mod writer;

pub use format::{LOG_FORMAT_VERSION, MAX_RECORD_BYTES};
pub use reader::PartitionReader;
pub use record::LogRecord;
pub use source::{LogSource, LogSourceOptions, OFFSETS_STATE, StartPosition};
pub use topic::Topic;
pub use writer::TopicWriter;
