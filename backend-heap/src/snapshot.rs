//! Copy-on-write snapshots and restore of the heap backend.

use std::sync::Arc;

use bytes::Bytes;
use state_core::backend_support::{
    KeyGroupStreamReader, KeyGroupStreamWriter, RecordEntry, SmallBytes, StateCatalog,
};
use state_core::{
    AsyncSnapshot, CheckpointId, CheckpointStorage, Checkpointable, KeyGroup, KeyGroupRange,
    KeyGroupsHandle, KeyedStateHandle, MaxParallelism, OperatorId, Result, SnapshotMode,
    StateDescriptor, StateError, StateId, StateScope,
};

use crate::HeapBackend;
use crate::backend::{HeapRestoreStats, State};
use crate::local::{LocalSnapshots, LocalState};
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
    /// Where to keep the written state for local recovery, and whose it is.
    local: Option<(LocalSnapshots, OperatorId)>,
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
        if let Some((local, operator)) = &self.local {
            // Keep exactly what was written: drop what the writer dropped as
            // expired (only TTL states with expired entries are touched).
            let mut tables = self.tables;
            for (d, table) in self.descriptors.iter().zip(tables.iter_mut()) {
                if let Some(cfg) = d.full_snapshot_cleanup() {
                    table.drop_expired(&cfg, self.now_millis);
                }
            }
            let state = LocalState {
                descriptors: self.descriptors,
                tables,
            };
            local.keep(operator, self.checkpoint, &handle, state);
        }
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

/// Pre-sizes the key-group maps of a restore, so they are not grown by
/// rehashing while records stream in. A block's header gives its raw
/// length; the records per raw byte of each state, measured on the blocks
/// read so far, give the number of entries to expect.
struct BlockSizer {
    /// Raw (decompressed) length of each block of the stream, by key-group
    /// offset in the stream's range; 0 where the header cannot be read.
    raw_lens: Vec<u64>,
    stream_range: KeyGroupRange,
    current: Option<KeyGroup>,
    /// Records per state in the current block.
    current_records: Vec<u64>,
    /// Raw bytes and records per state of the blocks before the current one.
    done_bytes: u64,
    done_records: Vec<u64>,
}

/// Bytes 2..6 of a block header: the raw length of its records.
const RAW_LEN_AT: usize = 2;

impl BlockSizer {
    fn new(bytes: &[u8], h: &KeyGroupsHandle, states: usize) -> Self {
        let raw_lens = h
            .key_group_offsets
            .iter()
            .map(|&offset| {
                usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get(o.checked_add(RAW_LEN_AT)?..))
                    .and_then(|b| b.first_chunk::<4>())
                    .map_or(0, |b| u64::from(u32::from_le_bytes(*b)))
            })
            .collect();
        BlockSizer {
            raw_lens,
            stream_range: h.range,
            current: None,
            current_records: vec![0; states],
            done_bytes: 0,
            done_records: vec![0; states],
        }
    }

    fn raw_len(&self, kg: KeyGroup) -> u64 {
        self.stream_range
            .offset_of(kg)
            .and_then(|i| self.raw_lens.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Counts a record of state `state` (index in the stream) in key group
    /// `kg`; on the first record of a block, reserves room in each state's
    /// map of that key group (`off`, in the backend's range).
    fn on_record(
        &mut self,
        kg: KeyGroup,
        state: usize,
        off: usize,
        ids: &[StateId],
        states: &mut [State],
    ) {
        if self.current != Some(kg) {
            if let Some(previous) = self.current {
                self.done_bytes += self.raw_len(previous);
                for (done, n) in self.done_records.iter_mut().zip(&mut self.current_records) {
                    *done += std::mem::take(n);
                }
            }
            self.current = Some(kg);
            let raw = self.raw_len(kg);
            for (i, done) in self.done_records.iter().enumerate() {
                // An eighth more than the estimate: records vary in size. A
                // record takes at least a byte, so never more than `raw`.
                let Some(expected) = raw.saturating_mul(*done).checked_div(self.done_bytes) else {
                    break;
                };
                let expected = (expected + expected / 8).min(raw);
                let table = ids.get(i).and_then(|id| states.get_mut(id.index()));
                if let (Some(s), Ok(n)) = (table, usize::try_from(expected))
                    && n > 0
                {
                    s.table.reserve(off, n);
                }
            }
        }
        if let Some(n) = self.current_records.get_mut(state) {
            *n += 1;
        }
    }
}

impl HeapBackend {
    /// The registered states with all their entries removed.
    fn emptied_states(&self) -> StateCatalog<State> {
        let key_groups = self.range.len();
        self.states.map(|s| State {
            descriptor: s.descriptor.clone(),
            table: Table::new(s.descriptor.kind.layout(), key_groups),
        })
    }

    /// Reads `handles` into fresh tables; the backend is untouched.
    fn read_handles(
        &self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<(StateCatalog<State>, HeapRestoreStats)> {
        let mut states = self.emptied_states();
        let mut stats = HeapRestoreStats::default();
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
            let kept = self.local.as_ref().and_then(|l| l.find(&self.operator, h));
            if let Some(kept) = kept {
                self.adopt_local_copy(h, kept, &mut states)?;
                stats.local_handles += 1;
                continue;
            }
            let bytes = storage.read(&h.stream)?;
            stats.storage_handles += 1;
            stats.storage_bytes += h.stream.size;
            let reader = KeyGroupStreamReader::open(bytes.clone(), h)?;
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
                    HeapBackend::register_in(&mut states, key_groups, d).map_err(|e| {
                        StateError::incompatible(
                            h.stream.describe(),
                            format!("state in snapshot: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<StateId>>>()?;
            let range = self.range;
            let mut sizer = BlockSizer::new(&bytes, h, ids.len());
            reader.read(range, &mut |record| {
                let Some(off) = range.offset_of(record.key_group) else {
                    return Err(StateError::corrupted(
                        h.stream.describe(),
                        format!("record of key group {} does not fit", record.key_group),
                    ));
                };
                sizer.on_record(
                    record.key_group,
                    record.state as usize,
                    off,
                    &ids,
                    &mut states,
                );
                let target = ids
                    .get(record.state as usize)
                    .and_then(|id| states.get_mut(id.index()))
                    .map(|s| &mut s.table);
                let Some(table) = target else {
                    return Err(StateError::corrupted(
                        h.stream.describe(),
                        format!("record of key group {} does not fit", record.key_group),
                    ));
                };
                let key = OwnedKey::new(record.key, record.namespace);
                match (table, record.entry) {
                    (Table::Value(maps), RecordEntry::Value(v)) => {
                        if let Some(m) = maps.get_mut(off) {
                            Arc::make_mut(m).insert(key, SmallBytes::from_slice(v));
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
        Ok((states, stats))
    }

    /// Shares the key-group maps of a kept snapshot of `h` that fall in
    /// this backend's range.
    fn adopt_local_copy(
        &self,
        h: &KeyGroupsHandle,
        kept: LocalState,
        states: &mut StateCatalog<State>,
    ) -> Result<()> {
        for (descriptor, table) in kept.descriptors.iter().zip(&kept.tables) {
            let wrong = |detail: String| StateError::incompatible(h.stream.describe(), detail);
            let id = HeapBackend::register_in(states, self.range.len(), descriptor)
                .map_err(|e| wrong(format!("state in snapshot: {e}")))?;
            let target = states
                .get_mut(id.index())
                .ok_or_else(|| wrong(format!("state {:?} is lost", descriptor.name)))?;
            for kg in h.range.intersect(&self.range).iter() {
                let (Some(from), Some(to)) = (h.range.offset_of(kg), self.range.offset_of(kg))
                else {
                    continue;
                };
                if !target.table.share_from(to, table, from) {
                    return Err(wrong(format!(
                        "state {:?} has another layout in the kept snapshot",
                        descriptor.name
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Checkpointable for HeapBackend {
    /// Captures the state by cloning the `Arc` of every key-group map of every
    /// state (O(states x key groups), no entry copied). The heap backend has
    /// no incremental mode and no native format: every mode writes a full
    /// snapshot in the canonical key-group format.
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
            // A savepoint is never restored by failover: no local copy.
            local: (!mode.is_savepoint())
                .then(|| self.local.clone().map(|l| (l, self.operator.clone())))
                .flatten(),
        }))
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(local) = &self.local {
            local.confirm(&self.operator, id);
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(local) = &self.local {
            local.abort(&self.operator, id);
        }
        Ok(())
    }

    fn notify_checkpoint_subsumed(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(local) = &self.local {
            local.subsume(&self.operator, id);
        }
        Ok(())
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
            Ok((states, stats)) => {
                self.states = states;
                self.last_restore = Some(stats);
                tracing::info!(
                    entries = self.entry_count(),
                    from_local_copy = stats.local_handles,
                    from_storage = stats.storage_handles,
                    "heap backend restored"
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapBackendOptions;
    use state_core::MemoryCheckpointStorage;
    use state_core::{
        BackendContext, EntryKey, KeyedStateBackend, ManualClock, OperatorId, StateKind,
    };

    fn context() -> BackendContext {
        BackendContext {
            operator_id: OperatorId("op/1".into()),
            subtask: 0,
            parallelism: 1,
            max_parallelism: MaxParallelism::new(16).unwrap(),
            clock: Arc::new(ManualClock::new(0)),
        }
    }

    /// A snapshot of `per_kg` value entries in each of key groups 0..4.
    fn snapshot(per_kg: u32, storage: &MemoryCheckpointStorage) -> KeyGroupsHandle {
        let mut b = HeapBackend::new(&context(), HeapBackendOptions::default()).unwrap();
        let v = b
            .register_state(&StateDescriptor::new("v", StateKind::Value))
            .unwrap();
        for kg in 0..4u16 {
            for i in 0..per_kg {
                let key = format!("key-{kg}-{i}");
                let k = EntryKey {
                    key_group: KeyGroup(kg),
                    key: key.as_bytes(),
                    namespace: b"",
                };
                b.put(v, &k, Bytes::from_static(b"value")).unwrap();
            }
        }
        let written = b
            .snapshot(CheckpointId(1), SnapshotMode::Full)
            .unwrap()
            .write(storage)
            .unwrap();
        let Some(KeyedStateHandle::KeyGroups(h)) = written else {
            panic!("a heap snapshot is a key-group stream: {written:?}");
        };
        h
    }

    #[test]
    fn sizer_reserves_each_block_from_the_records_per_byte_so_far() {
        let storage = MemoryCheckpointStorage::new(u64::MAX);
        let h = snapshot(200, &storage);
        let bytes = storage.read(&h.stream).unwrap();
        let mut sizer = BlockSizer::new(&bytes, &h, 1);
        assert!(sizer.raw_len(KeyGroup(0)) > 0);
        assert_eq!(sizer.raw_len(KeyGroup(9)), 0, "an empty key group");
        let b = HeapBackend::new(&context(), HeapBackendOptions::default()).unwrap();
        let mut states = b.emptied_states();
        let id = HeapBackend::register_in(
            &mut states,
            16,
            &StateDescriptor::new("v", StateKind::Value),
        )
        .unwrap();
        let capacity = |states: &[State], off: usize| match &states[0].table {
            Table::Value(maps) => maps[off].capacity(),
            _ => panic!("a value state"),
        };
        for _ in 0..200 {
            sizer.on_record(KeyGroup(0), 0, 0, &[id], &mut states);
        }
        assert_eq!(
            capacity(&states, 0),
            0,
            "nothing to go by in the first block"
        );
        sizer.on_record(KeyGroup(1), 0, 1, &[id], &mut states);
        assert!(capacity(&states, 1) >= 200, "{}", capacity(&states, 1));
    }

    #[test]
    fn presized_restore_holds_every_entry() {
        let storage = MemoryCheckpointStorage::new(u64::MAX);
        let h = snapshot(300, &storage);
        let mut b = HeapBackend::new(&context(), HeapBackendOptions::default()).unwrap();
        b.restore(&[KeyedStateHandle::KeyGroups(h)], &storage)
            .unwrap();
        assert_eq!(b.entry_count(), 1200);
        let v = b
            .register_state(&StateDescriptor::new("v", StateKind::Value))
            .unwrap();
        let k = EntryKey {
            key_group: KeyGroup(3),
            key: b"key-3-299",
            namespace: b"",
        };
        assert_eq!(b.get(v, &k).unwrap().as_deref(), Some(&b"value"[..]));
    }
}
