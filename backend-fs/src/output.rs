//! [`FsOutput`]: a checkpoint stream written to one file.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use state_core::backend_support::{Fs, FsFile};
use state_core::{CheckpointOutput, Result, StateError, StreamHandle, StreamLocation};

/// A stream of checkpoint bytes being written to a file.
///
/// Bytes go through a buffer of the storage's write-buffer size, and their
/// CRC-32 is computed as they are written. [`CheckpointOutput::close`]
/// flushes, fsyncs the file and returns its handle; an output dropped without
/// being closed, or whose close fails, removes its file (best effort).
pub struct FsOutput {
    fs: Arc<dyn Fs>,
    /// Absolute path of the file.
    path: PathBuf,
    /// Path relative to the job directory, for the handle.
    relative: String,
    /// `None` once closed or abandoned.
    file: Option<Box<dyn FsFile>>,
    buf: Vec<u8>,
    capacity: usize,
    position: u64,
    crc: crc32fast::Hasher,
}

impl std::fmt::Debug for FsOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsOutput")
            .field("path", &self.path)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl FsOutput {
    /// An output writing to `file`, which was just created at `path` and is
    /// named `relative` in the handle.
    pub(crate) fn new(
        fs: Arc<dyn Fs>,
        file: Box<dyn FsFile>,
        path: PathBuf,
        relative: String,
        buffer_size: usize,
    ) -> Self {
        let capacity = buffer_size.max(1);
        FsOutput {
            fs,
            path,
            relative,
            file: Some(file),
            buf: Vec::with_capacity(capacity),
            capacity,
            position: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn file(&mut self) -> io::Result<&mut Box<dyn FsFile>> {
        self.file.as_mut().ok_or_else(|| {
            io::Error::other(format!("checkpoint stream {} is closed", self.relative))
        })
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.file()?.write_all(&buf);
        self.buf = buf;
        self.buf.clear();
        result
    }

    fn finish(&mut self) -> Result<StreamHandle> {
        self.flush_buffer()
            .map_err(|e| StateError::io(&self.path, e))?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| StateError::io(&self.path, io::Error::other("stream already closed")))?;
        file.sync_all().map_err(|e| StateError::io(&self.path, e))?;
        drop(file);
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
        Ok(StreamHandle {
            location: StreamLocation::File(std::mem::take(&mut self.relative)),
            size: self.position,
            crc32: crc.finalize(),
        })
    }

    fn remove(&mut self) {
        self.file = None;
        if let Err(e) = self.fs.remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(path = %self.path.display(), error = %e, "could not remove abandoned checkpoint stream");
        }
    }
}

impl Write for FsOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Err(io::Error::other(format!(
                "checkpoint stream {} is closed",
                self.relative
            )));
        }
        if self.buf.len() + data.len() > self.capacity {
            self.flush_buffer()?;
        }
        if data.len() >= self.capacity {
            self.file()?.write_all(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        self.crc.update(data);
        self.position += data.len() as u64;
        Ok(())
    }

    /// Hands buffered bytes to the file; durability comes only with `close`.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        self.file()?.flush()
    }
}

impl CheckpointOutput for FsOutput {
    fn position(&self) -> u64 {
        self.position
    }

    fn close(mut self: Box<Self>) -> Result<StreamHandle> {
        match self.finish() {
            Ok(handle) => {
                tracing::trace!(stream = %handle.describe(), bytes = handle.size, "closed checkpoint stream");
                Ok(handle)
            }
            Err(err) => {
                self.remove();
                Err(err)
            }
        }
    }
}

impl Drop for FsOutput {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::backend_support::StdFs;

    fn output(dir: &std::path::Path, buffer: usize) -> Box<FsOutput> {
        let path = dir.join("s");
        let file = StdFs.create(&path).unwrap();
        Box::new(FsOutput::new(
            Arc::new(StdFs),
            file,
            path,
            "chk-1/s".into(),
            buffer,
        ))
    }

    #[test]
    fn writes_through_the_buffer_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = output(dir.path(), 8);
        let mut all = Vec::new();
        for chunk in [&b"abc"[..], b"defgh", b"0123456789abcdef", b"", b"z"] {
            out.write_all(chunk).unwrap();
            all.extend_from_slice(chunk);
        }
        assert_eq!(out.position(), all.len() as u64);
        let handle = out.close().unwrap();
        assert_eq!(handle.location, StreamLocation::File("chk-1/s".into()));
        assert_eq!(handle.size, all.len() as u64);
        assert_eq!(handle.crc32, crc32fast::hash(&all));
        let bytes = std::fs::read(dir.path().join("s")).unwrap();
        assert_eq!(bytes, all);
        handle.check(&bytes).unwrap();
    }

    #[test]
    fn dropped_output_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = output(dir.path(), 4);
        out.write_all(b"some bytes").unwrap();
        drop(out);
        assert!(!dir.path().join("s").exists());
    }
}
