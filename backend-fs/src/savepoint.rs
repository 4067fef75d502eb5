//! Savepoint directories: where a savepoint is written, and opening any
//! path a user gives as a restore source (`--from`).
//!
//! A savepoint is `<dir>/savepoint-<job>-<n>-<6 hex>/`, shaped like a job
//! directory that holds one checkpoint: `chk-<n>/_metadata`, its streams,
//! and for a native savepoint `shared/` with every file it needs. Every
//! path in its metadata is relative to that directory, so the directory
//! can be moved or copied and still restores. The job that took it never
//! writes into it again, never rotates or deletes it: it belongs to the user.

use std::path::Path;

use state_core::{CheckpointId, CheckpointStorage, JobId, METADATA_FILE_NAME, Result, StateError};

use crate::storage::FsCheckpointStorage;

/// How the name of every savepoint directory starts.
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// The most characters of the job id a savepoint directory's name keeps.
const JOB_PART_CHARS: usize = 80;

/// A new savepoint directory name for savepoint `id` of `job`, taken at
/// `now_millis`: `savepoint-<job>-<n>-<6 hex>` (Flink:
/// `savepoint-<job>-<random>`), the hex part from the time and the process
/// id, so two savepoints of one id taken by two runs do not collide.
pub fn savepoint_dir_name(job: &JobId, id: CheckpointId, now_millis: u64) -> String {
    let mut seed = now_millis.to_le_bytes().to_vec();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&id.get().to_le_bytes());
    let random = crc32fast::hash(&seed) & 0x00ff_ffff;
    let job: String = job.as_str().chars().take(JOB_PART_CHARS).collect();
    format!("{SAVEPOINT_DIR_PREFIX}{job}-{}-{random:06x}", id.get())
}

/// Whether a directory name is a savepoint's.
pub fn is_savepoint_dir_name(name: &str) -> bool {
    name.starts_with(SAVEPOINT_DIR_PREFIX)
}

impl FsCheckpointStorage {
    /// Creates a new savepoint directory for savepoint `id` of `job`, taken
    /// at `now_millis`, under `dir` (created if needed) and opens it as the
    /// savepoint's storage.
    pub fn create_savepoint(
        dir: &Path,
        job: &JobId,
        id: CheckpointId,
        now_millis: u64,
    ) -> Result<Self> {
        let name = JobId::new(savepoint_dir_name(job, id, now_millis))?;
        let path = dir.join(name.as_str());
        if path.exists() {
            return Err(StateError::invalid(format!(
                "savepoint directory {} exists already",
                path.display()
            )));
        }
        FsCheckpointStorage::open(dir, name)
    }

    /// Whether this storage is a savepoint directory (by its name).
    pub fn is_savepoint(&self) -> bool {
        self.job_dir()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_savepoint_dir_name)
    }

    /// Opens the checkpoint or savepoint a user names to restore from: a
    /// `chk-<n>` directory, its `_metadata` file, or a directory holding
    /// exactly one checkpoint (a savepoint directory, or a job directory
    /// with one checkpoint). A directory with several checkpoints is refused,
    /// naming the newest, since the choice is the user's.
    pub fn for_restore_path(path: impl AsRef<Path>) -> Result<(Self, CheckpointId)> {
        let path = path.as_ref();
        let (storage, id) = Self::open_path(path)?;
        if let Some(id) = id {
            return Ok((storage, id));
        }
        let ids = storage.list_checkpoints()?;
        match ids.as_slice() {
            [id] => Ok((storage, *id)),
            [] => Err(StateError::invalid(format!(
                "{} holds no checkpoint: no chk-<n>/{METADATA_FILE_NAME}",
                path.display()
            ))),
            [.., newest] => Err(StateError::invalid(format!(
                "{} is a job directory with {} checkpoints; name the one to restore, \
                 for example {}",
                path.display(),
                ids.len(),
                storage.checkpoint_dir(*newest).display()
            ))),
        }
    }

    /// Removes an empty savepoint directory `path` (its empty `shared/`,
    /// `taskowned/` and nothing else), as after a savepoint that failed;
    /// anything in it that is not empty stays.
    pub fn remove_empty_savepoint(path: &Path) {
        for sub in [crate::storage::SHARED_DIR, crate::storage::TASK_OWNED_DIR] {
            let _ = std::fs::remove_dir(path.join(sub));
        }
        let _ = std::fs::remove_dir(path);
    }
}

#[cfg(test)]
mod tests {
    use state_core::{CheckpointMetadata, SnapshotKind};

    use super::*;

    fn metadata(id: u64) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: CheckpointId(id),
            job_id: JobId::new("job").unwrap(),
            timestamp_millis: 1,
            kind: SnapshotKind::Full,
            operators: Vec::new(),
        }
    }

    #[test]
    fn a_savepoint_directory_opens_as_its_one_checkpoint_wherever_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobId::new("word-count").unwrap();
        let s =
            FsCheckpointStorage::create_savepoint(dir.path(), &job, CheckpointId(7), 1).unwrap();
        assert!(s.is_savepoint());
        let name = s
            .job_dir()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(name.starts_with("savepoint-word-count-7-"), "{name}");
        s.write_metadata(&metadata(7)).unwrap();
        let moved = dir.path().join("elsewhere");
        std::fs::rename(s.job_dir(), &moved).unwrap();
        let (opened, id) = FsCheckpointStorage::for_restore_path(&moved).unwrap();
        assert_eq!(id, CheckpointId(7));
        assert_eq!(opened.read_metadata(id).unwrap(), metadata(7));
        let (_, id) = FsCheckpointStorage::for_restore_path(moved.join("chk-7")).unwrap();
        assert_eq!(id, CheckpointId(7));
    }

    #[test]
    fn several_or_no_checkpoints_are_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsCheckpointStorage::open(dir.path(), JobId::new("job").unwrap()).unwrap();
        let err = FsCheckpointStorage::for_restore_path(s.job_dir()).unwrap_err();
        assert!(err.to_string().contains("holds no checkpoint"), "{err}");
        s.write_metadata(&metadata(3)).unwrap();
        s.write_metadata(&metadata(4)).unwrap();
        let err = FsCheckpointStorage::for_restore_path(s.job_dir()).unwrap_err();
        assert!(err.to_string().contains("2 checkpoints"), "{err}");
        assert!(err.to_string().contains("chk-4"), "{err}");
        let long = JobId::new("j".repeat(128)).unwrap();
        let name = savepoint_dir_name(&long, CheckpointId(u64::MAX), u64::MAX);
        assert!(JobId::new(&name).is_ok(), "{name}");
    }
}
