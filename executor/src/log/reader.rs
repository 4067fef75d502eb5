//! Reading one partition from an offset, tailing what is appended later.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use state_core::StateError;

use super::format::{Parse, RawRecord, parse_record};
use super::record::LogRecord;
use super::topic::Topic;
use crate::error::{ExecutorError, Result};

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Reads the records of one partition in offset order. [`PartitionReader::next`]
/// returns `None` at the current end and sees records appended later.
#[derive(Debug)]
pub struct PartitionReader {
    path: PathBuf,
    file: File,
    partition: u32,
    /// The offset of the next record.
    offset: u64,
    /// The byte position of the next record in the file.
    pos: u64,
    /// File bytes from `pos` on are `buf[start..]`; the file cursor is at
    /// `pos + (buf.len() - start)`.
    buf: Vec<u8>,
    start: usize,
}

impl PartitionReader {
    /// A reader of `partition` of `topic` whose first record is `from_offset`.
    /// An offset beyond the partition's current end is an error naming it.
    pub fn open(topic: &Topic, partition: u32, from_offset: u64) -> Result<Self> {
        let path = topic.partition_path(partition)?;
        let mut reader = PartitionReader::open_file(path, partition)?;
        while reader.offset < from_offset {
            if !reader.skip()? {
                return Err(ExecutorError::InvalidJob(format!(
                    "offset {from_offset} is beyond the end offset {} of partition {partition} of topic {:?} ({})",
                    reader.offset,
                    topic.name(),
                    reader.path.display()
                )));
            }
        }
        Ok(reader)
    }

    /// A reader at the start of the partition file `path`.
    pub(crate) fn open_file(path: PathBuf, partition: u32) -> Result<Self> {
        let file = File::open(&path).map_err(|e| ExecutorError::io(&path, e))?;
        Ok(PartitionReader {
            path,
            file,
            partition,
            offset: 0,
            pos: 0,
            buf: Vec::new(),
            start: 0,
        })
    }

    /// The next record, or `None` at the current end of the partition (also
    /// when the last record is torn or still being written). Call again
    /// later to see records appended since.
    #[allow(clippy::should_implement_trait)] // fallible and resumable after None: not an Iterator
    pub fn next(&mut self) -> Result<Option<LogRecord>> {
        let Some(raw) = self.advance()? else {
            return Ok(None);
        };
        let bytes = Bytes::copy_from_slice(
            self.buf
                .get(self.start..self.start + raw.total)
                .unwrap_or_default(),
        );
        let record = LogRecord {
            partition: self.partition,
            offset: self.offset,
            timestamp_millis: raw.timestamp_millis,
            key: raw.key.map(|k| bytes.slice(k)),
            value: bytes.slice(raw.value),
        };
        self.consume(raw.total);
        Ok(Some(record))
    }

    /// Moves past the next record without returning it; false at the end.
    pub(crate) fn skip(&mut self) -> Result<bool> {
        match self.advance()? {
            Some(raw) => {
                self.consume(raw.total);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The offset of the record [`PartitionReader::next`] returns next.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The byte position of the next record in the partition file.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The partition file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn consume(&mut self, total: usize) {
        self.start += total;
        self.pos += total as u64;
        self.offset += 1;
    }

    /// Parses the next whole record into `buf[start..]`, reading as needed.
    fn advance(&mut self) -> Result<Option<RawRecord>> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            match parse_record(pending) {
                Parse::Record(raw) => return Ok(Some(raw)),
                Parse::Incomplete => {
                    if self.fill()? == 0 {
                        self.rewind_partial()?;
                        return Ok(None);
                    }
                }
                Parse::BadChecksum { total } => {
                    // Torn only if it is the last thing in the file.
                    if pending.len() > total || self.fill()? > 0 {
                        return Err(self.corrupted("checksum mismatch"));
                    }
                    self.rewind_partial()?;
                    return Ok(None);
                }
                Parse::Invalid(detail) => return Err(self.corrupted(&detail)),
            }
        }
    }

    /// Reads more of the file into `buf`; returns the bytes read (0 at EOF).
    fn fill(&mut self) -> Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let read = loop {
            match self.file.read(self.buf.get_mut(len..).unwrap_or_default()) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(ExecutorError::io(&self.path, e));
            }
        };
        self.buf.truncate(len + n);
        Ok(n)
    }

    /// Forgets buffered bytes of an incomplete record and moves the file
    /// cursor back to it, so a writer that truncates and rewrites it is read
    /// correctly.
    fn rewind_partial(&mut self) -> Result<()> {
        if self.buf.len() > self.start {
            self.file
                .seek(SeekFrom::Start(self.pos))
                .map_err(|e| ExecutorError::io(&self.path, e))?;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    fn corrupted(&self, detail: &str) -> ExecutorError {
        StateError::corrupted(
            format!(
                "log file {} at byte {} (offset {})",
                self.path.display(),
                self.pos,
                self.offset
            ),
            detail,
        )
        .into()
    }
}

impl Topic {
    /// The offset the next record appended to `partition` gets (its record
    /// count, a torn last record not counted). Reads the partition file.
    pub fn end_offset(&self, partition: u32) -> Result<u64> {
        let mut reader = PartitionReader::open_file(self.partition_path(partition)?, partition)?;
        while reader.skip()? {}
        Ok(reader.offset())
    }

    /// A reader of `partition` from `from_offset` (see [`PartitionReader::open`]).
    pub fn reader(&self, partition: u32, from_offset: u64) -> Result<PartitionReader> {
        PartitionReader::open(self, partition, from_offset)
    }
}
