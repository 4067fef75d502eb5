//! Orphans: files under a job directory that no completed checkpoint
//! references ([`find_orphans`]), and removing them ([`sweep_orphans`]).
//!
//! A crash, a killed process or an asynchronous snapshot that finished after
//! its checkpoint was aborted leaves files behind that retention never
//! deletes: `chk-<n>` directories without `_metadata` (torn or aborted
//! checkpoints), uploads in `shared/` or `taskowned/` that no `_metadata`
//! came to reference, and stray files in complete checkpoint directories.
//!
//! **What is referenced.** For every `chk-<n>` whose `_metadata` reads and
//! decodes: `chk-<n>/_metadata` and every file stream of
//! [`CheckpointMetadata::streams`] (paths relative to the job directory).
//! The job lock file ([`LOCK_FILE_NAME`]) is never an orphan. Everything
//! else found by listing the job directory is an orphan, and so is a
//! directory that holds only orphans (except the job directory itself,
//! `shared/`, `taskowned/` and complete `chk-<n>` directories).
//!
//! **Unknown references hold `shared/` back.** A `chk-<n>` whose `_metadata`
//! exists but cannot be read or decoded is left alone entirely, and because
//! it may reference anything in `shared/` and `taskowned/`, nothing there is
//! reported while such a checkpoint exists ([`OrphanReport::held_back`]
//! says why).
//!
//! **Nothing outside the job directory.** The walk uses
//! [`std::fs::symlink_metadata`] and never follows a symbolic link: a link
//! is itself an orphan, and removing it removes the link, never its target.
//! A `_metadata` is read only when it and its `chk-<n>` directory are real
//! (not links). Paths in metadata are only compared with paths found by
//! listing, never opened, so a crafted `_metadata` (`../x`, `/etc/x`) can
//! make nothing outside the job directory read or deleted; such a path
//! references nothing and is logged. Only regular files, links and empty
//! directories are removed (never a directory tree at once).
//!
//! **When.** Files of a checkpoint in progress look orphaned (they are not
//! referenced until its `_metadata` is written), so [`sweep_orphans`] takes
//! the [`JobLock`] as proof that no job runs in the directory; call it
//! before the job starts. The walk uses the real file system (`std::fs`),
//! not the storage's [`state_core::backend_support::Fs`].

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, METADATA_FILE_NAME, Result, StateError,
};

use crate::lock::{JobLock, LOCK_FILE_NAME};
use crate::storage::{FsCheckpointStorage, SHARED_DIR, TASK_OWNED_DIR, plain_parts};

/// What kind of entry an [`Orphan`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanKind {
    /// A regular file.
    File,
    /// A symbolic link (removing it removes the link, not its target).
    Symlink,
    /// A directory holding nothing but orphans (removed after them).
    Dir,
}

/// One unreferenced entry of a job directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The path relative to the job directory (`shared/000042.sst`, `chk-7`).
    pub path: PathBuf,
    /// What it is.
    pub kind: OrphanKind,
    /// Its length in bytes (0 for directories and links).
    pub bytes: u64,
}

impl Orphan {
    /// The relative path for people: `/`-separated, with a trailing `/` for
    /// a directory.
    pub fn display_path(&self) -> String {
        let path = self.path.to_string_lossy().replace('\\', "/");
        match self.kind {
            OrphanKind::Dir => format!("{path}/"),
            OrphanKind::File | OrphanKind::Symlink => path,
        }
    }
}

/// The orphans of a job directory (or, from [`sweep_orphans`], those removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// The orphans, each directory after everything in it, so removing them
    /// in this order removes every directory once it is empty.
    pub orphans: Vec<Orphan>,
    /// Why nothing in `shared/` and `taskowned/` is reported: the named
    /// checkpoints' `_metadata` cannot be read, so their references are
    /// unknown. `None` when every `_metadata` was read.
    pub held_back: Option<String>,
}

impl OrphanReport {
    /// The bytes of all orphans.
    pub fn bytes(&self) -> u64 {
        self.orphans.iter().map(|o| o.bytes).sum()
    }
}

/// What an entry found by listing a job location is, links not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedKind {
    /// A directory (on an object store: a key prefix with objects below it).
    Dir,
    /// A regular file (an object) of this many bytes.
    File(u64),
    /// A symbolic link.
    Symlink,
    /// A socket, FIFO or device: never cairn's, never removed.
    Special,
}

/// One entry found by listing a directory of a job location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Its name in the directory.
    pub name: OsString,
    /// What it is.
    pub kind: ListedKind,
}

/// What [`find_orphans`] and [`sweep_orphans`] need of a checkpoint storage:
/// listing, its checkpoints' metadata, the lock that proves no job runs,
/// and removal. Implemented by [`FsCheckpointStorage`] and, with the
/// `object-store` feature, by `ObjectCheckpointStorage`.
pub trait OrphanScan {
    /// The job lock a sweep must hold.
    type Lock;

    /// The job location for messages (a directory or a URL).
    fn location(&self) -> String;

    /// The entries of directory `relative` of the job location (empty path:
    /// the location itself), sorted by name, links not followed. `None` when
    /// the job location does not exist.
    fn list_entries(&self, relative: &Path) -> Result<Option<Vec<ListedEntry>>>;

    /// What `chk-<n>/_metadata` is, `None` when it does not exist.
    fn metadata_kind(&self, checkpoint_dir: &OsStr) -> Result<Option<ListedKind>>;

    /// Reads checkpoint `id`'s metadata.
    fn read_checkpoint(&self, id: CheckpointId) -> Result<CheckpointMetadata>;

    /// Checks that `lock` is this job location's own.
    fn check_lock(&self, lock: &Self::Lock) -> Result<()>;

    /// Removes `orphans` (in order: each directory after its contents),
    /// returning one result per orphan.
    fn remove_orphans(&self, orphans: &[Orphan]) -> Vec<Result<()>>;

    /// Whether an empty directory is an entry of its own, an orphan to
    /// remove (a filesystem). On an object store an empty prefix holds
    /// nothing, even where the store still lists it (SeaweedFS's filer).
    fn empty_dirs_are_entries(&self) -> bool {
        true
    }
}

/// A shared storage scans as the storage itself.
impl<T: OrphanScan + ?Sized> OrphanScan for std::sync::Arc<T> {
    type Lock = T::Lock;

    fn location(&self) -> String {
        (**self).location()
    }

    fn list_entries(&self, relative: &Path) -> Result<Option<Vec<ListedEntry>>> {
        (**self).list_entries(relative)
    }

    fn metadata_kind(&self, checkpoint_dir: &OsStr) -> Result<Option<ListedKind>> {
        (**self).metadata_kind(checkpoint_dir)
    }

    fn read_checkpoint(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        (**self).read_checkpoint(id)
    }

    fn check_lock(&self, lock: &Self::Lock) -> Result<()> {
        (**self).check_lock(lock)
    }

    fn remove_orphans(&self, orphans: &[Orphan]) -> Vec<Result<()>> {
        (**self).remove_orphans(orphans)
    }

    fn empty_dirs_are_entries(&self) -> bool {
        (**self).empty_dirs_are_entries()
    }
}

impl OrphanScan for FsCheckpointStorage {
    type Lock = JobLock;

    fn location(&self) -> String {
        self.job_dir().display().to_string()
    }

    fn list_entries(&self, relative: &Path) -> Result<Option<Vec<ListedEntry>>> {
        let dir = self.job_dir().join(relative);
        let read = match std::fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound && relative.as_os_str().is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(StateError::io(&dir, e)),
        };
        let mut entries = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| StateError::io(&dir, e))?;
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(meta) => entries.push(ListedEntry {
                    name: entry.file_name(),
                    kind: kind_of(&meta),
                }),
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io(&path, e)),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(entries))
    }

    fn metadata_kind(&self, checkpoint_dir: &OsStr) -> Result<Option<ListedKind>> {
        let meta_path = self.job_dir().join(checkpoint_dir).join(METADATA_FILE_NAME);
        match std::fs::symlink_metadata(&meta_path) {
            Ok(meta) => Ok(Some(kind_of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io(&meta_path, e)),
        }
    }

    fn read_checkpoint(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        self.read_metadata(id)
    }

    fn check_lock(&self, lock: &JobLock) -> Result<()> {
        let locked = lock.path().parent().unwrap_or(Path::new(""));
        if same_dir(locked, self.job_dir()) {
            Ok(())
        } else {
            Err(StateError::invalid(format!(
                "sweeping {} needs its own lock, not {}",
                self.job_dir().display(),
                lock.path().display()
            )))
        }
    }

    fn remove_orphans(&self, orphans: &[Orphan]) -> Vec<Result<()>> {
        // Files and links go, and directories the walk found empty (their
        // files were removed before them): never a full directory.
        orphans
            .iter()
            .map(|orphan| {
                let path = self.job_dir().join(&orphan.path);
                crate::confine::remove_below(self.fs().as_ref(), self.job_dir(), &path, false)
            })
            .collect()
    }
}

fn kind_of(meta: &Metadata) -> ListedKind {
    let kind = meta.file_type();
    if kind.is_symlink() {
        ListedKind::Symlink
    } else if kind.is_dir() {
        ListedKind::Dir
    } else if kind.is_file() {
        ListedKind::File(meta.len())
    } else {
        ListedKind::Special
    }
}

/// What listing found out about the `chk-<n>` directories.
#[derive(Default)]
struct Checkpoints {
    /// Names of `chk-<n>` directories whose `_metadata` was read.
    complete: HashSet<OsString>,
    /// Names of `chk-<n>` directories whose `_metadata` cannot be read, with why.
    unreadable: Vec<(OsString, String)>,
    /// Paths referenced by the complete ones, relative to the job directory.
    referenced: HashSet<PathBuf>,
}

fn classify<S: OrphanScan + ?Sized>(storage: &S, top: &[ListedEntry]) -> Result<Checkpoints> {
    let mut found = Checkpoints::default();
    for entry in top {
        // A link named chk-<n> is never followed: it is an orphan like any link.
        if entry.kind != ListedKind::Dir {
            continue;
        }
        let Some(id) = entry.name.to_str().and_then(CheckpointId::from_dir_name) else {
            continue;
        };
        let kind = match storage.metadata_kind(&entry.name)? {
            Some(kind) => kind,
            // Torn or aborted: everything in it is an orphan.
            None => continue,
        };
        if !matches!(kind, ListedKind::File(_)) {
            let what = if kind == ListedKind::Dir {
                "is a directory"
            } else {
                "is a symbolic link (never followed)"
            };
            found
                .unreadable
                .push((entry.name.clone(), format!("{METADATA_FILE_NAME} {what}")));
            continue;
        }
        let metadata = match storage.read_checkpoint(id) {
            Ok(metadata) => metadata,
            Err(StateError::NotFound { .. }) => continue,
            Err(e) => {
                found.unreadable.push((entry.name.clone(), e.to_string()));
                continue;
            }
        };
        found
            .referenced
            .insert(Path::new(&entry.name).join(METADATA_FILE_NAME));
        for stream in metadata.streams() {
            let Some(relative) = stream.file_path() else {
                continue;
            };
            // Only a plain relative path can name an entry that listing finds.
            match plain_parts(relative) {
                Ok(_) => {
                    found.referenced.insert(PathBuf::from(relative));
                }
                Err(e) => tracing::warn!(
                    checkpoint_id = id.get(),
                    path = relative,
                    error = %e,
                    "checkpoint metadata references a path outside the job directory; it references nothing"
                ),
            }
        }
        found.complete.insert(entry.name.clone());
    }
    Ok(found)
}

/// Walks the directory `relative` (inside the job location), adding its
/// orphans to `out` (each directory after its contents). Returns whether
/// everything in it is an orphan; the directory itself is added as one
/// unless `keep_self`.
fn walk<S: OrphanScan + ?Sized>(
    storage: &S,
    relative: &Path,
    keep_self: bool,
    referenced: &HashSet<PathBuf>,
    out: &mut Vec<Orphan>,
) -> Result<bool> {
    let mut all_orphans = true;
    let mut empty = true;
    for entry in storage.list_entries(relative)?.unwrap_or_default() {
        let child = relative.join(&entry.name);
        all_orphans &= visit(storage, child, entry.kind, referenced, out)?;
        empty = false;
    }
    if all_orphans && !keep_self && (!empty || storage.empty_dirs_are_entries()) {
        out.push(Orphan {
            path: relative.to_path_buf(),
            kind: OrphanKind::Dir,
            bytes: 0,
        });
    }
    Ok(all_orphans && !keep_self)
}

/// Adds the orphans of one entry to `out`; returns whether it is one.
fn visit<S: OrphanScan + ?Sized>(
    storage: &S,
    relative: PathBuf,
    kind: ListedKind,
    referenced: &HashSet<PathBuf>,
    out: &mut Vec<Orphan>,
) -> Result<bool> {
    if kind == ListedKind::Dir {
        return walk(storage, &relative, false, referenced, out);
    }
    if referenced.contains(&relative) {
        return Ok(false);
    }
    let (kind, bytes) = match kind {
        ListedKind::Symlink => (OrphanKind::Symlink, 0),
        ListedKind::File(bytes) => (OrphanKind::File, bytes),
        ListedKind::Dir | ListedKind::Special => {
            tracing::warn!(location = %storage.location(), path = %relative.display(), "leaving a special file in the job directory alone");
            return Ok(false);
        }
    };
    out.push(Orphan {
        path: relative,
        kind,
        bytes,
    });
    Ok(true)
}

/// Every entry of the storage's job location that no completed checkpoint
/// references (see the module docs for the rules). Reads only the
/// `_metadata` of the job location's own `chk-<n>` directories.
///
/// Errors: [`StateError::Io`] naming the path that cannot be listed.
/// Files of a checkpoint in progress show as orphans: while a job runs in
/// the directory the report may list them.
pub fn find_orphans<S: OrphanScan + ?Sized>(storage: &S) -> Result<OrphanReport> {
    let Some(top) = storage.list_entries(Path::new(""))? else {
        return Ok(OrphanReport::default());
    };
    let checkpoints = classify(storage, &top)?;
    let held_back = (!checkpoints.unreadable.is_empty()).then(|| {
        let which: Vec<String> = checkpoints
            .unreadable
            .iter()
            .map(|(name, why)| format!("{}: {why}", name.to_string_lossy()))
            .collect();
        format!(
            "nothing in {SHARED_DIR}/ or {TASK_OWNED_DIR}/ is counted as an orphan: the metadata of \
             {} cannot be read, so what it references is unknown ({})",
            checkpoints
                .unreadable
                .iter()
                .map(|(name, _)| name.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", "),
            which.join("; ")
        )
    });
    let mut orphans = Vec::new();
    for entry in &top {
        let name = entry.name.as_os_str();
        let relative = PathBuf::from(name);
        let real_dir = entry.kind == ListedKind::Dir;
        if name == LOCK_FILE_NAME || checkpoints.unreadable.iter().any(|(n, _)| n == name) {
            continue;
        }
        let layout = name == SHARED_DIR || name == TASK_OWNED_DIR;
        if real_dir && (layout || checkpoints.complete.contains(name)) {
            if !layout || held_back.is_none() {
                walk(
                    storage,
                    &relative,
                    true,
                    &checkpoints.referenced,
                    &mut orphans,
                )?;
            }
            continue;
        }
        visit(
            storage,
            relative,
            entry.kind,
            &checkpoints.referenced,
            &mut orphans,
        )?;
    }
    Ok(OrphanReport { orphans, held_back })
}

/// Removes every orphan of the storage's job location ([`find_orphans`]),
/// logging each removal (path and bytes) at `info`, and returns what it
/// removed. Every removal is attempted; the first failure is returned after
/// the others were tried (the removals that succeeded are logged).
///
/// Call it only while holding the job location's lock, `lock`, and before
/// the job starts: files of a running checkpoint look orphaned. A lock of
/// another location is refused ([`StateError::InvalidArgument`]).
pub fn sweep_orphans<S: OrphanScan + ?Sized>(storage: &S, lock: &S::Lock) -> Result<OrphanReport> {
    storage.check_lock(lock)?;
    let report = find_orphans(storage)?;
    let results = storage.remove_orphans(&report.orphans);
    let location = storage.location();
    let mut removed = Vec::new();
    let mut first_error = None;
    for (orphan, result) in report.orphans.into_iter().zip(results) {
        match result {
            Ok(()) => {
                tracing::info!(
                    path = %orphan.display_path(),
                    bytes = orphan.bytes,
                    job_dir = %location,
                    "removed orphan: no completed checkpoint references it"
                );
                removed.push(orphan);
            }
            Err(e) => {
                tracing::warn!(path = %orphan.display_path(), job_dir = %location, error = %e, "cannot remove orphan");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(OrphanReport {
            orphans: removed,
            held_back: report.held_back,
        }),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use state_core::{
        CheckpointMetadata, JobId, OperatorId, OperatorSnapshot, OperatorStateHandle, SnapshotKind,
        StateScope, StreamHandle, StreamLocation, SubtaskSnapshot,
    };

    use super::*;
    use crate::lock::LockOwner;

    fn storage() -> (tempfile::TempDir, FsCheckpointStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsCheckpointStorage::open(dir.path(), JobId::new("job").unwrap()).unwrap();
        (dir, s)
    }

    fn lock(s: &FsCheckpointStorage) -> JobLock {
        JobLock::acquire(s.job_dir(), &LockOwner::this_process(0)).unwrap()
    }

    /// Writes a stream of checkpoint `id` in `scope`.
    fn stream(s: &FsCheckpointStorage, id: u64, scope: StateScope, name: &str) -> StreamHandle {
        s.initialize_checkpoint(CheckpointId(id)).unwrap();
        let mut out = s.create_output(CheckpointId(id), scope, name).unwrap();
        out.write_all(name.as_bytes()).unwrap();
        out.close().unwrap()
    }

    /// Checkpoint `id` referencing `streams` (one subtask's operator state each).
    fn metadata(id: u64, streams: Vec<StreamHandle>) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: CheckpointId(id),
            job_id: JobId::new("job").unwrap(),
            timestamp_millis: 0,
            kind: SnapshotKind::Full,
            operators: vec![OperatorSnapshot {
                operator_id: OperatorId("op".into()),
                parallelism: u32::try_from(streams.len().max(1)).unwrap(),
                max_parallelism: 128,
                subtasks: streams
                    .into_iter()
                    .enumerate()
                    .map(|(i, stream)| SubtaskSnapshot {
                        subtask: u32::try_from(i).unwrap(),
                        keyed: Vec::new(),
                        operator: Some(OperatorStateHandle {
                            stream,
                            states: Vec::new(),
                        }),
                    })
                    .collect(),
            }],
        }
    }

    fn complete(s: &FsCheckpointStorage, id: u64, streams: Vec<StreamHandle>) {
        s.write_metadata(&metadata(id, streams)).unwrap();
    }

    fn paths(report: &OrphanReport) -> Vec<String> {
        report.orphans.iter().map(Orphan::display_path).collect()
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_torn_checkpoint_directory_is_an_orphan_file_by_file_and_then_the_directory() {
        let (_d, s) = storage();
        let own = stream(&s, 1, StateScope::Exclusive, "op-0-operator");
        complete(&s, 1, vec![own]);
        let torn = s.checkpoint_dir(CheckpointId(2));
        write(&torn.join("op-0-keyed"), b"12345");
        write(&torn.join("nested").join("x"), b"1");
        std::fs::create_dir_all(torn.join("empty")).unwrap();

        let report = find_orphans(&s).unwrap();
        assert_eq!(
            paths(&report),
            [
                "chk-2/empty/",
                "chk-2/nested/x",
                "chk-2/nested/",
                "chk-2/op-0-keyed",
                "chk-2/"
            ]
        );
        assert_eq!(report.bytes(), 6);
        assert_eq!(report.held_back, None);

        let removed = sweep_orphans(&s, &lock(&s)).unwrap();
        assert_eq!(removed, report);
        assert!(!torn.exists());
        // The complete checkpoint, the lock file and the layout's directories stay.
        assert!(s.metadata_path(CheckpointId(1)).is_file());
        assert!(
            s.checkpoint_dir(CheckpointId(1))
                .join("op-0-operator")
                .is_file()
        );
        assert!(s.job_dir().join(LOCK_FILE_NAME).is_file());
        assert!(s.job_dir().join(SHARED_DIR).is_dir());
        assert!(s.job_dir().join(TASK_OWNED_DIR).is_dir());
        assert_eq!(find_orphans(&s).unwrap(), OrphanReport::default());
    }

    /// What `cairn run` removed before the sweep (chk-<n> without
    /// `_metadata` above the next id), and more: every incomplete one.
    #[test]
    fn incomplete_checkpoints_are_swept_at_any_id_and_complete_ones_kept() {
        let (_d, s) = storage();
        for id in [5, 9] {
            let st = stream(&s, id, StateScope::Exclusive, "op-0-keyed");
            complete(&s, id, vec![st]);
        }
        for id in [2, 6, 10] {
            write(
                &s.checkpoint_dir(CheckpointId(id)).join("op-0-keyed"),
                b"state",
            );
        }
        sweep_orphans(&s, &lock(&s)).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(s.job_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["_lock", "chk-5", "chk-9", "shared", "taskowned"]);
        assert_eq!(
            s.list_checkpoints().unwrap(),
            [CheckpointId(5), CheckpointId(9)]
        );
    }

    #[test]
    fn an_unreferenced_shared_file_is_an_orphan_and_a_referenced_one_is_not() {
        let (_d, s) = storage();
        let kept = stream(&s, 1, StateScope::Shared, "kept.sst");
        let owned = stream(&s, 1, StateScope::TaskOwned, "owned");
        complete(&s, 1, vec![kept, owned]);
        // An upload of a checkpoint whose metadata was never written.
        let stray = stream(&s, 2, StateScope::Shared, "stray.sst");
        std::fs::remove_dir(s.checkpoint_dir(CheckpointId(2))).unwrap();
        write(&s.job_dir().join(TASK_OWNED_DIR).join("old"), b"x");
        std::fs::create_dir_all(s.job_dir().join(SHARED_DIR).join("empty")).unwrap();

        let report = find_orphans(&s).unwrap();
        assert_eq!(
            paths(&report),
            ["shared/empty/", "shared/stray.sst", "taskowned/old"]
        );
        assert_eq!(report.bytes(), stray.size + 1);
        sweep_orphans(&s, &lock(&s)).unwrap();
        let shared = s.job_dir().join(SHARED_DIR);
        assert!(shared.join("kept.sst").is_file());
        assert!(!shared.join("stray.sst").exists());
        assert!(s.job_dir().join(TASK_OWNED_DIR).join("owned").is_file());
    }

    #[test]
    fn a_stray_file_in_a_complete_checkpoint_is_an_orphan() {
        let (_d, s) = storage();
        let own = stream(&s, 3, StateScope::Exclusive, "op-0-keyed");
        complete(&s, 3, vec![own]);
        let chk = s.checkpoint_dir(CheckpointId(3));
        write(&chk.join("op-1-keyed"), b"abc");
        write(&chk.join("_metadata.tmp"), b"ab");
        write(&s.job_dir().join("notes.txt"), b"n");

        let report = find_orphans(&s).unwrap();
        assert_eq!(
            paths(&report),
            ["chk-3/_metadata.tmp", "chk-3/op-1-keyed", "notes.txt"]
        );
        sweep_orphans(&s, &lock(&s)).unwrap();
        assert!(chk.join("op-0-keyed").is_file());
        assert!(!chk.join("op-1-keyed").exists());
        assert_eq!(
            s.read_metadata(CheckpointId(3)).unwrap().checkpoint_id,
            CheckpointId(3)
        );
    }

    #[test]
    fn a_corrupt_metadata_holds_back_shared_and_its_checkpoint_is_left_alone() {
        let (_d, s) = storage();
        let kept = stream(&s, 1, StateScope::Shared, "kept.sst");
        complete(&s, 1, vec![kept]);
        let unknown = stream(&s, 4, StateScope::Shared, "maybe-used.sst");
        let own = stream(&s, 4, StateScope::Exclusive, "op-0-keyed");
        complete(&s, 4, vec![unknown, own]);
        // One flipped byte: checkpoint 4's references are unknown now.
        let meta = s.metadata_path(CheckpointId(4));
        let mut bytes = std::fs::read(&meta).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&meta, &bytes).unwrap();
        write(&s.checkpoint_dir(CheckpointId(4)).join("stray"), b"x");
        write(&s.job_dir().join(SHARED_DIR).join("stray.sst"), b"x");
        write(&s.checkpoint_dir(CheckpointId(5)).join("torn"), b"x");

        let report = find_orphans(&s).unwrap();
        assert_eq!(paths(&report), ["chk-5/torn", "chk-5/"]);
        let why = report.held_back.clone().unwrap();
        assert!(why.contains("chk-4"), "{why}");
        assert!(why.contains("shared/"), "{why}");

        let removed = sweep_orphans(&s, &lock(&s)).unwrap();
        assert_eq!(removed, report);
        let shared = s.job_dir().join(SHARED_DIR);
        assert!(shared.join("maybe-used.sst").is_file());
        assert!(shared.join("stray.sst").is_file());
        assert!(s.checkpoint_dir(CheckpointId(4)).join("stray").is_file());
        assert_eq!(std::fs::read(&meta).unwrap(), bytes);
    }

    #[cfg(unix)]
    #[test]
    fn crafted_paths_and_links_never_reach_outside_the_job_directory() {
        use std::os::unix::fs::symlink;

        let (d, s) = storage();
        let outside = d.path().join("outside");
        write(&outside.join("secret"), b"secret");
        write(&outside.join("inner"), b"inner");
        // A would-be checkpoint outside: if the sweep followed the link chk-9
        // and read this, shared/bait.sst would count as referenced.
        let decoy = tempfile::tempdir().unwrap();
        let decoy_job =
            FsCheckpointStorage::open(decoy.path(), JobId::new("job").unwrap()).unwrap();
        let bait = stream(&decoy_job, 9, StateScope::Shared, "bait.sst");
        complete(&decoy_job, 9, vec![bait]);
        write(&s.job_dir().join(SHARED_DIR).join("bait.sst"), b"bait.sst");
        symlink(
            decoy_job.checkpoint_dir(CheckpointId(9)),
            s.checkpoint_dir(CheckpointId(9)),
        )
        .unwrap();
        symlink(&outside, s.job_dir().join(SHARED_DIR).join("evil")).unwrap();
        symlink(
            outside.join("secret"),
            s.job_dir().join(TASK_OWNED_DIR).join("link"),
        )
        .unwrap();

        // Checkpoint 1's metadata names files outside, by `../`, by an
        // absolute path and through the link.
        let file = |path: String| StreamHandle {
            location: StreamLocation::File(path),
            size: 6,
            crc32: 0,
        };
        let crafted = metadata(
            1,
            vec![
                file("../../outside/secret".into()),
                file(outside.join("inner").display().to_string()),
                file("shared/evil/secret".into()),
                file("chk-1/../../outside/inner".into()),
            ],
        );
        s.initialize_checkpoint(CheckpointId(1)).unwrap();
        std::fs::write(s.metadata_path(CheckpointId(1)), crafted.encode().unwrap()).unwrap();

        let report = find_orphans(&s).unwrap();
        assert_eq!(
            paths(&report),
            ["chk-9", "shared/bait.sst", "shared/evil", "taskowned/link"]
        );
        assert_eq!(report.held_back, None);
        assert!(
            report
                .orphans
                .iter()
                .all(|o| o.path != Path::new("chk-9") || o.kind == OrphanKind::Symlink)
        );

        sweep_orphans(&s, &lock(&s)).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        assert_eq!(std::fs::read(outside.join("inner")).unwrap(), b"inner");
        assert!(decoy_job.metadata_path(CheckpointId(9)).is_file());
        assert!(
            decoy_job
                .job_dir()
                .join(SHARED_DIR)
                .join("bait.sst")
                .is_file()
        );
        for gone in ["chk-9", "shared/evil", "taskowned/link", "shared/bait.sst"] {
            assert!(
                std::fs::symlink_metadata(s.job_dir().join(gone)).is_err(),
                "{gone} is still there"
            );
        }
        assert!(s.metadata_path(CheckpointId(1)).is_file());
    }

    #[test]
    fn the_sweep_needs_the_lock_of_its_own_job_directory() {
        let (_d, s) = storage();
        let (_o, other) = storage();
        let err = sweep_orphans(&s, &lock(&other)).unwrap_err();
        assert_eq!(err.kind(), state_core::ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains(&s.job_dir().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_missing_job_directory_has_no_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsCheckpointStorage::at_job_dir(
            dir.path().join("none"),
            std::sync::Arc::new(crate::MappedFs),
            crate::DEFAULT_WRITE_BUFFER_SIZE,
        );
        assert_eq!(find_orphans(&s).unwrap(), OrphanReport::default());
    }
}
