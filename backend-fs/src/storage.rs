//! [`FsCheckpointStorage`]: checkpoint storage in a directory tree.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use state_core::backend_support::{Fs, check_stream_name, write_atomic, write_verified_copy};
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointOutput, CheckpointStorage, JobId,
    METADATA_FILE_NAME, Result, StateError, StateScope, StreamHandle, StreamLocation,
};

use crate::confine;
use crate::mmap::MappedFs;
use crate::output::FsOutput;

/// The directory of shared streams inside a job directory.
pub const SHARED_DIR: &str = "shared";
/// The directory of task-owned streams inside a job directory.
pub const TASK_OWNED_DIR: &str = "taskowned";
/// The default write buffer of checkpoint streams, in bytes.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 64 * 1024;
/// The largest accepted write buffer, in bytes.
pub const MAX_WRITE_BUFFER_SIZE: usize = 64 * 1024 * 1024;

/// Options of [`FsCheckpointStorage::with_options`].
#[derive(Debug, Clone)]
pub struct FsStorageOptions {
    /// The checkpoint directory shared by jobs; the job's directory is
    /// `<base_dir>/<job_id>` (Flink's `state.checkpoints.dir`).
    pub base_dir: PathBuf,
    /// The job whose checkpoints are stored.
    pub job_id: JobId,
    /// The file system; [`MappedFs`] by default.
    pub fs: Arc<dyn Fs>,
    /// Bytes buffered by each stream before they are written to its file
    /// (1 ..= [`MAX_WRITE_BUFFER_SIZE`]; default [`DEFAULT_WRITE_BUFFER_SIZE`]).
    pub write_buffer_size: usize,
}

impl FsStorageOptions {
    /// Options with the default file system and buffer size.
    pub fn new(base_dir: impl Into<PathBuf>, job_id: JobId) -> Self {
        FsStorageOptions {
            base_dir: base_dir.into(),
            job_id,
            fs: Arc::new(MappedFs),
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
        }
    }

    /// Uses `fs` for every file operation (tests inject failures this way).
    pub fn with_fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// Sets the write buffer size of streams.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }
}

/// Checkpoint storage on a file system, in Flink's layout:
///
/// ```text
/// <base>/<job-id>/            the job directory
///     chk-<n>/_metadata       checkpoint n's metadata; n exists once it is there
///     chk-<n>/<stream>        exclusive streams of checkpoint n
///     shared/<stream>         streams shared between checkpoints (incremental)
///     taskowned/<stream>      streams owned by tasks, never deleted by retention
/// ```
///
/// Handles store paths relative to the job directory (`chk-3/op-0-keyed`,
/// `shared/000042.sst`), so a job directory can be moved or copied whole.
///
/// Durability: streams are fsynced when closed; [`CheckpointStorage::write_metadata`]
/// fsyncs the directories of every stream the checkpoint references, then
/// writes `_metadata` with [`write_atomic`] (temp file, fsync, rename, fsync
/// directory). A crash at any point leaves either no new checkpoint or a
/// complete one.
///
/// Thread-safety: all methods take `&self` and may run concurrently; streams
/// of one checkpoint must have distinct names.
#[derive(Debug, Clone)]
pub struct FsCheckpointStorage {
    job_dir: PathBuf,
    fs: Arc<dyn Fs>,
    write_buffer_size: usize,
}

/// Whether checkpoints can be written into `job_dir`: creates and removes a
/// hidden file, so a read-only (or immutable) job directory is refused when
/// the storage opens, naming it, instead of failing every checkpoint of a job
/// that then restarts for ever. The file's name is this process's and
/// call's own: processes and threads that open one job directory at once
/// (the workers of a timely job) never remove each other's, and one that
/// another process's orphan sweep removed first does not count against it.
fn check_writable(job_dir: &Path) -> Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = job_dir.join(format!(".cairn-write-check-{}-{n}", std::process::id()));
    // Once created, the directory is writable: a probe already gone (the
    // orphan sweep of another process of the job took it) is no failure.
    let result = std::fs::File::create(&probe).and_then(|_| match std::fs::remove_file(&probe) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    });
    result.map_err(|e| {
        StateError::io(
            job_dir,
            io::Error::new(
                e.kind(),
                format!("checkpoints cannot be written here ({e})"),
            ),
        )
    })
}

impl FsCheckpointStorage {
    /// Opens (creating if needed) the storage of `job_id` under `base_dir`,
    /// with the default options.
    pub fn open(base_dir: impl Into<PathBuf>, job_id: JobId) -> Result<Self> {
        Self::with_options(FsStorageOptions::new(base_dir, job_id))
    }

    /// Opens (creating if needed) the storage described by `options`: the job
    /// directory with its `shared/` and `taskowned/` directories.
    pub fn with_options(options: FsStorageOptions) -> Result<Self> {
        if !(1..=MAX_WRITE_BUFFER_SIZE).contains(&options.write_buffer_size) {
            return Err(StateError::invalid(format!(
                "write_buffer_size {} must be between 1 and {MAX_WRITE_BUFFER_SIZE} bytes",
                options.write_buffer_size
            )));
        }
        let job_dir = options.base_dir.join(options.job_id.as_str());
        let fs = options.fs;
        for dir in [SHARED_DIR, TASK_OWNED_DIR] {
            let path = job_dir.join(dir);
            fs.create_dir_all(&path)
                .map_err(|e| StateError::io(&path, e))?;
        }
        // The job directory's entries, then its own entry in the base directory.
        for dir in [&job_dir, &options.base_dir] {
            fs.sync_dir(dir).map_err(|e| StateError::io(dir, e))?;
        }
        check_writable(&job_dir)?;
        tracing::debug!(job_dir = %job_dir.display(), "opened filesystem checkpoint storage");
        Ok(Self::at_job_dir(job_dir, fs, options.write_buffer_size))
    }

    /// A storage over an existing job directory; creates nothing.
    pub(crate) fn at_job_dir(job_dir: PathBuf, fs: Arc<dyn Fs>, write_buffer_size: usize) -> Self {
        FsCheckpointStorage {
            job_dir,
            fs,
            write_buffer_size,
        }
    }

    /// The job directory (`<base>/<job-id>`).
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// The directory of checkpoint `id` (`<job dir>/chk-<id>`).
    pub fn checkpoint_dir(&self, id: CheckpointId) -> PathBuf {
        self.job_dir.join(id.dir_name())
    }

    /// The metadata file of checkpoint `id` (`<job dir>/chk-<id>/_metadata`).
    pub fn metadata_path(&self, id: CheckpointId) -> PathBuf {
        self.checkpoint_dir(id).join(METADATA_FILE_NAME)
    }

    /// The file system the storage uses.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// The absolute path of a stream stored at `relative` (a handle's path).
    /// Handles come from metadata files, which are untrusted input: a path
    /// that is absolute or leaves the job directory is reported as corrupt.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf> {
        let mut path = self.job_dir.clone();
        for part in plain_parts(relative)? {
            path.push(part);
        }
        Ok(path)
    }

    pub(crate) fn relative_path(id: CheckpointId, scope: StateScope, name: &str) -> String {
        match scope {
            StateScope::Exclusive => format!("{}/{name}", id.dir_name()),
            StateScope::Shared => format!("{SHARED_DIR}/{name}"),
            StateScope::TaskOwned => format!("{TASK_OWNED_DIR}/{name}"),
        }
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.fs.sync_dir(dir).map_err(|e| StateError::io(dir, e))
    }

    /// The directories holding the files a checkpoint references.
    fn stream_dirs(&self, metadata: &CheckpointMetadata) -> Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for stream in metadata.streams() {
            let Some(relative) = stream.file_path() else {
                continue;
            };
            let path = self.resolve(relative)?;
            if let Some(dir) = path.parent()
                && !dirs.iter().any(|d| d == dir)
            {
                dirs.push(dir.to_path_buf());
            }
        }
        Ok(dirs)
    }
}

/// The `/`-separated parts of a handle's path relative to a job directory,
/// or [`StateError::Corrupted`] naming it when it is empty, absolute or has
/// an empty, `.`, `..` or backslash part (it would leave the job directory).
/// Every storage of this crate checks paths from metadata with it.
pub(crate) fn plain_parts(relative: &str) -> Result<Vec<&str>> {
    let mut parts = Vec::new();
    for part in relative.split('/') {
        let bad = part.is_empty()
            || part == "."
            || part == ".."
            || part.contains(['\\', '\0'])
            || Path::new(part).is_absolute();
        if bad {
            return Err(StateError::corrupted(
                relative,
                "stream path is not a plain path inside the job directory",
            ));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(StateError::corrupted(relative, "empty stream path"));
    }
    Ok(parts)
}

impl FsCheckpointStorage {
    /// The path of the stream file at `relative`, which must exist as a
    /// plain file inside the job directory.
    fn existing_file(&self, relative: &str) -> Result<PathBuf> {
        let path = self.resolve(relative)?;
        if !confine::readable_file(&self.job_dir, &path)? {
            return Err(missing(relative, &path));
        }
        Ok(path)
    }
}

/// A stream whose file is not there.
fn missing(relative: &str, path: &Path) -> StateError {
    StateError::corrupted(
        relative,
        format!("file is missing ({} does not exist)", path.display()),
    )
}

impl CheckpointStorage for FsCheckpointStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.job_dir.display())
    }

    fn initialize_checkpoint(&self, id: CheckpointId) -> Result<()> {
        let dir = self.checkpoint_dir(id);
        if self
            .fs
            .stat(&dir)
            .map_err(|e| StateError::io(&dir, e))?
            .is_some_and(|info| info.is_dir)
        {
            return Ok(());
        }
        self.fs
            .create_dir_all(&dir)
            .map_err(|e| StateError::io(&dir, e))?;
        self.sync_dir(&self.job_dir)
    }

    fn create_output(
        &self,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        check_stream_name(name)?;
        let relative = Self::relative_path(id, scope, name);
        let path = self.resolve(&relative)?;
        if let Some(dir) = path.parent() {
            confine::writable_dir(&self.job_dir, dir)?;
        }
        if confine::examine(&self.job_dir, &path)? == confine::Found::Link {
            return Err(StateError::corrupted(
                relative,
                "is a symbolic link; cairn never writes through links inside a job directory",
            ));
        }
        let file = match self.fs.create(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The directory is missing (storage opened on an existing job
                // directory, or the checkpoint was not initialized): create it.
                if let Some(dir) = path.parent() {
                    self.fs
                        .create_dir_all(dir)
                        .map_err(|e| StateError::io(dir, e))?;
                }
                self.fs
                    .create(&path)
                    .map_err(|e| StateError::io(&path, e))?
            }
            Err(e) => return Err(StateError::io(&path, e)),
        };
        Ok(Box::new(FsOutput::new(
            self.fs.clone(),
            file,
            path,
            relative,
            self.write_buffer_size,
        )))
    }

    fn read(&self, handle: &StreamHandle) -> Result<Bytes> {
        let relative = match &handle.location {
            StreamLocation::Inline(bytes) => return Ok(bytes.clone()),
            StreamLocation::File(relative) => relative,
        };
        let path = self.existing_file(relative)?;
        self.fs.read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                missing(relative, &path)
            } else {
                StateError::io(&path, e)
            }
        })
    }

    /// Hard-links the stream's file to `dst` when both are on one
    /// filesystem (no bytes copied), then reads `dst` in chunks to check
    /// it; copies otherwise (another filesystem, a link refused, an inline
    /// stream).
    fn place_read_only(&self, handle: &StreamHandle, dst: &Path) -> Result<()> {
        let StreamLocation::File(relative) = &handle.location else {
            return write_verified_copy(self, handle, dst);
        };
        let path = self.existing_file(relative)?;
        if let Err(e) = self.fs.hard_link(&path, dst) {
            tracing::debug!(src = %path.display(), dst = %dst.display(), error = %e,
                "hard link refused; copying the stream");
            return write_verified_copy(self, handle, dst);
        }
        // Read in chunks, not mapped: a restore checks gigabytes this way,
        // and mapped pages would count in its resident memory.
        let checked = handle.check_file(dst);
        if checked.is_err() {
            let _ = self.fs.remove_file(dst);
        }
        checked
    }

    fn discard_stream(&self, handle: &StreamHandle) -> Result<()> {
        let Some(relative) = handle.file_path() else {
            return Ok(());
        };
        let path = self.resolve(relative)?;
        confine::remove_below(self.fs.as_ref(), &self.job_dir, &path, false)
    }

    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        let id = metadata.checkpoint_id;
        let bytes = metadata.encode()?;
        let dir = self.checkpoint_dir(id);
        let dir_exists = self
            .fs
            .stat(&dir)
            .map_err(|e| StateError::io(&dir, e))?
            .is_some();
        if !dir_exists {
            self.initialize_checkpoint(id)?;
        }
        // Make the entries of every state file durable before the metadata
        // that makes them part of a checkpoint.
        let mut dirs = self.stream_dirs(metadata)?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        for d in &dirs {
            self.sync_dir(d)?;
        }
        write_atomic(self.fs.as_ref(), &self.metadata_path(id), &bytes)?;
        tracing::debug!(
            checkpoint_id = id.get(),
            bytes = bytes.len(),
            "wrote checkpoint metadata"
        );
        Ok(())
    }

    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        let path = self.metadata_path(id);
        if !confine::readable_file(&self.job_dir, &path)? {
            return Err(StateError::NotFound {
                checkpoint: id,
                detail: format!("{} does not exist", path.display()),
            });
        }
        let bytes = match self.fs.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound {
                    checkpoint: id,
                    detail: format!("{} does not exist", path.display()),
                });
            }
            Err(e) => return Err(StateError::io(&path, e)),
        };
        let what = format!("{}/{METADATA_FILE_NAME}", id.dir_name());
        let metadata = CheckpointMetadata::decode(&bytes, &what)?;
        if metadata.checkpoint_id != id {
            return Err(StateError::corrupted(
                what,
                format!("holds checkpoint {} instead", metadata.checkpoint_id),
            ));
        }
        Ok(metadata)
    }

    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let names = match self.fs.read_dir(&self.job_dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StateError::io(&self.job_dir, e)),
        };
        let mut ids = Vec::new();
        for name in names {
            let Some(id) = CheckpointId::from_dir_name(&name) else {
                continue;
            };
            let dir = self.checkpoint_dir(id);
            // A link named like a checkpoint is never followed (nor listed).
            if confine::examine(&self.job_dir, &dir)? != confine::Found::Dir {
                continue;
            }
            let meta = self.metadata_path(id);
            let info = self.fs.stat(&meta).map_err(|e| StateError::io(&meta, e))?;
            if info.is_some_and(|i| !i.is_dir) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        let dir = self.checkpoint_dir(id);
        match confine::examine(&self.job_dir, &dir)? {
            confine::Found::Missing => return Ok(()),
            confine::Found::Dir => {
                // The metadata goes first: once it is gone the checkpoint is
                // no longer visible, so a crash while the rest is removed
                // leaves only junk that `list_checkpoints` ignores, never a
                // checkpoint with missing files.
                confine::remove_below(
                    self.fs.as_ref(),
                    &self.job_dir,
                    &dir.join(METADATA_FILE_NAME),
                    false,
                )?;
                confine::remove_below(self.fs.as_ref(), &self.job_dir, &dir, true)?;
            }
            // A link or a file named like the checkpoint: removed itself.
            _ => confine::remove_below(self.fs.as_ref(), &self.job_dir, &dir, false)?,
        }
        self.sync_dir(&self.job_dir)?;
        tracing::debug!(checkpoint_id = id.get(), "discarded checkpoint directory");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use state_core::ErrorKind;

    fn storage() -> (tempfile::TempDir, FsCheckpointStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsCheckpointStorage::open(dir.path(), JobId::new("job-1").unwrap()).unwrap();
        (dir, s)
    }

    #[test]
    fn many_openers_of_one_job_directory_at_once_all_succeed_and_leave_no_probe() {
        // The workers of one job (threads here, processes in a timely job)
        // open its directory together: the writable check of one must not
        // remove the probe file of another.
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        FsCheckpointStorage::open(dir.path(), JobId::new("job-1").unwrap())
                            .unwrap();
                    }
                });
            }
        });
        let left: Vec<String> = std::fs::read_dir(dir.path().join("job-1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut left = left;
        left.sort();
        assert_eq!(left, [SHARED_DIR, TASK_OWNED_DIR]);
    }

    #[test]
    fn checkpoint_dir_names_are_canonical() {
        assert_eq!(CheckpointId::from_dir_name("chk-7"), Some(CheckpointId(7)));
        for bad in [
            "chk-",
            "chk-007",
            "chk-+7",
            "chk-7x",
            "chk-7.inprogress",
            "shared",
        ] {
            assert_eq!(CheckpointId::from_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolve_rejects_paths_leaving_the_job_dir() {
        let (_d, s) = storage();
        assert!(s.resolve("chk-1/state").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "chk-1/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            let err = s.resolve(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupted, "{bad}");
        }
    }

    #[test]
    fn bad_options_and_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            FsStorageOptions::new(dir.path(), JobId::new("j").unwrap()).with_write_buffer_size(0);
        let err = FsCheckpointStorage::with_options(opts).unwrap_err();
        assert!(err.to_string().contains("write_buffer_size"), "{err}");
        let (_d, s) = storage();
        assert!(
            s.create_output(CheckpointId(1), StateScope::Exclusive, "../x")
                .is_err()
        );
    }

    #[test]
    fn missing_stream_is_corrupt_and_names_the_file() {
        let (_d, s) = storage();
        s.initialize_checkpoint(CheckpointId(1)).unwrap();
        let mut out = s
            .create_output(CheckpointId(1), StateScope::Exclusive, "state")
            .unwrap();
        out.write_all(b"hello").unwrap();
        let handle = out.close().unwrap();
        assert_eq!(&s.read(&handle).unwrap()[..], b"hello");
        s.discard_stream(&handle).unwrap();
        s.discard_stream(&handle).unwrap();
        let err = s.read(&handle).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert!(err.to_string().contains("chk-1/state"), "{err}");
    }

    #[test]
    fn metadata_of_another_checkpoint_is_corrupt() {
        let (_d, s) = storage();
        let m = CheckpointMetadata {
            checkpoint_id: CheckpointId(2),
            job_id: JobId::new("job-1").unwrap(),
            timestamp_millis: 0,
            kind: state_core::SnapshotKind::Full,
            operators: Vec::new(),
        };
        s.write_metadata(&m).unwrap();
        assert_eq!(s.read_metadata(CheckpointId(2)).unwrap(), m);
        std::fs::create_dir(s.checkpoint_dir(CheckpointId(3))).unwrap();
        std::fs::copy(
            s.metadata_path(CheckpointId(2)),
            s.metadata_path(CheckpointId(3)),
        )
        .unwrap();
        let err = s.read_metadata(CheckpointId(3)).unwrap_err();
        assert!(err.to_string().contains("chk-3/_metadata"), "{err}");
        let err = s.read_metadata(CheckpointId(4)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}
