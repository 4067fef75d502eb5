//! The parts of the harness's reports that both benchmarks share: one
//! checkpoint's figures, milliseconds, and the progress bars.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// One checkpoint's figures (sizes in bytes, times in milliseconds); `None`
/// (JSON null) where the run does not know them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct CheckpointReport {
    /// The checkpoint id.
    pub id: u64,
    /// The full state size the checkpoint describes (shared files included).
    pub full_bytes: u64,
    /// The bytes this checkpoint wrote to storage.
    pub written_bytes: u64,
    /// The synchronous phase (the task is blocked), slowest subtask.
    pub sync_ms: Option<f64>,
    /// The asynchronous phase (writing to storage), slowest subtask.
    pub async_ms: Option<f64>,
    /// From trigger to completion (a job's checkpoints): for `state-size`,
    /// to the backends told that it completed.
    pub duration_ms: Option<f64>,
    /// Deleting the checkpoints it subsumed, after `duration_ms` (as in
    /// Flink, not part of the checkpoint's duration); `state-size` only.
    pub discard_ms: Option<f64>,
    /// Bytes held in storage after the checkpoint completed (all retained
    /// checkpoints and shared files).
    pub storage_bytes: Option<u64>,
    /// RocksDB's view of the checkpointed database (`state-size` on the
    /// rocks backend; `None` elsewhere).
    pub rocks: Option<LsmFigures>,
}

/// RocksDB's figures of one checkpoint, summed over the subtasks; read
/// right after each subtask's snapshot was written (its native checkpoint
/// is then in place: these are its files, unless a compaction finished in
/// between).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct LsmFigures {
    /// RocksDB's estimate of the bytes compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// Compactions running at that moment.
    pub running_compactions: u64,
    /// Live SST files per level (index 0 is L0).
    pub files_per_level: Vec<u64>,
    /// Bytes of the live SST files per level.
    pub bytes_per_level: Vec<u64>,
    /// Bytes of the SST files the previous checkpoint of the run did not
    /// have, per level where they are now: what this checkpoint uploads
    /// when the previous one was confirmed (the first checkpoint: all).
    pub new_bytes_per_level: Vec<u64>,
}

/// A duration in milliseconds, to the microsecond.
pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// An optional figure for a person: the value or `-`.
pub(super) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A progress bar on stderr for `len` steps, hidden with `--json` or when
/// stderr is not a terminal.
pub(super) fn progress(show: bool, len: u64, label: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {percent:>3}% {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_microseconds() {
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
        assert_eq!(ms(Duration::from_secs(2)), 2000.0);
        assert_eq!(opt(Some(3)), "3");
        assert_eq!(opt::<u64>(None), "-");
    }
}
