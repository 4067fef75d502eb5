//! [`ModelBackend`]: a simple, obviously correct [`KeyedStateBackend`] over
//! `BTreeMap`s.
//!
//! The model backend is the reference the real backends are compared with,
//! and what the tests of state-core's typed state and timers run on
//! (`state-testkit/tests/`). It is
//! written for clarity, not speed: its snapshot deep-copies everything in the
//! synchronous part, and its snapshot format is one postcard document.

mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use state_core::backend_support::{StateCatalog, file_name_part};

use state_core::{
    BackendContext, BackendFactory, Clock, EntryKey, KeyGroup, KeyGroupRange, KeyVisitor,
    KeyedStateBackend, MapVisitor, MaxParallelism, Result, StateDescriptor, StateError, StateId,
    StateLayout,
};

/// The `backend` name in the handles the model backend writes.
pub const MODEL_BACKEND_NAME: &str = "model";

/// (key group, key, namespace).
type Address = (u16, Vec<u8>, Vec<u8>);

/// Everything one state holds.
type Table = BTreeMap<Address, Entry>;

/// What one (key, namespace) holds in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Entry {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl Entry {
    fn layout(&self) -> StateLayout {
        match self {
            Entry::Value(_) => StateLayout::Value,
            Entry::List(_) => StateLayout::List,
            Entry::Map(_) => StateLayout::Map,
        }
    }
}

/// A keyed-state backend over `BTreeMap`s; see the module docs.
#[derive(Debug)]
pub struct ModelBackend {
    range: KeyGroupRange,
    max: MaxParallelism,
    clock: Arc<dyn Clock>,
    stream_prefix: String,
    states: StateCatalog<StateDescriptor>,
    data: Vec<Table>,
}

impl ModelBackend {
    /// An empty backend for the subtask described by `context`.
    pub fn new(context: &BackendContext) -> Result<Self> {
        let op = file_name_part(&context.operator_id.0, 64, false);
        Ok(ModelBackend {
            range: context.key_group_range()?,
            max: context.max_parallelism,
            clock: Arc::clone(&context.clock),
            stream_prefix: format!("model-{op}-{}", context.subtask),
            states: StateCatalog::new("model"),
            data: Vec::new(),
        })
    }

    fn table(&self, state: StateId, layout: StateLayout) -> Result<&Table> {
        self.check_state(state, layout)?;
        self.data
            .get(state.index())
            .ok_or_else(|| StateError::invalid(format!("unknown state id {}", state.0)))
    }

    fn table_mut(&mut self, state: StateId, layout: StateLayout) -> Result<&mut Table> {
        self.check_state(state, layout)?;
        self.data
            .get_mut(state.index())
            .ok_or_else(|| StateError::invalid(format!("unknown state id {}", state.0)))
    }

    fn check_state(&self, state: StateId, layout: StateLayout) -> Result<()> {
        let Some(desc) = self.states.get(state.index()) else {
            return Err(StateError::invalid(format!(
                "unknown state id {} (the model backend has {} states)",
                state.0,
                self.states.len()
            )));
        };
        if desc.kind.layout() != layout {
            return Err(StateError::invalid(format!(
                "state '{}' is a {:?} state, not {layout:?}",
                desc.name, desc.kind
            )));
        }
        Ok(())
    }

    fn address(&self, key: &EntryKey<'_>) -> Result<Address> {
        if !self.range.contains(key.key_group) {
            return Err(StateError::invalid(format!(
                "key group {} is outside this backend's key groups {}",
                key.key_group, self.range
            )));
        }
        Ok((key.key_group.0, key.key.to_vec(), key.namespace.to_vec()))
    }
}

impl KeyedStateBackend for ModelBackend {
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    fn register_state(&mut self, descriptor: &StateDescriptor) -> Result<StateId> {
        let (id, new) = self.states.register(descriptor, Clone::clone)?;
        if new {
            self.data.push(BTreeMap::new());
        }
        Ok(id)
    }

    fn states(&self) -> Vec<StateDescriptor> {
        self.states.descriptors()
    }

    fn get(&self, state: StateId, key: &EntryKey<'_>) -> Result<Option<Bytes>> {
        let address = self.address(key)?;
        Ok(match self.table(state, StateLayout::Value)?.get(&address) {
            Some(Entry::Value(v)) => Some(Bytes::copy_from_slice(v)),
            _ => None,
        })
    }

    fn put(&mut self, state: StateId, key: &EntryKey<'_>, value: Bytes) -> Result<()> {
        let address = self.address(key)?;
        self.table_mut(state, StateLayout::Value)?
            .insert(address, Entry::Value(value.to_vec()));
        Ok(())
    }

    fn get_list(&self, state: StateId, key: &EntryKey<'_>) -> Result<Vec<Bytes>> {
        let address = self.address(key)?;
        Ok(match self.table(state, StateLayout::List)?.get(&address) {
            Some(Entry::List(l)) => l.iter().map(|e| Bytes::copy_from_slice(e)).collect(),
            _ => Vec::new(),
        })
    }

    fn append(&mut self, state: StateId, key: &EntryKey<'_>, element: Bytes) -> Result<()> {
        let address = self.address(key)?;
        let table = self.table_mut(state, StateLayout::List)?;
        match table
            .entry(address)
            .or_insert_with(|| Entry::List(Vec::new()))
        {
            Entry::List(l) => l.push(element.to_vec()),
            other => *other = Entry::List(vec![element.to_vec()]),
        }
        Ok(())
    }

    fn put_list(&mut self, state: StateId, key: &EntryKey<'_>, elements: Vec<Bytes>) -> Result<()> {
        let address = self.address(key)?;
        let table = self.table_mut(state, StateLayout::List)?;
        if elements.is_empty() {
            table.remove(&address);
        } else {
            table.insert(
                address,
                Entry::List(elements.iter().map(|e| e.to_vec()).collect()),
            );
        }
        Ok(())
    }

    fn map_get(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
    ) -> Result<Option<Bytes>> {
        let address = self.address(key)?;
        Ok(match self.table(state, StateLayout::Map)?.get(&address) {
            Some(Entry::Map(m)) => m.get(user_key).map(|v| Bytes::copy_from_slice(v)),
            _ => None,
        })
    }

    fn map_put(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
        value: Bytes,
    ) -> Result<()> {
        let address = self.address(key)?;
        let table = self.table_mut(state, StateLayout::Map)?;
        let entry = table
            .entry(address)
            .or_insert_with(|| Entry::Map(BTreeMap::new()));
        if let Entry::Map(m) = entry {
            m.insert(user_key.to_vec(), value.to_vec());
        } else {
            *entry = Entry::Map(BTreeMap::from([(user_key.to_vec(), value.to_vec())]));
        }
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, key: &EntryKey<'_>, user_key: &[u8]) -> Result<()> {
        let address = self.address(key)?;
        let table = self.table_mut(state, StateLayout::Map)?;
        let now_empty = match table.get_mut(&address) {
            Some(Entry::Map(m)) => {
                m.remove(user_key);
                m.is_empty()
            }
            _ => false,
        };
        if now_empty {
            table.remove(&address);
        }
        Ok(())
    }

    fn map_scan(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        visit: &mut MapVisitor<'_>,
    ) -> Result<()> {
        let address = self.address(key)?;
        if let Some(Entry::Map(m)) = self.table(state, StateLayout::Map)?.get(&address) {
            for (k, v) in m {
                if visit(k, v).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<()> {
        let address = self.address(key)?;
        let layout = self
            .states
            .get(state.index())
            .map(|d| d.kind.layout())
            .ok_or_else(|| StateError::invalid(format!("unknown state id {}", state.0)))?;
        self.table_mut(state, layout)?.remove(&address);
        Ok(())
    }

    fn keys(&self, state: StateId, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let table = self
            .data
            .get(state.index())
            .ok_or_else(|| StateError::invalid(format!("unknown state id {}", state.0)))?;
        for (kg, key, namespace) in table.keys() {
            let e = EntryKey {
                key_group: KeyGroup(*kg),
                key,
                namespace,
            };
            if visit(&e).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Creates [`ModelBackend`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelBackendFactory;

impl BackendFactory for ModelBackendFactory {
    type Backend = ModelBackend;

    fn name(&self) -> &'static str {
        MODEL_BACKEND_NAME
    }

    fn create(&self, context: &BackendContext) -> Result<ModelBackend> {
        ModelBackend::new(context)
    }
}

/// A backend context for tests: operator `op`, subtask `subtask` of
/// `parallelism`, `max_parallelism` key groups, time from `clock`.
pub fn test_context(
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
    clock: Arc<dyn Clock>,
) -> Result<BackendContext> {
    Ok(BackendContext {
        operator_id: state_core::OperatorId("op".to_string()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(max_parallelism)?,
        clock,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Setup;
    use state_core::CheckpointId;
    use state_core::Checkpointable;
    use state_core::KeyedStateHandle;
    use state_core::MemoryCheckpointStorage;
    use state_core::{CheckpointStorage, SnapshotMode};

    fn setup() -> Setup<ModelBackendFactory> {
        Setup::new(
            ModelBackendFactory,
            Arc::new(MemoryCheckpointStorage::default()),
        )
    }

    // The whole conformance suite (which includes the model test) runs on
    // the model backend.
    crate::conformance_tests!(setup);

    #[test]
    fn foreign_handles_are_incompatible() {
        let clock: Arc<dyn Clock> = Arc::new(state_core::ManualClock::new(0));
        let ctx = test_context(0, 1, 8, clock).unwrap();
        let mut b = ModelBackend::new(&ctx).unwrap();
        let id = b
            .register_state(&StateDescriptor::new("v", state_core::StateKind::Value))
            .unwrap();
        let entry = EntryKey {
            key_group: KeyGroup(0),
            key: b"k",
            namespace: b"",
        };
        b.put(id, &entry, Bytes::from_static(b"x")).unwrap();
        let storage = MemoryCheckpointStorage::default();
        storage.initialize_checkpoint(CheckpointId(1)).unwrap();
        let snap = b.snapshot(CheckpointId(1), SnapshotMode::Full).unwrap();
        let Some(KeyedStateHandle::KeyGroups(mut h)) = snap.write(&storage).unwrap() else {
            panic!("expected a key-groups handle");
        };
        h.backend = "heap".to_string();
        let err = b
            .restore(&[KeyedStateHandle::KeyGroups(h)], &storage)
            .unwrap_err();
        assert_eq!(err.kind(), state_core::ErrorKind::IncompatibleFormat);
        assert_eq!(b.get(id, &entry).unwrap(), None, "left empty");
    }
}
