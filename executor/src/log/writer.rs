//! [`TopicWriter`]: appending records to a topic's partitions.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use state_core::backend_support::murmur3_32;
use state_core::{Clock, SystemClock};

use super::format::encode_record;
use super::reader::PartitionReader;
use super::topic::Topic;
use crate::error::{ExecutorError, Result};

impl Topic {
    /// The topic's writer, timestamps from the system clock.
    pub fn writer(&self) -> Result<TopicWriter> {
        TopicWriter::open(self, Arc::new(SystemClock))
    }
}

#[derive(Debug)]
struct PartitionFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file (all whole records).
    len: u64,
    /// Encoded records not yet written to the file (buffered writers).
    pending: Vec<u8>,
    pending_records: u64,
    next_offset: u64,
    dirty: bool,
}

impl PartitionFile {
    /// Writes the pending records; on failure takes back what was written
    /// of them (so the file stays whole records) and forgets them.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        let written = self.pending.len() as u64;
        self.pending.clear();
        let records = std::mem::take(&mut self.pending_records);
        match result {
            Ok(()) => {
                self.len += written;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                self.next_offset -= records;
                Err(ExecutorError::io(&self.path, e))
            }
        }
    }
}

/// Appends records to a topic. One writer per topic at a time.
///
/// By default every append is written through at once (visible to readers
/// when it returns); [`TopicWriter::buffered`] batches writes for bulk loads.
#[derive(Debug)]
pub struct TopicWriter {
    topic: Topic,
    files: Vec<PartitionFile>,
    clock: Arc<dyn Clock>,
    next_round_robin: u32,
    /// Pending bytes per partition that trigger a write; 0 = write through.
    buffer_limit: usize,
}

impl TopicWriter {
    /// Opens `topic` for appending, record timestamps from `clock`. A torn
    /// last record of a partition (a crash during an append) is truncated;
    /// any other corruption is an error naming the file and offset.
    pub fn open(topic: &Topic, clock: Arc<dyn Clock>) -> Result<TopicWriter> {
        let mut files = Vec::with_capacity(topic.partitions() as usize);
        for p in 0..topic.partitions() {
            let path = topic.partition_path(p)?;
            let mut reader = PartitionReader::open_file(path.clone(), p)?;
            while reader.skip()? {}
            let (valid, next_offset) = (reader.position(), reader.offset());
            drop(reader);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| ExecutorError::io(&path, e))?;
            let actual = file
                .metadata()
                .map_err(|e| ExecutorError::io(&path, e))?
                .len();
            if actual > valid {
                tracing::info!(
                    topic = topic.name(),
                    partition = p,
                    path = %path.display(),
                    bytes = actual - valid,
                    "truncating torn record at the end of the partition"
                );
                file.set_len(valid)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| ExecutorError::io(&path, e))?;
            }
            files.push(PartitionFile {
                path,
                file,
                len: valid,
                pending: Vec::new(),
                pending_records: 0,
                next_offset,
                dirty: false,
            });
        }
        Ok(TopicWriter {
            topic: topic.clone(),
            files,
            clock,
            next_round_robin: 0,
            buffer_limit: 0,
        })
    }

    /// Buffers appends per partition and writes them in batches of about
    /// `bytes`: records become visible to readers at [`TopicWriter::flush`],
    /// [`TopicWriter::sync`], when a partition's buffer fills, or when the
    /// writer is dropped. `0` writes every record through (the default).
    pub fn buffered(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// The topic written.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Appends a record with the clock's current time; returns its
    /// (partition, offset). The partition is `partition` if given, else the
    /// MurmurHash3 of the key modulo the partition count, else the next one
    /// round-robin. Unless [`TopicWriter::buffered`], the record is visible
    /// to readers when this returns; it is durable after [`TopicWriter::sync`].
    pub fn append(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<u32>,
    ) -> Result<(u32, u64)> {
        let now = self.clock.now_millis();
        self.append_with_timestamp(now, key, value, partition)
    }

    /// [`TopicWriter::append`] with an explicit timestamp (milliseconds).
    pub fn append_with_timestamp(
        &mut self,
        timestamp_millis: u64,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<u32>,
    ) -> Result<(u32, u64)> {
        let n = self.topic.partitions();
        let p = match (partition, key) {
            (Some(p), _) => {
                self.topic.partition_path(p)?;
                p
            }
            (None, Some(k)) => murmur3_32(k, 0) % n,
            (None, None) => {
                let p = self.next_round_robin % n;
                self.next_round_robin = (p + 1) % n;
                p
            }
        };
        let Some(pf) = self.files.get_mut(p as usize) else {
            return Err(ExecutorError::InvalidJob(format!(
                "partition {p} of topic {:?} is not open",
                self.topic.name()
            )));
        };
        encode_record(&mut pf.pending, timestamp_millis, key, value)?;
        pf.pending_records += 1;
        let offset = pf.next_offset;
        pf.next_offset += 1;
        if pf.pending.len() >= self.buffer_limit {
            pf.flush()?;
        }
        tracing::trace!(topic = %self.topic.name(), partition = p, offset, "appended record");
        Ok((p, offset))
    }

    /// The offset the next record appended to `partition` gets.
    pub fn end_offset(&self, partition: u32) -> Result<u64> {
        self.topic.partition_path(partition)?;
        Ok(self
            .files
            .get(partition as usize)
            .map_or(0, |f| f.next_offset))
    }

    /// Writes buffered records to the partition files (see
    /// [`TopicWriter::buffered`]); a no-op for a write-through writer. On an
    /// I/O error the partition's unwritten records are dropped (their
    /// offsets are given out again) and the error names the file.
    pub fn flush(&mut self) -> Result<()> {
        for pf in &mut self.files {
            pf.flush()?;
        }
        Ok(())
    }

    /// Makes every appended record durable: writes buffered records and
    /// fsyncs the partition files written since the last sync.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        for pf in self.files.iter_mut().filter(|f| f.dirty) {
            pf.file
                .sync_all()
                .map_err(|e| ExecutorError::io(&pf.path, e))?;
            pf.dirty = false;
        }
        Ok(())
    }
}

impl Drop for TopicWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(topic = %self.topic.name(), error = %e, "buffered log records lost when the writer was dropped");
        }
    }
}
