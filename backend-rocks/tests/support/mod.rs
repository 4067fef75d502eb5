//! Helpers shared by the RocksDB backend's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a test failure

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backend_fs::FsCheckpointStorage;
use backend_rocks::{RocksBackend, RocksBackendFactory, RocksBackendOptions};
use bytes::Bytes;
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointMetadata, CheckpointOutput,
    CheckpointStorage, JobId, KeyedStateHandle, ManualClock, MaxParallelism, OperatorId,
    OperatorSnapshot, SnapshotKind, StateError, StateScope, StreamHandle, SubtaskSnapshot,
};

pub(crate) const MAX_PARALLELISM: u32 = 128;

/// The entry of `key` (no namespace) in its key group at [`MAX_PARALLELISM`].
pub(crate) fn entry(key: &[u8]) -> state_core::EntryKey<'_> {
    state_core::EntryKey {
        key_group: MaxParallelism::new(MAX_PARALLELISM)
            .unwrap()
            .key_group_of(key),
        key,
        namespace: b"",
    }
}

/// Options for tests: small memtables so many backends fit in memory.
pub(crate) fn options(dir: &Path) -> RocksBackendOptions {
    RocksBackendOptions::new(dir)
        .with_write_buffer_size(1 << 20)
        .with_memory_budget(64 << 20)
        .with_value_cache(16 << 20)
}

pub(crate) fn factory(dir: &Path, local_recovery: bool) -> RocksBackendFactory {
    RocksBackendFactory::new(
        options(dir)
            .with_incremental(true)
            .with_local_recovery(local_recovery),
    )
    .unwrap()
}

pub(crate) fn context(subtask: u32, parallelism: u32, clock: &Arc<ManualClock>) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("rocks-test".into()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(MAX_PARALLELISM).unwrap(),
        clock: clock.clone(),
    }
}

pub(crate) fn create(
    f: &RocksBackendFactory,
    subtask: u32,
    p: u32,
    clock: &Arc<ManualClock>,
) -> RocksBackend {
    f.create(&context(subtask, p, clock)).unwrap()
}

pub(crate) fn job() -> JobId {
    JobId::new("rocks-job").unwrap()
}

pub(crate) fn fs_storage(dir: &Path) -> Arc<FsCheckpointStorage> {
    Arc::new(FsCheckpointStorage::open(dir, job()).unwrap())
}

/// Checkpoint `id` of `b` in `mode` into `storage`, both parts, on this
/// thread: the handle of a backend that holds state.
pub(crate) fn checkpoint(
    b: &mut RocksBackend,
    storage: &dyn CheckpointStorage,
    id: u64,
    mode: state_core::SnapshotMode,
) -> KeyedStateHandle {
    use state_core::Checkpointable as _;
    storage.initialize_checkpoint(CheckpointId(id)).unwrap();
    b.snapshot(CheckpointId(id), mode)
        .unwrap()
        .write(storage)
        .unwrap()
        .expect("the backend holds state")
}

pub(crate) fn bytes(s: String) -> Bytes {
    Bytes::from(s)
}

/// The metadata of a checkpoint of one operator with these subtask handles.
pub(crate) fn metadata(
    id: CheckpointId,
    parallelism: u32,
    handles: Vec<KeyedStateHandle>,
) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: id,
        job_id: job(),
        timestamp_millis: 1_000 + id.get(),
        kind: SnapshotKind::Incremental,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("rocks-test".into()),
            parallelism,
            max_parallelism: MAX_PARALLELISM,
            subtasks: handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| SubtaskSnapshot {
                    subtask: i as u32,
                    keyed: vec![h],
                    operator: None,
                })
                .collect(),
        }],
    }
}

/// Every file below `dir`, relative to it, with `/` separators.
pub(crate) fn tree_files(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel: PathBuf = p.strip_prefix(base).unwrap().to_path_buf();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// The files retained checkpoints reference, plus their `_metadata`.
pub(crate) fn referenced_files(retained: &[CheckpointMetadata]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in retained {
        out.insert(format!("{}/_metadata", m.checkpoint_id.dir_name()));
        for s in m.streams() {
            out.insert(s.file_path().unwrap().to_string());
        }
    }
    out
}

/// A storage that counts reads and can fail shared uploads after some succeed.
pub(crate) struct Flaky {
    pub inner: Arc<dyn CheckpointStorage>,
    pub reads: AtomicUsize,
    /// Shared outputs still allowed before failing (usize::MAX: never fail).
    pub shared_left: AtomicUsize,
}

impl Flaky {
    pub(crate) fn new(inner: Arc<dyn CheckpointStorage>) -> Self {
        Flaky {
            inner,
            reads: AtomicUsize::new(0),
            shared_left: AtomicUsize::new(usize::MAX),
        }
    }
}

impl fmt::Debug for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flaky")
    }
}

impl CheckpointStorage for Flaky {
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
    fn initialize_checkpoint(&self, id: CheckpointId) -> state_core::Result<()> {
        self.inner.initialize_checkpoint(id)
    }
    fn create_output(
        &self,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if scope == StateScope::Shared {
            let left = self.shared_left.load(Ordering::SeqCst);
            if left == 0 {
                return Err(StateError::io(
                    name,
                    std::io::Error::other("injected upload failure"),
                ));
            }
            if left != usize::MAX {
                self.shared_left.store(left - 1, Ordering::SeqCst);
            }
        }
        self.inner.create_output(id, scope, name)
    }
    fn read(&self, handle: &StreamHandle) -> state_core::Result<Bytes> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(handle)
    }
    fn discard_stream(&self, handle: &StreamHandle) -> state_core::Result<()> {
        self.inner.discard_stream(handle)
    }
    fn write_metadata(&self, metadata: &CheckpointMetadata) -> state_core::Result<()> {
        self.inner.write_metadata(metadata)
    }
    fn read_metadata(&self, id: CheckpointId) -> state_core::Result<CheckpointMetadata> {
        self.inner.read_metadata(id)
    }
    fn list_checkpoints(&self) -> state_core::Result<Vec<CheckpointId>> {
        self.inner.list_checkpoints()
    }
    fn discard_checkpoint(&self, id: CheckpointId) -> state_core::Result<()> {
        self.inner.discard_checkpoint(id)
    }
}
