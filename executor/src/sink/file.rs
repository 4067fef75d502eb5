//! [`FileSink`]: exactly-once part files, Flink's `FileSink` (row format).
//!
//! Each subtask appends records, one [`Display`] line each, to a hidden
//! in-progress file `.part-<subtask>-<after>-<seq>.inprogress`, where
//! `after` is the last checkpoint the subtask had pre-committed (or restored
//! from) when the file was opened and `seq` counts files within it. At a
//! checkpoint's barrier the file is flushed, fsynced and closed: it is
//! *pending*, its committable is its name. When the checkpoint completes it
//! is committed by an atomic rename to `part-<subtask>-<after>-<seq>` (and a
//! directory fsync), so a reader listing the directory sees whole,
//! committed files only: names without a leading dot.
//!
//! After a restore from checkpoint `n`, the pending files it holds are
//! renamed (committing a file already renamed succeeds), then every
//! in-progress file with `after >= n` is removed: it was written after `n`
//! and its records are read again. Files with `after < n` are never removed
//! by a restore: they are committed files or pending ones that `n` holds.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use state_core::CheckpointId;
use state_core::backend_support::{Fs, StdFs};

use super::SinkContext;
use super::committing::{Committer, CommittingSink, CommittingWriter, TwoPhaseCommit};
use crate::error::{ExecutorError, Result};

/// Writes exactly-once part files into a directory; see the module docs.
/// Use it through [`FileSink::exactly_once`] (a [`TwoPhaseCommit`]).
#[derive(Debug, Clone)]
pub struct FileSink<T> {
    dir: PathBuf,
    _records: PhantomData<fn(T)>,
}

impl<T: Display + Send + 'static> FileSink<T> {
    /// The committing sink writing part files into `dir` (created if
    /// missing); run it with [`TwoPhaseCommit`], or use
    /// [`FileSink::exactly_once`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink {
            dir: dir.into(),
            _records: PhantomData,
        }
    }

    /// A sink factory writing part files into `dir`, committed at each
    /// completed checkpoint, with the default commit retries.
    pub fn exactly_once(dir: impl Into<PathBuf>) -> TwoPhaseCommit<FileSink<T>> {
        TwoPhaseCommit::new(FileSink::new(dir))
    }

    /// The directory written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A pending part file: its hidden name and the name it is committed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFile {
    /// `.part-<subtask>-<after>-<seq>.inprogress`, in the sink's directory.
    pub pending: String,
    /// `part-<subtask>-<after>-<seq>`.
    pub committed: String,
}

/// What a part file's name says.
struct PartName {
    subtask: u32,
    after: u64,
}

/// Reads `.part-<subtask>-<after>-<seq>.inprogress`.
fn parse_in_progress(name: &str) -> Option<PartName> {
    let rest = name.strip_prefix(".part-")?.strip_suffix(".inprogress")?;
    let mut fields = rest.split('-');
    let subtask = fields.next()?.parse().ok()?;
    let after = fields.next()?.parse().ok()?;
    fields.next()?.parse::<u64>().ok()?;
    fields
        .next()
        .is_none()
        .then_some(PartName { subtask, after })
}

fn sync_dir(dir: &Path) -> Result<()> {
    StdFs.sync_dir(dir).map_err(|e| ExecutorError::io(dir, e))
}

impl<T: Display + Send + 'static> CommittingSink<T> for FileSink<T> {
    type Committable = PendingFile;

    fn writer(&self, context: SinkContext) -> Result<Box<dyn CommittingWriter<T, PendingFile>>> {
        if self.dir.exists() && !self.dir.is_dir() {
            // No restart can fix it: fail the job at once.
            return Err(ExecutorError::InvalidJob(format!(
                "file sink directory {} exists and is not a directory",
                self.dir.display()
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| ExecutorError::io(&self.dir, e))?;
        Ok(Box::new(PartWriter {
            dir: self.dir.clone(),
            subtask: context.subtask,
            after: context.restored.map_or(0, CheckpointId::get),
            seq: 0,
            open: None,
            _records: PhantomData,
        }))
    }

    fn committer(&self, context: SinkContext) -> Result<Box<dyn Committer<PendingFile>>> {
        Ok(Box::new(PartCommitter {
            dir: self.dir.clone(),
            context,
        }))
    }
}

/// One subtask's writer.
struct PartWriter<T> {
    dir: PathBuf,
    subtask: u32,
    /// The last checkpoint pre-committed or restored from.
    after: u64,
    /// Files opened since `after`.
    seq: u32,
    /// The in-progress file and its names.
    open: Option<(BufWriter<File>, PendingFile)>,
    _records: PhantomData<fn(T)>,
}

impl<T: Display> CommittingWriter<T, PendingFile> for PartWriter<T> {
    fn write(&mut self, record: T) -> Result<()> {
        if self.open.is_none() {
            let base = format!("part-{}-{}-{}", self.subtask, self.after, self.seq);
            let names = PendingFile {
                pending: format!(".{base}.inprogress"),
                committed: base,
            };
            let path = self.dir.join(&names.pending);
            let file = File::create(&path).map_err(|e| ExecutorError::io(&path, e))?;
            self.seq += 1;
            self.open = Some((BufWriter::new(file), names));
        }
        let Some((out, names)) = self.open.as_mut() else {
            return Ok(());
        };
        writeln!(out, "{record}").map_err(|e| ExecutorError::io(self.dir.join(&names.pending), e))
    }

    fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<PendingFile>> {
        let closed = match self.open.take() {
            None => Vec::new(),
            Some((out, names)) => {
                let path = self.dir.join(&names.pending);
                let file = out
                    .into_inner()
                    .map_err(|e| ExecutorError::io(&path, e.into_error()))?;
                file.sync_all().map_err(|e| ExecutorError::io(&path, e))?;
                vec![names]
            }
        };
        if checkpoint.get() > self.after {
            self.after = checkpoint.get();
            self.seq = 0;
        }
        Ok(closed)
    }
}

/// One subtask's committer.
struct PartCommitter {
    dir: PathBuf,
    context: SinkContext,
}

impl Committer<PendingFile> for PartCommitter {
    fn commit(&mut self, _checkpoint: CheckpointId, file: &PendingFile) -> Result<()> {
        let from = self.dir.join(&file.pending);
        let to = self.dir.join(&file.committed);
        match std::fs::rename(&from, &to) {
            Ok(()) => sync_dir(&self.dir),
            // Committed before (a restore commits its checkpoint's files again).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.is_file() => Ok(()),
            Err(e) => Err(ExecutorError::io(&from, e)),
        }
    }

    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let from = restored.map_or(0, CheckpointId::get);
        let SinkContext {
            subtask,
            parallelism,
            ..
        } = self.context;
        for entry in entries {
            let entry = entry.map_err(|e| ExecutorError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(part) = name.to_str().and_then(parse_in_progress) else {
                continue;
            };
            let mine = part.subtask == subtask || (subtask == 0 && part.subtask >= parallelism);
            if mine && part.after >= from {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing an in-progress part file written after the restored checkpoint");
                std::fs::remove_file(&path).map_err(|e| ExecutorError::io(&path, e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use state_core::OperatorStateStore;

    use super::*;
    use crate::sink::{Sink, SinkFactory};

    fn visible(dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_name().to_str().unwrap().starts_with('.'))
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn hidden(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_an_error_no_restart_can_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("out");
        std::fs::write(&file, "x").unwrap();
        let err = FileSink::<String>::exactly_once(&file)
            .create(SinkContext::new(0, 1))
            .err()
            .unwrap();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn files_become_visible_only_when_their_checkpoint_completes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let sink = FileSink::<String>::exactly_once(&dir);
        let ctx = SinkContext::new(1, 2);
        let mut s: Box<dyn Sink<String>> = sink.create(ctx).unwrap();
        s.open(ctx, None).unwrap();
        s.write("(a,1)".into()).unwrap();
        let mut state = OperatorStateStore::new();
        s.snapshot_state(CheckpointId(1), &mut state).unwrap();
        assert!(visible(&dir).is_empty(), "pending is not visible");
        s.write("(a,2)".into()).unwrap();
        s.notify_checkpoint_complete(CheckpointId(1)).unwrap();
        assert_eq!(visible(&dir), [("part-1-0-0".into(), "(a,1)\n".into())]);
        assert_eq!(hidden(&dir), [".part-1-1-0.inprogress"]);

        // Checkpoint 2 is taken (its file pending), then the process dies
        // before 2's commit; a restore from 2 commits it and removes what
        // was written after.
        s.snapshot_state(CheckpointId(2), &mut state).unwrap();
        s.write("(b,1)".into()).unwrap();
        drop(s);
        let restored = SinkContext::new(1, 2).restored_from(Some(CheckpointId(2)));
        let mut again: Box<dyn Sink<String>> = sink.create(restored).unwrap();
        again.open(restored, Some(&state)).unwrap();
        assert_eq!(
            visible(&dir),
            [
                ("part-1-0-0".into(), "(a,1)\n".into()),
                ("part-1-1-0".into(), "(a,2)\n".into())
            ]
        );
        assert!(hidden(&dir).is_empty(), "{:?}", hidden(&dir));
        // Committing again (a second restore from 2) changes nothing.
        let mut third: Box<dyn Sink<String>> = sink.create(restored).unwrap();
        third.open(restored, Some(&state)).unwrap();
        assert_eq!(visible(&dir).len(), 2);
    }

    #[test]
    fn a_restore_keeps_pending_files_of_other_subtasks_it_does_not_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        // Written by subtask 3 of an earlier parallelism: one pending at
        // checkpoint 4 (after 3), one in progress after 4.
        std::fs::write(dir.join(".part-3-3-0.inprogress"), "x\n").unwrap();
        std::fs::write(dir.join(".part-3-4-0.inprogress"), "y\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not ours").unwrap();
        let ctx = SinkContext::new(0, 2).restored_from(Some(CheckpointId(4)));
        let mut committer = CommittingSink::<String>::committer(
            &FileSink::<String> {
                dir: dir.clone(),
                _records: PhantomData,
            },
            ctx,
        )
        .unwrap();
        committer.recover(Some(CheckpointId(4))).unwrap();
        assert_eq!(hidden(&dir), [".part-3-3-0.inprogress"]);
        assert!(dir.join("notes.txt").exists());
        assert!(parse_in_progress(".part-1-2-x.inprogress").is_none());
        assert!(parse_in_progress("part-1-2-3").is_none());
    }
}
