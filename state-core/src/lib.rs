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
pub mod snapshot_format;
pub mod storage;
pub mod timers;
pub mod ttl;
pub mod typed;

#[cfg(feature = "test-suite")]
pub mod conformance;
#[cfg(any(test, feature = "test-suite"))]
pub mod faulty_fs;
#[cfg(any(test, feature = "test-suite"))]
pub mod model;

pub use backend::{
    AsyncSnapshot, BackendContext, BackendFactory, Checkpointable, EntryKey, KeyVisitor,
    KeyedStateBackend, MapVisitor, SnapshotMode, StateDescriptor, StateKind, StateLayout,
    handles_for_range,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorKind, Result, StateError};
pub use ids::{CheckpointId, JobId, OperatorId, StateId};
pub use key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
pub use memory_storage::MemoryCheckpointStorage;
pub use metadata::{CheckpointMetadata, KeyedStateHandle, SnapshotKind};
pub use storage::{CheckpointOutput, CheckpointStorage, StateScope, StreamHandle, StreamLocation};
pub use ttl::{TtlConfig, TtlUpdateType, TtlVisibility};
