//! # cairn backend-heap
//!
//! Keyed state in process memory, organised by key group, with
//! copy-on-write snapshots (Flink's HashMap state backend).
//!
//! Every registered state holds, for each key group of the subtask's range,
//! an `Arc` of a hash map from (key, namespace) to a value, a list or a map.
//! Keys and values of up to 22 bytes are stored inside the map's slot
//! ([`state_core::backend_support::SmallBytes`]), longer ones as shared `Bytes`.
//! Taking a snapshot ([`state_core::Checkpointable::snapshot`]) only clones
//! those `Arc`s; writes made afterwards copy the one key-group map they touch
//! if the snapshot still shares it. The returned [`state_core::AsyncSnapshot`]
//! then writes the captured maps on another thread in cairn's key-group
//! stream format ([`state_core::backend_support::KeyGroupStreamWriter`]), dropping expired TTL
//! entries, while the task keeps processing. Restore reads snapshots of any
//! parallelism and keeps only its own key groups.
//!
//! # Incremental checkpoints
//! Flink's heap backend has none (its changelog backend logs every change
//! instead). Here [`state_core::SnapshotMode::Incremental`] writes a
//! *chain*: the first incremental checkpoint writes a base (every entry),
//! later ones a delta holding only the entries changed since the newest
//! completed checkpoint, and a removal where a key is gone. A checkpoint
//! after updating 1% of the keys writes about 1% of the full size, in a
//! time that grows with the change, not with the state. Restore reads the
//! base and applies the deltas in order; the result equals a full restore.
//! Before the deltas outgrow [`HeapBackendOptions::delta_budget_percent`]
//! of the base (default 100), a checkpoint writes a new base instead (off
//! the task thread, as every heap snapshot), so a checkpoint's storage
//! stays within about twice its full size; the shared-state registry
//! deletes the old chain when no retained checkpoint uses it. Tracking the
//! changed keys costs one set insert per first write of a key between two
//! checkpoints, and starts only with the first incremental snapshot: a job
//! taking full checkpoints pays nothing. The chain is native (it restores
//! into the heap backend only, at any parallelism); savepoints are always
//! full. See `incremental.rs` for the rules and the stream layout.
//!
//! # Local recovery
//! With [`HeapBackendOptions::with_local_recovery`], each written snapshot's
//! key-group maps stay in memory until its checkpoint is aborted or
//! subsumed, shared by the backends of one [`HeapBackendFactory`]. A restore
//! of a handle this process wrote takes those maps back (one `Arc` clone per
//! key group: microseconds for any state size) instead of reading the
//! stream; any other handle is read from storage. Flink keeps a second copy
//! on local disk, which a restore still has to deserialize. The price is
//! memory: after a checkpoint, the first write to each key group copies its
//! table (pointers, not keys and values), as writes during an asynchronous
//! snapshot already do.
//!
//! # Place in the workspace
//! `state-core <- backend-heap <- executor <- cli`: this crate implements
//! `state-core`'s [`state_core::KeyedStateBackend`] and
//! [`state_core::Checkpointable`] and depends on no other cairn crate. Its
//! default storage is [`state_core::MemoryCheckpointStorage`].
//!
//! # Example
//! ```
//! use std::sync::Arc;
//!
//! use backend_heap::{HeapBackend, HeapBackendOptions};
//! use bytes::Bytes;
//! use state_core::{
//!     BackendContext, CheckpointId, Checkpointable, EntryKey, KeyedStateBackend,
//!     MaxParallelism, MemoryCheckpointStorage, OperatorId, SnapshotMode, StateDescriptor,
//!     StateKind, SystemClock,
//! };
//!
//! # fn main() -> state_core::Result<()> {
//! let context = BackendContext {
//!     operator_id: OperatorId("count".into()),
//!     subtask: 0,
//!     parallelism: 1,
//!     max_parallelism: MaxParallelism::new(128)?,
//!     clock: Arc::new(SystemClock),
//! };
//! let mut backend = HeapBackend::new(&context, HeapBackendOptions::default())?;
//! let count = backend.register_state(&StateDescriptor::new("count", StateKind::Value))?;
//! let key = EntryKey {
//!     key_group: context.max_parallelism.key_group_of(b"alice"),
//!     key: b"alice",
//!     namespace: b"",
//! };
//! backend.put(count, &key, Bytes::from_static(b"1"))?;
//!
//! // Checkpoint: a short synchronous part, then the write (normally on another thread).
//! let storage = MemoryCheckpointStorage::default();
//! let id = CheckpointId(1);
//! let pending = backend.snapshot(id, SnapshotMode::Full)?;
//! backend.put(count, &key, Bytes::from_static(b"2"))?; // not in checkpoint 1
//! let handle = pending.write(&storage)?.expect("the backend holds state");
//!
//! // Restore into a fresh backend.
//! let mut restored = HeapBackend::new(&context, HeapBackendOptions::default())?;
//! restored.restore(&[handle], &storage)?;
//! let count = restored.register_state(&StateDescriptor::new("count", StateKind::Value))?;
//! assert_eq!(restored.get(count, &key)?.as_deref(), Some(&b"1"[..]));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod backend;
mod incremental;
mod local;
mod snapshot;
mod stream;
mod table;

use state_core::backend_support::DEFAULT_COMPRESSION_LEVEL;
use state_core::{BackendContext, BackendFactory, Result};

pub use backend::{HeapBackend, HeapRestoreStats};

/// Options of the heap backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapBackendOptions {
    /// The zstd level snapshots are compressed at (default 1: fast).
    pub compression_level: i32,
    /// Keep each written snapshot in memory until its checkpoint is
    /// subsumed, and restore from it when the handle matches (default off,
    /// as Flink's `state.backend.local-recovery`).
    pub local_recovery: bool,
    /// With incremental checkpoints, how large the deltas after a base may
    /// grow, in percent of the base, before the next checkpoint writes a new
    /// base (default 100: a checkpoint's chain stays within about twice its
    /// full size; 0 writes a base every time).
    pub delta_budget_percent: u32,
}

impl Default for HeapBackendOptions {
    fn default() -> Self {
        HeapBackendOptions {
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            local_recovery: false,
            delta_budget_percent: 100,
        }
    }
}

impl HeapBackendOptions {
    /// The same options with another zstd compression level.
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }

    /// The same options with another budget for the deltas of an incremental
    /// chain, in percent of its base (see [`Self::delta_budget_percent`]).
    pub fn with_delta_budget_percent(mut self, percent: u32) -> Self {
        self.delta_budget_percent = percent;
        self
    }

    /// The same options with local recovery on or off (see the crate docs).
    pub fn with_local_recovery(mut self, on: bool) -> Self {
        self.local_recovery = on;
        self
    }
}

/// Creates [`HeapBackend`]s for subtasks (name `heap`).
///
/// With local recovery on, the backends it creates share one set of
/// in-memory snapshot copies, so the backend of a restarted task restores
/// from what its predecessor wrote.
#[derive(Debug, Clone, Default)]
pub struct HeapBackendFactory {
    options: HeapBackendOptions,
    local: local::LocalSnapshots,
}

impl HeapBackendFactory {
    /// A factory creating backends with `options`.
    pub fn new(options: HeapBackendOptions) -> Self {
        HeapBackendFactory {
            options,
            local: local::LocalSnapshots::default(),
        }
    }
}

impl BackendFactory for HeapBackendFactory {
    type Backend = HeapBackend;

    fn name(&self) -> &'static str {
        stream::BACKEND_NAME
    }

    fn create(&self, context: &BackendContext) -> Result<HeapBackend> {
        HeapBackend::with_local(context, self.options.clone(), self.local.clone())
    }
}
