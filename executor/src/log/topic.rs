//! Topics: creating and opening them, and appending records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_core::backend_support::murmur3_32;
use state_core::backend_support::{Fs, StdFs, sync_parent, write_atomic};
use state_core::{Clock, SystemClock};

use super::format::{decode_descriptor, encode_descriptor, encode_record};
use super::reader::PartitionReader;
use crate::error::{ExecutorError, Result};

const DESCRIPTOR_FILE: &str = "topic.meta";

/// A topic: a directory of partition files. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    path: PathBuf,
    name: String,
    partitions: u32,
}

fn check_topic_name(name: &str) -> Result<()> {
    if state_core::backend_support::is_safe_file_name(name) {
        Ok(())
    } else {
        Err(ExecutorError::InvalidJob(format!(
            "topic name {name:?} must be 1 to 200 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl Topic {
    /// Creates topic `name` with `partitions` empty partitions under `dir`
    /// (created if missing). Fails if the topic exists.
    pub fn create(dir: impl AsRef<Path>, name: &str, partitions: u32) -> Result<Topic> {
        check_topic_name(name)?;
        if partitions == 0 {
            return Err(ExecutorError::InvalidJob(format!(
                "topic {name:?} needs at least 1 partition, got 0"
            )));
        }
        let path = dir.as_ref().join(name);
        let descriptor = path.join(DESCRIPTOR_FILE);
        if descriptor.exists() {
            return Err(ExecutorError::InvalidJob(format!(
                "topic {name:?} already exists at {}",
                path.display()
            )));
        }
        let fs = StdFs;
        fs.create_dir_all(&path)
            .map_err(|e| ExecutorError::io(&path, e))?;
        let topic = Topic {
            path,
            name: name.to_owned(),
            partitions,
        };
        for p in 0..partitions {
            let file = topic.partition_file(p);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .map_err(|e| ExecutorError::io(&file, e))?;
            f.sync_all().map_err(|e| ExecutorError::io(&file, e))?;
        }
        // The descriptor last: a topic exists once its descriptor does.
        write_atomic(&fs, &descriptor, &encode_descriptor(partitions))?;
        sync_parent(&fs, &topic.path)?;
        tracing::info!(topic = name, partitions, path = %topic.path.display(), "created topic");
        Ok(topic)
    }

    /// Opens the existing topic `name` under `dir`.
    pub fn open(dir: impl AsRef<Path>, name: &str) -> Result<Topic> {
        check_topic_name(name)?;
        let path = dir.as_ref().join(name);
        let descriptor = path.join(DESCRIPTOR_FILE);
        let bytes = match std::fs::read(&descriptor) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::InvalidJob(format!(
                    "topic {name:?} does not exist in {} (no {})",
                    dir.as_ref().display(),
                    descriptor.display()
                )));
            }
            Err(e) => return Err(ExecutorError::io(&descriptor, e)),
        };
        let partitions = decode_descriptor(&descriptor, &bytes)?;
        Ok(Topic {
            path,
            name: name.to_owned(),
            partitions,
        })
    }

    /// Opens topic `name`, creating it with `partitions` partitions if it
    /// does not exist. An existing topic with another partition count is an error.
    pub fn open_or_create(dir: impl AsRef<Path>, name: &str, partitions: u32) -> Result<Topic> {
        let dir = dir.as_ref();
        if dir.join(name).join(DESCRIPTOR_FILE).exists() {
            let topic = Topic::open(dir, name)?;
            if topic.partitions != partitions {
                return Err(ExecutorError::InvalidJob(format!(
                    "topic {name:?} has {} partitions, not {partitions}",
                    topic.partitions
                )));
            }
            Ok(topic)
        } else {
            Topic::create(dir, name, partitions)
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The topic's directory (`<dir>/<name>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn partition_file(&self, partition: u32) -> PathBuf {
        self.path.join(format!("partition-{partition}.log"))
    }

    /// The file of `partition`; an error if the topic has no such partition.
    pub fn partition_path(&self, partition: u32) -> Result<PathBuf> {
        if partition < self.partitions {
            Ok(self.partition_file(partition))
        } else {
            Err(ExecutorError::InvalidJob(format!(
                "topic {:?} has {} partitions; partition {partition} does not exist",
                self.name, self.partitions
            )))
        }
    }

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
        let mut files = Vec::with_capacity(topic.partitions as usize);
        for p in 0..topic.partitions {
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
        let n = self.topic.partitions;
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
                self.topic.name
            )));
        };
        encode_record(&mut pf.pending, timestamp_millis, key, value)?;
        pf.pending_records += 1;
        let offset = pf.next_offset;
        pf.next_offset += 1;
        if pf.pending.len() >= self.buffer_limit {
            pf.flush()?;
        }
        tracing::trace!(topic = %self.topic.name, partition = p, offset, "appended record");
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
            tracing::warn!(topic = %self.topic.name, error = %e, "buffered log records lost when the writer was dropped");
        }
    }
}
