//! Copy-on-write snapshots and restore of the heap backend.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use state_core::snapshot_format::{KeyGroupStreamReader, KeyGroupStreamWriter, RecordEntry};
use state_core::{
    AsyncSnapshot, CheckpointId, CheckpointStorage, Checkpointable, KeyGroupRange,
    KeyedStateHandle, MaxParallelism, Result, SnapshotMode, StateDescriptor, StateError, StateId,
    StateScope,
};

use crate::HeapBackend;
use crate::backend::State;
use crate::table::{FastMap, OwnedKey, Table};

/// The name heap snapshots carry in their handles.
pub(crate) const BACKEND_NAME: &str = "heap";

/// The captured state of one snapshot, written off the task thread.
struct HeapSnapshot {
    checkpoint: CheckpointId,
    stream_name: String,
    max_parallelism: MaxParallelism,
    range: KeyGroupRange,
    descriptors: Vec<StateDescriptor>,
    /// Per state, the shared key-group maps as of the synchronous part.
    tables: Vec<Table>,
    now_millis: u64,
    compression_level: i32,
}

impl AsyncSnapshot for HeapSnapshot {
    fn write(self: Box<Self>, storage: &dyn CheckpointStorage) -> Result<Option<KeyedStateHandle>> {
        let span = tracing::info_span!(
            "snapshot",
            checkpoint_id = self.checkpoint.get(),
            backend = BACKEND_NAME,
            bytes = tracing::field::Empty
        );
        let _entered = span.enter();
        if self.tables.iter().all(Table::is_empty) {
            tracing::debug!("heap backend holds no state; nothing written");
            return Ok(None);
        }
        let out =
            storage.create_output(self.checkpoint, StateScope::Exclusive, &self.stream_name)?;
        let mut writer = KeyGroupStreamWriter::new(
            out,
            &self.stream_name,
            BACKEND_NAME,
            self.max_parallelism,
            self.range,
            &self.descriptors,
            self.now_millis,
        )?;
        writer.set_compression_level(self.compression_level)?;
        for (off, kg) in self.range.iter().enumerate() {
            writer.begin_key_group(kg)?;
            for (index, table) in self.tables.iter().enumerate() {
                let state = u32::try_from(index)
                    .map_err(|_| StateError::invalid("more than 2^32 states"))?;
                write_key_group(&mut writer, state, table, off)?;
            }
        }
        let handle = writer.finish()?;
        span.record("bytes", handle.stream.size);
        tracing::info!(bytes = handle.stream.size, "heap snapshot written");
        Ok(Some(KeyedStateHandle::KeyGroups(handle)))
    }
}

fn write_key_group(
    writer: &mut KeyGroupStreamWriter,
    state: u32,
    table: &Table,
    off: usize,
) -> Result<()> {
    match table {
        Table::Value(maps) => {
            for (k, v) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_value(state, k.key(), k.namespace(), v)?;
            }
        }
        Table::List(maps) => {
            for (k, list) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_list(state, k.key(), k.namespace(), list.iter().map(|e| &e[..]))?;
            }
        }
        Table::Map(maps) => {
            for (k, entries) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_map(
                    state,
                    k.key(),
                    k.namespace(),
                    entries.iter().map(|(uk, v)| (&uk[..], &v[..])),
                )?;
            }
        }
    }
    Ok(())
}

impl HeapBackend {
    /// The registered states with all their entries removed.
    fn emptied_states(&self) -> Vec<State> {
        let key_groups = self.range.len();
        self.states
            .iter()
            .map(|s| State {
                descriptor: s.descriptor.clone(),
                table: Table::new(s.descriptor.kind.layout(), key_groups),
            })
            .collect()
    }

    /// Reads `handles` into fresh tables; the backend is untouched.
    fn read_handles(
        &self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<(Vec<State>, HashMap<String, StateId>)> {
        let mut states = self.emptied_states();
        let mut by_name = self.by_name.clone();
        let key_groups = self.range.len();
        for handle in handles {
            let h = match handle {
                KeyedStateHandle::KeyGroups(h) => h,
                KeyedStateHandle::Incremental(h) => {
                    return Err(StateError::incompatible(
                        h.meta.describe(),
                        format!(
                            "heap backend restores full key-group snapshots only; this is an \
                             incremental snapshot of backend {:?}",
                            h.backend
                        ),
                    ));
                }
            };
            if h.range.intersect(&self.range).is_empty() {
                continue;
            }
            let reader = KeyGroupStreamReader::open(storage.read(&h.stream)?, h)?;
            if reader.max_parallelism() != self.max_parallelism {
                return Err(StateError::incompatible(
                    h.stream.describe(),
                    format!(
                        "snapshot has max parallelism {}, this job {}; a job's max parallelism cannot change",
                        reader.max_parallelism(),
                        self.max_parallelism
                    ),
                ));
            }
            let ids = reader
                .states()
                .iter()
                .map(|d| {
                    HeapBackend::register_in(&mut states, &mut by_name, key_groups, d).map_err(
                        |e| {
                            StateError::incompatible(
                                h.stream.describe(),
                                format!("state in snapshot: {e}"),
                            )
                        },
                    )
                })
                .collect::<Result<Vec<StateId>>>()?;
            let range = self.range;
            reader.read(range, &mut |record| {
                let target = ids
                    .get(record.state as usize)
                    .and_then(|id| states.get_mut(id.index()))
                    .map(|s| &mut s.table);
                let off = range.offset_of(record.key_group);
                let (Some(table), Some(off)) = (target, off) else {
                    return Err(StateError::corrupted(
                        h.stream.describe(),
                        format!("record of key group {} does not fit", record.key_group),
                    ));
                };
                let key = OwnedKey::new(record.key, record.namespace);
                match (table, record.entry) {
                    (Table::Value(maps), RecordEntry::Value(v)) => {
                        if let Some(m) = maps.get_mut(off) {
                            Arc::make_mut(m).insert(key, Bytes::copy_from_slice(v));
                        }
                    }
                    (Table::List(maps), RecordEntry::List(list)) => {
                        if let Some(m) = maps.get_mut(off) {
                            let list = list.iter().map(|e| Bytes::copy_from_slice(e)).collect();
                            Arc::make_mut(m).insert(key, list);
                        }
                    }
                    (Table::Map(maps), RecordEntry::Map(entries)) => {
                        if let Some(m) = maps.get_mut(off) {
                            let mut map = FastMap::with_capacity_and_hasher(
                                entries.len(),
                                Default::default(),
                            );
                            for (uk, v) in entries {
                                map.insert(Bytes::copy_from_slice(uk), Bytes::copy_from_slice(v));
                            }
                            Arc::make_mut(m).insert(key, map);
                        }
                    }
                    _ => {
                        return Err(StateError::corrupted(
                            h.stream.describe(),
                            format!(
                                "record of key group {} has the wrong layout",
                                record.key_group
                            ),
                        ));
                    }
                }
                Ok(())
            })?;
        }
        Ok((states, by_name))
    }
}

impl Checkpointable for HeapBackend {
    /// Captures the state by cloning the `Arc` of every key-group map of every
    /// state (O(states x key groups), no entry copied). The heap backend has
    /// no incremental mode: [`SnapshotMode::Incremental`] takes a full snapshot.
    fn snapshot(&mut self, id: CheckpointId, mode: SnapshotMode) -> Result<Box<dyn AsyncSnapshot>> {
        if mode == SnapshotMode::Incremental {
            tracing::trace!(checkpoint_id = id.get(), "heap backend snapshots in full");
        }
        Ok(Box::new(HeapSnapshot {
            checkpoint: id,
            stream_name: self.stream_name.clone(),
            max_parallelism: self.max_parallelism,
            range: self.range,
            descriptors: self.states.iter().map(|s| s.descriptor.clone()).collect(),
            tables: self.states.iter().map(|s| s.table.clone()).collect(),
            now_millis: self.clock.now_millis(),
            compression_level: self.options.compression_level,
        }))
    }

    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        let span = tracing::info_span!(
            "restore",
            backend = BACKEND_NAME,
            operator = %self.operator,
            subtask = self.subtask,
            handles = handles.len()
        );
        let _entered = span.enter();
        match self.read_handles(handles, storage) {
            Ok((states, by_name)) => {
                self.states = states;
                self.by_name = by_name;
                tracing::info!(entries = self.entry_count(), "heap backend restored");
                Ok(())
            }
            Err(e) => {
                self.states = self.emptied_states();
                tracing::info!(error = %e, "heap backend restore failed; backend left empty");
                Err(e)
            }
        }
    }
}
