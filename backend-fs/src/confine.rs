//! Keeping every file access inside the job directory.
//!
//! Paths come from `_metadata` files and directory listings, which are
//! untrusted input (copied between machines, damaged, crafted). Lexical
//! checks ([`crate::FsCheckpointStorage::resolve`]) keep `..` and absolute
//! paths out; this module keeps *links* out: every component below the job
//! directory is examined with [`std::fs::symlink_metadata`], so no symbolic
//! link inside a job directory is ever followed, and only regular files are
//! opened, so a FIFO or a socket planted as a checkpoint file is an error
//! naming it instead of a read that never returns. The job directory itself
//! may be a link (the user's choice); nothing below it may.
//!
//! [`remove_below`] is the one function through which the storage, the
//! orphan sweep and `checkpoints gc` delete anything: it removes regular
//! files, symbolic links (the link, never its target) and empty directories
//! below the root, and refuses everything else.
//!
//! What is assumed (the trust boundary): no other process swaps a component
//! for a link between the check and the use. cairn's own processes hold the
//! job lock; a hostile writer with access to the job directory during a run
//! is out of scope.

use std::path::{Component, Path};

use state_core::backend_support::Fs;
use state_core::{Result, StateError};

/// What is at a path below the job directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing (a missing component on the way, or the path itself).
    Missing,
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Link,
    /// A FIFO, socket or device.
    Special,
}

/// `path`, which must lie below `root`, relative to it, for messages.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What is at `path` (below `root`), after checking that every directory on
/// the way from `root` is a real directory: a link or a non-directory on
/// the way is an error naming it.
pub(crate) fn examine(root: &Path, path: &Path) -> Result<Found> {
    let Ok(relative) = path.strip_prefix(root) else {
        return Err(StateError::corrupted(
            path.display().to_string(),
            "path is outside the job directory",
        ));
    };
    let mut current = root.to_path_buf();
    let parts: Vec<Component<'_>> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(StateError::corrupted(
                shown(root, path),
                "path is not a plain path inside the job directory",
            ));
        };
        current.push(name);
        let found = match std::fs::symlink_metadata(&current) {
            Ok(meta) => {
                let kind = meta.file_type();
                if kind.is_symlink() {
                    Found::Link
                } else if kind.is_dir() {
                    Found::Dir
                } else if kind.is_file() {
                    Found::File
                } else {
                    Found::Special
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(StateError::io(&current, e)),
        };
        let last = i + 1 == parts.len();
        if last {
            return Ok(found);
        }
        match found {
            Found::Dir => {}
            Found::Link => {
                return Err(StateError::corrupted(
                    shown(root, &current),
                    "is a symbolic link; cairn never follows links inside a job directory",
                ));
            }
            _ => {
                return Err(StateError::corrupted(
                    shown(root, &current),
                    "is not a directory",
                ));
            }
        }
    }
    Ok(Found::Dir)
}

/// Checks that `path` (below `root`) may be opened for reading: a regular
/// file reached through real directories. Returns `false` when it does not
/// exist; anything else than a regular file is an error naming it.
pub(crate) fn readable_file(root: &Path, path: &Path) -> Result<bool> {
    match examine(root, path)? {
        Found::File => Ok(true),
        Found::Missing => Ok(false),
        Found::Link => Err(StateError::corrupted(
            shown(root, path),
            "is a symbolic link; cairn reads only regular files inside a job directory",
        )),
        Found::Dir => Err(StateError::corrupted(
            shown(root, path),
            "is a directory, not a file",
        )),
        Found::Special => Err(StateError::corrupted(
            shown(root, path),
            "is not a regular file (a FIFO, socket or device); it is never opened",
        )),
    }
}

/// Checks that the directory `dir` (below `root`, or `root` itself) may be
/// written into: every component a real directory or missing (then created
/// by the caller).
pub(crate) fn writable_dir(root: &Path, dir: &Path) -> Result<()> {
    if dir == root {
        return Ok(());
    }
    match examine(root, dir)? {
        Found::Dir | Found::Missing => Ok(()),
        Found::Link => Err(StateError::corrupted(
            shown(root, dir),
            "is a symbolic link; cairn never writes through links inside a job directory",
        )),
        _ => Err(StateError::corrupted(
            shown(root, dir),
            "is not a directory",
        )),
    }
}

/// Removes `path` below `root`: a regular file, a special file or a
/// symbolic link (the link itself), or, with `dir`, a directory and
/// everything below it (links in it removed, never followed). Missing is
/// success. The one way anything in a job directory is deleted.
pub(crate) fn remove_below(fs: &dyn Fs, root: &Path, path: &Path, dir: bool) -> Result<()> {
    if path == root {
        return Err(StateError::invalid(format!(
            "refusing to remove the job directory {} itself",
            root.display()
        )));
    }
    let result = match examine(root, path)? {
        Found::Missing => return Ok(()),
        Found::File | Found::Link | Found::Special => fs.remove_file(path),
        Found::Dir if dir => fs.remove_dir_all(path),
        // Empty directories only (the sweep's): refused when not empty.
        Found::Dir => std::fs::remove_dir(path),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use state_core::backend_support::StdFs;

    use super::*;

    #[test]
    fn links_on_the_way_are_refused_and_a_link_itself_is_removed_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("job");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim.sst"), b"precious").unwrap();
        symlink(&outside, root.join("shared").join("evil")).unwrap();
        symlink(
            outside.join("victim.sst"),
            root.join("shared").join("link.sst"),
        )
        .unwrap();

        let through = root.join("shared").join("evil").join("victim.sst");
        let err = readable_file(&root, &through).unwrap_err();
        assert!(err.to_string().contains("shared/evil"), "{err}");
        assert!(remove_below(&StdFs, &root, &through, false).is_err());
        let err = readable_file(&root, &root.join("shared").join("link.sst")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        remove_below(&StdFs, &root, &root.join("shared").join("link.sst"), false).unwrap();
        remove_below(&StdFs, &root, &root.join("shared").join("evil"), true).unwrap();
        assert_eq!(
            std::fs::read(outside.join("victim.sst")).unwrap(),
            b"precious"
        );
        assert!(!root.join("shared").join("evil").exists());
        assert!(remove_below(&StdFs, &root, &root, true).is_err());
        assert!(writable_dir(&root, &root.join("shared")).is_ok());
    }

    #[test]
    fn a_fifo_is_reported_without_being_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let fifo = root.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo (coreutils) failed");
        let err = readable_file(&root, &fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        remove_below(&StdFs, &root, &fifo, false).unwrap();
        assert!(std::fs::symlink_metadata(&fifo).is_err());
    }
}
