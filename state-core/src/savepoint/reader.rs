//! [`SavepointReader`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::StateDescriptor;
use crate::key_group::KeyGroupRange;
use crate::metadata::{
    CheckpointMetadata, KeyGroupsHandle, KeyedStateHandle, OperatorSnapshot, OperatorStateHandle,
    SubtaskSnapshot,
};
use crate::operator_state::OperatorStateStore;
use crate::snapshot_format::{KeyGroupStreamReader, Record};
use crate::storage::CheckpointStorage;
use crate::{CheckpointId, Result, StateError};

/// A keyed handle that is not in the canonical format, as
/// [`SavepointReader::convert_native`] hands it to its converter.
#[derive(Debug, Clone, Copy)]
pub struct NativeHandle<'a> {
    /// The operator it belongs to (its uid, parallelism, max parallelism).
    pub operator: &'a OperatorSnapshot,
    /// The subtask that wrote it.
    pub subtask: u32,
    /// The handle.
    pub handle: &'a KeyedStateHandle,
    /// The storage its files are in.
    pub storage: &'a Arc<dyn CheckpointStorage>,
}

/// What a converter of native handles returns: the same state as a
/// canonical stream, and the storage that stream is in.
pub type CanonicalStream = (KeyGroupsHandle, Arc<dyn CheckpointStorage>);

/// One canonical stream of an operator: its handle and storage.
#[derive(Debug, Clone)]
struct Stream {
    handle: KeyGroupsHandle,
    storage: Arc<dyn CheckpointStorage>,
}

/// Reads the state of one checkpoint or savepoint offline.
///
/// ```
/// use std::sync::Arc;
/// use state_core::{
///     CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointReader,
///     SavepointWriter, StateDescriptor, StateKind,
/// };
///
/// # fn main() -> state_core::Result<()> {
/// let storage = Arc::new(MemoryCheckpointStorage::default());
/// let max = MaxParallelism::new(128)?;
/// let mut writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
/// let count = StateDescriptor::new("count", StateKind::Value).with_type_name("u64");
/// let mut op = writer.keyed_operator(OperatorId("Sum".into()), max, 2, &[count])?;
/// let key = postcard::to_stdvec("alice").expect("a string encodes");
/// op.begin_key_group(max.key_group_of(&key))?;
/// op.write_value(0, &key, b"", &postcard::to_stdvec(&7u64).expect("encodes"))?;
/// op.finish()?;
/// writer.finish()?;
///
/// let reader = SavepointReader::open(storage, CheckpointId(1))?;
/// let mut values = Vec::new();
/// reader.read_state("Sum", "count", None, &mut |record| {
///     values.push((record.key.to_vec(), record.entry.value().map(<[u8]>::to_vec)));
///     Ok(())
/// })?;
/// assert_eq!(values, vec![(key, Some(vec![7]))]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SavepointReader {
    storage: Arc<dyn CheckpointStorage>,
    metadata: CheckpointMetadata,
    /// Canonical replacements of native handles, by (operator, subtask
    /// position, keyed position) in the metadata.
    converted: BTreeMap<(usize, usize, usize), Stream>,
}

impl SavepointReader {
    /// Opens checkpoint `id` of `storage`: reads and checks its metadata.
    /// Streams are read (and their checksums checked) as they are visited.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, MemoryCheckpointStorage, SavepointReader};
    /// let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let err = SavepointReader::open(storage, CheckpointId(9)).unwrap_err();
    /// assert!(err.to_string().contains("9"), "{err}");
    /// ```
    pub fn open(storage: Arc<dyn CheckpointStorage>, id: CheckpointId) -> Result<Self> {
        let metadata = storage.read_metadata(id)?;
        Ok(Self::new(storage, metadata))
    }

    /// A reader of `metadata`, whose streams are in `storage`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, CheckpointMetadata, JobId, MemoryCheckpointStorage, SavepointReader, SnapshotKind};
    /// # fn main() -> state_core::Result<()> {
    /// let metadata = CheckpointMetadata {
    ///     checkpoint_id: CheckpointId(1),
    ///     job_id: JobId::new("job")?,
    ///     timestamp_millis: 0,
    ///     kind: SnapshotKind::Full,
    ///     operators: Vec::new(),
    /// };
    /// let reader = SavepointReader::new(Arc::new(MemoryCheckpointStorage::default()), metadata);
    /// assert!(reader.metadata().operators.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(storage: Arc<dyn CheckpointStorage>, metadata: CheckpointMetadata) -> Self {
        SavepointReader {
            storage,
            metadata,
            converted: BTreeMap::new(),
        }
    }

    /// The checkpoint's metadata.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointReader, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(4), 0)?.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(4))?;
    /// assert_eq!(reader.metadata().checkpoint_id, CheckpointId(4));
    /// # Ok(())
    /// # }
    /// ```
    pub fn metadata(&self) -> &CheckpointMetadata {
        &self.metadata
    }

    /// The storage the checkpoint's own streams are in.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointReader, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// assert!(reader.storage().describe().starts_with("memory"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn storage(&self) -> &Arc<dyn CheckpointStorage> {
        &self.storage
    }

    /// How many keyed handles are neither canonical nor converted yet (the
    /// visits of [`SavepointReader::read_keyed`] refuse them).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointReader, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// assert_eq!(reader.native_handles(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn native_handles(&self) -> usize {
        self.native_positions().len()
    }

    fn native_positions(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (o, op) in self.metadata.operators.iter().enumerate() {
            for (s, st) in op.subtasks.iter().enumerate() {
                for (k, h) in st.keyed.iter().enumerate() {
                    if !matches!(h, KeyedStateHandle::KeyGroups(_))
                        && !self.converted.contains_key(&(o, s, k))
                    {
                        out.push((o, s, k));
                    }
                }
            }
        }
        out
    }

    /// Replaces every native keyed handle (of `only` the operator with that
    /// uid, or of all) by what `convert` makes of it: the same state as a
    /// canonical stream. Stops at the first error.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointReader, SavepointWriter, StateError};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?.finish()?;
    /// let mut reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// // A canonical checkpoint has nothing to convert: the converter is not called.
    /// reader.convert_native(None, &mut |native| {
    ///     Err(StateError::invalid(format!("cannot convert {:?}", native.handle)))
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn convert_native(
        &mut self,
        only: Option<&str>,
        convert: &mut dyn FnMut(NativeHandle<'_>) -> Result<CanonicalStream>,
    ) -> Result<()> {
        for (o, s, k) in self.native_positions() {
            let Some(op) = self.metadata.operators.get(o) else {
                continue;
            };
            if only.is_some_and(|uid| uid != op.operator_id.0) {
                continue;
            }
            let Some(st) = op.subtasks.get(s) else {
                continue;
            };
            let Some(handle) = st.keyed.get(k) else {
                continue;
            };
            let (handle, storage) = convert(NativeHandle {
                operator: op,
                subtask: st.subtask,
                handle,
                storage: &self.storage,
            })?;
            self.converted.insert((o, s, k), Stream { handle, storage });
        }
        Ok(())
    }

    /// The snapshot of the operator with uid `uid`; the error names the
    /// uid, the checkpoint and the uids it holds.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MemoryCheckpointStorage, SavepointReader, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// let err = reader.operator("Sum").unwrap_err();
    /// assert!(err.to_string().contains("no operator with uid \"Sum\""), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn operator(&self, uid: &str) -> Result<&OperatorSnapshot> {
        self.operator_index(uid)
            .and_then(|o| self.metadata.operators.get(o))
            .ok_or_else(|| {
                let uids: Vec<&str> = self
                    .metadata
                    .operators
                    .iter()
                    .map(|op| op.operator_id.0.as_str())
                    .collect();
                StateError::invalid(format!(
                    "no operator with uid {uid:?} in checkpoint {}; it holds {}",
                    self.metadata.checkpoint_id,
                    if uids.is_empty() {
                        "no operator state".to_owned()
                    } else {
                        format!("operators {}", uids.join(", "))
                    }
                ))
            })
    }

    fn operator_index(&self, uid: &str) -> Option<usize> {
        self.metadata
            .operators
            .iter()
            .position(|op| op.operator_id.0 == uid)
    }

    /// The canonical streams of an operator, ascending by key-group range.
    fn streams(&self, uid: &str) -> Result<Vec<Stream>> {
        let op = self.operator(uid)?;
        let o = self.operator_index(uid).unwrap_or_default();
        let mut out = Vec::new();
        for (s, st) in op.subtasks.iter().enumerate() {
            for (k, h) in st.keyed.iter().enumerate() {
                match (h, self.converted.get(&(o, s, k))) {
                    (_, Some(stream)) => out.push(stream.clone()),
                    (KeyedStateHandle::KeyGroups(h), None) => out.push(Stream {
                        handle: h.clone(),
                        storage: self.storage.clone(),
                    }),
                    (KeyedStateHandle::Incremental(h), None) => {
                        return Err(StateError::invalid(format!(
                            "operator {uid:?} subtask {} holds a native {} snapshot of key groups {}; \
                             it must be converted to the canonical format to be read",
                            st.subtask, h.backend, h.range
                        )));
                    }
                }
            }
        }
        out.sort_by_key(|s| s.handle.range.start());
        Ok(out)
    }

    fn open_stream(stream: &Stream) -> Result<KeyGroupStreamReader> {
        let bytes = stream.storage.read(&stream.handle.stream)?;
        KeyGroupStreamReader::open(bytes, &stream.handle)
    }

    /// The keyed states of operator `uid`, in the order its streams first
    /// name them (the union of every subtask's), with their recorded kind,
    /// TTL and type name. Reads only the streams' headers.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointReader, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let mut writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let seen = StateDescriptor::new("seen", StateKind::List).with_type_name("u32");
    /// # let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[seen.clone()])?;
    /// # op.begin_key_group(state_core::KeyGroup(0))?;
    /// # op.write_list(0, b"k", b"", [&b"\x01"[..]])?;
    /// # op.finish()?;
    /// # writer.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// assert_eq!(reader.states("op")?, vec![seen]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn states(&self, uid: &str) -> Result<Vec<StateDescriptor>> {
        let mut out: Vec<StateDescriptor> = Vec::new();
        for stream in self.streams(uid)? {
            let reader = Self::open_stream(&stream)?;
            for d in reader.states() {
                if !out.iter().any(|o| o.name == d.name) {
                    out.push(d.clone());
                }
            }
        }
        Ok(out)
    }

    /// Visits every record of operator `uid`'s keyed state (of the key
    /// groups in `key_groups`, or all), key group by key group in
    /// ascending order, with the descriptor of its state. One decompressed
    /// key group is in memory at a time. Stops at the first error, from a
    /// stream (naming it) or from `visit`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, KeyGroup, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointReader, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let mut writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
    /// # let count = StateDescriptor::new("count", StateKind::Value);
    /// # let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 2, &[count])?;
    /// # for kg in [1u16, 6] {
    /// #     op.begin_key_group(KeyGroup(kg))?;
    /// #     op.write_value(0, &[kg as u8], b"", b"v")?;
    /// # }
    /// # op.finish()?;
    /// # writer.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// let mut groups = Vec::new();
    /// reader.read_keyed("op", None, &mut |state, record| {
    ///     groups.push((state.name.clone(), record.key_group.0));
    ///     Ok(())
    /// })?;
    /// assert_eq!(groups, vec![("count".to_owned(), 1), ("count".to_owned(), 6)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_keyed(
        &self,
        uid: &str,
        key_groups: Option<KeyGroupRange>,
        visit: &mut dyn FnMut(&StateDescriptor, &Record<'_>) -> Result<()>,
    ) -> Result<()> {
        for stream in self.streams(uid)? {
            let wanted = match key_groups {
                Some(range) => range.intersect(&stream.handle.range),
                None => stream.handle.range,
            };
            if wanted.is_empty() {
                continue;
            }
            let reader = Self::open_stream(&stream)?;
            let states = reader.states();
            reader.read(wanted, &mut |record| {
                let state = states.get(record.state as usize).ok_or_else(|| {
                    StateError::corrupted(
                        stream.handle.stream.describe(),
                        format!("record names state {}", record.state),
                    )
                })?;
                visit(state, record)
            })?;
        }
        Ok(())
    }

    /// Visits the records of one state of operator `uid` (see
    /// [`SavepointReader::read_keyed`]) and returns its descriptor. An
    /// unknown state is an error naming it and the operator's states.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, SavepointReader, SavepointWriter, StateDescriptor, StateKind};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let mut writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
    /// # let count = StateDescriptor::new("count", StateKind::Value);
    /// # let mut op = writer.keyed_operator(OperatorId("op".into()), MaxParallelism::new(8)?, 1, &[count])?;
    /// # op.begin_key_group(state_core::KeyGroup(0))?;
    /// # op.write_value(0, b"k", b"", b"v")?;
    /// # op.finish()?;
    /// # writer.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// let err = reader.read_state("op", "total", None, &mut |_| Ok(())).unwrap_err();
    /// assert!(err.to_string().contains("no state \"total\""), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_state(
        &self,
        uid: &str,
        state: &str,
        key_groups: Option<KeyGroupRange>,
        visit: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<StateDescriptor> {
        let states = self.states(uid)?;
        let Some(descriptor) = states.iter().find(|d| d.name == state).cloned() else {
            let names: Vec<&str> = states.iter().map(|d| d.name.as_str()).collect();
            return Err(StateError::invalid(format!(
                "no state {state:?} in operator {uid:?} of checkpoint {}; its states are: {}",
                self.metadata.checkpoint_id,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        self.read_keyed(uid, key_groups, &mut |d, record| {
            if d.name == state {
                visit(record)
            } else {
                Ok(())
            }
        })?;
        Ok(descriptor)
    }

    /// The operator state of operator `uid` as subtask `subtask` of
    /// `parallelism` restores it (split lists redistributed, union lists
    /// whole), or `None` when the operator has none.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use state_core::{CheckpointId, JobId, MaxParallelism, MemoryCheckpointStorage, OperatorId, OperatorStateMode, OperatorStateStore, SavepointReader, SavepointWriter};
    /// # fn main() -> state_core::Result<()> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// let mut writer = SavepointWriter::new(storage.clone(), JobId::new("job")?, CheckpointId(1), 0)?;
    /// let (uid, max) = (OperatorId("source".into()), MaxParallelism::new(8)?);
    /// for subtask in 0..2u64 {
    ///     let mut store = OperatorStateStore::new();
    ///     store.register("offsets", OperatorStateMode::Split)?;
    ///     store.add_typed("offsets", &subtask)?;
    ///     writer.write_operator_state(&uid, max, 2, subtask as u32, &store)?;
    /// }
    /// writer.finish()?;
    /// let reader = SavepointReader::open(storage, CheckpointId(1))?;
    /// let store = reader.operator_state("source", 1, 0)?.expect("the source has state");
    /// assert_eq!(store.get_typed::<u64>("offsets")?, vec![0, 1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn operator_state(
        &self,
        uid: &str,
        parallelism: u32,
        subtask: u32,
    ) -> Result<Option<OperatorStateStore>> {
        let op = self.operator(uid)?;
        let mut subtasks: Vec<&SubtaskSnapshot> = op.subtasks.iter().collect();
        subtasks.sort_by_key(|s| s.subtask);
        let handles: Vec<OperatorStateHandle> =
            subtasks.iter().filter_map(|s| s.operator.clone()).collect();
        if handles.is_empty() {
            return Ok(None);
        }
        OperatorStateStore::restore(&handles, self.storage.as_ref(), parallelism, subtask).map(Some)
    }
}
