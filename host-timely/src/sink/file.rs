//! A directory of committed files, exactly once: one file per worker and
//! checkpoint, hidden until the checkpoint completed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use state_core::CheckpointId;
use state_core::backend_support::{StdFs, sync_parent};

use super::EpochSink;
use crate::error::TimelyError;

/// Appends one record's text to a file's contents.
type Format<T> = dyn Fn(&T, &mut String);

/// Writes each checkpoint's records of one worker to
/// `.pending-<checkpoint>-<worker>` (fsynced at the pre-commit) and renames
/// it to `part-<checkpoint>-<worker>` when the checkpoint completed. A
/// reader of the directory sees whole committed files only.
///
/// At a restart from checkpoint `m`, worker `w` commits the pending files
/// of checkpoints up to `m` and deletes later ones, for every old worker
/// index `i` with `i % peers == w` (so no two workers touch one file).
pub struct EpochFileSink<T> {
    dir: PathBuf,
    worker: u32,
    peers: u32,
    format: Box<Format<T>>,
    pending: Vec<u64>,
}

impl<T> std::fmt::Debug for EpochFileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochFileSink")
            .field("dir", &self.dir)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl<T> EpochFileSink<T> {
    /// The sink of worker `worker` of `peers` into `dir` (created if
    /// missing); `format` appends one record's text (a line, newline included).
    pub fn new(
        dir: impl Into<PathBuf>,
        worker: u32,
        peers: u32,
        format: impl Fn(&T, &mut String) + 'static,
    ) -> Result<Self, TimelyError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| {
            TimelyError::io(format!("creating sink directory {}", dir.display()), e)
        })?;
        Ok(EpochFileSink {
            dir,
            worker,
            peers,
            format: Box::new(format),
            pending: Vec::new(),
        })
    }

    fn pending_path(&self, n: u64, worker: u32) -> PathBuf {
        self.dir.join(format!(".pending-{n:020}-{worker}"))
    }

    fn part_path(&self, n: u64, worker: u32) -> PathBuf {
        self.dir.join(format!("part-{n:020}-{worker}"))
    }

    fn publish(&self, n: u64, worker: u32) -> Result<(), TimelyError> {
        let from = self.pending_path(n, worker);
        let to = self.part_path(n, worker);
        match fs::rename(&from, &to) {
            Ok(()) => sync_dir(&to),
            // Committed before (a commit retried after a restart).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(()),
            Err(e) => Err(TimelyError::io(format!("committing {}", from.display()), e)),
        }
    }
}

/// A pending file's (checkpoint, worker), from its name.
fn parse_pending(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(".pending-")?;
    let (n, w) = rest.split_once('-')?;
    Some((n.parse().ok()?, w.parse().ok()?))
}

fn sync_dir(path: &Path) -> Result<(), TimelyError> {
    sync_parent(&StdFs, path).map_err(TimelyError::from)
}

impl<T: 'static> EpochSink<T> for EpochFileSink<T> {
    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<(), TimelyError> {
        let upto = restored.map_or(0, CheckpointId::get);
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| TimelyError::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| TimelyError::io(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name();
            let Some((n, worker)) = name.to_str().and_then(parse_pending) else {
                continue;
            };
            if worker % self.peers != self.worker {
                continue;
            }
            if n <= upto {
                self.publish(n, worker)?;
            } else {
                let path = entry.path();
                fs::remove_file(&path)
                    .map_err(|e| TimelyError::io(format!("removing {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId, records: Vec<T>) -> Result<(), TimelyError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = checkpoint.get();
        let path = self.pending_path(n, self.worker);
        let mut text = String::new();
        for record in &records {
            (self.format)(record, &mut text);
        }
        let mut file = fs::File::create(&path)
            .map_err(|e| TimelyError::io(format!("creating {}", path.display()), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| TimelyError::io(format!("writing {}", path.display()), e))?;
        sync_dir(&path)?;
        self.pending.push(n);
        Ok(())
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError> {
        let upto = checkpoint.get();
        let (due, later): (Vec<u64>, Vec<u64>) = self.pending.iter().partition(|&&n| n <= upto);
        for n in due {
            self.publish(n, self.worker)?;
        }
        self.pending = later;
        Ok(())
    }
}
