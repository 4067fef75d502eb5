//! The shared-state registry: which retained checkpoints use each shared file.
//!
//! Incremental checkpoints reference immutable files in the job's `shared/`
//! location, and a file uploaded by one checkpoint is usually referenced by
//! the next ones too. The registry, keyed by the file's physical path (the
//! [`StreamLocation::File`] path of an [`IncrementalHandle`]'s shared files),
//! records which retained checkpoints reference each file; a file may be
//! deleted exactly when the last of them is unregistered (subsumed or
//! discarded). This is Flink's `SharedStateRegistry`.
//!
//! The registry lives in memory only. It is rebuilt from the retained
//! checkpoints' metadata on every restore ([`SharedStateRegistry::rebuild`]),
//! so it can never disagree with what is on disk for long.
//!
//! Only completed checkpoints are registered. A shared file first uploaded by
//! a checkpoint that is then aborted is never registered, so the abort path
//! ([`crate::CompletedCheckpointStore::abort`]) deletes it.
//!
//! [`IncrementalHandle`]: crate::metadata::IncrementalHandle

use std::collections::{BTreeMap, HashMap};

use crate::checkpoint_id::CheckpointId;
use crate::handle::{StreamHandle, StreamLocation};
use crate::metadata::{CheckpointMetadata, KeyedStateHandle};

/// One shared file and the retained checkpoints that reference it.
#[derive(Debug, Clone)]
struct SharedEntry {
    handle: StreamHandle,
    /// Retained checkpoints referencing the file; small, so a sorted vec.
    checkpoints: Vec<CheckpointId>,
}

/// Tracks which retained checkpoints reference each shared file, by physical path.
#[derive(Debug, Clone, Default)]
pub struct SharedStateRegistry {
    entries: HashMap<String, SharedEntry>,
    /// The shared paths each registered checkpoint references.
    by_checkpoint: BTreeMap<CheckpointId, Vec<String>>,
}

/// The shared file streams a checkpoint's metadata references, with their paths.
fn shared_files(metadata: &CheckpointMetadata) -> impl Iterator<Item = (&str, &StreamHandle)> {
    metadata
        .operators
        .iter()
        .flat_map(|op| op.subtasks.iter())
        .flat_map(|st| st.keyed.iter())
        .flat_map(|handle| match handle {
            KeyedStateHandle::Incremental(h) => h.shared.as_slice(),
            KeyedStateHandle::KeyGroups(_) => &[],
        })
        .filter_map(|file| match &file.handle.location {
            StreamLocation::File(path) => Some((path.as_str(), &file.handle)),
            // Inline bytes live in the metadata itself: nothing to delete.
            StreamLocation::Inline(_) => None,
        })
}

impl SharedStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the shared files of `retained`, the checkpoints that
    /// are kept after a restore. Called on every restore: the registry is never
    /// persisted.
    pub fn rebuild(retained: &[CheckpointMetadata]) -> Self {
        let mut registry = Self::new();
        for metadata in retained {
            registry.register_checkpoint(metadata);
        }
        registry
    }

    /// Records that the completed checkpoint `metadata` references each of its
    /// shared files. Registering the same checkpoint twice has no further effect.
    pub fn register_checkpoint(&mut self, metadata: &CheckpointMetadata) {
        let id = metadata.checkpoint_id;
        if self.by_checkpoint.contains_key(&id) {
            return;
        }
        let mut paths = Vec::new();
        for (path, handle) in shared_files(metadata) {
            let entry = self
                .entries
                .entry(path.to_owned())
                .or_insert_with(|| SharedEntry {
                    handle: handle.clone(),
                    checkpoints: Vec::new(),
                });
            // A checkpoint may list one file twice (two handles); count it once.
            if let Err(pos) = entry.checkpoints.binary_search(&id) {
                entry.checkpoints.insert(pos, id);
                paths.push(path.to_owned());
            }
        }
        tracing::debug!(
            checkpoint_id = id.get(),
            shared_files = paths.len(),
            "registered checkpoint's shared state"
        );
        self.by_checkpoint.insert(id, paths);
    }

    /// Forgets checkpoint `id` (subsumed or discarded) and returns the shared
    /// files no registered checkpoint references any more: the caller deletes
    /// them. Unregistering an unknown checkpoint returns nothing.
    pub fn unregister_checkpoint(&mut self, id: CheckpointId) -> Vec<StreamHandle> {
        let Some(paths) = self.by_checkpoint.remove(&id) else {
            return Vec::new();
        };
        let mut unreferenced = Vec::new();
        for path in paths {
            let Some(entry) = self.entries.get_mut(&path) else {
                continue;
            };
            if let Ok(pos) = entry.checkpoints.binary_search(&id) {
                entry.checkpoints.remove(pos);
            }
            if entry.checkpoints.is_empty()
                && let Some(entry) = self.entries.remove(&path)
            {
                unreferenced.push(entry.handle);
            }
        }
        tracing::debug!(
            checkpoint_id = id.get(),
            unreferenced = unreferenced.len(),
            "unregistered checkpoint's shared state"
        );
        unreferenced
    }

    /// Whether some registered checkpoint references the shared file at `path`
    /// (relative to the job directory, as in [`StreamLocation::File`]).
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// The registered checkpoints that reference the shared file at `path`,
    /// ascending; empty if none.
    pub fn references(&self, path: &str) -> &[CheckpointId] {
        self.entries
            .get(path)
            .map_or(&[], |entry| entry.checkpoints.as_slice())
    }

    /// Whether checkpoint `id` is registered.
    pub fn is_registered(&self, id: CheckpointId) -> bool {
        self.by_checkpoint.contains_key(&id)
    }

    /// The number of shared files referenced by some registered checkpoint.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no shared file is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, OperatorId};
    use crate::key_group::{KeyGroup, KeyGroupRange};
    use crate::metadata::{
        IncrementalHandle, NamedStream, OperatorSnapshot, SharedFile, SnapshotKind, SubtaskSnapshot,
    };

    fn file(path: &str) -> StreamHandle {
        StreamHandle {
            location: StreamLocation::File(path.into()),
            size: 1,
            crc32: 0,
        }
    }

    /// A checkpoint `id` whose incremental handle references `shared` files
    /// (by name, uploaded by `uploaded_by`).
    fn checkpoint(id: u64, shared: &[(&str, u64)]) -> CheckpointMetadata {
        let handle = IncrementalHandle {
            backend: "rocks".into(),
            backend_id: "b-0".into(),
            range: KeyGroupRange::new(KeyGroup(0), KeyGroup(127)),
            checkpoint_id: CheckpointId(id),
            shared: shared
                .iter()
                .map(|(name, by)| SharedFile {
                    name: (*name).into(),
                    handle: file(&format!("shared/{name}")),
                    uploaded_by: CheckpointId(*by),
                })
                .collect(),
            private: vec![NamedStream {
                name: "MANIFEST".into(),
                handle: file(&format!("chk-{id}/MANIFEST")),
            }],
            meta: file(&format!("chk-{id}/meta")),
        };
        CheckpointMetadata {
            checkpoint_id: CheckpointId(id),
            job_id: JobId::new("job").unwrap(),
            timestamp_millis: 0,
            kind: SnapshotKind::Incremental,
            operators: vec![OperatorSnapshot {
                operator_id: OperatorId("op".into()),
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskSnapshot {
                    subtask: 0,
                    keyed: vec![KeyedStateHandle::Incremental(handle)],
                    operator: None,
                }],
            }],
        }
    }

    fn paths(handles: &[StreamHandle]) -> Vec<String> {
        let mut v: Vec<String> = handles.iter().map(StreamHandle::describe).collect();
        v.sort();
        v
    }

    #[test]
    fn file_is_released_when_its_last_checkpoint_goes() {
        let mut reg = SharedStateRegistry::new();
        reg.register_checkpoint(&checkpoint(1, &[("a.sst", 1), ("b.sst", 1)]));
        reg.register_checkpoint(&checkpoint(2, &[("b.sst", 1), ("c.sst", 2)]));
        assert_eq!(reg.len(), 3);
        assert_eq!(
            reg.references("shared/b.sst"),
            &[CheckpointId(1), CheckpointId(2)]
        );

        assert_eq!(
            paths(&reg.unregister_checkpoint(CheckpointId(1))),
            ["shared/a.sst"]
        );
        assert!(!reg.contains("shared/a.sst"));
        assert!(reg.contains("shared/b.sst"));

        assert_eq!(
            paths(&reg.unregister_checkpoint(CheckpointId(2))),
            ["shared/b.sst", "shared/c.sst"]
        );
        assert!(reg.is_empty());
        assert!(reg.unregister_checkpoint(CheckpointId(2)).is_empty());
    }

    #[test]
    fn registering_twice_and_duplicate_files_count_once() {
        let mut reg = SharedStateRegistry::new();
        let c = checkpoint(4, &[("x.sst", 4), ("x.sst", 4)]);
        reg.register_checkpoint(&c);
        reg.register_checkpoint(&c);
        assert_eq!(reg.references("shared/x.sst"), &[CheckpointId(4)]);
        assert_eq!(
            paths(&reg.unregister_checkpoint(CheckpointId(4))),
            ["shared/x.sst"]
        );
        assert!(!reg.is_registered(CheckpointId(4)));
    }

    #[test]
    fn rebuild_matches_incremental_registration() {
        let retained = [
            checkpoint(5, &[("a.sst", 3), ("b.sst", 5)]),
            checkpoint(6, &[("b.sst", 5), ("c.sst", 6)]),
        ];
        let mut reg = SharedStateRegistry::rebuild(&retained);
        assert!(reg.is_registered(CheckpointId(5)) && reg.is_registered(CheckpointId(6)));
        assert_eq!(reg.len(), 3);
        assert_eq!(
            paths(&reg.unregister_checkpoint(CheckpointId(5))),
            ["shared/a.sst"]
        );
    }

    #[test]
    fn inline_and_full_handles_register_nothing() {
        let mut c = checkpoint(1, &[("a.sst", 1)]);
        if let KeyedStateHandle::Incremental(h) = &mut c.operators[0].subtasks[0].keyed[0] {
            h.shared[0].handle.location = StreamLocation::Inline(vec![1].into());
        }
        let mut reg = SharedStateRegistry::new();
        reg.register_checkpoint(&c);
        assert!(reg.is_empty());
        assert!(reg.is_registered(CheckpointId(1)));
    }
}
