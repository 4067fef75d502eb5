//! # cairn state-core
//!
//! The traits and types every cairn state backend and engine shares:
//!
//! - [`KeyedStateBackend`]: a byte-level store of keyed state, scoped by key
//!   group, key and namespace, and [`Checkpointable`]: its two-phase snapshot
//!   (short synchronous part, asynchronous write) and restore.
//! - [`typed`]: Value, List, Map, Reducing and Aggregating state over serde,
//!   with TTL ([`TtlConfig`]) and timers ([`TimerService`]), written once for
//!   all backends.
//! - Key groups ([`KeyGroup`], [`MaxParallelism`]) with Flink's assignment,
//!   so checkpoints restore at another parallelism.
//! - Operator (non-keyed) state ([`OperatorStateStore`]).
//! - [`CheckpointStorage`] and the in-memory [`MemoryCheckpointStorage`]; the
//!   checkpoint metadata ([`CheckpointMetadata`]); the
//!   [`SharedStateRegistry`] and the [`CompletedCheckpointStore`] with
//!   retention, restore selection and verification.
//! - [`SavepointReader`] and [`SavepointWriter`]: a checkpoint's state read
//!   and written offline in the canonical format (the State Processor API).
//! - [`backend_support`]: what backend and storage authors build on (the
//!   snapshot stream format, the state catalog, file-name rules, durable
//!   writes); a job or an engine does not need it.
//!
//! Every item has one path: the modules are private and this page lists
//! what is public. The conformance suite and the model backend are in the
//! `state-testkit` crate.
//!
//! # Example
//!
//! Key groups decide which subtask owns a key; operator state (here a
//! source's partition offsets) is snapshotted through a [`CheckpointStorage`]
//! and redistributed when the parallelism changes. Keyed state works the same
//! way through a backend crate (`backend-heap`'s docs show it end to end).
//!
//! ```
//! use state_core::{
//!     CheckpointId, CheckpointStorage, MaxParallelism, MemoryCheckpointStorage, OperatorStateMode,
//!     OperatorStateStore,
//! };
//!
//! # fn main() -> state_core::Result<()> {
//! // Flink's assignment: 128 key groups, subtask 1 of 3 owns [43..=85].
//! let max = MaxParallelism::new(128)?;
//! let kg = max.key_group_of(b"user-42");
//! let owner = max.subtask_for_key_group(3, kg);
//! assert!(max.range_for_subtask(3, owner)?.contains(kg));
//!
//! // A source keeps one offset per partition in split operator state.
//! let storage = MemoryCheckpointStorage::default();
//! let id = CheckpointId(1);
//! storage.initialize_checkpoint(id)?;
//! let mut handles = Vec::new();
//! for subtask in 0..2u64 {
//!     let mut offsets = OperatorStateStore::new();
//!     offsets.set_stream_name(&format!("source-{subtask}"))?;
//!     offsets.register("offsets", OperatorStateMode::Split)?;
//!     offsets.add_typed("offsets", &(subtask, 100 * subtask))?;
//!     handles.extend(offsets.snapshot(id, &storage)?);
//! }
//!
//! // Restored at parallelism 1, the one subtask gets both partitions' offsets.
//! let restored = OperatorStateStore::restore(&handles, &storage, 1, 0)?;
//! let offsets: Vec<(u64, u64)> = restored.get_typed("offsets")?;
//! assert_eq!(offsets, vec![(0, 0), (1, 100)]);
//! # Ok(())
//! # }
//! ```
//!
//! # Place in the workspace
//! `state-core <- backend-{heap,fs,rocks} <- executor <- cli`, with
//! `state-testkit` (conformance suite, model backend, `FaultyFs`) beside it
//! as every crate's dev-dependency. This crate depends on no other cairn
//! crate and holds no backend: backends implement its traits, engines code
//! against them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod catalog;
mod checkpoint_id;
mod checkpoint_store;
mod clock;
mod error;
mod fs;
mod handle;
mod ids;
mod key_group;
mod memory_storage;
mod metadata;
mod operator_state;
mod registry;
mod savepoint;
mod small_bytes;
mod snapshot_format;
mod storage;
mod timer_names;
mod timers;
mod ttl;
pub mod typed;
mod varint;

// The public API, one path per item. The typed layer is the public module
// `typed`; what only backends and storages need is in `backend_support`.
pub use backend::{
    AsyncSnapshot, BackendContext, BackendFactory, Checkpointable, EntryKey, KeyVisitor,
    KeyedStateBackend, MapVisitor, SavepointFormat, SnapshotMode, StateDescriptor, StateKind,
    StateLayout, ValueUpdate, handles_for_range,
};
pub use checkpoint_id::CheckpointId;
pub use checkpoint_store::{
    CompletedCheckpointStore, DEFAULT_NUM_RETAINED, ExternalizedCheckpointCleanup, FileCheck,
    JobTerminalStatus, RestoreMode, RestoreSelection, VerifyReport, load_verified,
    select_for_restore, verify_checkpoint,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorKind, Result, StateError};
pub use handle::{StateScope, StreamHandle, StreamLocation};
pub use ids::{JobId, OperatorId, StateId};
pub use key_group::{
    DEFAULT_LOWER_BOUND_MAX_PARALLELISM, KeyGroup, KeyGroupRange, MaxParallelism,
    UPPER_BOUND_MAX_PARALLELISM,
};
pub use memory_storage::{DEFAULT_MAX_STATE_BYTES, MemoryCheckpointStorage};
pub use metadata::{
    CheckpointMetadata, IncrementalHandle, KeyGroupsHandle, KeyedStateHandle, METADATA_FILE_NAME,
    NamedStream, OperatorSnapshot, OperatorStateHandle, OperatorStateInfo, OperatorStateMode,
    SharedFile, SnapshotKind, SubtaskPart, SubtaskSnapshot,
};
pub use operator_state::OperatorStateStore;
pub use registry::SharedStateRegistry;
pub use savepoint::{
    CanonicalStream, KeyedOperatorWriter, NativeHandle, SavepointReader, SavepointWriter,
};
pub use storage::{CheckpointOutput, CheckpointStorage};
pub use timers::{Timer, TimerService};
pub use ttl::{TtlConfig, TtlUpdateType, TtlVisibility};

/// Building blocks for backend and storage authors, not job authors: the
/// snapshot stream format, the state catalog, file-name rules, durable
/// writes through the [`Fs`](backend_support::Fs) seam, TTL wrapping,
/// varints and the key hash.
///
/// A job or an engine needs none of this; it codes against the traits at the
/// crate root and the [`crate::typed`] layer. A backend uses these so
/// that every backend writes the same stream format and names files the same
/// way.
pub mod backend_support {
    pub use crate::backend::update_value_by_get_and_put;
    pub use crate::catalog::{CatalogEntry, StateCatalog};
    pub use crate::fs::{FileInfo, Fs, FsFile, StdFs, sync_parent, temp_path_for, write_atomic};
    pub use crate::key_group::murmur3_32;
    pub use crate::metadata::{METADATA_MAGIC, METADATA_VERSION};
    pub use crate::small_bytes::SmallBytes;
    pub use crate::snapshot_format::{
        DEFAULT_COMPRESSION_LEVEL, KeyGroupStreamReader, KeyGroupStreamWriter,
        LegacyStateDescriptor, Record, RecordEntry, SNAPSHOT_FORMAT_VERSION,
        SNAPSHOT_FORMAT_VERSION_V1, SNAPSHOT_MAGIC, output_error,
    };
    pub use crate::storage::{
        check_stream_name, file_name_part, is_safe_file_name, read_verified, write_verified_copy,
    };
    pub use crate::timer_names::{EVENT_TIME_TIMERS, PROCESSING_TIME_TIMERS, TIMER_STATE_PREFIX};
    pub use crate::ttl::{TTL_PREFIX_LEN, unwrap_ttl, wrap_ttl};
    pub use crate::varint::{put_bytes, put_varint, take_bytes, take_varint};
}
