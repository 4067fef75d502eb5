//! Opening the paths users type: job directories (with a helpful error for a
//! base directory that holds job directories) and the `chk-<n>` directories
//! in them, complete or not.

use std::path::Path;

use anyhow::bail;
use backend_fs::FsCheckpointStorage;
use state_core::METADATA_FILE_NAME;
use state_core::backend_support::Fs;
use state_core::{CheckpointId, CheckpointMetadata, CheckpointStorage, ErrorKind, StateError};

use crate::human;

/// Opens the job directory `path` (`<checkpoint-dir>/<job-id>`). When `path`
/// is not one, the error says what it is instead: missing, a file, a
/// checkpoint directory, or a base directory holding job directories (named).
pub(crate) fn open(path: &Path) -> anyhow::Result<FsCheckpointStorage> {
    let err = match FsCheckpointStorage::for_job_dir(path) {
        Ok(storage) => return Ok(storage),
        Err(err) => err,
    };
    if !path.is_dir() {
        return Err(human::anyhow(err));
    }
    if path.join(METADATA_FILE_NAME).exists() {
        bail!(
            "{} is a checkpoint directory, not a job directory: pass its parent, or use `cairn checkpoints inspect {}`",
            path.display(),
            path.display()
        );
    }
    let mut jobs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let sub = entry.path();
            if !sub.is_dir() {
                continue;
            }
            let names: Vec<String> = match std::fs::read_dir(&sub) {
                Ok(e) => e
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => continue,
            };
            if backend_fs::looks_like_job_dir(&names) {
                jobs.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if jobs.is_empty() {
        return Err(human::anyhow(err));
    }
    jobs.sort();
    bail!(
        "{} is not a job directory: it holds job directories: {}; pass one of them",
        path.display(),
        jobs.join(", ")
    )
}

/// What a `chk-<n>` directory holds.
#[derive(Debug)]
pub(crate) enum CheckpointStatus {
    /// `_metadata` is there and decodes.
    Complete(Box<CheckpointMetadata>),
    /// No `_metadata`: in progress or aborted; invisible to restore.
    Incomplete,
    /// `_metadata` is there but cannot be read or decoded.
    Corrupt(StateError),
}

/// One `chk-<n>` directory of a job directory.
#[derive(Debug)]
pub(crate) struct CheckpointEntry {
    /// Its id.
    pub id: CheckpointId,
    /// What it holds.
    pub status: CheckpointStatus,
}

/// Every `chk-<n>` directory of the job directory, ascending by id, with
/// whether its metadata is complete and readable. Unlike
/// [`CheckpointStorage::list_checkpoints`], directories without `_metadata`
/// are included.
pub(crate) fn scan(storage: &FsCheckpointStorage) -> anyhow::Result<Vec<CheckpointEntry>> {
    let fs: &dyn Fs = storage.fs().as_ref();
    let job_dir = storage.job_dir();
    let names = fs
        .read_dir(job_dir)
        .map_err(|e| human::anyhow(StateError::io(job_dir, e)))?;
    let mut entries = Vec::new();
    for name in names {
        let Some(id) = CheckpointId::from_dir_name(&name) else {
            continue;
        };
        let dir = storage.checkpoint_dir(id);
        let is_dir = fs
            .stat(&dir)
            .map_err(|e| human::anyhow(StateError::io(&dir, e)))?
            .is_some_and(|i| i.is_dir);
        if !is_dir {
            continue;
        }
        let meta = storage.metadata_path(id);
        let status = match fs
            .stat(&meta)
            .map_err(|e| human::anyhow(StateError::io(&meta, e)))?
        {
            None => CheckpointStatus::Incomplete,
            Some(info) if info.is_dir => CheckpointStatus::Corrupt(StateError::corrupted(
                format!("{}/{METADATA_FILE_NAME}", id.dir_name()),
                "is a directory, not a file",
            )),
            Some(_) => match storage.read_metadata(id) {
                Ok(m) => CheckpointStatus::Complete(Box::new(m)),
                // Deleted between the stat and the read (a running job's retention).
                Err(e) if e.kind() == ErrorKind::NotFound => CheckpointStatus::Incomplete,
                Err(e) => CheckpointStatus::Corrupt(e),
            },
        };
        entries.push(CheckpointEntry { id, status });
    }
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_dir_names_its_job_dirs() {
        let dir = tempfile::tempdir().unwrap();
        for job in ["job-2", "job-1"] {
            std::fs::create_dir_all(dir.path().join(job).join("shared")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("unrelated")).unwrap();
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("holds job directories: job-1, job-2; pass one of them"),
            "{err}"
        );
        assert!(open(&dir.path().join("job-1")).is_ok());
    }

    #[test]
    fn scan_reports_incomplete_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(job.join("chk-10")).unwrap();
        std::fs::create_dir_all(job.join("chk-2")).unwrap();
        std::fs::write(job.join("chk-2").join("_metadata"), b"CAIRNCKP garbage").unwrap();
        let storage = open(&job).unwrap();
        let entries = scan(&storage).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, CheckpointId(2));
        assert!(matches!(entries[0].status, CheckpointStatus::Corrupt(_)));
        assert!(matches!(entries[1].status, CheckpointStatus::Incomplete));
    }
}
