//! The fault matrix of the exactly-once sinks (file, PostgreSQL, SQLite):
//! a keyed count over 100,000 records and 1,000 keys
//! at parallelism 3, checkpoints every 10 ms, one failure injected at a
//! seeded point in an operator, in a source, while a snapshot is written,
//! between a checkpoint's completion and its commit, or inside a commit
//! (applied, then the call failing). Each record `(key, n)` goes to the sink
//! under test, which the caller builds around the [`Flaky`] committer.
//!
//! A panic here is a test failure, so unwrapping is fine.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use executor::sink::SinkContext;
use executor::sink::committing::{
    CommitRetry, Committer, CommittingSink, CommittingWriter, TwoPhaseCommit,
};
use executor::source::{Source, SourceContext, SourcePoll};
use executor::{CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::{
    CheckpointId, CheckpointOutput, CheckpointStorage, JobId, MemoryCheckpointStorage,
    OperatorStateStore, StateError, StateScope,
};
use state_testkit::{Intercept, InterceptStorage};

use crate::job_support::{NumberLog, fail_once_at};

pub(crate) const RECORDS: u64 = 100_000;
pub(crate) const KEYS: u64 = 1_000;

/// Where the one failure of a run is injected.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    None,
    /// A map after the source fails at this record.
    Operator(u64),
    /// The source fails when it reaches this record.
    Source(u64),
    /// The asynchronous snapshot of this checkpoint fails to open a stream.
    Snapshot(u64),
    /// The first commit at or after this checkpoint fails before it runs.
    BeforeCommit(u64),
    /// The first commit at or after this checkpoint is applied, then fails.
    InCommit(u64),
    /// At the first commit at or after this checkpoint, the test's hook
    /// runs first (the PostgreSQL test stops the server hard there).
    Hook(u64),
}

impl Fault {
    /// The faults of the matrix, each at a seeded point.
    pub(crate) fn matrix() -> Vec<Fault> {
        vec![
            Fault::Operator(splitmix(1) % RECORDS),
            Fault::Operator(splitmix(2) % RECORDS),
            Fault::Source(splitmix(3) % RECORDS),
            Fault::Snapshot(2 + splitmix(4) % 5),
            Fault::BeforeCommit(2 + splitmix(5) % 5),
            Fault::InCommit(2 + splitmix(6) % 5),
        ]
    }
}

pub(crate) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

/// What the hook of [`Fault::Hook`] runs.
pub(crate) type Hook = Arc<dyn Fn() + Send + Sync>;

/// A committing sink whose committer fails once per the fault.
pub(crate) struct Flaky<S> {
    pub inner: S,
    fault: Fault,
    hook: Option<Hook>,
    done: Arc<AtomicBool>,
    pub commits: Arc<AtomicU64>,
}

impl<S> Flaky<S> {
    pub(crate) fn new(inner: S, fault: Fault, hook: Option<Hook>) -> Self {
        Flaky {
            inner,
            fault,
            hook,
            done: Arc::new(AtomicBool::new(false)),
            commits: Arc::new(AtomicU64::new(0)),
        }
    }
}

struct FlakyCommitter<C> {
    inner: Box<dyn Committer<C>>,
    fault: Fault,
    hook: Option<Hook>,
    done: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
}

impl<T, S> CommittingSink<T> for Flaky<S>
where
    S: CommittingSink<T>,
{
    type Committable = S::Committable;
    fn writer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn CommittingWriter<T, S::Committable>>> {
        self.inner.writer(context)
    }
    fn committer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn Committer<S::Committable>>> {
        Ok(Box::new(FlakyCommitter {
            inner: self.inner.committer(context)?,
            fault: self.fault,
            hook: self.hook.clone(),
            done: self.done.clone(),
            commits: self.commits.clone(),
        }))
    }
}

impl<C: Send> Committer<C> for FlakyCommitter<C> {
    fn commit(&mut self, checkpoint: CheckpointId, c: &C) -> executor::Result<()> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let injected = || executor::ExecutorError::InvalidJob("injected commit failure".into());
        match self.fault {
            Fault::BeforeCommit(at)
                if checkpoint.get() >= at && !self.done.swap(true, Ordering::SeqCst) =>
            {
                Err(injected())
            }
            Fault::InCommit(at) if checkpoint.get() >= at => {
                self.inner.commit(checkpoint, c)?;
                if self.done.swap(true, Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(injected())
                }
            }
            Fault::Hook(at)
                if checkpoint.get() >= at && !self.done.swap(true, Ordering::SeqCst) =>
            {
                if let Some(hook) = &self.hook {
                    hook();
                }
                self.inner.commit(checkpoint, c)
            }
            _ => self.inner.commit(checkpoint, c),
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
        let next = self.inner.poll_next()?;
        if let SourcePoll::Record(v) = next
            && v == self.at
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            // A task error a restart heals (an invalid-job error would not
            // be restarted).
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

/// How a run ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub status: JobStatus,
    pub restarts: u32,
    pub commits: u64,
    /// Why the job failed for good, when it did.
    pub failure: Option<String>,
}

/// Runs the keyed count into `sink` (wrapped in [`Flaky`] for `fault`),
/// with `retry` for its commits and `restarts` restarts `delay` apart.
pub(crate) fn run<S>(
    fault: Fault,
    sink: Flaky<S>,
    retry: CommitRetry,
    restarts: u32,
    delay: Duration,
) -> Run
where
    S: CommittingSink<(u64, u64)>,
    S::Committable: Serialize + DeserializeOwned + Debug,
{
    let mut config = JobConfig::new(JobId::new("exactly-once-sql").unwrap());
    config.parallelism = 3;
    config.batch_size = 64;
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_millis(10)));
    // A fault-free run must not need a restart: it fails instead, saying why.
    let restarts = if matches!(fault, Fault::None) {
        0
    } else {
        restarts
    };
    config.restart = Some(RestartStrategyConfig::FixedDelay {
        attempts: restarts,
        delay,
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
            }),
            None => inner,
        })
    };
    let operator_at = match fault {
        Fault::Operator(at) => Some(at),
        _ => None,
    };
    let commits = sink.commits.clone();
    let sink = TwoPhaseCommit::new(sink).with_retry(retry);
    env.source("numbers", source)
        .map("maybe-fail", fail_once_at(operator_at))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("table", sink);
    let result = env.execute().unwrap();
    Run {
        status: result.status,
        restarts: result.restarts,
        commits: commits.load(Ordering::SeqCst),
        failure: result.failure,
    }
}

/// No retry: a failed commit fails the task at once.
pub(crate) fn no_retry() -> CommitRetry {
    CommitRetry {
        attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    }
}

/// Every `(key, n)` of a fault-free count, sorted.
pub(crate) fn expected_inserts() -> Vec<(u64, u64)> {
    (0..KEYS)
        .flat_map(|k| (1..=RECORDS / KEYS).map(move |n| (k, n)))
        .collect()
}

/// Every key with its final count, sorted.
pub(crate) fn expected_upserts() -> Vec<(u64, u64)> {
    (0..KEYS).map(|k| (k, RECORDS / KEYS)).collect()
}

/// Asserts `rows` (sorted) equal `expected`, saying how many were lost and
/// how many written twice when not.
pub(crate) fn assert_exact(what: &str, rows: &[(u64, u64)], expected: &[(u64, u64)]) {
    if rows == expected {
        return;
    }
    let mut seen = std::collections::BTreeMap::<(u64, u64), i64>::new();
    for r in expected {
        *seen.entry(*r).or_default() -= 1;
    }
    for r in rows {
        *seen.entry(*r).or_default() += 1;
    }
    let lost = seen.values().filter(|&&n| n < 0).count();
    let twice = seen.values().filter(|&&n| n > 0).count();
    panic!(
        "{what}: {lost} rows lost, {twice} extra or written twice ({} rows, {} expected)",
        rows.len(),
        expected.len()
    );
}

/// The checks every fault-matrix run shares: finished, restarted exactly
/// once when a fault was injected (none without), and committed something.
pub(crate) fn assert_ran(fault: Fault, run: &Run) {
    assert_eq!(
        run.status,
        JobStatus::Finished,
        "{fault:?}: {:?}",
        run.failure
    );
    match fault {
        Fault::None => assert_eq!(run.restarts, 0),
        Fault::Hook(_) => {}
        _ => assert_eq!(run.restarts, 1, "{fault:?}: the fault was not hit"),
    }
    assert!(run.commits > 0, "{fault:?}");
}
