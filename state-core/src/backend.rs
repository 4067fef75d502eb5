//! The byte-level keyed-state backend trait and the checkpointing trait.
//!
//! A backend stores, per registered state, entries addressed by
//! (key group, key, namespace) — plus a user key for map states — as raw
//! bytes. It knows nothing of serialization, TTL or timers: the typed layer
//! ([`crate::typed`]) builds those on top, once, for every backend.
//!
//! # Threading
//! A backend instance belongs to one subtask and is used from that subtask's
//! thread only (`Send`, not `Sync`). The asynchronous part of a snapshot
//! ([`AsyncSnapshot`]) is `Send` and runs on another thread while the backend
//! keeps processing.

use std::fmt::Debug;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::checkpoint_id::CheckpointId;
use crate::clock::Clock;
use crate::ids::{OperatorId, StateId};
use crate::key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::metadata::KeyedStateHandle;
use crate::small_bytes::SmallBytes;
use crate::storage::CheckpointStorage;
use crate::ttl::TtlConfig;
use crate::{Result, StateError};

/// The kind of a keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per (key, namespace).
    Value,
    /// A list of elements per (key, namespace), appendable without a read.
    List,
    /// A map from user key to value per (key, namespace).
    Map,
    /// One value folded from added elements by a reduce function.
    Reducing,
    /// One accumulator folded from added elements by an aggregate function.
    Aggregating,
}

/// How a backend stores a state of some [`StateKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateLayout {
    /// One value per (key, namespace): value, reducing and aggregating states.
    Value,
    /// A list of elements per (key, namespace).
    List,
    /// User-keyed entries per (key, namespace).
    Map,
}

impl StateKind {
    /// How the backend stores this kind.
    pub fn layout(self) -> StateLayout {
        match self {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => StateLayout::Value,
            StateKind::List => StateLayout::List,
            StateKind::Map => StateLayout::Map,
        }
    }
}

/// What a backend needs to know about a state when it is registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDescriptor {
    /// The state's name, unique within the operator.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Its time-to-live, if entries expire.
    pub ttl: Option<TtlConfig>,
    /// The name of the stored type (the typed layer records
    /// `std::any::type_name` of it; see [`crate::typed`]), kept in every
    /// snapshot. `None`: not recorded (a byte-level registration, or a
    /// snapshot older than the formats that record it). Registering a state
    /// whose recorded type name differs is refused unless
    /// [`StateDescriptor::migrate_from`] names the recorded one.
    pub type_name: Option<String>,
    /// At registration only, never stored: the recorded type name this
    /// registration converts from (the caller rewrites the entries, as the
    /// typed layer's migrations do). `None` for every stored descriptor.
    #[serde(skip)]
    pub migrate_from: Option<String>,
}

impl StateDescriptor {
    /// A descriptor without TTL and without a recorded type.
    pub fn new(name: impl Into<String>, kind: StateKind) -> Self {
        StateDescriptor {
            name: name.into(),
            kind,
            ttl: None,
            type_name: None,
            migrate_from: None,
        }
    }

    /// The same descriptor recording `type_name` as the stored type.
    pub fn with_type_name(mut self, type_name: impl Into<String>) -> Self {
        self.type_name = Some(type_name.into());
        self
    }

    /// The TTL by which full snapshots drop this state's expired entries
    /// (`None`: it has no TTL, or cleanup in full snapshots is off).
    pub fn full_snapshot_cleanup(&self) -> Option<TtlConfig> {
        self.ttl.filter(|cfg| cfg.cleanup_in_full_snapshot)
    }
}

/// The address of the state of one key in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryKey<'a> {
    /// The key group of `key`; must lie in the backend's range.
    pub key_group: KeyGroup,
    /// The serialized key.
    pub key: &'a [u8],
    /// The serialized namespace (empty for the default namespace).
    pub namespace: &'a [u8],
}

/// [`KeyedStateBackend::update_value`] as a `get`, then a `put` or `clear`:
/// the default, for backends that override it only in some configurations.
pub fn update_value_by_get_and_put<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    state: StateId,
    key: &EntryKey<'_>,
    f: &mut ValueUpdate<'_>,
) -> Result<()> {
    let current = backend.get(state, key)?;
    match f(current.as_deref())? {
        Some(value) => backend.put(state, key, value.into_bytes()),
        None => backend.clear(state, key),
    }
}

/// What [`KeyedStateBackend::update_value`] makes of the current value
/// (`None`: absent); returning `None` removes it. The new value comes as
/// [`SmallBytes`], so a short value (a count, a timestamp) is built on the
/// stack and stored in place without an allocation.
pub type ValueUpdate<'a> = dyn FnMut(Option<&[u8]>) -> Result<Option<SmallBytes>> + 'a;

/// Visits the (user key, value) entries of a map state; break to stop.
pub type MapVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// Visits the (key group, key, namespace) addresses of a state; break to stop.
pub type KeyVisitor<'a> = dyn FnMut(&EntryKey<'_>) -> ControlFlow<()> + 'a;

/// A byte-level store of keyed state for one subtask's key-group range.
///
/// Contracts common to all methods:
/// - `state` must come from [`KeyedStateBackend::register_state`] on the same
///   instance and have a matching layout, else [`crate::StateError::InvalidArgument`].
/// - `key.key_group` must lie in [`KeyedStateBackend::key_group_range`], else
///   [`crate::StateError::InvalidArgument`].
/// - Writes are visible to every later read on the same instance; nothing is
///   durable until a checkpoint containing it completes.
/// - Values are opaque bytes; the backend never interprets them except to
///   apply a state's TTL when it writes a full snapshot (see [`TtlConfig`]).
pub trait KeyedStateBackend: Send + Debug {
    /// The key groups this instance holds.
    fn key_group_range(&self) -> KeyGroupRange;

    /// The job's number of key groups.
    fn max_parallelism(&self) -> MaxParallelism;

    /// Registers a state, or returns the id of the state already registered
    /// under the same name (also one restored from a snapshot). Registering a
    /// name again with another kind is an error; a changed TTL replaces the old one.
    /// Type names follow [`backend_support::StateCatalog::register`]: another
    /// type name than the recorded one is an error naming both, unless the
    /// descriptor migrates from the recorded one.
    ///
    /// [`backend_support::StateCatalog::register`]: crate::backend_support::StateCatalog::register
    fn register_state(&mut self, descriptor: &StateDescriptor) -> Result<StateId>;

    /// The descriptors of every registered state, indexed by [`StateId`].
    fn states(&self) -> Vec<StateDescriptor>;

    /// The value of a value-layout state.
    fn get(&self, state: StateId, key: &EntryKey<'_>) -> Result<Option<Bytes>>;

    /// Sets the value of a value-layout state.
    fn put(&mut self, state: StateId, key: &EntryKey<'_>, value: Bytes) -> Result<()>;

    /// Replaces the value of a value-layout state with what `f` makes of
    /// the current one (`None`: absent); `f` returning `None` removes it.
    /// The read-modify-write of reducing, aggregating and `reduce`/`sum`:
    /// backends that can find the entry once for both override it (the
    /// default is [`KeyedStateBackend::get`], then `put` or `clear`). If `f`
    /// fails, the value is left as it was.
    fn update_value(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        f: &mut ValueUpdate<'_>,
    ) -> Result<()> {
        update_value_by_get_and_put(self, state, key, f)
    }

    /// The elements of a list-layout state, oldest first (empty if none).
    fn get_list(&self, state: StateId, key: &EntryKey<'_>) -> Result<Vec<Bytes>>;

    /// Appends one element to a list-layout state without reading it.
    fn append(&mut self, state: StateId, key: &EntryKey<'_>, element: Bytes) -> Result<()>;

    /// Replaces all elements of a list-layout state (an empty list clears it).
    fn put_list(&mut self, state: StateId, key: &EntryKey<'_>, elements: Vec<Bytes>) -> Result<()>;

    /// The value of one user key of a map-layout state.
    fn map_get(&self, state: StateId, key: &EntryKey<'_>, user_key: &[u8])
    -> Result<Option<Bytes>>;

    /// Sets one user key of a map-layout state.
    fn map_put(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
        value: Bytes,
    ) -> Result<()>;

    /// Removes one user key of a map-layout state.
    fn map_remove(&mut self, state: StateId, key: &EntryKey<'_>, user_key: &[u8]) -> Result<()>;

    /// Visits every (user key, value) of a map-layout state for one key and
    /// namespace, until the visitor breaks. Order is unspecified.
    fn map_scan(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        visit: &mut MapVisitor<'_>,
    ) -> Result<()>;

    /// Removes everything a state holds for one key and namespace (the value,
    /// the whole list or the whole map).
    fn clear(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<()>;

    /// Visits every (key group, key, namespace) that holds state in `state`,
    /// once each, until the visitor breaks. Order is unspecified. The backend
    /// must not be modified during the visit.
    fn keys(&self, state: StateId, visit: &mut KeyVisitor<'_>) -> Result<()>;
}

/// The part of a snapshot that runs off the task thread.
pub trait AsyncSnapshot: Send {
    /// Writes the snapshot to `storage` and returns its handle, or `None` when
    /// the backend held no state. Errors fail this checkpoint only; the
    /// backend that produced the snapshot keeps working.
    fn write(self: Box<Self>, storage: &dyn CheckpointStorage) -> Result<Option<KeyedStateHandle>>;
}

/// What a backend writes for one snapshot: a checkpoint in full or
/// incrementally, or a savepoint in one of its two formats.
///
/// A savepoint ([`SnapshotMode::is_savepoint`]) is self-contained: it
/// references no file of an earlier snapshot, and no later snapshot builds
/// on it. Its completion reaches the backend as
/// [`Checkpointable::notify_checkpoint_aborted`], so the backend forgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SnapshotMode {
    /// Write every entry.
    #[default]
    Full,
    /// Write only what changed since the last confirmed checkpoint, where the
    /// backend supports it; others write a full snapshot.
    Incremental,
    /// A canonical savepoint: every entry in cairn's key-group stream format
    /// ([`KeyedStateHandle::KeyGroups`]), whatever the backend's own mode,
    /// so it restores into any backend at any parallelism.
    CanonicalSavepoint,
    /// A native savepoint: the backend's own files, all of them written by
    /// this snapshot (RocksDB: every SST file). Faster to take and restore
    /// than canonical, restores only into the same backend. Backends with no
    /// native format write a canonical savepoint.
    NativeSavepoint,
}

impl SnapshotMode {
    /// Whether this is a savepoint rather than a checkpoint.
    pub fn is_savepoint(self) -> bool {
        matches!(
            self,
            SnapshotMode::CanonicalSavepoint | SnapshotMode::NativeSavepoint
        )
    }
}

/// The two formats of a savepoint, as in Flink 1.15+.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SavepointFormat {
    /// Backend-portable: restores into heap or RocksDB at any parallelism.
    #[default]
    Canonical,
    /// The backend's own files: faster to take and restore, same backend only.
    Native,
}

impl SavepointFormat {
    /// The snapshot mode backends take this savepoint in.
    pub fn snapshot_mode(self) -> SnapshotMode {
        match self {
            SavepointFormat::Canonical => SnapshotMode::CanonicalSavepoint,
            SavepointFormat::Native => SnapshotMode::NativeSavepoint,
        }
    }

    /// The name used on the command line and in messages (`canonical`, `native`).
    pub fn name(self) -> &'static str {
        match self {
            SavepointFormat::Canonical => "canonical",
            SavepointFormat::Native => "native",
        }
    }
}

impl std::fmt::Display for SavepointFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SavepointFormat {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "canonical" => Ok(SavepointFormat::Canonical),
            "native" => Ok(SavepointFormat::Native),
            other => Err(StateError::invalid(format!(
                "savepoint format {other:?} is not one of canonical, native"
            ))),
        }
    }
}

/// Snapshot and restore of a [`KeyedStateBackend`].
pub trait Checkpointable: KeyedStateBackend {
    /// The synchronous part of a snapshot for checkpoint `id`: captures a
    /// consistent view of the state as of this call and returns the work that
    /// writes it. Writes made after this call returns are not in the snapshot.
    /// Must be short: it runs on the task thread while records wait.
    fn snapshot(&mut self, id: CheckpointId, mode: SnapshotMode) -> Result<Box<dyn AsyncSnapshot>>;

    /// Replaces all state with the state in `handles`, keeping only the key
    /// groups in [`KeyedStateBackend::key_group_range`]. `handles` may come
    /// from any parallelism (rescaling): pass every handle whose range
    /// overlaps this backend's (see [`handles_for_range`]). On error the
    /// backend is left empty, never half-restored.
    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<()>;

    /// The checkpoint this backend was just restored from is not the job's
    /// own (it was restored in [`crate::RestoreMode::NoClaim`], or lives in
    /// another storage): from now on no snapshot may reference a file of it,
    /// so each writes every file it needs anew, until one of them completes
    /// ([`Checkpointable::notify_checkpoint_complete`]) and later ones may
    /// build on that. Flink makes this first checkpoint a full one. Backends
    /// whose snapshots never reference files of earlier checkpoints (full
    /// snapshots) need not override it.
    fn forget_restored_files(&mut self) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `id` completed: every task acknowledged it and its metadata
    /// is durable. Incremental backends may now build on it.
    fn notify_checkpoint_complete(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `id` was aborted; its files must not be built upon.
    fn notify_checkpoint_aborted(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `id` was subsumed: a newer one completed and retention
    /// removed `id` from the retained checkpoints (Flink's
    /// `notifyCheckpointSubsumed`). Backends that keep local copies of
    /// checkpoints (local recovery) delete `id`'s copy here.
    fn notify_checkpoint_subsumed(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// The handles whose key groups overlap `range`: what a subtask with that
/// range passes to [`Checkpointable::restore`].
pub fn handles_for_range<'a>(
    handles: impl IntoIterator<Item = &'a KeyedStateHandle>,
    range: KeyGroupRange,
) -> Vec<KeyedStateHandle> {
    handles
        .into_iter()
        .filter(|h| !h.key_groups().intersect(&range).is_empty())
        .cloned()
        .collect()
}

/// Where a backend instance runs: what a [`BackendFactory`] needs to create it.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The operator whose state it holds.
    pub operator_id: OperatorId,
    /// The subtask index.
    pub subtask: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The job's number of key groups.
    pub max_parallelism: MaxParallelism,
    /// The clock for TTL and timers.
    pub clock: Arc<dyn Clock>,
}

impl BackendContext {
    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> Result<KeyGroupRange> {
        self.max_parallelism
            .range_for_subtask(self.parallelism, self.subtask)
    }
}

/// Creates backend instances for subtasks; how engines stay generic over backends.
pub trait BackendFactory: Send + Sync + Debug {
    /// The backend type created.
    type Backend: Checkpointable + 'static;

    /// A short name for logs and metadata (`heap`, `rocks`).
    fn name(&self) -> &'static str;

    /// Creates an empty backend for one subtask.
    fn create(&self, context: &BackendContext) -> Result<Self::Backend>;
}
