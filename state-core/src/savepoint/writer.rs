//! [`SavepointWriter`] and [`KeyedOperatorWriter`].

use std::sync::Arc;

use crate::backend::{StateDescriptor, StateLayout};
use crate::checkpoint_id::CheckpointId;
use crate::ids::{JobId, OperatorId};
use crate::key_group::{KeyGroup, MaxParallelism};
use crate::metadata::{
    CheckpointMetadata, KeyedStateHandle, OperatorSnapshot, SnapshotKind, SubtaskSnapshot,
};
use crate::operator_state::OperatorStateStore;
use crate::snapshot_format::{KeyGroupStreamWriter, Record, RecordEntry};
use crate::storage::{CheckpointStorage, file_name_part};
use crate::{Result, StateError};

/// Writes a canonical savepoint: keyed state operator by operator, key
/// group by key group, and operator state, then its metadata. The
/// savepoint exists once [`SavepointWriter::finish`] returned.
///
/// On a `backend-fs` storage opened on directory `D` with job id
/// `savepoint-…`, this is a savepoint directory `D/savepoint-…/chk-<n>/`
/// that `cairn run … --from` restores into any backend at any parallelism.
#[derive(Debug)]
pub struct SavepointWriter {
    storage: Arc<dyn CheckpointStorage>,
    metadata: CheckpointMetadata,
}

impl SavepointWriter {
    /// Starts savepoint `checkpoint_id` of job `job_id` in `storage`, taken
    /// at `timestamp_millis` (milliseconds since the Unix epoch).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, CheckpointStorage, JobId, MemoryCheckpointStorage, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
    /// writer.finish()?;
    /// assert_eq!(storage.list_checkpoints()?, vec![CheckpointId(1)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(
        storage: Arc<dyn CheckpointStorage>,
        job_id: JobId,
        checkpoint_id: CheckpointId,
        timestamp_millis: u64,
    ) -> Result<Self> {
        storage.initialize_checkpoint(checkpoint_id)?;
        Ok(SavepointWriter {
            storage,
            metadata: CheckpointMetadata {
                checkpoint_id,
                job_id,
                timestamp_millis,
                kind: SnapshotKind::Full,
                operators: Vec::new(),
            },
        })
    }

    /// The snapshot of operator `uid`, added with no subtasks if new; the
    /// error names the uid when its max parallelism or parallelism differs
    /// from what was written for it before.
    fn operator_mut(
        &mut self,
        uid: &OperatorId,
        max_parallelism: MaxParallelism,
        parallelism: u32,
    ) -> Result<&mut OperatorSnapshot> {
        if parallelism == 0 || parallelism > max_parallelism.get() {
            return Err(StateError::invalid(format!(
                "operator {uid}: parallelism {parallelism} must be between 1 and the max parallelism {max_parallelism}"
            )));
        }
        let index = match self
            .metadata
            .operators
            .iter()
            .position(|op| op.operator_id == *uid)
        {
            Some(i) => i,
            None => {
                self.metadata.operators.push(OperatorSnapshot {
                    operator_id: uid.clone(),
                    parallelism,
                    max_parallelism: max_parallelism.get(),
                    subtasks: Vec::new(),
                });
                self.metadata.operators.len() - 1
            }
        };
        let op = self
            .metadata
            .operators
            .get_mut(index)
            .ok_or_else(|| StateError::invalid(format!("operator {uid} is lost")))?;
        if op.parallelism != parallelism || op.max_parallelism != max_parallelism.get() {
            return Err(StateError::invalid(format!(
                "operator {uid} is written at parallelism {} and max parallelism {}, not {parallelism} and {max_parallelism}",
                op.parallelism, op.max_parallelism
            )));
        }
        Ok(op)
    }

    /// The entry of `subtask` in `op`, added if new.
    fn subtask_mut(op: &mut OperatorSnapshot, subtask: u32) -> Result<&mut SubtaskSnapshot> {
        let index = match op.subtasks.iter().position(|s| s.subtask == subtask) {
            Some(i) => i,
            None => {
                op.subtasks.push(SubtaskSnapshot {
                    subtask,
                    keyed: Vec::new(),
                    operator: None,
                });
                op.subtasks.sort_by_key(|s| s.subtask);
                op.subtasks
                    .iter()
                    .position(|s| s.subtask == subtask)
                    .unwrap_or_default()
            }
        };
        op.subtasks
            .get_mut(index)
            .ok_or_else(|| StateError::invalid(format!("subtask {subtask} is lost")))
    }

    /// Starts the keyed state of operator `uid` at `parallelism` subtasks
    /// of `max_parallelism` key groups, holding `states` (record state
    /// indexes refer to them; their type names are recorded). Write key
    /// groups in ascending order, then [`KeyedOperatorWriter::finish`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let mut writer = SavepointWriter::new(storage, JobId::new("job")?, CheckpointId(1), 0)?;
    /// let attrs = StateDescriptor::new("attrs", StateKind::Map);
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 4, &[attrs])?;
    /// op.begin_key_group(KeyGroup(5))?;
    /// op.write_map(0, b"k", b"", [(&b"colour"[..], &b"red"[..])])?;
    /// op.finish()?;
    /// let metadata = writer.finish()?;
    /// // Key group 5 of 8 belongs to subtask 2 of 4: the only subtask with state.
    /// assert_eq!(metadata.operators[0].subtasks[0].subtask, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keyed_operator(
        &mut self,
        uid: OperatorId,
        max_parallelism: MaxParallelism,
        parallelism: u32,
        states: &[StateDescriptor],
    ) -> Result<KeyedOperatorWriter<'_>> {
        self.operator_mut(&uid, max_parallelism, parallelism)?;
        Ok(KeyedOperatorWriter {
            parent: self,
            uid,
            max_parallelism,
            parallelism,
            states: states.to_vec(),
            current: None,
            last: None,
        })
    }

    /// Writes `store` as the operator state of subtask `subtask` of operator
    /// `uid` (at `parallelism` of `max_parallelism`).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, OperatorStateMode, OperatorStateStore, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let mut writer = SavepointWriter::new(storage, JobId::new("job")?, CheckpointId(1), 0)?;
    /// let mut store = OperatorStateStore::new();
    /// store.register("offsets", OperatorStateMode::Union)?;
    /// store.add_typed("offsets", &(0u32, 42u64))?;
    /// writer.write_operator_state(&OperatorId("source".into()), MaxParallelism::new(8)?, 1, 0, &store)?;
    /// let metadata = writer.finish()?;
    /// assert!(metadata.operators[0].subtasks[0].operator.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_operator_state(
        &mut self,
        uid: &OperatorId,
        max_parallelism: MaxParallelism,
        parallelism: u32,
        subtask: u32,
        store: &OperatorStateStore,
    ) -> Result<()> {
        if subtask >= parallelism {
            return Err(StateError::invalid(format!(
                "operator {uid}: subtask {subtask} is out of range for parallelism {parallelism}"
            )));
        }
        let mut store = store.clone();
        store.set_stream_name(&format!(
            "{}-{subtask}-operator",
            file_name_part(&uid.0, 120, true)
        ))?;
        let id = self.metadata.checkpoint_id;
        let handle = store.snapshot(id, self.storage.as_ref())?;
        let op = self.operator_mut(uid, max_parallelism, parallelism)?;
        Self::subtask_mut(op, subtask)?.operator = handle;
        Ok(())
    }

    /// Writes the metadata; from its return on, the savepoint exists.
    /// Returns what was written.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointWriter, SnapshotKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let metadata = SavepointWriter::new(storage, JobId::new("job")?, CheckpointId(3), 0)?.finish()?;
    /// assert_eq!(metadata.kind, SnapshotKind::Full);
    /// # Ok(())
    /// # }
    /// ```
    pub fn finish(self) -> Result<CheckpointMetadata> {
        self.metadata.validate("savepoint metadata")?;
        self.storage.write_metadata(&self.metadata)?;
        Ok(self.metadata)
    }
}

/// Writes the keyed state of one operator of a [`SavepointWriter`]: one
/// canonical stream per subtask that holds state, key groups ascending.
pub struct KeyedOperatorWriter<'a> {
    parent: &'a mut SavepointWriter,
    uid: OperatorId,
    max_parallelism: MaxParallelism,
    parallelism: u32,
    states: Vec<StateDescriptor>,
    /// The subtask whose stream is open, and its writer.
    current: Option<(u32, KeyGroupStreamWriter)>,
    last: Option<KeyGroup>,
}

impl std::fmt::Debug for KeyedOperatorWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedOperatorWriter")
            .field("uid", &self.uid)
            .field("parallelism", &self.parallelism)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl KeyedOperatorWriter<'_> {
    /// The states of the operator, as given to [`SavepointWriter::keyed_operator`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[StateDescriptor::new("n", StateKind::Value)])?;
    /// assert_eq!(op.states()[0].name, "n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn states(&self) -> &[StateDescriptor] {
        &self.states
    }

    /// Starts key group `kg`: the entries written next belong to it. Key
    /// groups must ascend; a key group of another subtask closes the open
    /// stream and opens that subtask's.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[StateDescriptor::new("n", StateKind::Value)])?;
    /// op.begin_key_group(KeyGroup(3))?;
    /// assert!(op.begin_key_group(KeyGroup(2)).is_err(), "key groups ascend");
    /// assert!(op.begin_key_group(KeyGroup(8)).is_err(), "8 key groups: 0 to 7");
    /// # Ok(())
    /// # }
    /// ```
    pub fn begin_key_group(&mut self, kg: KeyGroup) -> Result<()> {
        if u32::from(kg.0) >= self.max_parallelism.get() {
            return Err(StateError::invalid(format!(
                "operator {}: key group {kg} is outside its {} key groups",
                self.uid, self.max_parallelism
            )));
        }
        if let Some(last) = self.last
            && kg <= last
        {
            return Err(StateError::invalid(format!(
                "operator {}: key group {kg} written after key group {last}; key groups must ascend",
                self.uid
            )));
        }
        let subtask = self
            .max_parallelism
            .subtask_for_key_group(self.parallelism, kg);
        if self.current.as_ref().map(|(s, _)| *s) != Some(subtask) {
            self.close_current()?;
            let range = self
                .max_parallelism
                .range_for_subtask(self.parallelism, subtask)?;
            let name = format!("{}-{subtask}-keyed", file_name_part(&self.uid.0, 120, true));
            let out = self.parent.storage.create_output(
                self.parent.metadata.checkpoint_id,
                crate::handle::StateScope::Exclusive,
                &name,
            )?;
            // Time 0: nothing written here is dropped as expired.
            let writer = KeyGroupStreamWriter::new(
                out,
                &name,
                "savepoint",
                self.max_parallelism,
                range,
                &self.states,
                0,
            )?;
            self.current = Some((subtask, writer));
        }
        self.writer()?.begin_key_group(kg)?;
        self.last = Some(kg);
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut KeyGroupStreamWriter> {
        match &mut self.current {
            Some((_, w)) => Ok(w),
            None => Err(StateError::invalid(format!(
                "operator {}: entry written before any key group was begun",
                self.uid
            ))),
        }
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((subtask, writer)) = self.current.take() {
            let handle = writer.finish()?;
            let op = self
                .parent
                .operator_mut(&self.uid, self.max_parallelism, self.parallelism)?;
            SavepointWriter::subtask_mut(op, subtask)?
                .keyed
                .push(KeyedStateHandle::KeyGroups(handle));
        }
        Ok(())
    }

    /// Writes the value of value-layout state `state` (an index into
    /// [`KeyedOperatorWriter::states`]) for (key, namespace) in the current
    /// key group. `key` must belong to that key group
    /// ([`MaxParallelism::key_group_of`] of the encoded key).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let max = MaxParallelism::new(8)?;
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), max, 1, &[StateDescriptor::new("n", StateKind::Value)])?;
    /// op.begin_key_group(max.key_group_of(b"k"))?;
    /// op.write_value(0, b"k", b"", b"1")?;
    /// assert!(op.write_value(1, b"k", b"", b"1").is_err(), "no state 1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_value(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.writer()?
            .write_value(state, key, namespace, value)
            .map(drop)
    }

    /// Writes the elements of list-layout state `state` for (key, namespace),
    /// oldest first.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[StateDescriptor::new("l", StateKind::List)])?;
    /// op.begin_key_group(KeyGroup(0))?;
    /// op.write_list(0, b"k", b"", [&b"a"[..], &b"b"[..]])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_list<'e, I>(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        elements: I,
    ) -> Result<()>
    where
        I: IntoIterator<Item = &'e [u8]>,
        I::IntoIter: Clone,
    {
        self.writer()?
            .write_list(state, key, namespace, elements)
            .map(drop)
    }

    /// Writes the (user key, value) entries of map-layout state `state` for
    /// (key, namespace).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[StateDescriptor::new("m", StateKind::Map)])?;
    /// op.begin_key_group(KeyGroup(0))?;
    /// op.write_map(0, b"k", b"", [(&b"x"[..], &b"1"[..])])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_map<'e, I>(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        entries: I,
    ) -> Result<()>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
        I::IntoIter: Clone,
    {
        self.writer()?
            .write_map(state, key, namespace, entries)
            .map(drop)
    }

    /// Writes `record` (read from another savepoint, say) as an entry of
    /// state `state` in the current key group; the layouts must match.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # use state_core::backend_support::{Record, RecordEntry};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[StateDescriptor::new("n", StateKind::Value)])?;
    /// op.begin_key_group(KeyGroup(0))?;
    /// let record = Record { key_group: KeyGroup(0), state: 7, key: b"k", namespace: b"", entry: RecordEntry::Value(b"1") };
    /// op.write_record(0, &record)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_record(&mut self, state: u32, record: &Record<'_>) -> Result<()> {
        let layout = self
            .states
            .get(state as usize)
            .map(|d| d.kind.layout())
            .ok_or_else(|| {
                StateError::invalid(format!(
                    "operator {}: no state {state} among its {} states",
                    self.uid,
                    self.states.len()
                ))
            })?;
        let (key, ns) = (record.key, record.namespace);
        match (layout, record.entry) {
            (StateLayout::Value, RecordEntry::Value(v)) => self.write_value(state, key, ns, v),
            (StateLayout::List, RecordEntry::List(l)) => {
                self.write_list(state, key, ns, l.iter().copied())
            }
            (StateLayout::Map, RecordEntry::Map(m)) => {
                self.write_map(state, key, ns, m.iter().copied())
            }
            (layout, _) => Err(StateError::invalid(format!(
                "operator {}: a record of another layout written to {layout:?} state {state}",
                self.uid
            ))),
        }
    }

    /// Closes the open stream and adds the operator's keyed handles to the
    /// savepoint.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let mut writer = SavepointWriter::new(Arc::new(MemoryCheckpointStorage::default()), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let op = writer.keyed_operator(OperatorId("empty".into()), MaxParallelism::new(8)?, 2, &[])?;
    /// op.finish()?;
    /// // An operator without entries has no subtask with state.
    /// assert!(writer.finish()?.operators[0].subtasks.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn finish(mut self) -> Result<()> {
        self.close_current()
    }
}
