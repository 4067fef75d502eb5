//! Copy-on-write snapshots and restore of the heap backend.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use state_core::backend_support::{
    KeyGroupStreamReader, KeyGroupStreamWriter, Record, RecordEntry, SmallBytes, StateCatalog,
};
use state_core::{
    AsyncSnapshot, CheckpointId, CheckpointStorage, Checkpointable, IncrementalHandle, KeyGroup,
    KeyGroupRange, KeyGroupsHandle, KeyedStateHandle, MaxParallelism, OperatorId, Result,
    SnapshotMode, StateDescriptor, StateError, StateId, StateScope,
};

use crate::HeapBackend;
use crate::backend::{HeapRestoreStats, State};
use crate::incremental::{
    Chain, ChainWrite, DeltaMeta, Plan, Tracker, chain_of, decode_meta, stream_handle,
};
use crate::local::{LocalSnapshots, LocalState};
use crate::stream::{BACKEND_NAME, write_key_group};
use crate::table::{FastMap, Lookup, OwnedKey, Table};

/// What a snapshot writes.
enum Kind {
    /// One key-group stream of every entry (a full checkpoint, a savepoint).
    Full,
    /// A link of the backend's incremental chain, and where to note the
    /// chain once written (see [`crate::incremental`]).
    Chain {
        plan: Plan,
        written: Arc<OnceLock<Chain>>,
        backend_id: String,
    },
}

/// The captured state of one snapshot, written off the task thread.
struct HeapSnapshot {
    checkpoint: CheckpointId,
    kind: Kind,
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
    fn write(
        mut self: Box<Self>,
        storage: &dyn CheckpointStorage,
    ) -> Result<Option<KeyedStateHandle>> {
        let span = tracing::info_span!(
            "snapshot",
            checkpoint_id = self.checkpoint.get(),
            backend = BACKEND_NAME,
            bytes = tracing::field::Empty
        );
        let _entered = span.enter();
        let kind = std::mem::replace(&mut self.kind, Kind::Full);
        if let Kind::Chain {
            plan,
            written,
            backend_id,
        } = kind
        {
            return self.write_chain(storage, plan, &written, &backend_id, &span);
        }
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
        let handle = KeyedStateHandle::KeyGroups(writer.finish()?);
        let bytes = handle.state_size();
        span.record("bytes", bytes);
        tracing::info!(bytes, "heap snapshot written");
        self.keep_local(&handle, None);
        Ok(Some(handle))
    }
}

impl HeapSnapshot {
    /// Writes a base or a delta of the incremental chain and the chain's
    /// handle; notes the chain in `written` for the backend.
    fn write_chain(
        self: Box<Self>,
        storage: &dyn CheckpointStorage,
        plan: Plan,
        written: &OnceLock<Chain>,
        backend_id: &str,
        span: &tracing::Span,
    ) -> Result<Option<KeyedStateHandle>> {
        let w = ChainWrite {
            checkpoint: self.checkpoint,
            backend_id,
            stream_name: &self.stream_name,
            max_parallelism: self.max_parallelism,
            range: self.range,
            descriptors: &self.descriptors,
            tables: &self.tables,
            now_millis: self.now_millis,
            compression_level: self.compression_level,
        };
        let (base, chain) = match plan {
            Plan::Base if self.tables.iter().all(Table::is_empty) => (true, Chain::default()),
            Plan::Base => (true, w.write_base(storage)?),
            Plan::Delta { on, changes } => (false, w.write_delta(storage, on, &changes)?),
        };
        if chain.links.is_empty() {
            tracing::debug!("heap backend holds no state; nothing written");
            let _ = written.set(chain);
            return Ok(None);
        }
        let handle = KeyedStateHandle::Incremental(w.handle(storage, &chain)?);
        let bytes = handle.checkpointed_size(self.checkpoint);
        span.record("bytes", bytes);
        tracing::info!(
            bytes,
            kind = if base { "base" } else { "delta" },
            chain_streams = chain.links.len(),
            chain_bytes = handle.state_size(),
            "incremental heap snapshot written"
        );
        let _ = written.set(chain.clone());
        self.keep_local(&handle, Some(chain));
        Ok(Some(handle))
    }

    /// Keeps the written state for local recovery, when it is on.
    fn keep_local(self: Box<Self>, handle: &KeyedStateHandle, chain: Option<Chain>) {
        let Some((local, operator)) = &self.local else {
            return;
        };
        // Keep what a restore of the handle holds: drop what the writer
        // dropped as expired (only TTL states with expired entries are
        // touched). A delta drops the expired entries of the keys it writes
        // only, so a restore of a chain from storage may still hold entries
        // that expired after its base; the copy holds none (reads never tell
        // the two apart unless the state returns expired entries).
        let mut tables = self.tables;
        for (d, table) in self.descriptors.iter().zip(tables.iter_mut()) {
            if let Some(cfg) = d.full_snapshot_cleanup() {
                table.drop_expired(&cfg, self.now_millis);
            }
        }
        let state = LocalState {
            descriptors: self.descriptors,
            tables,
            chain,
        };
        local.keep(operator, self.checkpoint, handle, state);
    }
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
        ids: &[Option<StateId>],
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
                let table = ids
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|id| states.get_mut(id.index()));
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

    /// Reads `handles` into fresh tables; the backend is untouched. Also
    /// returns the chain later incremental snapshots may build on: that of
    /// the one handle restored when it holds exactly this backend's key
    /// groups.
    fn read_handles(
        &self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<(StateCatalog<State>, HeapRestoreStats, Option<Chain>)> {
        let mut states = self.emptied_states();
        let mut stats = HeapRestoreStats::default();
        let relevant: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| !h.key_groups().intersect(&self.range).is_empty())
            .collect();
        let mut adopt = None;
        for handle in &relevant {
            if let KeyedStateHandle::Incremental(h) = handle
                && h.backend != BACKEND_NAME
            {
                return Err(StateError::incompatible(
                    h.meta.describe(),
                    format!(
                        "heap backend restores its own incremental snapshots and full key-group \
                         snapshots; this is an incremental snapshot of backend {:?} (move state \
                         between backends with a canonical savepoint)",
                        h.backend
                    ),
                ));
            }
            let kept = self
                .local
                .as_ref()
                .and_then(|l| l.find(&self.operator, handle));
            let chain = if let Some(kept) = kept {
                let chain = kept.chain.clone();
                self.adopt_local_copy(handle, kept, &mut states)?;
                stats.local_handles += 1;
                chain
            } else {
                match handle {
                    KeyedStateHandle::KeyGroups(h) => {
                        self.read_stream(h, storage, &mut states, None, &mut stats)?;
                        None
                    }
                    KeyedStateHandle::Incremental(h) => {
                        Some(self.read_chain(h, storage, &mut states, &mut stats)?)
                    }
                }
            };
            if relevant.len() == 1 && handle.key_groups() == self.range {
                adopt = chain;
            }
        }
        Ok((states, stats, adopt))
    }

    /// Reads the chain of an incremental heap handle: its base, then each
    /// delta in order.
    fn read_chain(
        &self,
        h: &IncrementalHandle,
        storage: &dyn CheckpointStorage,
        states: &mut StateCatalog<State>,
        stats: &mut HeapRestoreStats,
    ) -> Result<Chain> {
        let what = h.meta.describe();
        let bytes = storage.read(&h.meta)?;
        stats.storage_handles += 1;
        stats.storage_bytes += h.meta.size;
        let meta = decode_meta(&bytes, &what)?;
        if meta.max_parallelism != self.max_parallelism.get() {
            return Err(max_parallelism_changed(
                &what,
                meta.max_parallelism,
                self.max_parallelism,
            ));
        }
        for d in &meta.descriptors {
            HeapBackend::register_in(states, self.range.len(), d)
                .map_err(|e| StateError::incompatible(&what, format!("state in snapshot: {e}")))?;
        }
        let chain = chain_of(h, &meta)?;
        for link in &chain.links {
            let stream = stream_handle(link, h.range);
            let delta = link.meta.delta.as_ref();
            self.read_stream(&stream, storage, states, Some(delta), stats)?;
        }
        Ok(chain)
    }

    /// Reads one key-group stream into `states`: a full snapshot
    /// (`link: None`), or a link of a chain (`Some`): its base, or a delta,
    /// whose resets empty key groups first and whose removals delete
    /// entries. A full snapshot registers the states its header names; a
    /// link's header may predate a change of a state's descriptor, so its
    /// states are found by name among those the chain's meta registered.
    fn read_stream(
        &self,
        h: &KeyGroupsHandle,
        storage: &dyn CheckpointStorage,
        states: &mut StateCatalog<State>,
        link: Option<Option<&DeltaMeta>>,
        stats: &mut HeapRestoreStats,
    ) -> Result<()> {
        let bytes = storage.read(&h.stream)?;
        let delta = link.flatten();
        if link.is_none() {
            stats.storage_handles += 1;
        }
        stats.storage_bytes += h.stream.size;
        let what = h.stream.describe();
        let reader = KeyGroupStreamReader::open(bytes.clone(), h)?;
        if reader.max_parallelism() != self.max_parallelism {
            return Err(max_parallelism_changed(
                &what,
                reader.max_parallelism().get(),
                self.max_parallelism,
            ));
        }
        let removals = delta.map(|d| d.removals as usize);
        let key_groups = self.range.len();
        let ids = reader
            .states()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if Some(i) == removals {
                    return Ok(None);
                }
                if link.is_some() {
                    return states.id_of(&d.name).map(Some).ok_or_else(|| {
                        StateError::corrupted(
                            &what,
                            format!("state {:?} is not among the chain's states", d.name),
                        )
                    });
                }
                HeapBackend::register_in(states, key_groups, d)
                    .map(Some)
                    .map_err(|e| StateError::incompatible(&what, format!("state in snapshot: {e}")))
            })
            .collect::<Result<Vec<Option<StateId>>>>()?;
        let range = self.range;
        for &(state, kg) in delta.map(|d| d.resets.as_slice()).unwrap_or_default() {
            let Some(off) = range.offset_of(KeyGroup(kg)) else {
                continue;
            };
            match table_of(&ids, states, state as usize) {
                Some(table) => table.clear_at(off),
                None => {
                    return Err(StateError::corrupted(
                        &what,
                        format!("reset of key group {kg} names state {state}, which it lacks"),
                    ));
                }
            }
        }
        let mut sizer = delta
            .is_none()
            .then(|| BlockSizer::new(&bytes, h, ids.len()));
        reader.read(range, &mut |record| {
            let does_not_fit = || {
                StateError::corrupted(
                    &what,
                    format!("record of key group {} does not fit", record.key_group),
                )
            };
            let Some(off) = range.offset_of(record.key_group) else {
                return Err(does_not_fit());
            };
            let index = record.state as usize;
            if Some(index) == removals {
                return remove_entries(&what, record, off, &ids, states);
            }
            if let Some(sizer) = &mut sizer {
                sizer.on_record(record.key_group, index, off, &ids, states);
            }
            let Some(table) = table_of(&ids, states, index) else {
                return Err(does_not_fit());
            };
            insert_record(table, off, record).ok_or_else(|| {
                StateError::corrupted(
                    &what,
                    format!(
                        "record of key group {} has the wrong layout",
                        record.key_group
                    ),
                )
            })
        })
    }

    /// Shares the key-group maps of a kept snapshot of `handle` that fall
    /// in this backend's range.
    fn adopt_local_copy(
        &self,
        handle: &KeyedStateHandle,
        kept: LocalState,
        states: &mut StateCatalog<State>,
    ) -> Result<()> {
        let range = handle.key_groups();
        let what = handle
            .streams()
            .last()
            .map(|s| s.describe())
            .unwrap_or_default();
        for (descriptor, table) in kept.descriptors.iter().zip(&kept.tables) {
            let wrong = |detail: String| StateError::incompatible(&what, detail);
            let id = HeapBackend::register_in(states, self.range.len(), descriptor)
                .map_err(|e| wrong(format!("state in snapshot: {e}")))?;
            let target = states
                .get_mut(id.index())
                .ok_or_else(|| wrong(format!("state {:?} is lost", descriptor.name)))?;
            for kg in range.intersect(&self.range).iter() {
                let (Some(from), Some(to)) = (range.offset_of(kg), self.range.offset_of(kg)) else {
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

/// The table of the stream's state `index` (`ids` maps the stream's
/// states to the backend's; `None` for the removals pseudo-state).
fn table_of<'s>(
    ids: &[Option<StateId>],
    states: &'s mut StateCatalog<State>,
    index: usize,
) -> Option<&'s mut Table> {
    let id = ids.get(index).copied().flatten()?;
    states.get_mut(id.index()).map(|s| &mut s.table)
}

fn max_parallelism_changed(what: &str, snapshot: u32, job: MaxParallelism) -> StateError {
    StateError::incompatible(
        what,
        format!(
            "snapshot has max parallelism {snapshot}, this job {job}; a job's max parallelism \
             cannot change"
        ),
    )
}

/// Inserts a record's entry (replacing the key's earlier one) into `table`;
/// `None` when the record's layout is not the table's.
fn insert_record(table: &mut Table, off: usize, record: &Record<'_>) -> Option<()> {
    let key = OwnedKey::new(record.key, record.namespace);
    match (table, &record.entry) {
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
                let mut map = FastMap::with_capacity_and_hasher(entries.len(), Default::default());
                for (uk, v) in entries.iter() {
                    map.insert(Bytes::copy_from_slice(uk), Bytes::copy_from_slice(v));
                }
                Arc::make_mut(m).insert(key, map);
            }
        }
        _ => return None,
    }
    Some(())
}

/// Applies a removal record of a delta: deletes the record's (key,
/// namespace) from each state it lists (4-byte little-endian indices).
fn remove_entries(
    what: &str,
    record: &Record<'_>,
    off: usize,
    ids: &[Option<StateId>],
    states: &mut StateCatalog<State>,
) -> Result<()> {
    let RecordEntry::List(indices) = &record.entry else {
        return Err(StateError::corrupted(
            what,
            "a removal record is not a list",
        ));
    };
    let key = Lookup {
        key: record.key,
        namespace: record.namespace,
    };
    for index in indices.iter() {
        let table = index
            .as_ref()
            .try_into()
            .ok()
            .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
            .and_then(|i| table_of(ids, states, i))
            .ok_or_else(|| {
                StateError::corrupted(
                    what,
                    format!(
                        "removal in key group {} names no state of the stream",
                        record.key_group
                    ),
                )
            })?;
        table.remove_at(off, &key);
    }
    Ok(())
}

impl Checkpointable for HeapBackend {
    /// Captures the state by cloning the `Arc` of every key-group map of every
    /// state (O(states x key groups), no entry copied).
    /// [`SnapshotMode::Incremental`] writes a base or a delta of the
    /// backend's chain (see the crate docs); the first one starts tracking
    /// changes and is a base. A full checkpoint stops the tracking (the next
    /// incremental snapshot is a base again); savepoints leave it alone. The
    /// heap backend has no native format: savepoints of both formats are
    /// canonical.
    fn snapshot(&mut self, id: CheckpointId, mode: SnapshotMode) -> Result<Box<dyn AsyncSnapshot>> {
        let tables: Vec<Table> = self.states.iter().map(|s| s.table.clone()).collect();
        let kind = match mode {
            SnapshotMode::Incremental => {
                let tracker = self.tracker.get_or_insert_with(Tracker::default);
                let (plan, written) = tracker.begin(id, &tables, self.options.delta_budget_percent);
                Kind::Chain {
                    plan,
                    written,
                    backend_id: self.backend_id.clone(),
                }
            }
            SnapshotMode::Full => {
                self.tracker = None;
                Kind::Full
            }
            SnapshotMode::CanonicalSavepoint | SnapshotMode::NativeSavepoint => Kind::Full,
        };
        Ok(Box::new(HeapSnapshot {
            checkpoint: id,
            kind,
            stream_name: self.stream_name.clone(),
            max_parallelism: self.max_parallelism,
            range: self.range,
            descriptors: self.states.iter().map(|s| s.descriptor.clone()).collect(),
            tables,
            now_millis: self.clock.now_millis(),
            compression_level: self.options.compression_level,
            // A savepoint is never restored by failover: no local copy.
            local: (!mode.is_savepoint())
                .then(|| self.local.clone().map(|l| (l, self.operator.clone())))
                .flatten(),
        }))
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(tracker) = &mut self.tracker {
            tracker.confirm(id);
        }
        if let Some(local) = &self.local {
            local.confirm(&self.operator, id);
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(tracker) = &mut self.tracker {
            tracker.abort(id);
        }
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
            Ok((states, stats, chain)) => {
                self.states = states;
                // Later incremental snapshots build on the restored chain.
                self.tracker = chain.map(Tracker::on);
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
                self.tracker = None;
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
            sizer.on_record(KeyGroup(0), 0, 0, &[Some(id)], &mut states);
        }
        assert_eq!(
            capacity(&states, 0),
            0,
            "nothing to go by in the first block"
        );
        sizer.on_record(KeyGroup(1), 0, 1, &[Some(id)], &mut states);
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
