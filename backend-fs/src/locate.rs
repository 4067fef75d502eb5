//! Opening storage from a path a user typed: a job directory, a `chk-<n>`
//! directory or its `_metadata` file (`cairn run --from`, `cairn checkpoints`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_core::backend_support::Fs;
use state_core::backend_support::METADATA_MAGIC;
use state_core::{CheckpointId, METADATA_FILE_NAME, Result, StateError};

use crate::mmap::MappedFs;
use crate::storage::{DEFAULT_WRITE_BUFFER_SIZE, FsCheckpointStorage, SHARED_DIR, TASK_OWNED_DIR};

/// Whether a directory holding entries `names` looks like a job checkpoint
/// directory: it has a `chk-<n>`, `shared` or `taskowned` entry.
pub fn looks_like_job_dir(names: &[String]) -> bool {
    names
        .iter()
        .any(|n| n == SHARED_DIR || n == TASK_OWNED_DIR || CheckpointId::from_dir_name(n).is_some())
}

/// `path`, or `.` for the empty parent of a relative one-component path.
fn non_empty(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_path_buf()
    }
}

fn stat_dir(fs: &dyn Fs, path: &Path) -> Result<bool> {
    match fs.stat(path).map_err(|e| StateError::io(path, e))? {
        Some(info) => Ok(info.is_dir),
        None => Err(StateError::invalid(format!(
            "{} does not exist",
            path.display()
        ))),
    }
}

impl FsCheckpointStorage {
    /// Opens the existing job directory `job_dir` (`<base>/<job-id>`, holding
    /// `chk-<n>/`, `shared/`, `taskowned/`) with the default file system.
    /// Creates nothing; fails with a message naming the path if it is not a
    /// directory or holds none of those entries.
    pub fn for_job_dir(job_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::for_job_dir_with_fs(job_dir, Arc::new(MappedFs))
    }

    /// [`FsCheckpointStorage::for_job_dir`] with a given file system.
    pub fn for_job_dir_with_fs(job_dir: impl Into<PathBuf>, fs: Arc<dyn Fs>) -> Result<Self> {
        let job_dir = job_dir.into();
        if !stat_dir(fs.as_ref(), &job_dir)? {
            return Err(StateError::invalid(format!(
                "{} is not a cairn job checkpoint directory: it is a file",
                job_dir.display()
            )));
        }
        let names = fs
            .read_dir(&job_dir)
            .map_err(|e| StateError::io(&job_dir, e))?;
        let looks_like_job = names.iter().any(|n| {
            n == SHARED_DIR || n == TASK_OWNED_DIR || CheckpointId::from_dir_name(n).is_some()
        });
        if !looks_like_job {
            return Err(StateError::invalid(format!(
                "{} is not a cairn job checkpoint directory: no chk-<n>, {SHARED_DIR}/ or {TASK_OWNED_DIR}/ in it",
                job_dir.display()
            )));
        }
        Ok(Self::at_job_dir(job_dir, fs, DEFAULT_WRITE_BUFFER_SIZE))
    }

    /// Opens the checkpoint at `path`, a `chk-<n>` directory or its
    /// `_metadata` file, with the default file system. Returns the storage of
    /// its job directory (the parent of `chk-<n>`) and the checkpoint's id.
    ///
    /// Checks that the metadata exists and starts with cairn's magic bytes;
    /// its content is checked when it is read. Errors name the path: "… is not
    /// a checkpoint directory: no _metadata", "… is not a cairn checkpoint
    /// (wrong magic bytes)".
    pub fn for_checkpoint_path(path: impl AsRef<Path>) -> Result<(Self, CheckpointId)> {
        Self::for_checkpoint_path_with_fs(path, Arc::new(MappedFs))
    }

    /// [`FsCheckpointStorage::for_checkpoint_path`] with a given file system.
    pub fn for_checkpoint_path_with_fs(
        path: impl AsRef<Path>,
        fs: Arc<dyn Fs>,
    ) -> Result<(Self, CheckpointId)> {
        let path = path.as_ref();
        let chk_dir = if stat_dir(fs.as_ref(), path)? {
            path.to_path_buf()
        } else if path.file_name().is_some_and(|n| n == METADATA_FILE_NAME) {
            non_empty(path.parent().unwrap_or(Path::new(".")))
        } else {
            return Err(StateError::invalid(format!(
                "{} is not a checkpoint: expected a chk-<n> directory or its {METADATA_FILE_NAME} file",
                path.display()
            )));
        };
        let name = chk_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(id) = CheckpointId::from_dir_name(&name) else {
            return Err(StateError::invalid(format!(
                "{} is not a checkpoint directory: its name is not chk-<n>",
                chk_dir.display()
            )));
        };
        let metadata = chk_dir.join(METADATA_FILE_NAME);
        match fs
            .stat(&metadata)
            .map_err(|e| StateError::io(&metadata, e))?
        {
            Some(info) if !info.is_dir => {}
            _ => {
                return Err(StateError::invalid(format!(
                    "{} is not a checkpoint directory: no {METADATA_FILE_NAME}",
                    chk_dir.display()
                )));
            }
        }
        // A link, FIFO or socket as _metadata is never opened.
        crate::confine::readable_file(&chk_dir, &metadata).map_err(|e| match e {
            StateError::Corrupted { detail, .. } => {
                StateError::corrupted(metadata.display().to_string(), detail)
            }
            other => other,
        })?;
        let bytes = fs
            .read(&metadata)
            .map_err(|e| StateError::io(&metadata, e))?;
        if !bytes.starts_with(METADATA_MAGIC) {
            return Err(StateError::incompatible(
                metadata.display().to_string(),
                "not a cairn checkpoint (wrong magic bytes)",
            ));
        }
        let job_dir = non_empty(chk_dir.parent().unwrap_or(Path::new(".")));
        Ok((Self::at_job_dir(job_dir, fs, DEFAULT_WRITE_BUFFER_SIZE), id))
    }

    /// Opens whatever `path` names: a checkpoint (`chk-<n>` directory or
    /// `_metadata` file; the id is returned) or a job directory (`None`).
    pub fn open_path(path: impl AsRef<Path>) -> Result<(Self, Option<CheckpointId>)> {
        let path = path.as_ref();
        let names_checkpoint = path.file_name().is_some_and(|n| {
            n == METADATA_FILE_NAME || CheckpointId::from_dir_name(&n.to_string_lossy()).is_some()
        });
        if names_checkpoint {
            let (storage, id) = Self::for_checkpoint_path(path)?;
            Ok((storage, Some(id)))
        } else {
            Ok((Self::for_job_dir(path)?, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use state_core::{CheckpointMetadata, CheckpointStorage, ErrorKind, JobId, SnapshotKind};

    use super::*;

    fn job_with_checkpoint() -> (tempfile::TempDir, FsCheckpointStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsCheckpointStorage::open(dir.path(), JobId::new("job").unwrap()).unwrap();
        s.write_metadata(&CheckpointMetadata {
            checkpoint_id: CheckpointId(5),
            job_id: JobId::new("job").unwrap(),
            timestamp_millis: 1,
            kind: SnapshotKind::Full,
            operators: Vec::new(),
        })
        .unwrap();
        (dir, s)
    }

    #[test]
    fn opens_checkpoint_dir_metadata_file_and_job_dir() {
        let (_d, s) = job_with_checkpoint();
        let chk = s.checkpoint_dir(CheckpointId(5));
        for path in [chk.clone(), chk.join("_metadata")] {
            let (opened, id) = FsCheckpointStorage::for_checkpoint_path(&path).unwrap();
            assert_eq!(id, CheckpointId(5));
            assert_eq!(opened.job_dir(), s.job_dir());
            assert_eq!(opened.list_checkpoints().unwrap(), [CheckpointId(5)]);
            assert_eq!(
                FsCheckpointStorage::open_path(&path).unwrap().1,
                Some(CheckpointId(5))
            );
        }
        let (opened, id) = FsCheckpointStorage::open_path(s.job_dir()).unwrap();
        assert_eq!(id, None);
        assert_eq!(opened.list_checkpoints().unwrap(), [CheckpointId(5)]);
    }

    #[test]
    fn bad_paths_give_clear_errors() {
        let (dir, s) = job_with_checkpoint();
        let err = FsCheckpointStorage::for_checkpoint_path(dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let empty_chk = s.job_dir().join("chk-9");
        std::fs::create_dir(&empty_chk).unwrap();
        let err = FsCheckpointStorage::for_checkpoint_path(&empty_chk).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a checkpoint directory: no _metadata"),
            "{err}"
        );
        assert!(err.to_string().contains("chk-9"), "{err}");

        let foreign = s.job_dir().join("chk-10");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("_metadata"), b"PK\x03\x04 a zip file").unwrap();
        let err = FsCheckpointStorage::for_checkpoint_path(&foreign).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IncompatibleFormat);
        assert!(err.to_string().contains("wrong magic bytes"), "{err}");

        let err = FsCheckpointStorage::for_checkpoint_path(s.job_dir()).unwrap_err();
        assert!(err.to_string().contains("not chk-<n>"), "{err}");

        let err = FsCheckpointStorage::for_job_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a cairn job checkpoint directory"),
            "{err}"
        );
    }
}
