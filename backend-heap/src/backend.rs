//! [`HeapBackend`]: keyed state in hash maps, one per state and key group.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hashbrown::hash_map::EntryRef;
use state_core::backend_support::{CatalogEntry, SmallBytes, StateCatalog, file_name_part};
use state_core::{
    BackendContext, Clock, EntryKey, KeyGroupRange, KeyVisitor, KeyedStateBackend, MapVisitor,
    MaxParallelism, OperatorId, Result, StateDescriptor, StateError, StateId, StateLayout,
    ValueUpdate,
};

use crate::HeapBackendOptions;
use crate::incremental::Tracker;
use crate::local::LocalSnapshots;

use crate::table::{ListMap, Lookup, MapMap, OwnedKey, Table, ValueMap};

/// One registered state.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) descriptor: StateDescriptor,
    pub(crate) table: Table,
}

impl CatalogEntry for State {
    fn descriptor(&self) -> &StateDescriptor {
        &self.descriptor
    }

    fn set_ttl(&mut self, ttl: Option<state_core::TtlConfig>) {
        self.descriptor.ttl = ttl;
    }

    fn set_type_name(&mut self, type_name: Option<String>) {
        self.descriptor.type_name = type_name;
    }
}

/// Keyed state of one subtask in process memory (Flink's HashMap state
/// backend).
///
/// Each registered state holds, per key group of the subtask's range, an
/// `Arc` of a hash map from (key, namespace) to a value, a list or a map.
/// The synchronous part of a snapshot clones those `Arc`s and nothing else;
/// a write after it copies the one key-group map it touches if a snapshot
/// still shares it. Keys and values of up to 22 bytes live inside the map's
/// slot; reading such a value copies it into the returned `Bytes`, longer
/// values are returned shared. `update_value` finds the entry once.
pub struct HeapBackend {
    pub(crate) operator: OperatorId,
    pub(crate) subtask: u32,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: HeapBackendOptions,
    pub(crate) states: StateCatalog<State>,
    /// Name of the keyed snapshot stream in checkpoint storage.
    pub(crate) stream_name: String,
    /// In-memory snapshot copies, when local recovery is on.
    pub(crate) local: Option<LocalSnapshots>,
    pub(crate) last_restore: Option<HeapRestoreStats>,
    /// Unique among the backends of the job: names the shared streams of
    /// incremental snapshots.
    pub(crate) backend_id: String,
    /// What changed since each snapshot, once the backend checkpoints
    /// incrementally (`None` before the first incremental snapshot: a job
    /// taking full snapshots pays nothing for tracking).
    pub(crate) tracker: Option<Tracker>,
}

/// Where the last [`state_core::Checkpointable::restore`] of a heap backend
/// took its state from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapRestoreStats {
    /// Handles restored from the in-memory copy local recovery kept.
    pub local_handles: usize,
    /// Handles read from checkpoint storage.
    pub storage_handles: usize,
    /// Bytes read from checkpoint storage.
    pub storage_bytes: u64,
}

impl fmt::Debug for HeapBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapBackend")
            .field("operator", &self.operator)
            .field("subtask", &self.subtask)
            .field("range", &self.range)
            .field("states", &self.states.len())
            .finish_non_exhaustive()
    }
}

/// A stream-name hint made of the operator id and subtask, restricted to the
/// characters checkpoint storage accepts.
fn stream_name(operator: &OperatorId, subtask: u32) -> String {
    format!("{}-{subtask}-keyed", file_name_part(&operator.0, 120, true))
}

/// Backends created by this process, for unique backend ids.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// The lowest and highest zstd levels.
const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -(1 << 17)..=22;

impl HeapBackend {
    /// An empty backend for the subtask described by `context`. With local
    /// recovery on, it keeps its own snapshot copies; backends created by a
    /// [`crate::HeapBackendFactory`] share theirs, so a successor finds them.
    pub fn new(context: &BackendContext, options: HeapBackendOptions) -> Result<Self> {
        Self::with_local(context, options, LocalSnapshots::default())
    }

    pub(crate) fn with_local(
        context: &BackendContext,
        options: HeapBackendOptions,
        local: LocalSnapshots,
    ) -> Result<Self> {
        let range = context.key_group_range()?;
        if !ZSTD_LEVELS.contains(&options.compression_level) {
            return Err(StateError::invalid(format!(
                "heap backend option compression_level {} is not a zstd level ({}..={})",
                options.compression_level,
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
        tracing::debug!(
            operator = %context.operator_id,
            subtask = context.subtask,
            %range,
            "heap backend created"
        );
        let backend_id = format!(
            "heap-{}-{:x}{:x}{:x}",
            stream_name(&context.operator_id, context.subtask),
            context.clock.now_millis(),
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed),
        );
        Ok(HeapBackend {
            backend_id,
            tracker: None,
            operator: context.operator_id.clone(),
            subtask: context.subtask,
            range,
            max_parallelism: context.max_parallelism,
            clock: Arc::clone(&context.clock),
            stream_name: stream_name(&context.operator_id, context.subtask),
            local: options.local_recovery.then_some(local),
            options,
            states: StateCatalog::new("heap"),
            last_restore: None,
        })
    }

    /// The options the backend was created with.
    pub fn options(&self) -> &HeapBackendOptions {
        &self.options
    }

    /// Where the last restore took its state from (`None` before any).
    pub fn last_restore_stats(&self) -> Option<HeapRestoreStats> {
        self.last_restore
    }

    /// The checkpoints of this backend's operator whose snapshots local
    /// recovery keeps in memory, oldest first (empty when it is off).
    pub fn local_checkpoints(&self) -> Vec<state_core::CheckpointId> {
        self.local
            .as_ref()
            .map(|l| l.checkpoints(&self.operator))
            .unwrap_or_default()
    }

    /// Number of (key, namespace) entries across all states.
    pub fn entry_count(&self) -> usize {
        self.states.iter().map(|s| s.table.len()).sum()
    }

    /// The position of `key`'s key group in the range.
    fn offset(&self, key: &EntryKey<'_>) -> Result<usize> {
        self.range.offset_of(key.key_group).ok_or_else(|| {
            StateError::invalid(format!(
                "key group {} is outside the range {} of heap backend {} subtask {}",
                key.key_group, self.range, self.operator, self.subtask
            ))
        })
    }

    fn state(&self, state: StateId) -> Result<&State> {
        self.states.get(state.index()).ok_or_else(|| {
            StateError::invalid(format!(
                "state id {} is not registered with heap backend {} subtask {}",
                state.0, self.operator, self.subtask
            ))
        })
    }

    fn wrong_layout(s: &State, wanted: StateLayout) -> StateError {
        StateError::invalid(format!(
            "state {:?} has layout {:?}, not {wanted:?}",
            s.descriptor.name,
            s.table.layout()
        ))
    }

    fn value_map(&self, state: StateId, key: &EntryKey<'_>) -> Result<&ValueMap> {
        let off = self.offset(key)?;
        let s = self.state(state)?;
        match &s.table {
            Table::Value(v) => v.get(off).map(|m| &**m).ok_or_else(|| missing_kg(key)),
            _ => Err(Self::wrong_layout(s, StateLayout::Value)),
        }
    }

    fn list_map(&self, state: StateId, key: &EntryKey<'_>) -> Result<&ListMap> {
        let off = self.offset(key)?;
        let s = self.state(state)?;
        match &s.table {
            Table::List(v) => v.get(off).map(|m| &**m).ok_or_else(|| missing_kg(key)),
            _ => Err(Self::wrong_layout(s, StateLayout::List)),
        }
    }

    fn map_map(&self, state: StateId, key: &EntryKey<'_>) -> Result<&MapMap> {
        let off = self.offset(key)?;
        let s = self.state(state)?;
        match &s.table {
            Table::Map(v) => v.get(off).map(|m| &**m).ok_or_else(|| missing_kg(key)),
            _ => Err(Self::wrong_layout(s, StateLayout::Map)),
        }
    }

    /// The table of `state` and the offset of `key`'s key group, for
    /// writing, after checking the state has `layout`.
    fn table_mut(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        layout: StateLayout,
    ) -> Result<(&mut Table, usize)> {
        let off = self.offset(key)?;
        let s = self.state(state)?;
        if s.table.layout() != layout {
            return Err(Self::wrong_layout(s, layout));
        }
        match self.states.get_mut(state.index()) {
            Some(s) => Ok((&mut s.table, off)),
            None => Err(layout_error(state, layout)),
        }
    }

    fn value_map_mut(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<&mut ValueMap> {
        match self.table_mut(state, key, StateLayout::Value)? {
            (Table::Value(v), off) => v
                .get_mut(off)
                .map(Arc::make_mut)
                .ok_or_else(|| missing_kg(key)),
            _ => Err(layout_error(state, StateLayout::Value)),
        }
    }

    fn list_map_mut(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<&mut ListMap> {
        match self.table_mut(state, key, StateLayout::List)? {
            (Table::List(v), off) => v
                .get_mut(off)
                .map(Arc::make_mut)
                .ok_or_else(|| missing_kg(key)),
            _ => Err(layout_error(state, StateLayout::List)),
        }
    }

    fn map_map_mut(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<&mut MapMap> {
        match self.table_mut(state, key, StateLayout::Map)? {
            (Table::Map(v), off) => v
                .get_mut(off)
                .map(Arc::make_mut)
                .ok_or_else(|| missing_kg(key)),
            _ => Err(layout_error(state, StateLayout::Map)),
        }
    }

    /// Notes, when checkpointing incrementally, that `key`'s entry of
    /// `state` changed: the next incremental snapshot writes it.
    fn changed(&mut self, state: StateId, key: &EntryKey<'_>) {
        let Some(tracker) = &mut self.tracker else {
            return;
        };
        let (Some(off), Some(s)) = (
            self.range.offset_of(key.key_group),
            self.states.get(state.index()),
        ) else {
            return;
        };
        let entries = s.table.len_at(off);
        tracker
            .current
            .mark(self.range.len(), state.index(), off, &lookup(key), entries);
    }

    /// Registers `descriptor` in `states`, a new state with empty tables
    /// for `key_groups` key groups (shared by
    /// [`KeyedStateBackend::register_state`] and restore).
    pub(crate) fn register_in(
        states: &mut StateCatalog<State>,
        key_groups: usize,
        descriptor: &StateDescriptor,
    ) -> Result<StateId> {
        let (id, _) = states.register(descriptor, |d| State {
            descriptor: d.clone(),
            table: Table::new(d.kind.layout(), key_groups),
        })?;
        Ok(id)
    }
}

fn missing_kg(key: &EntryKey<'_>) -> StateError {
    StateError::invalid(format!("key group {} has no table", key.key_group))
}

fn layout_error(state: StateId, wanted: StateLayout) -> StateError {
    StateError::invalid(format!(
        "state id {} is not a registered state of layout {wanted:?}",
        state.0
    ))
}

fn lookup<'a>(key: &EntryKey<'a>) -> Lookup<'a> {
    Lookup {
        key: key.key,
        namespace: key.namespace,
    }
}

impl KeyedStateBackend for HeapBackend {
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.max_parallelism
    }

    fn register_state(&mut self, descriptor: &StateDescriptor) -> Result<StateId> {
        Self::register_in(&mut self.states, self.range.len(), descriptor)
    }

    fn states(&self) -> Vec<StateDescriptor> {
        self.states.descriptors()
    }

    fn get(&self, state: StateId, key: &EntryKey<'_>) -> Result<Option<Bytes>> {
        Ok(self
            .value_map(state, key)?
            .get(&lookup(key))
            .map(SmallBytes::to_bytes))
    }

    fn put(&mut self, state: StateId, key: &EntryKey<'_>, value: Bytes) -> Result<()> {
        self.value_map_mut(state, key)?
            .entry_ref(&lookup(key))
            .insert(SmallBytes::from_bytes(value));
        self.changed(state, key);
        Ok(())
    }

    /// One hash lookup for the read and the write.
    fn update_value(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        f: &mut ValueUpdate<'_>,
    ) -> Result<()> {
        let map = self.value_map_mut(state, key)?;
        let changed = match map.entry_ref(&lookup(key)) {
            EntryRef::Occupied(mut entry) => {
                match f(Some(entry.get()))? {
                    Some(value) => *entry.get_mut() = value,
                    None => {
                        entry.remove();
                    }
                }
                true
            }
            EntryRef::Vacant(entry) => match f(None)? {
                Some(value) => {
                    entry.insert(value);
                    true
                }
                None => false,
            },
        };
        if changed {
            self.changed(state, key);
        }
        Ok(())
    }

    fn get_list(&self, state: StateId, key: &EntryKey<'_>) -> Result<Vec<Bytes>> {
        Ok(self
            .list_map(state, key)?
            .get(&lookup(key))
            .cloned()
            .unwrap_or_default())
    }

    fn append(&mut self, state: StateId, key: &EntryKey<'_>, element: Bytes) -> Result<()> {
        self.list_map_mut(state, key)?
            .entry_ref(&lookup(key))
            .or_default()
            .push(element);
        self.changed(state, key);
        Ok(())
    }

    fn put_list(&mut self, state: StateId, key: &EntryKey<'_>, elements: Vec<Bytes>) -> Result<()> {
        if elements.is_empty() {
            return self.clear(state, key);
        }
        self.list_map_mut(state, key)?
            .entry_ref(&lookup(key))
            .insert(elements);
        self.changed(state, key);
        Ok(())
    }

    fn map_get(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
    ) -> Result<Option<Bytes>> {
        Ok(self
            .map_map(state, key)?
            .get(&lookup(key))
            .and_then(|m| m.get(user_key))
            .cloned())
    }

    fn map_put(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
        value: Bytes,
    ) -> Result<()> {
        let entries = self
            .map_map_mut(state, key)?
            .entry_ref(&lookup(key))
            .or_default();
        match entries.get_mut(user_key) {
            Some(v) => *v = value,
            None => {
                entries.insert(Bytes::copy_from_slice(user_key), value);
            }
        }
        self.changed(state, key);
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, key: &EntryKey<'_>, user_key: &[u8]) -> Result<()> {
        // Only copy a shared key-group map when there is something to remove.
        let present = self
            .map_map(state, key)?
            .get(&lookup(key))
            .is_some_and(|m| m.contains_key(user_key));
        if !present {
            return Ok(());
        }
        let map = self.map_map_mut(state, key)?;
        let now_empty = map.get_mut(&lookup(key)).is_some_and(|entries| {
            entries.remove(user_key);
            entries.is_empty()
        });
        if now_empty {
            map.remove(&lookup(key));
        }
        self.changed(state, key);
        Ok(())
    }

    fn map_scan(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        visit: &mut MapVisitor<'_>,
    ) -> Result<()> {
        if let Some(entries) = self.map_map(state, key)?.get(&lookup(key)) {
            for (k, v) in entries {
                if visit(k, v).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<()> {
        let off = self.offset(key)?;
        let l = lookup(key);
        let present = match &self.state(state)?.table {
            Table::Value(v) => v.get(off).is_some_and(|m| m.contains_key(&l)),
            Table::List(v) => v.get(off).is_some_and(|m| m.contains_key(&l)),
            Table::Map(v) => v.get(off).is_some_and(|m| m.contains_key(&l)),
        };
        if !present {
            return Ok(());
        }
        let layout = self.state(state)?.table.layout();
        let (table, off) = self.table_mut(state, key, layout)?;
        table.remove_at(off, &l);
        self.changed(state, key);
        Ok(())
    }

    fn keys(&self, state: StateId, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let s = self.state(state)?;
        for (off, key_group) in self.range.iter().enumerate() {
            let flow = match &s.table {
                Table::Value(v) => visit_keys(v.get(off).map(|m| m.keys()), key_group, visit),
                Table::List(v) => visit_keys(v.get(off).map(|m| m.keys()), key_group, visit),
                Table::Map(v) => visit_keys(v.get(off).map(|m| m.keys()), key_group, visit),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

fn visit_keys<'a>(
    keys: Option<impl Iterator<Item = &'a OwnedKey>>,
    key_group: state_core::KeyGroup,
    visit: &mut KeyVisitor<'_>,
) -> ControlFlow<()> {
    for k in keys.into_iter().flatten() {
        visit(&EntryKey {
            key_group,
            key: k.key(),
            namespace: k.namespace(),
        })?;
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::{KeyGroup, ManualClock, StateKind};

    pub(crate) fn context(parallelism: u32, subtask: u32) -> BackendContext {
        BackendContext {
            operator_id: OperatorId("op/1".into()),
            subtask,
            parallelism,
            max_parallelism: MaxParallelism::new(16).unwrap(),
            clock: Arc::new(ManualClock::new(0)),
        }
    }

    #[test]
    fn byte_level_operations() {
        let mut b = HeapBackend::new(&context(2, 1), HeapBackendOptions::default()).unwrap();
        assert_eq!(b.stream_name, "op_1-1-keyed");
        let v = b
            .register_state(&StateDescriptor::new("v", StateKind::Value))
            .unwrap();
        let l = b
            .register_state(&StateDescriptor::new("l", StateKind::List))
            .unwrap();
        let m = b
            .register_state(&StateDescriptor::new("m", StateKind::Map))
            .unwrap();
        assert_eq!(
            b.register_state(&StateDescriptor::new("v", StateKind::Value))
                .unwrap(),
            v
        );
        assert!(
            b.register_state(&StateDescriptor::new("v", StateKind::List))
                .is_err()
        );
        let k = EntryKey {
            key_group: KeyGroup(9),
            key: b"k",
            namespace: b"n",
        };
        let other_ns = EntryKey {
            namespace: b"",
            ..k
        };
        b.put(v, &k, Bytes::from_static(b"1")).unwrap();
        b.put(v, &k, Bytes::from_static(b"2")).unwrap();
        assert_eq!(b.get(v, &k).unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(b.get(v, &other_ns).unwrap(), None);
        b.append(l, &k, Bytes::from_static(b"a")).unwrap();
        b.append(l, &k, Bytes::from_static(b"b")).unwrap();
        assert_eq!(b.get_list(l, &k).unwrap().len(), 2);
        b.put_list(l, &k, Vec::new()).unwrap();
        assert!(b.get_list(l, &k).unwrap().is_empty());
        b.map_put(m, &k, b"x", Bytes::from_static(b"1")).unwrap();
        b.map_put(m, &k, b"y", Bytes::from_static(b"2")).unwrap();
        b.map_remove(m, &k, b"x").unwrap();
        assert_eq!(b.map_get(m, &k, b"y").unwrap().as_deref(), Some(&b"2"[..]));
        let mut seen = 0;
        b.map_scan(m, &k, &mut |_, _| {
            seen += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, 1);
        b.map_remove(m, &k, b"y").unwrap();
        let mut keys = 0;
        b.keys(m, &mut |_| {
            keys += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(keys, 0, "a map emptied by removes leaves no key");
        b.clear(v, &k).unwrap();
        assert_eq!(b.entry_count(), 0);
        // Misuse is an error, not a panic.
        let outside = EntryKey {
            key_group: KeyGroup(0),
            ..k
        };
        assert!(b.get(v, &outside).is_err());
        assert!(b.get(l, &k).is_err());
        assert!(b.get(StateId(99), &k).is_err());
        assert!(b.put(m, &k, Bytes::new()).is_err());
    }

    #[test]
    fn bad_compression_level_is_refused() {
        let opts = HeapBackendOptions::default().with_compression_level(99);
        let err = HeapBackend::new(&context(1, 0), opts).unwrap_err();
        assert!(err.to_string().contains("compression_level"), "{err}");
    }
}
