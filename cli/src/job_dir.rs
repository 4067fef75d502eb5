//! Opening the paths users type: job directories (with a helpful error for a
//! base directory that holds job directories) and the `chk-<n>` directories
//! in them, complete or not; and the same for job locations in object
//! stores (`s3://bucket/prefix/<job-id>`, with the `object-store` feature),
//! as a [`JobLocation`] the `checkpoints` commands and `cairn run` use
//! whichever it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
#[cfg(feature = "object-store")]
use backend_fs::object::{ObjectCheckpointStorage, ObjectJobLock, ObjectUrl};
use backend_fs::{FsCheckpointStorage, JobLock, LockOwner, LockState, OrphanReport};
use cairn_cli::backend;
use state_core::METADATA_FILE_NAME;
use state_core::backend_support::Fs;
use state_core::{CheckpointId, CheckpointMetadata, CheckpointStorage, ErrorKind, StateError};

use crate::human;

/// A job's checkpoints: a directory, or a location in an object store.
#[derive(Debug, Clone)]
pub(crate) enum JobLocation {
    /// `<checkpoint-dir>/<job-id>` on a filesystem.
    Dir(FsCheckpointStorage),
    /// `<url>/<job-id>` in an object store.
    #[cfg(feature = "object-store")]
    Object(ObjectCheckpointStorage),
}

/// The lock of a [`JobLocation`], held until dropped.
#[derive(Debug)]
pub(crate) enum HeldLock {
    /// The OS lock of a job directory.
    Dir(JobLock),
    /// The lock object of an object-store job location.
    #[cfg(feature = "object-store")]
    Object(ObjectJobLock),
}

#[cfg(feature = "object-store")]
fn parse_url(text: &str) -> anyhow::Result<ObjectUrl> {
    ObjectUrl::parse(text).map_err(human::anyhow)
}

impl JobLocation {
    /// The checkpoint storage of the location.
    pub(crate) fn storage(&self) -> Arc<dyn CheckpointStorage> {
        match self {
            JobLocation::Dir(s) => Arc::new(s.clone()),
            #[cfg(feature = "object-store")]
            JobLocation::Object(s) => Arc::new(s.clone()),
        }
    }

    /// The location for people: a path or a URL.
    pub(crate) fn display(&self) -> String {
        match self {
            JobLocation::Dir(s) => s.job_dir().display().to_string(),
            #[cfg(feature = "object-store")]
            JobLocation::Object(s) => s.job_url().to_string(),
        }
    }

    /// The location as a path-like value (`cairn run`'s summary and job id).
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(self.display())
    }

    /// Where checkpoint `id` is, for people.
    pub(crate) fn checkpoint_display(&self, id: CheckpointId) -> String {
        format!("{}/{}", self.display(), id.dir_name())
    }

    /// Every entry no completed checkpoint references.
    pub(crate) fn find_orphans(&self) -> anyhow::Result<OrphanReport> {
        match self {
            JobLocation::Dir(s) => backend_fs::find_orphans(s),
            #[cfg(feature = "object-store")]
            JobLocation::Object(s) => backend_fs::find_orphans(s),
        }
        .map_err(human::anyhow)
    }

    /// Takes the location's job lock for this process.
    pub(crate) fn lock(&self, started_millis: u64) -> anyhow::Result<HeldLock> {
        let owner = LockOwner::this_process(started_millis);
        match self {
            JobLocation::Dir(s) => JobLock::acquire(s.job_dir(), &owner).map(HeldLock::Dir),
            #[cfg(feature = "object-store")]
            JobLocation::Object(s) => ObjectJobLock::acquire(s, &owner).map(HeldLock::Object),
        }
        .map_err(human::anyhow)
    }

    /// Removes the orphans, holding `lock` (this location's).
    pub(crate) fn sweep(&self, lock: &HeldLock) -> anyhow::Result<OrphanReport> {
        match (self, lock) {
            (JobLocation::Dir(s), HeldLock::Dir(l)) => backend_fs::sweep_orphans(s, l),
            #[cfg(feature = "object-store")]
            (JobLocation::Object(s), HeldLock::Object(l)) => backend_fs::sweep_orphans(s, l),
            #[cfg(feature = "object-store")]
            _ => bail!("sweeping {} needs its own lock", self.display()),
        }
        .map_err(human::anyhow)
    }

    /// Who runs a job in the location now (the owner its lock names), if anyone.
    pub(crate) fn running_job(&self) -> anyhow::Result<Option<String>> {
        let state = match self {
            JobLocation::Dir(s) => JobLock::probe(s.job_dir()),
            #[cfg(feature = "object-store")]
            JobLocation::Object(s) => ObjectJobLock::probe(s),
        }
        .map_err(human::anyhow)?;
        Ok(match state {
            LockState::Free => None,
            LockState::Held(owner) => {
                Some(owner.map_or_else(|| "another process".to_owned(), |o| o.to_string()))
            }
        })
    }
}

/// The job location `path` names for `cairn run` (`--checkpoint-dir` joined
/// with the job id): a directory (created when the storage opens) or a URL.
/// Creates nothing and makes no request.
pub(crate) fn location_for_run(path: &Path) -> anyhow::Result<JobLocation> {
    if let Some(url) = backend::object_url(path) {
        #[cfg(feature = "object-store")]
        return Ok(JobLocation::Object(
            ObjectCheckpointStorage::at_job_url(&parse_url(url)?).map_err(human::anyhow)?,
        ));
        #[cfg(not(feature = "object-store"))]
        bail!("{}", backend::no_object_store(url));
    }
    Ok(JobLocation::Dir(
        FsCheckpointStorage::for_job_dir(backend::plain_path(path)).map_err(human::anyhow)?,
    ))
}

/// Whether checkpoint `id` of the job location `path` has its `_metadata`.
pub(crate) fn has_metadata(path: &Path, id: CheckpointId) -> bool {
    let relative = format!("{}/{METADATA_FILE_NAME}", id.dir_name());
    match location_for_run(path) {
        Ok(JobLocation::Dir(s)) => s.job_dir().join(relative).exists(),
        #[cfg(feature = "object-store")]
        Ok(JobLocation::Object(s)) => s.object_size(&relative).ok().flatten().is_some(),
        Err(_) => backend::plain_path(path).join(relative).exists(),
    }
}

/// Opens the checkpoint at `path` (`chk-<n>`, its `_metadata`, or the same
/// in an object store): its job location and id.
pub(crate) fn open_checkpoint(path: &Path) -> anyhow::Result<(JobLocation, CheckpointId)> {
    if let Some(url) = backend::object_url(path) {
        #[cfg(feature = "object-store")]
        {
            let (storage, id) = ObjectCheckpointStorage::for_checkpoint_url(&parse_url(url)?)
                .map_err(human::anyhow)?;
            return Ok((JobLocation::Object(storage), id));
        }
        #[cfg(not(feature = "object-store"))]
        bail!("{}", backend::no_object_store(url));
    }
    let (storage, id) = FsCheckpointStorage::for_checkpoint_path(backend::plain_path(path))
        .map_err(human::anyhow)?;
    Ok((JobLocation::Dir(storage), id))
}

/// Opens what `--from` names: [`open_checkpoint`], or a local directory
/// holding exactly one checkpoint (a savepoint directory).
pub(crate) fn open_restore_point(path: &Path) -> anyhow::Result<(JobLocation, CheckpointId)> {
    if backend::object_url(path).is_some() {
        return open_checkpoint(path);
    }
    let (storage, id) =
        FsCheckpointStorage::for_restore_path(backend::plain_path(path)).map_err(human::anyhow)?;
    Ok((JobLocation::Dir(storage), id))
}

/// Opens the job location `path`: a job directory ([`open`]) or an object
/// store URL of one.
pub(crate) fn open_location(path: &Path) -> anyhow::Result<JobLocation> {
    if let Some(url) = backend::object_url(path) {
        #[cfg(feature = "object-store")]
        return Ok(JobLocation::Object(
            ObjectCheckpointStorage::for_job_url(&parse_url(url)?).map_err(human::anyhow)?,
        ));
        #[cfg(not(feature = "object-store"))]
        bail!("{}", backend::no_object_store(url));
    }
    Ok(JobLocation::Dir(open(&backend::plain_path(path))?))
}

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
pub(crate) fn scan(location: &JobLocation) -> anyhow::Result<Vec<CheckpointEntry>> {
    match location {
        JobLocation::Dir(storage) => scan_dir(storage),
        #[cfg(feature = "object-store")]
        JobLocation::Object(storage) => scan_object(storage),
    }
}

/// [`scan`] of an object-store job location: every `chk-<n>/` prefix.
#[cfg(feature = "object-store")]
fn scan_object(storage: &ObjectCheckpointStorage) -> anyhow::Result<Vec<CheckpointEntry>> {
    let mut entries = Vec::new();
    for (name, size) in storage.list_dir("").map_err(human::anyhow)? {
        let Some(id) = CheckpointId::from_dir_name(&name) else {
            continue;
        };
        if size.is_some() {
            continue;
        }
        let status = match storage.read_metadata(id) {
            Ok(m) => CheckpointStatus::Complete(Box::new(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // An empty prefix some stores keep listing is no checkpoint at all.
                if storage.list_below(&name).map_err(human::anyhow)?.is_empty() {
                    continue;
                }
                CheckpointStatus::Incomplete
            }
            Err(e) => CheckpointStatus::Corrupt(e),
        };
        entries.push(CheckpointEntry { id, status });
    }
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}

fn scan_dir(storage: &FsCheckpointStorage) -> anyhow::Result<Vec<CheckpointEntry>> {
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
        let storage = open_location(&job).unwrap();
        let entries = scan(&storage).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, CheckpointId(2));
        assert!(matches!(entries[0].status, CheckpointStatus::Corrupt(_)));
        assert!(matches!(entries[1].status, CheckpointStatus::Incomplete));
    }
}
