//! Ready-made sinks: print, an at-least-once file sink, and a collecting
//! sink for tests and demos.
//!
//! None of them takes part in two-phase commit: what they wrote between the
//! last completed checkpoint and a failure is written again after the restart
//! (at-least-once output, as seed 000 shows for `print()`).

use std::fmt::{self, Display};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use state_core::CheckpointId;
use state_core::OperatorStateStore;

use crate::error::{ExecutorError, Result};
use crate::sink::{Sink, SinkContext, SinkFactory};

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another subtask while it held the lock leaves the data
    // usable (lines or records already written stay written).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a [`PrintSink`] writes.
#[derive(Clone)]
enum PrintTarget {
    Stdout,
    Writer(Arc<Mutex<dyn Write + Send>>),
}

/// Prints records with [`Display`], one per line, like Flink's `print()`:
/// with a parallelism above 1 every line is prefixed `"{subtask + 1}> "`.
#[derive(Clone)]
pub struct PrintSink {
    target: PrintTarget,
}

impl fmt::Debug for PrintSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target {
            PrintTarget::Stdout => "stdout",
            PrintTarget::Writer(_) => "writer",
        };
        f.debug_struct("PrintSink")
            .field("target", &target)
            .finish()
    }
}

impl PrintSink {
    /// Prints to standard output.
    pub fn stdout() -> Self {
        PrintSink {
            target: PrintTarget::Stdout,
        }
    }

    /// Prints to `writer`, shared by all subtasks (each line is written
    /// whole under the lock).
    pub fn to_writer(writer: Arc<Mutex<dyn Write + Send>>) -> Self {
        PrintSink {
            target: PrintTarget::Writer(writer),
        }
    }
}

impl<T: Display + Send + 'static> SinkFactory<T> for PrintSink {
    fn create(&self, context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        Ok(Box::new(PrintWriter {
            target: self.target.clone(),
            prefix: if context.parallelism > 1 {
                format!("{}> ", u64::from(context.subtask) + 1)
            } else {
                String::new()
            },
            line: String::new(),
            _records: PhantomData,
        }))
    }
}

struct PrintWriter<T> {
    target: PrintTarget,
    prefix: String,
    line: String,
    _records: PhantomData<fn(T)>,
}

impl<T> PrintWriter<T> {
    fn flush(&mut self) -> Result<()> {
        match &self.target {
            PrintTarget::Stdout => std::io::stdout().flush(),
            PrintTarget::Writer(w) => lock(w).flush(),
        }
        .map_err(|e| ExecutorError::io(self.target_name(), e))
    }

    fn target_name(&self) -> &'static str {
        match self.target {
            PrintTarget::Stdout => "<stdout>",
            PrintTarget::Writer(_) => "<print sink writer>",
        }
    }
}

impl<T: Display + Send> Sink<T> for PrintWriter<T> {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> Result<()> {
        Ok(())
    }

    fn write(&mut self, record: T) -> Result<()> {
        use std::fmt::Write as _;
        self.line.clear();
        self.line.push_str(&self.prefix);
        // Writing into a String cannot fail.
        let _ = writeln!(self.line, "{record}");
        let result = match &self.target {
            PrintTarget::Stdout => std::io::stdout().lock().write_all(self.line.as_bytes()),
            PrintTarget::Writer(w) => lock(w).write_all(self.line.as_bytes()),
        };
        result.map_err(|e| ExecutorError::io(self.target_name(), e))
    }

    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut OperatorStateStore,
    ) -> Result<()> {
        self.flush()
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

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

/// Collects every record of every subtask and every restart into one shared
/// vector; read it through the [`Collected`] handle. For tests and demos.
pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> fmt::Debug for CollectSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectSink")
            .field("records", &lock(&self.records).len())
            .finish()
    }
}

impl<T: Clone + Send + 'static> CollectSink<T> {
    /// A sink and the handle reading what it collected.
    #[allow(clippy::new_ret_no_self)] // returns the sink with its reading handle
    pub fn new() -> (CollectSink<T>, Collected<T>) {
        let records = Arc::new(Mutex::new(Vec::new()));
        (
            CollectSink {
                records: records.clone(),
            },
            Collected { records },
        )
    }
}

impl<T: Clone + Send + 'static> SinkFactory<T> for CollectSink<T> {
    fn create(&self, _context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        Ok(Box::new(CollectWriter {
            records: self.records.clone(),
        }))
    }
}

struct CollectWriter<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Send> Sink<T> for CollectWriter<T> {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> Result<()> {
        Ok(())
    }

    fn write(&mut self, record: T) -> Result<()> {
        lock(&self.records).push(record);
        Ok(())
    }
}

/// What a [`CollectSink`] collected so far; clones share the same records.
pub struct Collected<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            records: self.records.clone(),
        }
    }
}

impl<T> fmt::Debug for Collected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected")
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Clone> Collected<T> {
    /// A copy of the records collected so far, in arrival order.
    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.records).clone()
    }
}

impl<T> Collected<T> {
    /// How many records were collected.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn print_sink_prefixes_subtasks_only_with_parallelism() {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = PrintSink::to_writer(buf.clone());
        let mut single: Box<dyn Sink<String>> = sink.create(ctx(0, 1)).unwrap();
        single.open(ctx(0, 1), None).unwrap();
        single.write("(a,1)".to_string()).unwrap();
        let mut second: Box<dyn Sink<i32>> = sink.create(ctx(1, 2)).unwrap();
        second.open(ctx(1, 2), None).unwrap();
        second.write(42).unwrap();
        second.finish().unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "(a,1)\n2> 42\n");
        let mut out: Box<dyn Sink<&'static str>> = PrintSink::stdout().create(ctx(0, 1)).unwrap();
        out.write("print sink test line").unwrap();
        out.finish().unwrap();
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

    #[test]
    fn collect_sink_shares_records_across_subtasks_and_restarts() {
        let (sink, collected) = CollectSink::<u32>::new();
        let view = collected.clone();
        assert!(view.is_empty());
        for attempt in 0..2u32 {
            for subtask in 0..2 {
                let mut s = sink.create(ctx(subtask, 2)).unwrap();
                s.open(ctx(subtask, 2), None).unwrap();
                s.write(attempt * 10 + subtask).unwrap();
                s.finish().unwrap();
            }
        }
        assert_eq!(view.len(), 4);
        assert_eq!(collected.snapshot(), vec![0, 1, 10, 11]);
    }
}
