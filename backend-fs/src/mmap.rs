//! [`MappedFs`]: the real file system, reading large files by memory-mapping them.
//!
//! This module holds the crate's one `unsafe` call, [`memmap2::Mmap::map`].

use std::io;
use std::path::Path;

use bytes::Bytes;
use state_core::backend_support::{FileInfo, Fs, FsFile, StdFs};

/// Files up to this size are read into memory; larger ones are mapped.
/// Mapping costs a few system calls and page faults, which only pays off
/// for files of more than a few pages.
pub const MAP_THRESHOLD: u64 = 64 * 1024;

/// The real file system ([`StdFs`]) except that [`Fs::read`] memory-maps files
/// larger than [`MAP_THRESHOLD`] instead of copying them, so restoring a large
/// checkpoint reads its pages on demand from the page cache. Empty files read
/// as empty `Bytes`.
///
/// Only for files that are never modified while mapped, as checkpoint files
/// are (see the safety comment in `read`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MappedFs;

impl Fs for MappedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        StdFs.create(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_dir_all(path)
    }
    fn read(&self, path: &Path) -> io::Result<Bytes> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        if meta.len() <= MAP_THRESHOLD {
            return StdFs.read(path);
        }
        // SAFETY: a mapping is undefined behaviour if the file is modified or
        // truncated while mapped. Checkpoint files are written once, fsynced,
        // and then closed or renamed into place; cairn never modifies one in
        // place, and deletes it (unlink, which keeps a mapped inode alive) only
        // when no retained checkpoint uses it. Every read of checkpoint state
        // is checked against the CRC-32 in the metadata, so a file changed by
        // something outside cairn is detected as corrupt rather than trusted.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Bytes::from_owner(map))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdFs.read_dir(path)
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        StdFs.stat(path)
    }
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        StdFs.hard_link(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_small_large_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [0usize, 10, MAP_THRESHOLD as usize + 4097];
        for len in cases {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut f = MappedFs.create(&path).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            drop(f);
            assert_eq!(&MappedFs.read(&path).unwrap()[..], &data[..], "len {len}");
        }
    }

    #[test]
    fn missing_file_and_directory_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = MappedFs.read(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(MappedFs.read(dir.path()).is_err());
    }
}
