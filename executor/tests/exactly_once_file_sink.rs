//! End-to-end exactly-once into the file sink, through the fault matrix
//! the SQL sinks share (`fault_matrix/`): a keyed count over 100,000 records
//! and 1,000 keys at parallelism 3, with one failure injected (at a seeded
//! record) in an operator, in a source, while a snapshot is written, between
//! a checkpoint's completion and its commit, and inside a commit (the files
//! renamed but the call failing). In every case the committed part files
//! hold exactly the fault-free output: every `(key, n)` once, no loss, no
//! duplicate; no in-progress file is left; and a reader listing the
//! directory during a run never sees a partial or uncommitted file.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_matrix;
mod job_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use executor::JobStatus;
use executor::sink::SinkContext;
use executor::sink::committing::{Committer, CommittingSink, CommittingWriter};
use executor::sink::file::{FileSink, PendingFile};
use fault_matrix::{
    Fault, Flaky, Run, assert_exact, assert_ran, expected_inserts, no_retry, splitmix,
};
use state_core::CheckpointId;

/// The file sink for the matrix's `(key, n)` records, one `(k,n)` line each.
struct Lines(FileSink<String>);

/// Its writer: formats each record, then writes it through the file sink's.
struct LineWriter(Box<dyn CommittingWriter<String, PendingFile>>);

impl CommittingWriter<(u64, u64), PendingFile> for LineWriter {
    fn write(&mut self, (k, n): (u64, u64)) -> executor::Result<()> {
        self.0.write(format!("({k},{n})"))
    }
    fn prepare_commit(&mut self, checkpoint: CheckpointId) -> executor::Result<Vec<PendingFile>> {
        self.0.prepare_commit(checkpoint)
    }
}

impl CommittingSink<(u64, u64)> for Lines {
    type Committable = PendingFile;
    fn writer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn CommittingWriter<(u64, u64), PendingFile>>> {
        Ok(Box::new(LineWriter(self.0.writer(context)?)))
    }
    fn committer(&self, context: SinkContext) -> executor::Result<Box<dyn Committer<PendingFile>>> {
        self.0.committer(context)
    }
}

/// The committed records of `out` (files without a leading dot), sorted,
/// and the names of the hidden (uncommitted) files left.
fn committed(out: &Path) -> (Vec<(u64, u64)>, Vec<String>) {
    let (mut rows, mut hidden) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(out).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let (k, n) = line.trim_matches(['(', ')']).split_once(',').unwrap();
            rows.push((k.parse().unwrap(), n.parse().unwrap()));
        }
    }
    rows.sort_unstable();
    (rows, hidden)
}

fn run(fault: Fault, out: &Path) -> (Run, Vec<(u64, u64)>, Vec<String>) {
    let sink = Flaky::new(Lines(FileSink::new(out)), fault, None);
    let run = fault_matrix::run(fault, sink, no_retry(), 3, Duration::ZERO);
    let (rows, hidden) = committed(out);
    (run, rows, hidden)
}

fn check(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let (run, rows, hidden) = run(fault, dir.path());
    assert_ran(fault, &run);
    assert!(hidden.is_empty(), "{fault:?}: left {hidden:?}");
    assert_exact(&format!("{fault:?}"), &rows, &expected_inserts());
}

#[test]
fn fault_free_output_is_every_count_once() {
    check(Fault::None);
}

#[test]
fn every_fault_of_the_matrix_loses_and_duplicates_nothing() {
    for fault in Fault::matrix() {
        check(fault);
    }
}

#[test]
fn a_reader_never_sees_a_partial_or_uncommitted_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    std::fs::create_dir_all(&out).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            // Every visible file, as first read: it must never change.
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for entry in std::fs::read_dir(&out).unwrap() {
                    let entry = entry.unwrap();
                    let name = entry.file_name().into_string().unwrap();
                    if name.starts_with('.') {
                        continue;
                    }
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    reads += 1;
                    assert!(text.ends_with('\n'), "{name} is partial: {text:?}");
                    for line in text.lines() {
                        assert!(
                            line.starts_with('(') && line.ends_with(')'),
                            "{name}: {line:?}"
                        );
                    }
                    if let Some(first) = seen.get(&name) {
                        assert_eq!(first, &text, "{name} changed after it became visible");
                    } else {
                        seen.insert(name, text);
                    }
                }
            }
            (seen.len(), reads)
        })
    };
    let (run, rows, _) = run(Fault::Operator(splitmix(7) % fault_matrix::RECORDS), &out);
    stop.store(true, Ordering::SeqCst);
    let (files, reads) = reader.join().unwrap();
    assert_eq!(run.status, JobStatus::Finished);
    assert_exact("a reader beside it", &rows, &expected_inserts());
    assert!(files > 0 && reads > 0, "the reader saw nothing");
}
