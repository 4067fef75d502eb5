//! What RocksDB says about each checkpoint of a `state-size` run on the
//! rocks backend: the compaction debt the checkpointed database carries,
//! its levels, and which levels the SST files new since the previous
//! checkpoint sit in (L0: flushes; deeper: compactions), so a checkpoint
//! that uploads more than the round changed shows where the bytes came
//! from. Other backends have none of these (`rocks: null` in the JSON).

use std::collections::{HashMap, HashSet};

use crate::report::LsmFigures;

/// One subtask's database as its checkpoint left it.
#[derive(Debug, Clone, Default)]
pub(super) struct Observation {
    pending_compaction_bytes: u64,
    running_compactions: u64,
    /// (name, level, bytes) of every live SST file.
    files: Vec<(String, u32, u64)>,
}

/// The RocksDB view of `backend` when it is a rocks backend; `None` for
/// the others.
#[cfg(feature = "rocks")]
pub(super) fn observe<B: 'static>(backend: &B) -> anyhow::Result<Option<Observation>> {
    let Some(rocks) = (backend as &dyn std::any::Any).downcast_ref::<backend_rocks::RocksBackend>()
    else {
        return Ok(None);
    };
    let metrics = rocks.native_metrics()?;
    let files = rocks
        .sst_files()?
        .into_iter()
        .map(|f| (f.name, f.level, f.bytes))
        .collect();
    Ok(Some(Observation {
        pending_compaction_bytes: metrics.estimate_pending_compaction_bytes,
        running_compactions: metrics.num_running_compactions,
        files,
    }))
}

/// Without the rocks backend no backend has an LSM tree.
#[cfg(not(feature = "rocks"))]
pub(super) fn observe<B: 'static>(_backend: &B) -> anyhow::Result<Option<Observation>> {
    Ok(None)
}

/// Waits until the rocks `backend` has no flush or compaction left (the
/// load's compaction debt paid), at most `timeout`; other backends have
/// nothing to wait for.
#[cfg(feature = "rocks")]
pub(super) fn settle<B: 'static>(backend: &B, timeout: std::time::Duration) -> anyhow::Result<()> {
    if let Some(rocks) =
        (backend as &dyn std::any::Any).downcast_ref::<backend_rocks::RocksBackend>()
    {
        anyhow::ensure!(
            rocks.wait_for_compactions(timeout)?,
            "RocksDB's flushes and compactions did not finish within {} s",
            timeout.as_secs()
        );
    }
    Ok(())
}

/// Without the rocks backend there is nothing to wait for.
#[cfg(not(feature = "rocks"))]
pub(super) fn settle<B: 'static>(
    _backend: &B,
    _timeout: std::time::Duration,
) -> anyhow::Result<()> {
    Ok(())
}

/// The SST files each subtask's previous checkpoint had, to tell which
/// files a checkpoint adds.
#[derive(Debug, Default)]
pub(super) struct FileHistory {
    previous: HashMap<u32, HashSet<String>>,
}

impl FileHistory {
    /// The figures of one checkpoint from its subtasks' observations
    /// (`None` when no subtask is on RocksDB); remembers its files for the
    /// next checkpoint.
    pub(super) fn figures(&mut self, observed: Vec<(u32, Observation)>) -> Option<LsmFigures> {
        if observed.is_empty() {
            return None;
        }
        let mut f = LsmFigures::default();
        for (subtask, o) in observed {
            f.pending_compaction_bytes += o.pending_compaction_bytes;
            f.running_compactions += o.running_compactions;
            let before = self.previous.remove(&subtask).unwrap_or_default();
            for (name, level, bytes) in &o.files {
                let level = *level as usize;
                add_at(&mut f.files_per_level, level, 1);
                add_at(&mut f.bytes_per_level, level, *bytes);
                if !before.contains(name) {
                    add_at(&mut f.new_bytes_per_level, level, *bytes);
                }
            }
            let names = o.files.into_iter().map(|(name, _, _)| name).collect();
            self.previous.insert(subtask, names);
        }
        // One length for all three: the deepest level any of them has.
        let levels = f.files_per_level.len();
        f.new_bytes_per_level.resize(levels, 0);
        Some(f)
    }
}

/// `v[i] += n`, growing `v` with zeros as needed.
fn add_at(v: &mut Vec<u64>, i: usize, n: u64) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    if let Some(x) = v.get_mut(i) {
        *x += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(files: &[(&str, u32, u64)], pending: u64) -> Observation {
        Observation {
            pending_compaction_bytes: pending,
            running_compactions: 1,
            files: files
                .iter()
                .map(|(n, l, b)| ((*n).to_owned(), *l, *b))
                .collect(),
        }
    }

    #[test]
    fn new_bytes_count_only_files_the_previous_checkpoint_lacked_per_subtask() {
        let mut history = FileHistory::default();
        assert_eq!(history.figures(Vec::new()), None);
        let first = history
            .figures(vec![
                (0, obs(&[("1.sst", 0, 10), ("2.sst", 2, 100)], 5)),
                (1, obs(&[("1.sst", 1, 7)], 6)),
            ])
            .unwrap();
        assert_eq!(first.pending_compaction_bytes, 11);
        assert_eq!(first.running_compactions, 2);
        assert_eq!(first.files_per_level, vec![1, 1, 1]);
        assert_eq!(first.bytes_per_level, vec![10, 7, 100]);
        assert_eq!(first.new_bytes_per_level, vec![10, 7, 100]);
        // Subtask 0 flushed 3.sst and compacted 1.sst into 4.sst at L1;
        // subtask 1 kept its file (same name in another subtask is no match).
        let second = history
            .figures(vec![
                (
                    0,
                    obs(&[("2.sst", 2, 100), ("3.sst", 0, 4), ("4.sst", 1, 12)], 0),
                ),
                (1, obs(&[("1.sst", 1, 7)], 0)),
            ])
            .unwrap();
        assert_eq!(second.files_per_level, vec![1, 2, 1]);
        assert_eq!(second.new_bytes_per_level, vec![4, 12, 0]);
    }
}
