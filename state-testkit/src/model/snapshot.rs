//! The model backend's snapshot: a deep copy in the synchronous part, one
//! postcard document (after the magic bytes) in the asynchronous part.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use state_core::backend_support::{StateCatalog, read_verified};

use super::{Address, Entry, MODEL_BACKEND_NAME, ModelBackend, Table};
use state_core::{
    AsyncSnapshot, CheckpointId, CheckpointStorage, Checkpointable, KeyGroup, KeyGroupRange,
    KeyGroupsHandle, KeyedStateHandle, Result, SnapshotMode, StateDescriptor, StateError,
    StateScope,
};

const SNAPSHOT_MAGIC: [u8; 8] = *b"CAIRNMDL";

/// The snapshot document.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    range: KeyGroupRange,
    states: Vec<StateDescriptor>,
    /// Per state (same index as `states`), its entries.
    data: Vec<Vec<(Address, Entry)>>,
}

impl ModelBackend {
    /// Restores into fresh tables; `self` is untouched on error.
    fn restore_tables(
        &self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<(StateCatalog<StateDescriptor>, Vec<Table>)> {
        let mut states = self.states.clone();
        let mut data: Vec<Table> = vec![BTreeMap::new(); states.len()];
        for handle in handles {
            let KeyedStateHandle::KeyGroups(h) = handle else {
                return Err(StateError::incompatible(
                    "keyed state handle",
                    "the model backend restores only its own full snapshots",
                ));
            };
            let what = h.stream.describe();
            if h.backend != MODEL_BACKEND_NAME {
                return Err(StateError::incompatible(
                    what,
                    format!(
                        "written by backend '{}', not '{MODEL_BACKEND_NAME}'",
                        h.backend
                    ),
                ));
            }
            let bytes = read_verified(storage, &h.stream)?;
            let Some((magic, body)) = bytes.split_first_chunk::<8>() else {
                return Err(StateError::corrupted(what, "shorter than its magic bytes"));
            };
            if *magic != SNAPSHOT_MAGIC {
                return Err(StateError::incompatible(
                    what,
                    "not a model backend snapshot",
                ));
            }
            let body: SnapshotBody = postcard::from_bytes(body).map_err(|e| {
                StateError::corrupted(what.clone(), format!("does not decode: {e}"))
            })?;
            if body.data.len() != body.states.len() {
                return Err(StateError::corrupted(
                    what,
                    "state table and data differ in length",
                ));
            }
            for (desc, entries) in body.states.iter().zip(body.data) {
                let index = match states.id_of(&desc.name) {
                    Some(id) => {
                        if states.get(id.index()).map(|d| d.kind) != Some(desc.kind) {
                            return Err(StateError::incompatible(
                                what,
                                format!("state '{}' has another kind than registered", desc.name),
                            ));
                        }
                        id.index()
                    }
                    None => {
                        let (id, _) = states.register(desc, Clone::clone)?;
                        data.push(BTreeMap::new());
                        id.index()
                    }
                };
                let Some(table) = data.get_mut(index) else {
                    return Err(StateError::corrupted(what, "state index out of range"));
                };
                for (address, entry) in entries {
                    let kg = KeyGroup(address.0);
                    if !h.range.contains(kg) || kg.get() >= self.max.get() {
                        return Err(StateError::corrupted(
                            what,
                            format!(
                                "entry of key group {kg} outside the handle's range {}",
                                h.range
                            ),
                        ));
                    }
                    if entry.layout() != desc.kind.layout() {
                        return Err(StateError::corrupted(
                            what,
                            format!("entry of state '{}' has the wrong layout", desc.name),
                        ));
                    }
                    if self.range.contains(kg) {
                        table.insert(address, entry);
                    }
                }
            }
        }
        Ok((states, data))
    }
}

/// Drops what a full snapshot at `now` must not contain under `desc`'s TTL.
fn cleanup_expired(desc: &StateDescriptor, table: &mut Table, now: u64) {
    let Some(ttl) = desc.ttl.filter(|t| t.cleanup_in_full_snapshot) else {
        return;
    };
    table.retain(|_, entry| match entry {
        Entry::Value(v) => !ttl.is_expired(v, now),
        Entry::List(l) => {
            l.retain(|e| !ttl.is_expired(e, now));
            !l.is_empty()
        }
        Entry::Map(m) => {
            m.retain(|_, v| !ttl.is_expired(v, now));
            !m.is_empty()
        }
    });
}

/// The asynchronous part of a model snapshot: a deep copy taken in the sync part.
struct ModelSnapshot {
    id: CheckpointId,
    name: String,
    body: SnapshotBody,
}

impl AsyncSnapshot for ModelSnapshot {
    fn write(self: Box<Self>, storage: &dyn CheckpointStorage) -> Result<Option<KeyedStateHandle>> {
        if self.body.data.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        let bytes = {
            let encoded = postcard::to_stdvec(&self.body).map_err(|e| {
                StateError::invalid(format!("model snapshot cannot be encoded: {e}"))
            })?;
            bytes.extend_from_slice(&encoded);
            bytes
        };
        let mut out = storage.create_output(self.id, StateScope::Exclusive, &self.name)?;
        out.write_all(&bytes)
            .map_err(|e| StateError::io(self.name.clone(), e))?;
        let stream = out.close()?;
        Ok(Some(KeyedStateHandle::KeyGroups(KeyGroupsHandle {
            backend: MODEL_BACKEND_NAME.to_string(),
            range: self.body.range,
            stream,
            // One block holds every key group.
            key_group_offsets: vec![0; self.body.range.len()],
        })))
    }
}

impl Checkpointable for ModelBackend {
    fn snapshot(
        &mut self,
        id: CheckpointId,
        _mode: SnapshotMode,
    ) -> Result<Box<dyn AsyncSnapshot>> {
        let now = self.clock.now_millis();
        let data = self
            .states
            .iter()
            .zip(&self.data)
            .map(|(desc, table)| {
                let mut table = table.clone();
                cleanup_expired(desc, &mut table, now);
                table.into_iter().collect()
            })
            .collect();
        let end = self.range.end().map_or(0, |kg| kg.get());
        Ok(Box::new(ModelSnapshot {
            id,
            name: format!("{}-kg{}-{end}", self.stream_prefix, self.range.start()),
            body: SnapshotBody {
                range: self.range,
                states: self.states.descriptors(),
                data,
            },
        }))
    }

    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        match self.restore_tables(handles, storage) {
            Ok((states, data)) => {
                self.states = states;
                self.data = data;
                Ok(())
            }
            Err(e) => {
                for table in &mut self.data {
                    table.clear();
                }
                Err(e)
            }
        }
    }
}
