//! # cairn backend-fs
//!
//! The storage half of Flink's `FsStateBackend`. In Flink, `FsStateBackend`
//! is heap state plus checkpoints on a filesystem; in cairn the heap state
//! is `backend-heap` (`HeapBackend`) and this crate is the other half, the
//! checkpoint storage on a filesystem ([`FsCheckpointStorage`]). It holds no
//! keyed state itself; it keeps the Flink name because that is what the
//! pairing is called, and any backend (heap or RocksDB) checkpoints into it.
//!
//! [`FsCheckpointStorage`] follows Flink's `FileSystemCheckpointStorage`
//! layout: each job's checkpoints live under `<base>/<job-id>/` as
//! `chk-<n>/_metadata` plus state files, with `shared/` for files shared
//! between incremental checkpoints and `taskowned/` for files owned by tasks.
//! Streams are buffered, CRC-32-checked and fsynced on close; the metadata is
//! written atomically and durably last, so a checkpoint exists exactly when
//! its `_metadata` does. Restores read large state files through memory maps
//! ([`MappedFs`]).
//!
//! Files that no completed checkpoint references (torn `chk-<n>`
//! directories, uploads in `shared/` whose checkpoint never completed) are
//! found by [`find_orphans`] and removed by [`sweep_orphans`], which needs
//! the job directory's [`JobLock`]: files of a running checkpoint look
//! orphaned, so sweep before the job starts.
//!
//! With the `object-store` feature, [`object::ObjectCheckpointStorage`]
//! keeps the same layout in S3, GCS, Azure Blob Storage or a `file://`
//! directory, committing without rename: objects first, `_metadata` last
//! with a conditional create.
//!
//! Backends write their snapshots here through the
//! [`state_core::CheckpointStorage`] trait; retention, the shared-state
//! registry and the choice of checkpoint to restore are state-core's
//! ([`state_core::CompletedCheckpointStore`],
//! [`state_core::select_for_restore`]).
//!
//! # Place in the workspace
//! `state-core <- backend-fs <- executor <- cli`. This crate depends only on
//! `state-core`; the executor and the CLI choose it as their checkpoint
//! storage, and the CLI opens user-given paths with
//! [`FsCheckpointStorage::open_path`].
//!
//! # Example
//! ```
//! use std::io::Write;
//! use std::sync::Arc;
//!
//! use backend_fs::FsCheckpointStorage;
//! use state_core::{
//!     CheckpointId, CheckpointMetadata, CheckpointStorage, CompletedCheckpointStore,
//!     ExternalizedCheckpointCleanup, JobId, OperatorSnapshot, SnapshotKind, StateScope,
//!     SubtaskSnapshot, select_for_restore,
//! };
//!
//! # fn main() -> state_core::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| state_core::StateError::io("tempdir", e))?;
//! let job = JobId::new("wordcount")?;
//! let storage = Arc::new(FsCheckpointStorage::open(dir.path(), job.clone())?);
//! let mut store =
//!     CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())?;
//!
//! for n in 1..=3 {
//!     let id = CheckpointId(n);
//!     storage.initialize_checkpoint(id)?;
//!     // A source writes its offsets as operator state.
//!     let mut out = storage.create_output(id, StateScope::Exclusive, "source-0-offsets")?;
//!     out.write_all(format!("offset {}", n * 100).as_bytes())
//!         .map_err(|e| state_core::StateError::io("source-0-offsets", e))?;
//!     let stream = out.close()?;
//!     let operator = state_core::OperatorStateHandle { stream, states: Vec::new() };
//!     store.complete(CheckpointMetadata {
//!         checkpoint_id: id,
//!         job_id: job.clone(),
//!         timestamp_millis: 0,
//!         kind: SnapshotKind::Full,
//!         operators: vec![OperatorSnapshot {
//!             operator_id: state_core::OperatorId("source".into()),
//!             parallelism: 1,
//!             max_parallelism: 128,
//!             subtasks: vec![SubtaskSnapshot { subtask: 0, keyed: Vec::new(), operator: Some(operator) }],
//!         }],
//!     })?;
//! }
//!
//! // Two checkpoints are retained; checkpoint 1 was subsumed and deleted.
//! assert_eq!(storage.list_checkpoints()?, [CheckpointId(2), CheckpointId(3)]);
//! assert!(dir.path().join("wordcount/chk-3/_metadata").exists());
//!
//! // After a restart: the newest intact checkpoint.
//! let selection = select_for_restore(storage.as_ref())?;
//! assert_eq!(selection.checkpoint_id(), CheckpointId(3));
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

mod confine;
mod locate;
mod lock;
#[allow(unsafe_code)]
mod mmap;
#[cfg(feature = "object-store")]
pub mod object;
mod orphans;
mod output;
mod savepoint;
mod storage;

pub use locate::looks_like_job_dir;
pub use lock::{JobLock, LOCK_FILE_NAME, LockOwner, LockState};
pub use mmap::{MAP_THRESHOLD, MappedFs};
pub use orphans::{
    ListedEntry, ListedKind, Orphan, OrphanKind, OrphanReport, OrphanScan, find_orphans,
    sweep_orphans,
};
pub use output::FsOutput;
pub use savepoint::{SAVEPOINT_DIR_PREFIX, is_savepoint_dir_name, savepoint_dir_name};
pub use storage::{
    DEFAULT_WRITE_BUFFER_SIZE, FsCheckpointStorage, FsStorageOptions, MAX_WRITE_BUFFER_SIZE,
    SHARED_DIR, TASK_OWNED_DIR,
};
