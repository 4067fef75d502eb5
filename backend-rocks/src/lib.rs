//! # cairn backend-rocks
//!
//! Keyed state in RocksDB with incremental SST-diff checkpoints, local
//! recovery and rescaling (Flink's EmbeddedRocksDBStateBackend).
//!
//! - **Layout.** One column family per registered state. A RocksDB key is
//!   `[key group u16 BE][varint len][key][varint len][namespace]`, followed by
//!   the user key for map states, so a key-group range is one contiguous span
//!   and the entries of a (key, namespace) share a prefix. List appends are
//!   RocksDB merges (elements length-prefixed; the merge concatenates), never
//!   a read-modify-write. Writes skip the write-ahead log: state is durable
//!   through checkpoints, as in Flink.
//! - **Value cache.** Value, reducing and aggregating entries pass through a
//!   bounded write-back cache ([`RocksBackendOptions::value_cache_bytes`],
//!   64 MiB shared by the backends of one factory by default, 0 turns it
//!   off): repeated reads of a key
//!   skip RocksDB, writes are batched, and the snapshot's synchronous part
//!   writes every dirty entry before the native checkpoint (at most
//!   [`RocksBackendOptions::value_cache_max_dirty`], so that part stays
//!   short). A keyed count on 1M keys reads RocksDB for a key's first record
//!   only while the key stays cached. Flink's RocksDB backend reads RocksDB
//!   on every `value()`.
//! - **TTL.** The typed layer never returns expired entries; a compaction
//!   filter per column family drops them from disk using
//!   [`state_core::TtlConfig::is_expired`] (see the `ttl_filter` notes on lists).
//! - **Memory.** Backends of one [`RocksBackendFactory`] (and its clones)
//!   share one [`RocksBackendOptions::memory_budget`], as Flink's managed
//!   memory: the value caches share `value_cache_bytes` of it, one block
//!   cache holds the rest, and one write-buffer manager bounds the
//!   memtables of every database together and charges them to that cache.
//!   So value caches, block cache and memtables stay within the budget at
//!   any parallelism (before, each database had its own write-buffer
//!   manager with the whole limit, and each value cache 64 MiB beside the
//!   budget). Profiles
//!   ([`PredefinedProfile`]) and the usual knobs (compression per level, bloom
//!   filters, write buffer size, `max_open_files`, fsync) are options.
//! - **Incremental checkpoints.** The synchronous part writes the value
//!   cache back and starts a native RocksDB checkpoint (memtable flush,
//!   hard links) into the instance's local directory on a thread of its
//!   own; until it is taken RocksDB takes no writes (value-state writes wait
//!   in the value cache, list and map writes wait for it:
//!   [`RocksBackend::checkpoint_write_wait`]), so it holds exactly the
//!   writes made before the snapshot, and the task does not wait for the
//!   flush as Flink's does. The asynchronous part waits for it, then uploads to [`StateScope::Shared`] only
//!   the SST files the last *confirmed* checkpoint
//!   ([`Checkpointable::notify_checkpoint_complete`]) did not contain,
//!   MANIFEST/CURRENT/OPTIONS as exclusive files, and a meta stream; it returns
//!   a [`KeyedStateHandle::Incremental`]. Files uploaded by a checkpoint that
//!   is aborted are never reused; files uploaded by a snapshot whose upload
//!   fails are deleted by the snapshot itself.
//! - **Full snapshots** ([`SnapshotMode::Full`], unless
//!   [`RocksBackendOptions::incremental`]) write cairn's key-group stream
//!   format ([`state_core::backend_support::KeyGroupStreamWriter`]) from
//!   the native checkpoint, so they restore into the heap backend and back.
//! - **Local recovery** ([`RocksBackendOptions::local_recovery`]): each
//!   checkpoint's local copy stays until
//!   [`Checkpointable::notify_checkpoint_subsumed`]; restore uses it when every
//!   file's length and CRC-32 match the handle, and otherwise downloads from
//!   storage ([`RocksBackend::last_restore_stats`] says which). Files this
//!   process already checksummed and that are unchanged since (device, inode,
//!   length, mtime) are trusted without reading them again; the rest are
//!   checked on up to four threads (see the `verified` module notes).
//! - **Local directory.** Each backend instance works in
//!   `<local_dir>/<backend_id>/` (`db-<gen>` working databases, `chk-<n>`
//!   local copies) and holds an OS lock on its `_lock` file
//!   ([`INSTANCE_LOCK_FILE`]) for its whole life, so the directory of a
//!   killed process is recognised as dead: [`sweep_local_dir`] (or
//!   [`RocksBackendFactory::sweep_dead_instances`]) removes it, keeping the
//!   local copies of checkpoints that are still retained.
//! - **Observability.** [`RocksBackend::native_metrics`] reads RocksDB's
//!   own figures (pending compaction bytes, running compactions and
//!   flushes, memtable and live SST bytes, files per level: Flink's
//!   `state.backend.rocksdb.metrics.*` of the same names),
//!   [`RocksBackend::sst_files`] lists the live SST files with their
//!   levels, and [`RocksBackend::wait_for_compactions`] waits until flushes
//!   and compactions are done (the settled database of a long-running job
//!   rather than the compaction debt of a bulk load).
//! - **Rescaling.** The incremental handle overlapping the new range most is
//!   the base (clipped with `delete_range`); the other handles' key groups are
//!   copied in.
//!
//! # Place in the workspace
//! `state-core <- backend-rocks <- executor <- cli`: the RocksDB native build
//! stays in this crate; `cli` and `benches` enable it through a `rocks` feature.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//!
//! use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
//! use bytes::Bytes;
//! use state_core::{
//!     BackendContext, BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, EntryKey,
//!     KeyedStateBackend, KeyedStateHandle, MaxParallelism, MemoryCheckpointStorage, OperatorId,
//!     SnapshotMode, StateDescriptor, StateKind, SystemClock,
//! };
//!
//! # fn main() -> state_core::Result<()> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let factory = RocksBackendFactory::new(RocksBackendOptions::new(dir.path()))?;
//! let context = BackendContext {
//!     operator_id: OperatorId("count".into()),
//!     subtask: 0,
//!     parallelism: 1,
//!     max_parallelism: MaxParallelism::new(128)?,
//!     clock: Arc::new(SystemClock),
//! };
//! let mut backend = factory.create(&context)?;
//! let count = backend.register_state(&StateDescriptor::new("count", StateKind::Value))?;
//! let key = EntryKey {
//!     key_group: context.max_parallelism.key_group_of(b"alice"),
//!     key: b"alice",
//!     namespace: b"",
//! };
//! backend.put(count, &key, Bytes::from_static(b"1"))?;
//!
//! // An incremental checkpoint: native checkpoint now, upload (normally on another thread).
//! let storage = MemoryCheckpointStorage::new(64 << 20);
//! storage.initialize_checkpoint(CheckpointId(1))?;
//! let pending = backend.snapshot(CheckpointId(1), SnapshotMode::Incremental)?;
//! backend.put(count, &key, Bytes::from_static(b"2"))?; // not in checkpoint 1
//! let handle = pending.write(&storage)?.expect("the backend holds state");
//! assert!(matches!(handle, KeyedStateHandle::Incremental(_)));
//!
//! let mut restored = factory.create(&context)?;
//! restored.restore(&[handle], &storage)?;
//! let count = restored.register_state(&StateDescriptor::new("count", StateKind::Value))?;
//! assert_eq!(restored.get(count, &key)?.as_deref(), Some(&b"1"[..]));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod backend;
mod db;
mod key_codec;
mod local_copy;
mod local_dir;
mod meta;
mod metrics;
mod native_checkpoint;
mod options;
mod restore;
mod snapshot;
mod state_access;
mod ttl_filter;
mod uploads;
mod value_cache;
mod verified;

use std::path::Path;
use std::sync::Arc;

use state_core::{BackendContext, BackendFactory, CheckpointId, Result, StateError};
#[cfg(doc)]
use state_core::{Checkpointable, KeyedStateHandle, SnapshotMode, StateScope};

pub use backend::RocksBackend;
pub use local_dir::{INSTANCE_LOCK_FILE, LocalSweep, sweep_local_dir};
pub use metrics::{LevelMetrics, NativeMetrics, SstFile};
pub use options::{Compression, PredefinedProfile, RocksBackendOptions};
/// The `rocksdb` crate this backend links, for baselines and tools that
/// need raw RocksDB next to the backend (one native build for both).
pub use rocksdb;

/// The name RocksDB snapshots carry in their handles.
pub const BACKEND_NAME: &str = "rocks";

/// Where the last restore read its files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreSource {
    /// Nothing was restored (no handle overlapped the backend's key groups).
    Nothing,
    /// Only local checkpoint copies.
    LocalCopy,
    /// Only checkpoint storage.
    Storage,
    /// Some handles from local copies, some from storage.
    Mixed,
}

/// What a restore read, from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Handles that overlapped the backend's key groups.
    pub handles: usize,
    /// Files taken from local checkpoint copies.
    pub files_from_local: usize,
    /// Bytes of those files.
    pub bytes_from_local: u64,
    /// Streams read from checkpoint storage (files, meta streams not counted).
    pub files_from_storage: usize,
    /// Bytes read from checkpoint storage, meta streams included.
    pub bytes_from_storage: u64,
    /// Files of local copies trusted without reading them again: this
    /// process checksummed them earlier and they have not changed since
    /// (the others were read and checksummed).
    pub local_files_trusted: usize,
}

impl RestoreStats {
    /// Where the restore read from.
    pub fn source(&self) -> RestoreSource {
        match (self.files_from_local > 0, self.bytes_from_storage > 0) {
            (false, false) => RestoreSource::Nothing,
            (true, false) => RestoreSource::LocalCopy,
            (false, true) => RestoreSource::Storage,
            (true, true) => RestoreSource::Mixed,
        }
    }
}

/// A RocksDB error about the database or checkpoint at `path`.
pub(crate) fn rocks_error(path: &Path, e: rocksdb::Error) -> StateError {
    let detail = e.into_string();
    if detail.contains("Corruption") {
        StateError::corrupted(path.display().to_string(), detail)
    } else {
        StateError::io(path, std::io::Error::other(detail))
    }
}

/// Creates [`RocksBackend`]s for subtasks (name `rocks`); every backend it
/// creates shares one block cache and memory budget.
#[derive(Debug, Clone)]
pub struct RocksBackendFactory {
    options: Arc<RocksBackendOptions>,
    memory: options::SharedMemoryRef,
}

impl RocksBackendFactory {
    /// A factory creating backends with `options` (checked here).
    pub fn new(options: RocksBackendOptions) -> Result<Self> {
        options.validate()?;
        let memory = Arc::new(options::SharedMemory::new(&options));
        Ok(RocksBackendFactory {
            options: Arc::new(options),
            memory,
        })
    }

    /// The options backends are created with.
    pub fn options(&self) -> &RocksBackendOptions {
        &self.options
    }

    /// Removes the directories of dead backend instances under this
    /// factory's local directory, keeping the local copies of the `retained`
    /// checkpoints ([`sweep_local_dir`]). Call it before creating backends.
    pub fn sweep_dead_instances(&self, retained: &[CheckpointId]) -> Result<LocalSweep> {
        sweep_local_dir(&self.options.local_dir, retained)
    }
}

impl BackendFactory for RocksBackendFactory {
    type Backend = RocksBackend;

    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn create(&self, context: &BackendContext) -> Result<RocksBackend> {
        RocksBackend::with_memory(context, Arc::clone(&self.options), Arc::clone(&self.memory))
    }
}
