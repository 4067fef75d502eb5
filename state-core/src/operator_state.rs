//! Operator (non-keyed) state: named lists of elements per subtask.
//!
//! A source keeps its offsets here. Each list has an [`OperatorStateMode`]
//! deciding what happens when the job restores at another parallelism:
//! - [`OperatorStateMode::Split`]: the elements of all old subtasks are pooled
//!   in subtask order and cut into contiguous, even shares, the first
//!   `total % parallelism` new subtasks getting one more (Flink's round-robin
//!   repartitioner). At unchanged parallelism each subtask gets exactly its
//!   own elements back.
//! - [`OperatorStateMode::Union`]: every new subtask gets all elements of all
//!   old subtasks, at any parallelism.
//!
//! Snapshot stream layout (integers little-endian, `varint` unsigned LEB128):
//!
//! ```text
//! magic     8 bytes  "CAIRNOPS"
//! version   u16      OPERATOR_STATE_VERSION
//! count     varint   number of states
//! per state
//!   name      varint length + UTF-8
//!   mode      u8       0 = split, 1 = union
//!   elements  varint count, then count x (varint length + bytes)
//! crc32     u32      CRC-32 of every byte before it
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::checkpoint_id::CheckpointId;
use crate::handle::StateScope;
use crate::metadata::{OperatorStateHandle, OperatorStateInfo, OperatorStateMode};
use crate::snapshot_format::{output_error, put_bytes, put_varint, take_bytes, take_varint};
use crate::storage::{CheckpointStorage, check_stream_name, read_verified};
use crate::{Result, StateError};

/// The first bytes of every operator-state stream.
pub(crate) const OPERATOR_STATE_MAGIC: &[u8; 8] = b"CAIRNOPS";
/// The operator-state stream version this build writes and reads.
pub(crate) const OPERATOR_STATE_VERSION: u16 = 1;

/// Makes default stream names unique within the process.
static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListState {
    mode: OperatorStateMode,
    elements: Vec<Bytes>,
}

/// The operator state of one subtask: named lists of byte elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStateStore {
    states: BTreeMap<String, ListState>,
    stream_name: String,
}

impl Default for OperatorStateStore {
    fn default() -> Self {
        OperatorStateStore::new()
    }
}

fn unknown(name: &str) -> StateError {
    StateError::invalid(format!("operator state {name:?} is not registered"))
}

impl OperatorStateStore {
    /// An empty store. Its snapshot stream name is unique within the process;
    /// give it a stable one with [`OperatorStateStore::set_stream_name`].
    pub fn new() -> Self {
        let n = NEXT_STORE.fetch_add(1, Ordering::Relaxed);
        OperatorStateStore {
            states: BTreeMap::new(),
            stream_name: format!("operator-state-{n}"),
        }
    }

    /// Sets the name of this store's snapshot stream, which must be unique
    /// within a checkpoint (for example `<operator>-<subtask>-operator`).
    pub fn set_stream_name(&mut self, name: &str) -> Result<()> {
        check_stream_name(name)?;
        self.stream_name = name.to_owned();
        Ok(())
    }

    /// Registers a list state, or checks the mode of one already registered
    /// (also one restored): another mode is an error.
    pub fn register(&mut self, name: &str, mode: OperatorStateMode) -> Result<()> {
        match self.states.get(name) {
            Some(s) if s.mode != mode => Err(StateError::invalid(format!(
                "operator state {name:?} is registered with mode {:?}, not {mode:?}",
                s.mode
            ))),
            Some(_) => Ok(()),
            None => {
                self.states.insert(
                    name.to_owned(),
                    ListState {
                        mode,
                        elements: Vec::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// The names and modes of the registered states, by name.
    pub fn states(&self) -> Vec<(String, OperatorStateMode)> {
        self.states
            .iter()
            .map(|(n, s)| (n.clone(), s.mode))
            .collect()
    }

    /// The elements of a state.
    pub fn get(&self, name: &str) -> Result<&[Bytes]> {
        self.states
            .get(name)
            .map(|s| &s.elements[..])
            .ok_or_else(|| unknown(name))
    }

    fn list_mut(&mut self, name: &str) -> Result<&mut Vec<Bytes>> {
        self.states
            .get_mut(name)
            .map(|s| &mut s.elements)
            .ok_or_else(|| unknown(name))
    }

    /// Appends an element to a state.
    pub fn add(&mut self, name: &str, element: Bytes) -> Result<()> {
        self.list_mut(name)?.push(element);
        Ok(())
    }

    /// Replaces all elements of a state.
    pub fn update(&mut self, name: &str, elements: Vec<Bytes>) -> Result<()> {
        *self.list_mut(name)? = elements;
        Ok(())
    }

    /// Removes all elements of a state.
    pub fn clear(&mut self, name: &str) -> Result<()> {
        self.list_mut(name)?.clear();
        Ok(())
    }

    /// The elements of a state, decoded with postcard.
    pub fn get_typed<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>> {
        self.get(name)?
            .iter()
            .map(|e| {
                postcard::from_bytes(e).map_err(|err| {
                    StateError::invalid(format!(
                        "operator state {name:?} holds an element that does not decode as {}: {err}",
                        std::any::type_name::<T>()
                    ))
                })
            })
            .collect()
    }

    /// Appends an element, encoded with postcard.
    pub fn add_typed<T: Serialize>(&mut self, name: &str, element: &T) -> Result<()> {
        let bytes = encode(name, element)?;
        self.add(name, bytes)
    }

    /// Replaces all elements with `elements`, encoded with postcard.
    pub fn update_typed<T: Serialize>(&mut self, name: &str, elements: &[T]) -> Result<()> {
        let encoded = elements
            .iter()
            .map(|e| encode(name, e))
            .collect::<Result<Vec<_>>>()?;
        self.update(name, encoded)
    }

    /// Writes the store to one checksummed stream of checkpoint `id`. Returns
    /// `None` when no state is registered. A registered state without
    /// elements is still written, so every subtask of an operator with state
    /// has a handle and same-parallelism restores line up.
    pub fn snapshot(
        &self,
        id: CheckpointId,
        storage: &dyn CheckpointStorage,
    ) -> Result<Option<OperatorStateHandle>> {
        if self.states.is_empty() {
            return Ok(None);
        }
        let mut buf = Vec::new();
        buf.extend_from_slice(OPERATOR_STATE_MAGIC);
        buf.extend_from_slice(&OPERATOR_STATE_VERSION.to_le_bytes());
        put_varint(&mut buf, self.states.len() as u64);
        let mut infos = Vec::with_capacity(self.states.len());
        for (name, state) in &self.states {
            put_bytes(&mut buf, name.as_bytes());
            buf.push(match state.mode {
                OperatorStateMode::Split => 0,
                OperatorStateMode::Union => 1,
            });
            put_varint(&mut buf, state.elements.len() as u64);
            for e in &state.elements {
                put_bytes(&mut buf, e);
            }
            infos.push(OperatorStateInfo {
                name: name.clone(),
                mode: state.mode,
                elements: state.elements.len() as u64,
            });
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let mut out = storage.create_output(id, StateScope::Exclusive, &self.stream_name)?;
        out.write_all(&buf)
            .map_err(|e| output_error(e, &self.stream_name))?;
        let stream = out.close()?;
        tracing::debug!(
            checkpoint_id = id.get(),
            bytes = stream.size,
            "operator state snapshot written"
        );
        Ok(Some(OperatorStateHandle {
            stream,
            states: infos,
        }))
    }

    /// Restores the store of subtask `new_index` of `new_parallelism` from
    /// the handles of all old subtasks, in old subtask order (one per old
    /// subtask that had state). When there are as many handles as new
    /// subtasks the parallelism is taken as unchanged and split states are
    /// not redistributed.
    pub fn restore(
        handles: &[OperatorStateHandle],
        storage: &dyn CheckpointStorage,
        new_parallelism: u32,
        new_index: u32,
    ) -> Result<Self> {
        if new_index >= new_parallelism {
            return Err(StateError::invalid(format!(
                "subtask index {new_index} is out of range for parallelism {new_parallelism}"
            )));
        }
        let same_parallelism = handles.len() == new_parallelism as usize;
        let mut pooled: BTreeMap<String, ListState> = BTreeMap::new();
        for (old_index, handle) in handles.iter().enumerate() {
            let states = decode(handle, storage)?;
            for (name, state) in states {
                let keep = match state.mode {
                    OperatorStateMode::Union => true,
                    OperatorStateMode::Split => {
                        !same_parallelism || old_index == new_index as usize
                    }
                };
                let entry = pooled.entry(name).or_insert_with(|| ListState {
                    mode: state.mode,
                    elements: Vec::new(),
                });
                if entry.mode != state.mode {
                    return Err(StateError::corrupted(
                        handle.stream.describe(),
                        "operator state has different modes in different subtasks",
                    ));
                }
                if keep {
                    entry.elements.extend(state.elements);
                }
            }
        }
        if !same_parallelism {
            for state in pooled.values_mut() {
                if state.mode == OperatorStateMode::Split {
                    let (start, len) = share(state.elements.len(), new_parallelism, new_index);
                    state.elements.truncate(start + len);
                    state.elements.drain(..start);
                }
            }
        }
        let mut store = OperatorStateStore::new();
        store.states = pooled;
        Ok(store)
    }
}

/// The contiguous share (start, length) of `total` elements that subtask
/// `index` of `parallelism` gets.
fn share(total: usize, parallelism: u32, index: u32) -> (usize, usize) {
    let (p, i) = (parallelism as usize, index as usize);
    let base = total / p;
    let remainder = total % p;
    (
        i * base + i.min(remainder),
        base + usize::from(i < remainder),
    )
}

fn encode<T: Serialize>(name: &str, element: &T) -> Result<Bytes> {
    postcard::to_stdvec(element).map(Bytes::from).map_err(|e| {
        StateError::invalid(format!(
            "element for operator state {name:?} cannot be encoded: {e}"
        ))
    })
}

/// Reads and decodes one subtask's operator-state stream.
fn decode(
    handle: &OperatorStateHandle,
    storage: &dyn CheckpointStorage,
) -> Result<Vec<(String, ListState)>> {
    let bytes = read_verified(storage, &handle.stream)?;
    let what = handle.stream.describe();
    let corrupted =
        |detail: &str| StateError::corrupted(&what, format!("operator state: {detail}"));
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(StateError::incompatible(
            &what,
            "not a cairn operator-state stream",
        ));
    };
    if magic != OPERATOR_STATE_MAGIC {
        return Err(StateError::incompatible(
            &what,
            "not a cairn operator-state stream (wrong magic bytes)",
        ));
    }
    let Some((version, _)) = rest.split_first_chunk::<2>() else {
        return Err(corrupted("truncated header"));
    };
    let version = u16::from_le_bytes(*version);
    if version != OPERATOR_STATE_VERSION {
        return Err(StateError::incompatible(
            &what,
            format!(
                "operator state version {version}; this build reads version {OPERATOR_STATE_VERSION}"
            ),
        ));
    }
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(corrupted("truncated"));
    };
    let computed = crc32fast::hash(body);
    if u32::from_le_bytes(*crc) != computed {
        return Err(corrupted("checksum mismatch"));
    }
    let mut input = body.get(10..).unwrap_or_default();
    let count = take_varint(&mut input).ok_or_else(|| corrupted("bad state count"))?;
    if count > input.len() as u64 {
        return Err(corrupted("bad state count"));
    }
    let mut states = Vec::new();
    for _ in 0..count {
        let name = take_bytes(&mut input)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| corrupted("bad state name"))?;
        let (&mode, rest) = input.split_first().ok_or_else(|| corrupted("truncated"))?;
        input = rest;
        let mode = match mode {
            0 => OperatorStateMode::Split,
            1 => OperatorStateMode::Union,
            _ => return Err(corrupted(&format!("unknown mode {mode} of state {name:?}"))),
        };
        let n = take_varint(&mut input).ok_or_else(|| corrupted("bad element count"))?;
        if n > input.len() as u64 {
            return Err(corrupted("bad element count"));
        }
        let mut elements = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let e = take_bytes(&mut input).ok_or_else(|| corrupted("bad element"))?;
            elements.push(bytes.slice_ref(e));
        }
        states.push((name.to_owned(), ListState { mode, elements }));
    }
    if !input.is_empty() {
        return Err(corrupted("trailing bytes"));
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::handle::StreamLocation;
    use crate::memory_storage::MemoryCheckpointStorage;

    const OFFSETS: &str = "offsets";
    const CONFIG: &str = "config";

    /// Snapshots `p` subtasks; subtask i holds `counts[i]` split elements
    /// (numbered globally in subtask order) and one union element `i`.
    fn old_handles(storage: &MemoryCheckpointStorage, counts: &[u32]) -> Vec<OperatorStateHandle> {
        let mut next = 0u32;
        let mut handles = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let mut store = OperatorStateStore::new();
            store.register(OFFSETS, OperatorStateMode::Split).unwrap();
            store.register(CONFIG, OperatorStateMode::Union).unwrap();
            for _ in 0..n {
                store.add_typed(OFFSETS, &next).unwrap();
                next += 1;
            }
            store.add_typed(CONFIG, &(i as u32)).unwrap();
            handles.push(store.snapshot(CheckpointId(1), storage).unwrap().unwrap());
        }
        handles
    }

    fn restored(
        handles: &[OperatorStateHandle],
        storage: &MemoryCheckpointStorage,
        p: u32,
    ) -> Vec<(Vec<u32>, Vec<u32>)> {
        (0..p)
            .map(|i| {
                let s = OperatorStateStore::restore(handles, storage, p, i).unwrap();
                (s.get_typed(OFFSETS).unwrap(), s.get_typed(CONFIG).unwrap())
            })
            .collect()
    }

    #[test]
    fn split_4_to_3_gives_contiguous_even_shares() {
        let storage = MemoryCheckpointStorage::default();
        let handles = old_handles(&storage, &[3, 0, 2, 3]);
        assert_eq!(handles[0].states.len(), 2);
        let got = restored(&handles, &storage, 3);
        let split: Vec<Vec<u32>> = got.iter().map(|g| g.0.clone()).collect();
        assert_eq!(split, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        for (_, union) in &got {
            assert_eq!(union, &vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn split_3_to_5_and_same_parallelism_keeps_own_elements() {
        let storage = MemoryCheckpointStorage::default();
        let handles = old_handles(&storage, &[5, 1, 1]);
        let split: Vec<Vec<u32>> = restored(&handles, &storage, 5)
            .into_iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(
            split,
            vec![vec![0, 1], vec![2, 3], vec![4], vec![5], vec![6]]
        );
        // Unchanged parallelism: no rebalancing, each gets its own back.
        let got = restored(&handles, &storage, 3);
        assert_eq!(got[0].0, vec![0, 1, 2, 3, 4]);
        assert_eq!(got[1].0, vec![5]);
        assert_eq!(got[2].0, vec![6]);
        assert_eq!(
            got[2].1,
            vec![0, 1, 2],
            "union is broadcast even at equal parallelism"
        );
    }

    #[test]
    fn registration_modes_and_empty_store() {
        let storage = MemoryCheckpointStorage::default();
        let mut store = OperatorStateStore::new();
        assert!(store.snapshot(CheckpointId(1), &storage).unwrap().is_none());
        store.register("s", OperatorStateMode::Split).unwrap();
        assert!(store.register("s", OperatorStateMode::Union).is_err());
        assert!(store.add("missing", Bytes::new()).is_err());
        store.set_stream_name("op-0-operator").unwrap();
        assert!(store.set_stream_name("../x").is_err());
        let h = store.snapshot(CheckpointId(1), &storage).unwrap().unwrap();
        let back = OperatorStateStore::restore(&[h], &storage, 1, 0).unwrap();
        assert_eq!(
            back.states(),
            vec![("s".to_string(), OperatorStateMode::Split)]
        );
        assert!(OperatorStateStore::restore(&[], &storage, 1, 1).is_err());
    }

    #[test]
    fn corrupt_stream_is_a_clear_error() {
        let storage = MemoryCheckpointStorage::default();
        let handle = old_handles(&storage, &[2]).remove(0);
        let StreamLocation::Inline(bytes) = &handle.stream.location else {
            panic!("memory storage streams are inline");
        };
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x10;
            // With a matching handle (as if the metadata were rewritten), the
            // stream's own checksum catches it.
            let h = OperatorStateHandle {
                stream: crate::handle::StreamHandle {
                    size: b.len() as u64,
                    crc32: crc32fast::hash(&b),
                    location: StreamLocation::Inline(b.into()),
                },
                states: handle.states.clone(),
            };
            let err = OperatorStateStore::restore(&[h], &storage, 1, 0).unwrap_err();
            assert!(err.to_string().contains("inline state"), "{err}");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Corrupted | ErrorKind::IncompatibleFormat
                ),
                "{err}"
            );
        }
        let mut h = handle.clone();
        h.stream.crc32 ^= 1;
        let err = OperatorStateStore::restore(&[h], &storage, 1, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
    }
}
