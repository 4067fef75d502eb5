//! File access behind a trait, and the one durable-write helper.
//!
//! Every durable write in cairn goes through [`write_atomic`]: write a temp
//! file, fsync it, rename it over the target, fsync the directory. Storage
//! implementations take an `Arc<dyn Fs>` so tests can inject failures and
//! crashes at every write, fsync and rename.

use std::fmt::Debug;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{Result, StateError};

/// A file opened for writing by [`Fs::create`].
pub trait FsFile: Write + Send {
    /// Flushes the file's data and metadata to stable storage (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// What [`Fs::stat`] reports about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes (0 for directories).
    pub len: u64,
    /// Whether the path is a directory.
    pub is_dir: bool,
    /// Last modification, milliseconds since the Unix epoch (0 if unknown).
    pub modified_millis: u64,
}

/// The file operations cairn's storage needs. Paths are absolute or relative
/// to the process's working directory; implementations must be thread-safe.
pub trait Fs: Send + Sync + Debug {
    /// Creates `path` and any missing parents; succeeds if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Renames `from` to `to`, replacing `to` atomically if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole file. Implementations may map it instead of copying.
    fn read(&self, path: &Path) -> io::Result<Bytes>;
    /// The names of a directory's entries, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Information about a path, or `None` if it does not exist.
    fn stat(&self, path: &Path) -> io::Result<Option<FileInfo>>;
    /// Creates a hard link `dst` to `src`.
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()>;
}

/// The real filesystem through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

struct StdFile(std::fs::File);

impl Write for StdFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for StdFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(StdFile(std::fs::File::create(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn read(&self, path: &Path) -> io::Result<Bytes> {
        std::fs::read(path).map(Bytes::from)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileInfo {
                len: if m.is_dir() { 0 } else { m.len() },
                is_dir: m.is_dir(),
                modified_millis: m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        std::fs::hard_link(src, dst)
    }
}

/// The temp name [`write_atomic`] uses next to `path`.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.inprogress"))
}

/// Writes `contents` to `path` durably and atomically: a temp file is written
/// and fsynced, renamed over `path`, and the directory is fsynced. After a
/// crash `path` holds either its old contents or all of `contents`, never a
/// mix. Each step's error is returned with the path it was about; on error the
/// temp file is removed (best effort) and `path` is untouched.
pub fn write_atomic(fs: &dyn Fs, path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut file = fs.create(&tmp).map_err(|e| StateError::io(&tmp, e))?;
        file.write_all(contents)
            .map_err(|e| StateError::io(&tmp, e))?;
        file.sync_all().map_err(|e| StateError::io(&tmp, e))?;
        drop(file);
        fs.rename(&tmp, path).map_err(|e| StateError::io(path, e))
    })();
    if let Err(e) = result {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    sync_parent(fs, path)
}

/// Fsyncs the directory holding `path`.
pub fn sync_parent(fs: &dyn Fs, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs.sync_dir(dir).map_err(|e| StateError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_metadata");
        write_atomic(&StdFs, &path, b"one").unwrap();
        write_atomic(&StdFs, &path, b"two").unwrap();
        assert_eq!(&StdFs.read(&path).unwrap()[..], b"two");
        assert_eq!(
            StdFs.read_dir(dir.path()).unwrap(),
            vec!["_metadata".to_string()]
        );
    }

    #[test]
    fn write_atomic_into_missing_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("_metadata");
        let err = write_atomic(&StdFs, &path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
