//! # cairn state-core
//!
//! The traits and types every cairn state backend and engine shares:
//!
//! - [`KeyedStateBackend`]: a byte-level store of keyed state, scoped by key
//!   group, key and namespace, and [`Checkpointable`]: its two-phase snapshot
//!   (short synchronous part, asynchronous write) and restore.
//! - [`typed`]: Value, List, Map, Reducing and Aggregating state over serde,
//!   with TTL ([`ttl`]) and timers ([`timers`]), written once for all backends.
//! - Key groups ([`key_group`]) with Flink's assignment, so checkpoints restore
//!   at another parallelism.
//! - Operator (non-keyed) state ([`operator_state`]).
//! - [`CheckpointStorage`] and the in-memory storage; the checkpoint
//!   [`metadata`] format; the shared-state [`registry`] and the
//!   [`checkpoint_store`] with retention.
//!
//! # Example
//!
//! Key groups decide which subtask owns a key; operator state (here a
//! source's partition offsets) is snapshotted through a [`CheckpointStorage`]
//! and redistributed when the parallelism changes. Keyed state works the same
//! way through a backend crate (`backend-heap`'s docs show it end to end).
//!
//! ```
//! use state_core::metadata::OperatorStateMode;
//! use state_core::operator_state::OperatorStateStore;
//! use state_core::{CheckpointId, CheckpointStorage, MaxParallelism, MemoryCheckpointStorage};
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
//! `state-core <- backend-{heap,fs,rocks} <- executor <- cli`. This crate
//! depends on no other cairn crate and holds no backend: backends implement
//! its traits, engines code against them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod checkpoint_store;
pub mod clock;
pub mod error;
pub mod fs;
pub mod ids;
pub mod key_group;
pub mod memory_storage;
pub mod metadata;
pub mod operator_state;
pub mod registry;
pub mod small_bytes;
pub mod snapshot_format;
pub mod storage;
pub mod timers;
pub mod ttl;
pub mod typed;
pub mod varint;

#[cfg(feature = "test-suite")]
pub mod conformance;
#[cfg(any(test, feature = "test-suite"))]
pub mod faulty_fs;
#[cfg(any(test, feature = "test-suite"))]
pub mod model;

pub use backend::{
    AsyncSnapshot, BackendContext, BackendFactory, Checkpointable, EntryKey, KeyVisitor,
    KeyedStateBackend, MapVisitor, SnapshotMode, StateDescriptor, StateKind, StateLayout,
    ValueUpdate, handles_for_range,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorKind, Result, StateError};
pub use ids::{CheckpointId, JobId, OperatorId, StateId};
pub use key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
pub use memory_storage::MemoryCheckpointStorage;
pub use metadata::{CheckpointMetadata, KeyedStateHandle, SnapshotKind};
pub use storage::{CheckpointOutput, CheckpointStorage, StateScope, StreamHandle, StreamLocation};
pub use ttl::{TtlConfig, TtlUpdateType, TtlVisibility};
