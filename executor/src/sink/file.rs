//! [`FileSink`]: records appended one per line to a part file per subtask,
//! fsynced at every checkpoint.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use state_core::CheckpointId;
use state_core::OperatorStateStore;

use super::{Sink, SinkContext, SinkFactory};
use crate::error::{ExecutorError, Result};

/// Appends records with [`Display`], one per line, to `<dir>/part-<subtask>`,
/// flushing and fsyncing at every checkpoint and at the end of the input.
///
/// At-least-once: lines written before a failure stay in the file and the
/// records after the restored checkpoint are appended again.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    /// A sink writing part files into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink { dir: dir.into() }
    }

    /// The directory written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file subtask `subtask` appends to.
    pub fn part_path(&self, subtask: u32) -> PathBuf {
        self.dir.join(format!("part-{subtask}"))
    }
}

impl<T: Display + Send + 'static> SinkFactory<T> for FileSink {
    fn create(&self, context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        Ok(Box::new(FileWriter {
            dir: self.dir.clone(),
            path: self.part_path(context.subtask),
            out: None,
            _records: PhantomData,
        }))
    }
}

struct FileWriter<T> {
    dir: PathBuf,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    _records: PhantomData<fn(T)>,
}

impl<T> FileWriter<T> {
    fn out(&mut self) -> Result<&mut BufWriter<File>> {
        match self.out {
            Some(ref mut out) => Ok(out),
            None => Err(ExecutorError::InvalidJob(format!(
                "file sink {} written before it was opened",
                self.path.display()
            ))),
        }
    }

    fn flush_and_sync(&mut self) -> Result<()> {
        let path = self.path.clone();
        let out = self.out()?;
        out.flush().map_err(|e| ExecutorError::io(&path, e))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| ExecutorError::io(&path, e))
    }
}

impl<T: Display + Send> Sink<T> for FileWriter<T> {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| ExecutorError::io(&self.dir, e))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ExecutorError::io(&self.path, e))?;
        self.out = Some(BufWriter::new(file));
        Ok(())
    }

    fn write(&mut self, record: T) -> Result<()> {
        let path = self.path.clone();
        writeln!(self.out()?, "{record}").map_err(|e| ExecutorError::io(path, e))
    }

    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut OperatorStateStore,
    ) -> Result<()> {
        self.flush_and_sync()
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_and_sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(subtask: u32, parallelism: u32) -> SinkContext {
        SinkContext {
            subtask,
            parallelism,
        }
    }

    #[test]
    fn file_sink_is_at_least_once() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path().join("out"));
        let mut first: Box<dyn Sink<String>> = sink.create(ctx(1, 2)).unwrap();
        first.open(ctx(1, 2), None).unwrap();
        first.write("(a,1)".into()).unwrap();
        let mut state = OperatorStateStore::new();
        first.snapshot_state(CheckpointId(1), &mut state).unwrap();
        assert_eq!(
            std::fs::read_to_string(sink.part_path(1)).unwrap(),
            "(a,1)\n"
        );
        first.write("(a,2)".into()).unwrap();
        first.finish().unwrap();
        // The attempt fails after writing; the restart replays from the checkpoint.
        drop(first);
        let mut second: Box<dyn Sink<String>> = sink.create(ctx(1, 2)).unwrap();
        second.open(ctx(1, 2), None).unwrap();
        second.write("(a,2)".into()).unwrap();
        second.write("(b,1)".into()).unwrap();
        second.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(sink.part_path(1)).unwrap(),
            "(a,1)\n(a,2)\n(a,2)\n(b,1)\n"
        );
        assert!(!sink.part_path(0).exists());
        let mut unopened: Box<dyn Sink<String>> = sink.create(ctx(0, 2)).unwrap();
        assert!(unopened.write("x".into()).is_err());
    }
}
