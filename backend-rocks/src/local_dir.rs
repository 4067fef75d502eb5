//! The local directory's instance directories: which are alive, and
//! removing those of dead instances ([`sweep_local_dir`]).
//!
//! Each [`crate::RocksBackend`] works in `<local_dir>/<backend_id>/`
//! (working databases `db-<gen>`, local checkpoint copies `chk-<n>`) and
//! holds an OS lock ([`std::fs::File::try_lock`], `flock`) on
//! `<instance dir>/_lock` ([`INSTANCE_LOCK_FILE`]) for its whole life. The
//! kernel releases the lock when the process dies, however it dies, so an
//! instance directory whose lock is free belongs to a dead instance: a
//! killed process, or a backend that was dropped with local recovery on
//! (its checkpoint copies stay for a restore). A backend that restores from
//! a dead instance's copies locks that directory too while it prunes them
//! ("adopts" it), so it is not swept from under it.
//!
//! The sweep removes a dead instance's directory, except the copies
//! `chk-<n>` of the checkpoints the caller says are still retained (local
//! recovery after a restart may restore from them). Those kept copies go
//! later: the backend that restores from them deletes each as its
//! checkpoint is subsumed (and the directory with the last one), and a
//! sweep after their checkpoints are no longer retained removes them.
//!
//! A directory without a lock file is treated as an instance directory
//! only if every entry in it is named as a backend's are (`db-<n>`,
//! `chk-<n>`, `restore-import`): one left by a process that died before it
//! took its lock. Anything else in the local directory is left alone.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use state_core::{CheckpointId, Result, StateError};

/// The lock file a live backend instance holds in its directory.
pub const INSTANCE_LOCK_FILE: &str = "_lock";

/// The scratch directory of a restore that imports another handle's key groups.
pub(crate) const RESTORE_IMPORT_DIR: &str = "restore-import";

/// Takes the lock of the instance directory `dir` (created if missing),
/// held while the returned file is open.
///
/// Errors: [`StateError::Io`] on the lock file, and when another instance
/// holds it.
pub(crate) fn lock_instance_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
    let path = dir.join(INSTANCE_LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StateError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StateError::io(
            &path,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another live backend instance holds this directory's lock",
            ),
        )),
        Err(TryLockError::Error(e)) => Err(StateError::io(&path, e)),
    }
}

/// The lock of a dead instance's directory `dir`, taken over, when its lock
/// is free (`None` when a live instance holds it or there is no lock file).
pub(crate) fn try_adopt(dir: &Path) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(INSTANCE_LOCK_FILE))
        .ok()?;
    file.try_lock().ok().map(|()| file)
}

/// Whether the directory `dir` holds nothing but (at most) its lock file.
pub(crate) fn holds_only_its_lock(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |entries| {
        entries
            .flatten()
            .all(|e| e.file_name() == INSTANCE_LOCK_FILE)
    })
}

/// What [`sweep_local_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSweep {
    /// What was removed: whole directories of dead instances, or the parts
    /// of one that keeps retained copies (its working databases, copies of
    /// checkpoints no longer retained).
    pub removed: Vec<PathBuf>,
    /// Local copies of retained checkpoints kept in dead instances' directories.
    pub kept: Vec<PathBuf>,
    /// Directories of live instances, left alone.
    pub live: Vec<PathBuf>,
    /// Bytes of the files removed (a file hard-linked into several removed
    /// places counted once).
    pub bytes_removed: u64,
}

/// Whether an instance directory is alive.
enum Instance {
    /// Not an instance directory: left alone.
    Unknown,
    /// Its lock is held.
    Live,
    /// Its lock was free and is held by the sweep now (`None`: no lock file).
    Dead(Option<File>),
}

fn instance_state(dir: &Path) -> Result<Instance> {
    let lock = dir.join(INSTANCE_LOCK_FILE);
    match std::fs::symlink_metadata(&lock) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(Instance::Unknown),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(if looks_like_instance(dir)? {
                Instance::Dead(None)
            } else {
                Instance::Unknown
            });
        }
        Err(e) => return Err(StateError::io(&lock, e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .map_err(|e| StateError::io(&lock, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Instance::Dead(Some(file))),
        Err(TryLockError::WouldBlock) => Ok(Instance::Live),
        Err(TryLockError::Error(e)) => Err(StateError::io(&lock, e)),
    }
}

/// A directory without a lock file whose every entry is named as a
/// backend's entries are (and that is not empty).
fn looks_like_instance(dir: &Path) -> Result<bool> {
    let names = names(dir)?;
    Ok(!names.is_empty()
        && names.iter().all(|n| {
            n.to_str().is_some_and(|n| {
                n == RESTORE_IMPORT_DIR
                    || CheckpointId::from_dir_name(n).is_some()
                    || n.strip_prefix("db-")
                        .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
            })
        }))
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StateError::io(dir, e))? {
        names.push(entry.map_err(|e| StateError::io(dir, e))?.file_name());
    }
    names.sort();
    Ok(names)
}

/// Adds the lengths of the files under `path` (links not followed) not yet
/// in `seen` to `bytes`.
fn add_size(path: &Path, seen: &mut HashSet<(u64, u64)>, bytes: &mut u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                add_size(&entry.path(), seen, bytes);
            }
        }
        return;
    }
    if !meta.is_file() {
        return;
    }
    #[cfg(unix)]
    let first = {
        use std::os::unix::fs::MetadataExt;
        seen.insert((meta.dev(), meta.ino()))
    };
    #[cfg(not(unix))]
    let first = {
        let _ = &seen;
        true
    };
    if first {
        *bytes += meta.len();
    }
}

fn remove(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        // Does not follow links inside the tree.
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Removes the directories of dead backend instances under `local_dir`
/// (see the module docs: an instance is dead when its lock is free),
/// keeping their local copies `chk-<n>` whose id is in `retained`, and
/// logs what it removed at `info`. Live instances' directories and
/// anything that is not an instance directory are left alone; a missing
/// `local_dir` has nothing to sweep.
///
/// Run it before the job's backends are created, with the ids its
/// checkpoint storage still retains; backends of other jobs that are alive
/// are safe (their locks are held), but a dead one's copies are removed
/// unless their ids are in `retained`, so give each job a local directory
/// of its own. Every removal is attempted; the first failure is returned.
pub fn sweep_local_dir(local_dir: &Path, retained: &[CheckpointId]) -> Result<LocalSweep> {
    let mut out = LocalSweep::default();
    let entries = match names(local_dir) {
        Ok(entries) => entries,
        Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let mut first_error: Option<StateError> = None;
    let mut seen = HashSet::new();
    for name in entries {
        let dir = local_dir.join(&name);
        // Links are never followed: a link is not an instance directory.
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let lock = match instance_state(&dir) {
            Ok(Instance::Unknown) => continue,
            Ok(Instance::Live) => {
                out.live.push(dir);
                continue;
            }
            Ok(Instance::Dead(lock)) => lock,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        if let Err(e) = sweep_dead(&dir, retained, &mut seen, &mut out) {
            first_error.get_or_insert(e);
        }
        drop(lock);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Removes a dead instance's directory `dir` but for the retained copies.
fn sweep_dead(
    dir: &Path,
    retained: &[CheckpointId],
    seen: &mut HashSet<(u64, u64)>,
    out: &mut LocalSweep,
) -> Result<()> {
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    let mut bytes = 0;
    let mut first_error = None;
    for name in names(dir)? {
        if name == INSTANCE_LOCK_FILE {
            continue;
        }
        let path = dir.join(&name);
        let retained_copy = name
            .to_str()
            .and_then(CheckpointId::from_dir_name)
            .is_some_and(|id| retained.contains(&id))
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if retained_copy {
            kept.push(path);
            continue;
        }
        add_size(&path, seen, &mut bytes);
        match remove(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(StateError::io(&path, e));
            }
        }
    }
    if kept.is_empty() && first_error.is_none() {
        // The lock file last: while it is there, the directory is still ours.
        let lock = dir.join(INSTANCE_LOCK_FILE);
        match std::fs::remove_file(&lock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io(&lock, e)),
        }
        std::fs::remove_dir(dir).map_err(|e| StateError::io(dir, e))?;
        tracing::info!(
            dir = %dir.display(),
            bytes,
            "removed the directory of a dead rocks backend instance"
        );
        out.removed.push(dir.to_path_buf());
    } else {
        tracing::info!(
            dir = %dir.display(),
            bytes,
            removed = removed.len(),
            kept = ?kept.iter().filter_map(|p| p.file_name()).collect::<Vec<_>>(),
            "swept the directory of a dead rocks backend instance, keeping the local copies of retained checkpoints"
        );
        out.removed.extend(removed);
        out.kept.extend(kept);
    }
    out.bytes_removed += bytes;
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// An instance directory with a working database and copies of `copies`.
    fn instance(local: &Path, name: &str, copies: &[u64]) -> PathBuf {
        let dir = local.join(name);
        write(&dir.join("db-1").join("000001.sst"), b"0123456789");
        for id in copies {
            write(&dir.join(format!("chk-{id}")).join("000001.sst"), b"abc");
        }
        dir
    }

    #[test]
    fn a_held_lock_is_live_and_a_free_one_is_dead() {
        let local = tempfile::tempdir().unwrap();
        let live = instance(local.path(), "op-0-live", &[1, 2]);
        let _held = lock_instance_dir(&live).unwrap();
        let dead = instance(local.path(), "op-0-dead", &[1, 2, 3]);
        // Taken and released: what a killed process leaves.
        drop(lock_instance_dir(&dead).unwrap());

        let swept = sweep_local_dir(local.path(), &[CheckpointId(2), CheckpointId(3)]).unwrap();
        assert_eq!(swept.live, vec![live.clone()]);
        assert_eq!(swept.kept, [dead.join("chk-2"), dead.join("chk-3")]);
        assert_eq!(swept.removed, [dead.join("chk-1"), dead.join("db-1")]);
        assert_eq!(swept.bytes_removed, 13);
        for id in 1..=2 {
            assert!(live.join(format!("chk-{id}")).is_dir());
        }
        assert!(live.join("db-1").is_dir());
        assert!(!dead.join("db-1").exists() && !dead.join("chk-1").exists());

        // Once nothing is retained, the dead directory goes whole.
        let swept = sweep_local_dir(local.path(), &[]).unwrap();
        assert_eq!(swept.removed, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.join("chk-1").is_dir());
    }

    #[test]
    fn a_lockless_directory_is_swept_only_if_it_looks_like_an_instance() {
        let local = tempfile::tempdir().unwrap();
        let old = instance(local.path(), "op-1-old", &[4]);
        std::fs::create_dir_all(old.join(RESTORE_IMPORT_DIR)).unwrap();
        let foreign = local.path().join("photos");
        write(&foreign.join("db-1").join("x"), b"x");
        write(&foreign.join("holiday.jpg"), b"x");
        std::fs::create_dir_all(local.path().join("empty")).unwrap();
        write(&local.path().join("notes.txt"), b"x");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&old, local.path().join("link")).unwrap();

        let swept = sweep_local_dir(local.path(), &[]).unwrap();
        assert_eq!(swept.removed, vec![old.clone()]);
        assert!(!old.exists());
        assert!(foreign.join("holiday.jpg").is_file());
        assert!(local.path().join("empty").is_dir());
        assert!(local.path().join("notes.txt").is_file());
        assert!(
            sweep_local_dir(&local.path().join("missing"), &[]).unwrap() == LocalSweep::default()
        );
    }

    #[test]
    fn a_directory_locked_by_an_adopter_is_live_and_only_its_lock_left_means_empty() {
        let local = tempfile::tempdir().unwrap();
        let dead = instance(local.path(), "op-0-dead", &[1]);
        drop(lock_instance_dir(&dead).unwrap());
        let adopted = try_adopt(&dead).unwrap();
        assert!(try_adopt(&dead).is_none(), "adopted twice");
        assert_eq!(
            sweep_local_dir(local.path(), &[]).unwrap().live,
            vec![dead.clone()]
        );
        drop(adopted);
        assert!(!holds_only_its_lock(&dead));
        std::fs::remove_dir_all(dead.join("chk-1")).unwrap();
        std::fs::remove_dir_all(dead.join("db-1")).unwrap();
        assert!(holds_only_its_lock(&dead));
    }
}
