//! [`LogRecord`]: one record as read from a partition.

use std::borrow::Cow;

use bytes::Bytes;

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The partition it was read from.
    pub partition: u32,
    /// Its index within the partition.
    pub offset: u64,
    /// When it was appended, milliseconds since the Unix epoch (from the
    /// writer's [`state_core::Clock`]).
    pub timestamp_millis: u64,
    /// The key it was appended with, if any.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
}

impl LogRecord {
    /// The value as text. Invalid UTF-8 is replaced with U+FFFD, as Flink's
    /// `SimpleStringSchema` does; valid UTF-8 is borrowed, not copied.
    pub fn value_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }

    /// The key as text (lossy like [`LogRecord::value_str`]), if there is one.
    pub fn key_str(&self) -> Option<Cow<'_, str>> {
        self.key.as_deref().map(String::from_utf8_lossy)
    }
}
