//! [`WriteAheadSink`]: output for targets that take no part in a
//! transaction (Flink's `GenericWriteAheadSink`), here lines appended to a
//! file.
//!
//! Records are held back: at each barrier the records since the previous
//! one become a committable stored *in the checkpoint* (the write-ahead
//! log), and only when the checkpoint completes are they appended to the
//! target, fsynced, and the checkpoint noted in a progress file beside it
//! (`<target>.progress-<subtask>`, replaced atomically). A committable whose
//! checkpoint the progress file already names is skipped, so a restore does
//! not append a checkpoint's records again once its progress was written.
//!
//! **The guarantee, exactly:** no record is lost, and no checkpoint's
//! records are appended twice — except when the process dies after
//! appending a checkpoint's records and before its progress file is
//! replaced: then that one checkpoint's records are appended again after
//! the restore. The target cannot tell the two writes apart. This is the
//! caveat Flink documents for its write-ahead sink; the file sink and the
//! PostgreSQL sink, which take part in the commit, have none. Records are
//! also visible only after their checkpoint completes, so output lags by up
//! to one checkpoint interval, and the checkpoint carries the records of
//! one interval.

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use state_core::CheckpointId;
use state_core::backend_support::{StdFs, write_atomic};

use super::SinkContext;
use super::committing::{Committer, CommittingSink, CommittingWriter, TwoPhaseCommit};
use crate::error::{ExecutorError, Result};

/// Holds records in the checkpoint until it completes, then appends them,
/// one [`Display`] line each, to a file; see the module docs for exactly
/// what it guarantees.
#[derive(Debug, Clone)]
pub struct WriteAheadSink<T> {
    target: PathBuf,
    _records: PhantomData<fn(T)>,
}

impl<T: Display + Send + 'static> WriteAheadSink<T> {
    /// The committing sink appending to `target` (created if missing).
    pub fn new(target: impl Into<PathBuf>) -> Self {
        WriteAheadSink {
            target: target.into(),
            _records: PhantomData,
        }
    }

    /// A sink factory appending to `target` after each completed checkpoint.
    pub fn to_file(target: impl Into<PathBuf>) -> TwoPhaseCommit<WriteAheadSink<T>> {
        TwoPhaseCommit::new(WriteAheadSink::new(target))
    }

    /// The progress file of the subtask that wrote a batch.
    pub fn progress_path(target: &Path, subtask: u32) -> PathBuf {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".progress-{subtask}"));
        target.with_file_name(name)
    }
}

/// The records of one checkpoint of one subtask, as text lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecords {
    /// The subtask that wrote them (its progress file decides).
    pub subtask: u32,
    /// One line per record, in order.
    pub lines: Vec<String>,
}

impl<T: Display + Send + 'static> CommittingSink<T> for WriteAheadSink<T> {
    type Committable = HeldRecords;

    fn writer(&self, context: SinkContext) -> Result<Box<dyn CommittingWriter<T, HeldRecords>>> {
        if self.target.is_dir() {
            // No restart can fix it: fail the job at once.
            return Err(ExecutorError::InvalidJob(format!(
                "write-ahead sink target {} is a directory, not a file",
                self.target.display()
            )));
        }
        Ok(Box::new(HoldingWriter {
            subtask: context.subtask,
            lines: Vec::new(),
            _records: PhantomData,
        }))
    }

    fn committer(&self, _context: SinkContext) -> Result<Box<dyn Committer<HeldRecords>>> {
        Ok(Box::new(Appender {
            target: self.target.clone(),
        }))
    }
}

struct HoldingWriter<T> {
    subtask: u32,
    lines: Vec<String>,
    _records: PhantomData<fn(T)>,
}

impl<T: Display> CommittingWriter<T, HeldRecords> for HoldingWriter<T> {
    fn write(&mut self, record: T) -> Result<()> {
        self.lines.push(record.to_string());
        Ok(())
    }

    fn prepare_commit(&mut self, _checkpoint: CheckpointId) -> Result<Vec<HeldRecords>> {
        if self.lines.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![HeldRecords {
            subtask: self.subtask,
            lines: std::mem::take(&mut self.lines),
        }])
    }
}

struct Appender {
    target: PathBuf,
}

impl Appender {
    /// The last checkpoint whose records `subtask`'s progress file names.
    fn progress(&self, subtask: u32) -> Result<u64> {
        let path = WriteAheadSink::<String>::progress_path(&self.target, subtask);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| {
                ExecutorError::InvalidJob(format!(
                    "write-ahead sink progress file {} does not hold a checkpoint id: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ExecutorError::io(&path, e)),
        }
    }

    /// Notes `checkpoint` in `subtask`'s progress file, durably and
    /// atomically (each subtask's file has its own temp file).
    fn set_progress(&self, subtask: u32, checkpoint: CheckpointId) -> Result<()> {
        let path = WriteAheadSink::<String>::progress_path(&self.target, subtask);
        let text = format!("{}\n", checkpoint.get());
        write_atomic(&StdFs, &path, text.as_bytes())?;
        Ok(())
    }
}

impl Committer<HeldRecords> for Appender {
    fn commit(&mut self, checkpoint: CheckpointId, held: &HeldRecords) -> Result<()> {
        // A job without checkpointing commits once, at the end of its input.
        if checkpoint.get() > 0 && self.progress(held.subtask)? >= checkpoint.get() {
            return Ok(());
        }
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ExecutorError::io(dir, e))?;
        }
        let mut text = String::new();
        for line in &held.lines {
            text.push_str(line);
            text.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.target)
            .map_err(|e| ExecutorError::io(&self.target, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ExecutorError::io(&self.target, e))?;
        if checkpoint.get() > 0 {
            self.set_progress(held.subtask, checkpoint)?;
        }
        Ok(())
    }

    fn recover(&mut self, _restored: Option<CheckpointId>) -> Result<()> {
        // Held records of checkpoints after the restored one were never
        // appended: they are only in checkpoints that did not complete.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use state_core::OperatorStateStore;

    use super::*;
    use crate::sink::{Sink, SinkFactory};

    #[test]
    fn records_appear_after_completion_and_a_replayed_checkpoint_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out.txt");
        let sink = WriteAheadSink::<String>::to_file(&target);
        let ctx = SinkContext::new(0, 1);
        let mut s: Box<dyn Sink<String>> = sink.create(ctx).unwrap();
        s.open(ctx, None).unwrap();
        s.write("a".into()).unwrap();
        let mut state = OperatorStateStore::new();
        s.snapshot_state(CheckpointId(1), &mut state).unwrap();
        assert!(!target.exists(), "held until the checkpoint completes");
        s.notify_checkpoint_complete(CheckpointId(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\n");
        // A restore from 1 finds 1's records in its state, already appended.
        let restored = ctx.restored_from(Some(CheckpointId(1)));
        let mut again: Box<dyn Sink<String>> = sink.create(restored).unwrap();
        again.open(restored, Some(&state)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\n");
        assert_eq!(
            std::fs::read_to_string(WriteAheadSink::<String>::progress_path(&target, 0)).unwrap(),
            "1\n"
        );
    }

    #[test]
    fn a_directory_as_the_target_is_an_error_no_restart_can_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = WriteAheadSink::<String>::to_file(tmp.path())
            .create(SinkContext::new(0, 1))
            .err()
            .unwrap();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn a_damaged_progress_file_fails_the_commit_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out.txt");
        let progress = WriteAheadSink::<String>::progress_path(&target, 0);
        std::fs::write(&progress, "not a number").unwrap();
        let mut appender = Appender {
            target: target.clone(),
        };
        let held = HeldRecords {
            subtask: 0,
            lines: vec!["a".into()],
        };
        let err = appender
            .commit(CheckpointId(3), &held)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&progress.display().to_string()), "{err}");
        assert!(!target.exists(), "nothing appended");
        // Two subtasks' progress files never share a temp file.
        let a = Appender {
            target: target.clone(),
        };
        std::fs::remove_file(&progress).unwrap();
        a.set_progress(0, CheckpointId(4)).unwrap();
        a.set_progress(1, CheckpointId(5)).unwrap();
        assert_eq!(a.progress(0).unwrap(), 4);
        assert_eq!(a.progress(1).unwrap(), 5);
    }
}
