//! A directory of committed files, exactly once: one file per worker and
//! checkpoint, hidden until the checkpoint completed.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use state_core::CheckpointId;
use state_core::backend_support::{StdFs, sync_parent};

use super::EpochSink;
use crate::error::TimelyError;

/// Appends one record's text to a file's contents.
type Format<T> = dyn Fn(&T, &mut String);

/// Writes each checkpoint's records of one worker to
/// `.pending-<checkpoint>-<worker>` as they arrive (through a 64 KiB
/// buffer; fsynced at the pre-commit) and renames it to
/// `part-<checkpoint>-<worker>` when the checkpoint completed. A reader of
/// the directory sees whole committed files only. A checkpoint that got no
/// records writes no file. A checkpoint one of whose writes (or whose
/// flush and fsync) failed is never pre-committed: its file may lack
/// records, so every later `pre_commit` of it, and any later write to it,
/// fails with the first error's file and cause, and the restart discards
/// the file.
///
/// At a restart from checkpoint `m`, worker `w` commits the pending files
/// of checkpoints up to `m` and deletes later ones, for every old worker
/// index `i` with `i % peers == w` (so no two workers touch one file).
pub struct EpochFileSink<T> {
    dir: PathBuf,
    worker: u32,
    peers: u32,
    format: Box<Format<T>>,
    /// Checkpoints written to and not yet pre-committed, with their file.
    open: BTreeMap<u64, BufWriter<fs::File>>,
    /// One batch's text, reused.
    text: String,
    /// Pre-committed checkpoints not yet committed.
    pending: Vec<u64>,
    /// Checkpoints a write, flush or fsync of which failed, with the error.
    failed: BTreeMap<u64, String>,
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
            open: BTreeMap::new(),
            text: String::new(),
            pending: Vec::new(),
            failed: BTreeMap::new(),
        })
    }

    fn pending_path(&self, n: u64, worker: u32) -> PathBuf {
        pending_in(&self.dir, n, worker)
    }

    /// Refuses to `act` on checkpoint `n` ("writing to", "pre-committing")
    /// if a write to it failed.
    fn refuse_failed(&self, act: &str, n: u64) -> Result<(), TimelyError> {
        match self.failed.get(&n) {
            Some(what) => Err(TimelyError::io(
                format!(
                    "{act} checkpoint {n} in {}",
                    self.pending_path(n, self.worker).display()
                ),
                std::io::Error::other(format!(
                    "an earlier write failed ({what}), so the file may lack records"
                )),
            )),
            None => Ok(()),
        }
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

/// The pending file of checkpoint `n` and worker `worker` in `dir`.
fn pending_in(dir: &Path, n: u64, worker: u32) -> PathBuf {
    dir.join(format!(".pending-{n:020}-{worker}"))
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

    fn write(&mut self, checkpoint: CheckpointId, records: Vec<T>) -> Result<(), TimelyError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = checkpoint.get();
        self.refuse_failed("writing to", n)?;
        self.text.clear();
        for record in &records {
            (self.format)(record, &mut self.text);
        }
        let path = self.pending_path(n, self.worker);
        let file = match self.open.entry(n) {
            Entry::Occupied(open) => Ok(open.into_mut()),
            Entry::Vacant(vacant) => fs::File::create(&path)
                .map(|file| vacant.insert(BufWriter::with_capacity(64 * 1024, file)))
                .map_err(|e| TimelyError::io(format!("creating {}", path.display()), e)),
        };
        let written = file.and_then(|file| {
            file.write_all(self.text.as_bytes())
                .map_err(|e| TimelyError::io(format!("writing {}", path.display()), e))
        });
        if let Err(err) = &written {
            // Some of the batch may be in the file, some not: the
            // checkpoint can no longer be pre-committed whole.
            self.open.remove(&n);
            self.failed.insert(n, err.to_string());
        }
        written
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError> {
        let n = checkpoint.get();
        self.refuse_failed("pre-committing", n)?;
        let Some(file) = self.open.remove(&n) else {
            return Ok(());
        };
        let path = self.pending_path(n, self.worker);
        let synced = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .map_err(|e| TimelyError::io(format!("writing {}", path.display()), e))
            .and_then(|()| sync_dir(&path));
        match synced {
            Ok(()) => {
                self.pending.push(n);
                Ok(())
            }
            Err(err) => {
                // What the file holds is unknown now (a failed fsync may
                // have dropped pages): asked again, the answer stays no.
                self.failed.insert(n, err.to_string());
                Err(err)
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sink(dir: &Path) -> EpochFileSink<u32> {
        EpochFileSink::new(dir, 0, 1, |n: &u32, s: &mut String| {
            s.push_str(&format!("{n}\n"));
        })
        .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn batches_of_two_open_checkpoints_go_to_their_own_files_and_show_at_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        sink.write(CheckpointId(1), vec![1, 2]).unwrap();
        sink.write(CheckpointId(2), vec![10]).unwrap();
        sink.write(CheckpointId(1), vec![3]).unwrap();
        sink.pre_commit(CheckpointId(1)).unwrap();
        sink.write(CheckpointId(2), vec![11]).unwrap();
        sink.pre_commit(CheckpointId(2)).unwrap();
        // A checkpoint that got no records writes nothing.
        sink.pre_commit(CheckpointId(3)).unwrap();
        assert!(names(dir.path()).iter().all(|n| n.starts_with(".pending-")));

        sink.commit(CheckpointId(2)).unwrap();
        let part = |n: u64| fs::read_to_string(dir.path().join(format!("part-{n:020}-0"))).unwrap();
        assert_eq!(part(1), "1\n2\n3\n");
        assert_eq!(part(2), "10\n11\n");
        assert_eq!(names(dir.path()).len(), 2, "{:?}", names(dir.path()));
    }

    #[test]
    fn a_write_that_fails_names_the_pending_file_and_nothing_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        // A directory where the pending file would be: creating it fails.
        let blocked = dir.path().join(format!(".pending-{:020}-0", 4));
        fs::create_dir(&blocked).unwrap();
        let err = sink
            .write(CheckpointId(4), vec![7])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&blocked.display().to_string()), "{err}");
        // The checkpoint lacks the failed batch: it cannot be pre-committed
        // (as if it had got no records) or written to again.
        let refused = sink.pre_commit(CheckpointId(4)).unwrap_err().to_string();
        assert!(
            refused.contains("checkpoint 4") && refused.contains(&blocked.display().to_string()),
            "{refused}"
        );
        let rewrite = sink
            .write(CheckpointId(4), vec![8])
            .unwrap_err()
            .to_string();
        assert!(rewrite.contains("writing to checkpoint 4"), "{rewrite}");
        sink.commit(CheckpointId(4)).unwrap();
        assert!(!dir.path().join(format!("part-{:020}-0", 4)).exists());
        // Other checkpoints go on.
        sink.write(CheckpointId(5), vec![9]).unwrap();
        sink.pre_commit(CheckpointId(5)).unwrap();
        sink.commit(CheckpointId(5)).unwrap();
        let part = fs::read_to_string(dir.path().join(format!("part-{:020}-0", 5))).unwrap();
        assert_eq!(part, "9\n");
    }

    #[test]
    fn a_batch_written_past_a_full_disk_leaves_its_checkpoint_unable_to_pre_commit() {
        // /dev/full takes the open and fails every write with ENOSPC; the
        // 64 KiB buffer passes a batch larger than it straight through.
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        std::os::unix::fs::symlink(
            "/dev/full",
            dir.path().join(format!(".pending-{:020}-0", 6)),
        )
        .unwrap();
        let big: Vec<u32> = (0..20_000).collect();
        let err = sink.write(CheckpointId(6), big).unwrap_err().to_string();
        assert!(
            err.contains(".pending-") && err.contains("writing"),
            "{err}"
        );
        let refused = sink.pre_commit(CheckpointId(6)).unwrap_err().to_string();
        assert!(refused.contains("earlier write failed"), "{refused}");
    }

    #[test]
    fn a_pre_commit_whose_flush_fails_stays_refused() {
        // A batch smaller than the buffer reaches /dev/full only at the
        // pre-commit's flush.
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        let pending = dir.path().join(format!(".pending-{:020}-0", 7));
        std::os::unix::fs::symlink("/dev/full", &pending).unwrap();
        sink.write(CheckpointId(7), vec![1, 2, 3]).unwrap();
        let err = sink.pre_commit(CheckpointId(7)).unwrap_err().to_string();
        assert!(err.contains(&pending.display().to_string()), "{err}");
        let again = sink.pre_commit(CheckpointId(7)).unwrap_err().to_string();
        assert!(again.contains("earlier write failed"), "{again}");
        sink.commit(CheckpointId(7)).unwrap();
        assert!(!dir.path().join(format!("part-{:020}-0", 7)).exists());
    }

    #[test]
    fn a_restart_commits_what_was_pre_committed_up_to_the_restored_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut before = sink(dir.path());
        before.write(CheckpointId(1), vec![1]).unwrap();
        before.pre_commit(CheckpointId(1)).unwrap();
        before.write(CheckpointId(2), vec![2]).unwrap();
        before.pre_commit(CheckpointId(2)).unwrap();
        // Written but never pre-committed: the process died mid-epoch.
        before.write(CheckpointId(3), vec![3]).unwrap();
        drop(before);

        let mut after = sink(dir.path());
        after.recover(Some(CheckpointId(1))).unwrap();
        assert_eq!(names(dir.path()), vec![format!("part-{:020}-0", 1)]);
    }
}
