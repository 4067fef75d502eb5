//! The backend's local checkpoint copies on disk: checking them against
//! their handles (CRC-32s on several threads), noting verified files, and
//! removing them.

use std::io;
use std::path::{Path, PathBuf};

use state_core::{SharedFile, StreamHandle};

use crate::verified::VerifiedFiles;

/// Removes a directory, logging failure (the data is only a local copy).
pub(crate) fn remove_dir_logged(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!(dir = %dir.display(), error = %e, "could not remove local checkpoint directory");
    }
}

/// Bytes one verification task reads and checksums.
const VERIFY_CHUNK: u64 = 8 << 20;

/// The CRC-32 of `len` bytes of `path` from `offset`, read in 1 MiB pieces
/// into `buf`.
fn chunk_crc(
    path: &Path,
    offset: u64,
    len: u64,
    buf: &mut [u8],
) -> std::result::Result<crc32fast::Hasher, String> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    file.seek(SeekFrom::Start(offset)).map_err(fail)?;
    let mut crc = crc32fast::Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let piece = buf.get_mut(..n).unwrap_or_default();
        file.read_exact(piece).map_err(fail)?;
        crc.update(piece);
        left -= n as u64;
    }
    Ok(crc)
}

/// The CRC-32 of the whole file at `path`.
pub(crate) fn file_crc(path: &Path) -> std::result::Result<u32, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut buf = vec![0u8; 1 << 20];
    chunk_crc(path, 0, len, &mut buf).map(crc32fast::Hasher::finalize)
}

/// Whether every `(path, stream)` holds exactly the stream's bytes: the
/// lengths first (cheap), then the CRC-32s, the files cut into 8 MiB
/// chunks checksummed on up to four threads and combined in order, so a
/// local copy is verified at several times the speed of one reader.
pub(crate) fn local_files_match(
    files: &[(PathBuf, &StreamHandle)],
) -> std::result::Result<(), String> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut chunks = Vec::new();
    for (i, (path, stream)) in files.iter().enumerate() {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if len != stream.size {
            return Err(format!(
                "{}: {len} bytes, the handle says {}",
                path.display(),
                stream.size
            ));
        }
        // An empty file is one empty chunk (its CRC is that of nothing).
        chunks.push((i, 0, VERIFY_CHUNK.min(len)));
        let mut offset = VERIFY_CHUNK.min(len);
        while offset < len {
            let n = VERIFY_CHUNK.min(len - offset);
            chunks.push((i, offset, n));
            offset += n;
        }
    }
    let results: Vec<Mutex<Option<crc32fast::Hasher>>> =
        chunks.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let work = || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            let (Some(&(file, offset, len)), Some(slot)) = (chunks.get(c), results.get(c)) else {
                return;
            };
            let Some((path, _)) = files.get(file) else {
                return;
            };
            match chunk_crc(path, offset, len, &mut buf) {
                Ok(crc) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(crc),
                Err(e) => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    next.store(chunks.len(), Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(chunks.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut combined: Vec<crc32fast::Hasher> =
        files.iter().map(|_| crc32fast::Hasher::new()).collect();
    for (&(file, ..), slot) in chunks.iter().zip(results) {
        let crc = slot
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or("a chunk was not checksummed")?;
        if let Some(c) = combined.get_mut(file) {
            c.combine(&crc);
        }
    }
    for ((path, stream), crc) in files.iter().zip(combined) {
        let crc = crc.finalize();
        if crc != stream.crc32 {
            return Err(format!(
                "{}: crc32 {crc:08x}, the handle says {:08x}",
                path.display(),
                stream.crc32
            ));
        }
    }
    Ok(())
}

/// Checksums the files of the local copy `dir` that `verified` has not
/// noted and that settled since they were written, noting those that match
/// their handle: files uploaded right after they were written cannot be
/// noted then, so the next snapshot notes them, off the task thread.
pub(crate) fn scrub_local_copy(dir: &Path, shared: &[SharedFile], verified: &VerifiedFiles) {
    for f in shared {
        let path = dir.join(&f.name);
        if verified.is_noted(&path) {
            continue;
        }
        let reading = VerifiedFiles::before_read(&path);
        match file_crc(&path) {
            Ok(crc) if crc == f.handle.crc32 => verified.note(&path, reading, crc),
            Ok(crc) => tracing::warn!(
                file = %path.display(),
                crc32 = format_args!("{crc:08x}"),
                expected = format_args!("{:08x}", f.handle.crc32),
                "local checkpoint file differs from the uploaded one; restores will not use it"
            ),
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "could not scrub local checkpoint file")
            }
        }
    }
}
