//! End-to-end exactly-once into the file sink: a keyed count over 100,000
//! records and 1,000 keys at parallelism 3, with one failure injected (at a
//! seeded record) in an operator, in a source, while a snapshot is written,
//! between a checkpoint's completion and its commit, and inside a commit
//! (the files renamed but the call failing). In every case the committed
//! part files hold exactly the fault-free output: every `(key, n)` once, no
//! loss, no duplicate; and no in-progress file is left.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use executor::sink::SinkContext;
use executor::sink::committing::{
    CommitRetry, Committer, CommittingSink, CommittingWriter, TwoPhaseCommit,
};
use executor::sink::file::{FileSink, PendingFile};
use executor::source::{Source, SourceContext, SourcePoll};
use executor::{CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use job_support::{NumberLog, fail_once_at};
use state_core::{
    CheckpointId, CheckpointOutput, CheckpointStorage, JobId, MemoryCheckpointStorage,
    OperatorStateStore, StateError, StateScope,
};
use state_testkit::{Intercept, InterceptStorage};

const RECORDS: u64 = 100_000;
const KEYS: u64 = 1_000;

/// Where the one failure of a run is injected.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// A map after the source fails at this record.
    Operator(u64),
    /// The source fails when it reaches this record.
    Source(u64),
    /// The asynchronous snapshot of this checkpoint fails to open a stream.
    Snapshot(u64),
    /// The first commit at or after this checkpoint fails before it renames.
    BeforeCommit(u64),
    /// The first commit at or after this checkpoint renames, then fails.
    InCommit(u64),
}

/// Fails every stream of one checkpoint, once.
struct FailSnapshot {
    checkpoint: u64,
    done: AtomicBool,
}

impl Intercept for FailSnapshot {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if id.get() >= self.checkpoint && !self.done.swap(true, Ordering::SeqCst) {
            return Err(StateError::io(name, std::io::Error::other("injected")));
        }
        inner.create_output(id, scope, name)
    }
}

/// The file sink with a commit failure injected once.
struct FlakyCommits {
    inner: FileSink<String>,
    fault: Fault,
    done: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
}

struct FlakyCommitter {
    inner: Box<dyn Committer<PendingFile>>,
    fault: Fault,
    done: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
}

impl CommittingSink<String> for FlakyCommits {
    type Committable = PendingFile;
    fn writer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn CommittingWriter<String, PendingFile>>> {
        self.inner.writer(context)
    }
    fn committer(&self, context: SinkContext) -> executor::Result<Box<dyn Committer<PendingFile>>> {
        Ok(Box::new(FlakyCommitter {
            inner: self.inner.committer(context)?,
            fault: self.fault,
            done: self.done.clone(),
            commits: self.commits.clone(),
        }))
    }
}

impl Committer<PendingFile> for FlakyCommitter {
    fn commit(&mut self, checkpoint: CheckpointId, file: &PendingFile) -> executor::Result<()> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let injected = || executor::ExecutorError::InvalidJob("injected commit failure".into());
        match self.fault {
            Fault::BeforeCommit(at)
                if checkpoint.get() >= at && !self.done.swap(true, Ordering::SeqCst) =>
            {
                Err(injected())
            }
            Fault::InCommit(at) if checkpoint.get() >= at => {
                self.inner.commit(checkpoint, file)?;
                if self.done.swap(true, Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(injected())
                }
            }
            _ => self.inner.commit(checkpoint, file),
        }
    }
    fn recover(&mut self, restored: Option<CheckpointId>) -> executor::Result<()> {
        self.inner.recover(restored)
    }
}

/// A source that fails once when it would emit record `at`.
struct FailingSource {
    inner: Box<dyn Source<u64>>,
    at: u64,
    failed: Arc<AtomicBool>,
    pending: Option<u64>,
}

impl Source<u64> for FailingSource {
    fn open(
        &mut self,
        ctx: SourceContext,
        restored: Option<&OperatorStateStore>,
    ) -> executor::Result<()> {
        self.inner.open(ctx, restored)
    }
    fn poll_next(&mut self) -> executor::Result<SourcePoll<u64>> {
        let next = match self.pending.take() {
            Some(v) => SourcePoll::Record(v),
            None => self.inner.poll_next()?,
        };
        if let SourcePoll::Record(v) = next
            && v == self.at
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            return Err(executor::ExecutorError::io(
                format!("record {v}"),
                std::io::Error::other("injected source failure"),
            ));
        }
        Ok(next)
    }
    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> executor::Result<()> {
        self.inner.snapshot_state(state)
    }
}

struct Run {
    status: JobStatus,
    restarts: u32,
    lines: Vec<String>,
    hidden: Vec<String>,
    commits: u64,
}

fn run(fault: Fault, out: &Path) -> Run {
    let mut config = JobConfig::new(JobId::new("exactly-once").unwrap());
    config.parallelism = 3;
    config.batch_size = 64;
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_millis(10)));
    config.restart = Some(RestartStrategyConfig::FixedDelay {
        attempts: 3,
        delay: Duration::ZERO,
    });
    let memory: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new(64 << 20));
    let storage: Arc<dyn CheckpointStorage> = match fault {
        Fault::Snapshot(at) => Arc::new(InterceptStorage::new(
            memory,
            FailSnapshot {
                checkpoint: at,
                done: AtomicBool::new(false),
            },
        )),
        _ => memory,
    };
    let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
    let log = NumberLog::with_range(RECORDS);
    let plain = log.source(true, 500);
    let failed = Arc::new(AtomicBool::new(false));
    let source_at = match fault {
        Fault::Source(at) => Some(at),
        _ => None,
    };
    let source = move |ctx: SourceContext| -> executor::Result<Box<dyn Source<u64>>> {
        let inner = plain(ctx)?;
        Ok(match source_at {
            Some(at) => Box::new(FailingSource {
                inner,
                at,
                failed: failed.clone(),
                pending: None,
            }),
            None => inner,
        })
    };
    let operator_at = match fault {
        Fault::Operator(at) => Some(at),
        _ => None,
    };
    let commits = Arc::new(AtomicU64::new(0));
    let sink = TwoPhaseCommit::new(FlakyCommits {
        inner: FileSink::new(out),
        fault,
        done: Arc::new(AtomicBool::new(false)),
        commits: commits.clone(),
    })
    .with_retry(CommitRetry {
        attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    });
    env.source("numbers", source)
        .map("maybe-fail", fail_once_at(operator_at))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .map("format", |(k, n)| Ok(format!("({k},{n})")))
        .sink("files", sink);
    let result = env.execute().unwrap();
    let (mut lines, mut hidden) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(out).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('.') {
            hidden.push(name);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines.sort();
    Run {
        status: result.status,
        restarts: result.restarts,
        lines,
        hidden,
        commits: commits.load(Ordering::SeqCst),
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every `(key, n)` of a fault-free count, once, sorted as text.
fn expected() -> Vec<String> {
    let mut lines: Vec<String> = (0..KEYS)
        .flat_map(|k| (1..=RECORDS / KEYS).map(move |n| format!("({k},{n})")))
        .collect();
    lines.sort();
    lines
}

fn check(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let run = run(fault, dir.path());
    assert_eq!(run.status, JobStatus::Finished, "{fault:?}");
    assert!(run.hidden.is_empty(), "{fault:?}: left {:?}", run.hidden);
    let expected = expected();
    if run.lines != expected {
        let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &expected {
            *seen.entry(l).or_default() -= 1;
        }
        for l in &run.lines {
            *seen.entry(l).or_default() += 1;
        }
        let lost = seen.values().filter(|&&n| n < 0).count();
        let twice = seen.values().filter(|&&n| n > 0).count();
        panic!("{fault:?}: {lost} outputs lost, {twice} written twice");
    }
    match fault {
        Fault::None => assert_eq!(run.restarts, 0),
        _ => assert_eq!(run.restarts, 1, "{fault:?}: the fault was not hit"),
    }
    assert!(run.commits > 0);
}

#[test]
fn fault_free_output_is_every_count_once() {
    check(Fault::None);
}

#[test]
fn a_failing_operator_loses_and_duplicates_nothing() {
    for seed in [1, 2] {
        check(Fault::Operator(splitmix(seed) % RECORDS));
    }
}

#[test]
fn a_failing_source_loses_and_duplicates_nothing() {
    check(Fault::Source(splitmix(3) % RECORDS));
}

#[test]
fn a_failing_snapshot_loses_and_duplicates_nothing() {
    check(Fault::Snapshot(2 + splitmix(4) % 5));
}

#[test]
fn a_failure_between_completion_and_commit_loses_nothing() {
    check(Fault::BeforeCommit(2 + splitmix(5) % 5));
}

#[test]
fn a_commit_that_fails_after_renaming_is_not_applied_twice() {
    check(Fault::InCommit(2 + splitmix(6) % 5));
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
    let run = run(Fault::Operator(splitmix(7) % RECORDS), &out);
    stop.store(true, Ordering::SeqCst);
    let (files, reads) = reader.join().unwrap();
    assert_eq!(run.status, JobStatus::Finished);
    assert_eq!(run.lines, expected());
    assert!(files > 0 && reads > 0, "the reader saw nothing");
}
