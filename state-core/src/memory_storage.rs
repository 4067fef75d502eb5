//! In-memory checkpoint storage (Flink's JobManager / memory storage).
//!
//! Every stream is kept inside its handle ([`StreamLocation::Inline`]) and the
//! metadata of completed checkpoints is kept in memory, encoded and decoded
//! through [`CheckpointMetadata::encode`] / [`CheckpointMetadata::decode`] so
//! the same checks run as for durable storages. Nothing survives the process:
//! use it for tests, small jobs and local development.
//!
//! The storage is bounded: the bytes of all streams of one checkpoint may not
//! exceed `max_state_bytes` (default [`DEFAULT_MAX_STATE_BYTES`], 5 MiB). A
//! stream that goes over fails — in `write` as soon as the bound is passed,
//! and at the latest in `close` — with [`StateError::LimitExceeded`], which
//! fails that checkpoint only. The bytes of a checkpoint stay accounted until
//! [`CheckpointStorage::discard_checkpoint`] forgets it; callers discard
//! aborted checkpoints as well as subsumed ones.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::checkpoint_id::CheckpointId;
use crate::handle::{StateScope, StreamHandle, StreamLocation};
use crate::metadata::CheckpointMetadata;
use crate::storage::{CheckpointOutput, CheckpointStorage, check_stream_name};
use crate::{Result, StateError};

/// The default bound on the state of one checkpoint: 5 MiB, as in Flink.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 5 * 1024 * 1024;

/// What the limit error calls the measured quantity.
const LIMIT_WHAT: &str = "in-memory checkpoint state";

#[derive(Debug, Default)]
struct Inner {
    /// Encoded metadata of completed checkpoints.
    metadata: BTreeMap<CheckpointId, Vec<u8>>,
    /// Bytes of closed streams, per checkpoint.
    accounted: HashMap<CheckpointId, u64>,
}

/// Checkpoint storage in process memory, bounded per checkpoint.
/// Thread-safe: every method takes `&self`.
#[derive(Debug, Clone)]
pub struct MemoryCheckpointStorage {
    max_state_bytes: u64,
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemoryCheckpointStorage {
    fn default() -> Self {
        MemoryCheckpointStorage::new(DEFAULT_MAX_STATE_BYTES)
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The data stays consistent across a panic: every update is one insert or
    // add, so a poisoned lock is still safe to use.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryCheckpointStorage {
    /// A storage holding at most `max_state_bytes` of stream bytes per checkpoint.
    pub fn new(max_state_bytes: u64) -> Self {
        MemoryCheckpointStorage {
            max_state_bytes,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// The bound on one checkpoint's state, in bytes.
    pub fn max_state_bytes(&self) -> u64 {
        self.max_state_bytes
    }

    /// Bytes of closed streams accounted to checkpoint `id`.
    pub fn checkpoint_bytes(&self, id: CheckpointId) -> u64 {
        lock(&self.inner).accounted.get(&id).copied().unwrap_or(0)
    }
}

/// A stream buffered in memory until it is closed.
struct MemoryOutput {
    inner: Arc<Mutex<Inner>>,
    checkpoint: CheckpointId,
    limit: u64,
    buf: Vec<u8>,
}

impl MemoryOutput {
    fn limit_error(&self, size: u64) -> StateError {
        StateError::LimitExceeded {
            checkpoint: self.checkpoint,
            what: LIMIT_WHAT.to_owned(),
            size,
            limit: self.limit,
        }
    }
}

impl Write for MemoryOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let new_len = (self.buf.len() + buf.len()) as u64;
        // The stream alone being over the limit means the checkpoint is: fail
        // early rather than buffer without bound. Streams of the same
        // checkpoint are summed in `close`.
        if new_len > self.limit {
            return Err(io::Error::other(self.limit_error(new_len)));
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for MemoryOutput {
    fn position(&self) -> u64 {
        self.buf.len() as u64
    }

    fn close(self: Box<Self>) -> Result<StreamHandle> {
        let len = self.buf.len() as u64;
        {
            let mut inner = lock(&self.inner);
            let accounted = inner.accounted.entry(self.checkpoint).or_insert(0);
            let total = accounted.saturating_add(len);
            if total > self.limit {
                drop(inner);
                return Err(self.limit_error(total));
            }
            *accounted = total;
        }
        let crc32 = crc32fast::hash(&self.buf);
        Ok(StreamHandle {
            location: StreamLocation::Inline(Bytes::from(self.buf)),
            size: len,
            crc32,
        })
    }
}

impl CheckpointStorage for MemoryCheckpointStorage {
    fn describe(&self) -> String {
        format!("memory (max {} bytes)", self.max_state_bytes)
    }

    fn initialize_checkpoint(&self, id: CheckpointId) -> Result<()> {
        lock(&self.inner).accounted.entry(id).or_insert(0);
        Ok(())
    }

    fn create_output(
        &self,
        id: CheckpointId,
        _scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        check_stream_name(name)?;
        Ok(Box::new(MemoryOutput {
            inner: Arc::clone(&self.inner),
            checkpoint: id,
            limit: self.max_state_bytes,
            buf: Vec::new(),
        }))
    }

    fn read(&self, handle: &StreamHandle) -> Result<Bytes> {
        match &handle.location {
            StreamLocation::Inline(bytes) => Ok(bytes.clone()),
            StreamLocation::File(path) => Err(StateError::invalid(format!(
                "in-memory checkpoint storage cannot read file stream {path}; \
                 restore it with the filesystem storage that wrote it"
            ))),
        }
    }

    fn discard_stream(&self, _handle: &StreamHandle) -> Result<()> {
        // Inline bytes live in the handle; dropping the handle frees them.
        Ok(())
    }

    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        let encoded = metadata.encode()?;
        lock(&self.inner)
            .metadata
            .insert(metadata.checkpoint_id, encoded);
        tracing::debug!(
            checkpoint_id = metadata.checkpoint_id.get(),
            bytes = metadata.state_size(),
            "in-memory checkpoint completed"
        );
        Ok(())
    }

    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        let encoded = lock(&self.inner).metadata.get(&id).cloned();
        match encoded {
            Some(bytes) => CheckpointMetadata::decode(
                &bytes,
                &format!("in-memory {}/_metadata", id.dir_name()),
            ),
            None => Err(StateError::NotFound {
                checkpoint: id,
                detail: "no completed checkpoint with this id in in-memory storage".to_owned(),
            }),
        }
    }

    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        Ok(lock(&self.inner).metadata.keys().copied().collect())
    }

    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        let mut inner = lock(&self.inner);
        inner.metadata.remove(&id);
        inner.accounted.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::ids::JobId;
    use crate::metadata::SnapshotKind;
    use crate::storage::read_verified;

    fn write_stream(
        storage: &MemoryCheckpointStorage,
        id: CheckpointId,
        len: usize,
    ) -> Result<StreamHandle> {
        let mut out = storage.create_output(id, StateScope::Exclusive, "state")?;
        out.write_all(&vec![7u8; len])
            .map_err(|e| crate::snapshot_format::output_error(e, "state"))?;
        out.close()
    }

    fn metadata(id: CheckpointId) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: id,
            job_id: JobId::new("job").unwrap(),
            timestamp_millis: 1,
            kind: SnapshotKind::Full,
            operators: Vec::new(),
        }
    }

    #[test]
    fn streams_and_metadata_round_trip() {
        let storage = MemoryCheckpointStorage::default();
        assert_eq!(storage.max_state_bytes(), DEFAULT_MAX_STATE_BYTES);
        let id = CheckpointId(1);
        storage.initialize_checkpoint(id).unwrap();
        let handle = write_stream(&storage, id, 100).unwrap();
        assert_eq!(read_verified(&storage, &handle).unwrap().len(), 100);
        assert_eq!(storage.checkpoint_bytes(id), 100);
        assert!(storage.read_metadata(id).is_err());
        storage.write_metadata(&metadata(id)).unwrap();
        assert_eq!(storage.read_metadata(id).unwrap(), metadata(id));
        assert_eq!(storage.list_checkpoints().unwrap(), vec![id]);
        storage.discard_checkpoint(id).unwrap();
        storage.discard_checkpoint(id).unwrap();
        assert!(storage.list_checkpoints().unwrap().is_empty());
        assert_eq!(storage.checkpoint_bytes(id), 0);
        let err = storage.read_metadata(id).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(
            storage
                .create_output(id, StateScope::Exclusive, "../x")
                .is_err()
        );
    }

    #[test]
    fn limit_exceeded_fails_that_checkpoint_only() {
        let storage = MemoryCheckpointStorage::new(1000);
        // Two streams of 600 bytes: the second one's close goes over.
        let big = CheckpointId(1);
        write_stream(&storage, big, 600).unwrap();
        let err = write_stream(&storage, big, 600).unwrap_err();
        match &err {
            StateError::LimitExceeded {
                checkpoint,
                size,
                limit,
                ..
            } => assert_eq!((*checkpoint, *size, *limit), (big, 1200, 1000)),
            other => panic!("unexpected error {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("1200") && msg.contains("1000"), "{msg}");
        assert!(msg.contains("in-memory checkpoint state"), "{msg}");
        // One stream alone over the limit fails in write.
        let err = write_stream(&storage, CheckpointId(2), 5000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LimitExceeded);
        // A later, smaller checkpoint succeeds.
        let ok = CheckpointId(3);
        write_stream(&storage, ok, 900).unwrap();
        storage.write_metadata(&metadata(ok)).unwrap();
        assert_eq!(storage.list_checkpoints().unwrap(), vec![ok]);
    }

    #[test]
    fn file_streams_are_refused() {
        let storage = MemoryCheckpointStorage::default();
        let handle = StreamHandle {
            location: StreamLocation::File("chk-1/x".into()),
            size: 1,
            crc32: 0,
        };
        let err = storage.read(&handle).unwrap_err();
        assert!(err.to_string().contains("chk-1/x"), "{err}");
    }
}
