//! [`PrintSink`]: records printed one per line, like Flink's `print()`.
//!
//! At-least-once: lines printed between the last completed checkpoint and a
//! failure are printed again after the restart (the WordCount
//! failure-and-recovery walk-through of `cairn demo` shows it).

use std::fmt::{self, Display};
use std::io::Write;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use state_core::CheckpointId;
use state_core::OperatorStateStore;

use super::{Sink, SinkContext, SinkFactory, lock};
use crate::error::{ExecutorError, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(subtask: u32, parallelism: u32) -> SinkContext {
        SinkContext::new(subtask, parallelism)
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
}
