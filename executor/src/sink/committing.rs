//! Exactly-once output by two-phase commit, in Flink's Sink V2 model
//! (`TwoPhaseCommittingSink`: a writer and a committer).
//!
//! A [`CommittingSink`] makes a [`CommittingWriter`] and a [`Committer`] per
//! subtask; [`TwoPhaseCommit`] turns it into a [`SinkFactory`] for
//! [`DataStream::sink`](crate::DataStream::sink). The contract, which every
//! implementation relies on:
//!
//! 1. **Write.** Records go to the writer, into something the target does
//!    not show yet: an open transaction, an in-progress file, a buffer.
//! 2. **Pre-commit at the barrier.** When checkpoint `n`'s barrier reaches
//!    the sink, [`CommittingWriter::prepare_commit`] makes everything written
//!    since the previous barrier durable but invisible (`PREPARE
//!    TRANSACTION`, a closed pending file) and returns *committables* that
//!    name it. They are stored in checkpoint `n`, in the sink's operator
//!    state, with every earlier committable not committed yet.
//! 3. **Commit after completion.** When checkpoint `n` completes, every
//!    pending committable of checkpoints up to `n` is committed with
//!    [`Committer::commit`], oldest first. A failed commit is retried with
//!    exponential backoff ([`CommitRetry`]); when the retries are used up the
//!    sink fails the task, the job restores, and the commit is tried again.
//!    Nothing is dropped: a committable leaves the state only once committed.
//! 4. **After a restore** from checkpoint `n`, the committables stored in
//!    `n` are committed again (`n` completed, but the process may have died
//!    before its commit ran), so [`Committer::commit`] must be idempotent:
//!    committing a committable that is already committed succeeds and
//!    writes nothing twice. Then [`Committer::recover`] aborts what any
//!    subtask of this sink pre-committed *after* `n` (a transaction prepared
//!    at a checkpoint that never completed): its records are read again from
//!    the restored offsets and will be written again.
//! 5. **A checkpoint aborted while the job runs** does not abort its
//!    committables: their records are not replayed, so they stay pending
//!    and are committed with the next checkpoint that completes (as Flink's
//!    committer does).
//! 6. **End of input.** A bounded job takes a final checkpoint after every
//!    record went through (see the executor's final checkpoint), so the
//!    last committables commit before the job is FINISHED. A job without
//!    checkpointing pre-commits and commits everything at the end of the
//!    input ([`END_OF_INPUT`]); a failure before that loses the uncommitted
//!    output, as in Flink.
//!
//! Committables are stored with postcard; a rescaled restore hands each
//! pending committable to exactly one new subtask (a split list).

use std::fmt::Debug;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::{CheckpointId, OperatorStateMode, OperatorStateStore};

use super::{Sink, SinkContext, SinkFactory};
use crate::error::{ExecutorError, Result};

/// The checkpoint id of what a job without checkpointing commits at the end
/// of its input (real checkpoint ids start at 1).
pub const END_OF_INPUT: CheckpointId = CheckpointId(0);

/// The operator state holding the pending committables (a split list of
/// postcard `(checkpoint id, committable)`).
pub const COMMITTABLES_STATE: &str = "committables";

/// A sink that commits exactly once by two-phase commit; see the module docs
/// for the contract.
pub trait CommittingSink<T>: Send + Sync + 'static {
    /// What a pre-commit hands over: enough to commit or abort it later from
    /// another process (a transaction id, a pending file's name). Stored in
    /// checkpoints.
    type Committable: Serialize + DeserializeOwned + Debug + Send + 'static;

    /// A writer for one subtask (at every start and restart).
    fn writer(
        &self,
        context: SinkContext,
    ) -> Result<Box<dyn CommittingWriter<T, Self::Committable>>>;

    /// A committer for one subtask (at every start and restart).
    fn committer(&self, context: SinkContext) -> Result<Box<dyn Committer<Self::Committable>>>;
}

/// Writes records invisibly and pre-commits them at each barrier.
pub trait CommittingWriter<T, C>: Send {
    /// Writes one record into what the next pre-commit covers.
    fn write(&mut self, record: T) -> Result<()>;

    /// Makes everything written since the last call durable but not
    /// visible, for checkpoint `checkpoint`, and returns what commits it
    /// (empty when nothing was written). Records written afterwards belong
    /// to the next checkpoint. An error fails this checkpoint.
    fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<C>>;
}

/// Commits what writers pre-committed.
pub trait Committer<C>: Send {
    /// Makes `committable` (pre-committed at `checkpoint`) visible.
    /// Idempotent: committing one that is already committed succeeds and
    /// changes nothing. Errors are retried with backoff.
    fn commit(&mut self, checkpoint: CheckpointId, committable: &C) -> Result<()>;

    /// Called once at every start, after the committables of the restored
    /// checkpoint were committed: aborts whatever this sink pre-committed
    /// after `restored` (`None`: a fresh start, so everything this sink left
    /// pre-committed) and never committed: rolled-back prepared transactions,
    /// removed in-progress files. Subtask `context.subtask` cleans its own;
    /// subtask 0 also those of subtasks at or beyond the current
    /// parallelism (a job restored at a lower parallelism).
    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()>;
}

/// How often and how patiently a failed commit is retried before the sink
/// fails its task (which restores and commits again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRetry {
    /// Tries in all, at least 1 (default 6).
    pub attempts: u32,
    /// Wait before the second try, doubled for each next one (default 100 ms).
    pub initial_backoff: Duration,
    /// Longest wait between two tries (default 2 s).
    pub max_backoff: Duration,
}

impl Default for CommitRetry {
    fn default() -> Self {
        CommitRetry {
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A [`SinkFactory`] running a [`CommittingSink`] by the contract of the
/// module docs.
///
/// ```
/// use executor::sink::committing::{CommittingSink, CommittingWriter, Committer, TwoPhaseCommit};
/// use executor::sink::SinkContext;
/// use state_core::CheckpointId;
///
/// /// Collects lines; a "commit" prints them.
/// struct Lines;
/// struct Writer(Vec<String>);
/// struct Printer;
///
/// impl CommittingSink<String> for Lines {
///     type Committable = Vec<String>;
///     fn writer(&self, _: SinkContext) -> executor::Result<Box<dyn CommittingWriter<String, Vec<String>>>> {
///         Ok(Box::new(Writer(Vec::new())))
///     }
///     fn committer(&self, _: SinkContext) -> executor::Result<Box<dyn Committer<Vec<String>>>> {
///         Ok(Box::new(Printer))
///     }
/// }
/// impl CommittingWriter<String, Vec<String>> for Writer {
///     fn write(&mut self, line: String) -> executor::Result<()> {
///         self.0.push(line);
///         Ok(())
///     }
///     fn prepare_commit(&mut self, _: CheckpointId) -> executor::Result<Vec<Vec<String>>> {
///         Ok(vec![std::mem::take(&mut self.0)])
///     }
/// }
/// impl Committer<Vec<String>> for Printer {
///     fn commit(&mut self, _: CheckpointId, lines: &Vec<String>) -> executor::Result<()> {
///         lines.iter().for_each(|l| println!("{l}"));
///         Ok(())
///     }
///     fn recover(&mut self, _: Option<CheckpointId>) -> executor::Result<()> {
///         Ok(())
///     }
/// }
///
/// let factory = TwoPhaseCommit::new(Lines);
/// # let _: &dyn executor::sink::SinkFactory<String> = &factory;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TwoPhaseCommit<S> {
    sink: S,
    retry: CommitRetry,
}

impl<S> TwoPhaseCommit<S> {
    /// `sink` with the default [`CommitRetry`].
    pub fn new(sink: S) -> Self {
        TwoPhaseCommit {
            sink,
            retry: CommitRetry::default(),
        }
    }

    /// Retries failed commits per `retry`.
    pub fn with_retry(mut self, retry: CommitRetry) -> Self {
        self.retry = retry;
        self
    }
}

impl<T, S> SinkFactory<T> for TwoPhaseCommit<S>
where
    T: Send + 'static,
    S: CommittingSink<T>,
{
    fn create(&self, context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        Ok(Box::new(TwoPhaseSink::<T, S::Committable> {
            writer: self.sink.writer(context)?,
            committer: self.sink.committer(context)?,
            pending: Vec::new(),
            context,
            retry: self.retry,
            _records: PhantomData,
        }))
    }
}

/// One subtask of a [`TwoPhaseCommit`] sink.
struct TwoPhaseSink<T, C> {
    writer: Box<dyn CommittingWriter<T, C>>,
    committer: Box<dyn Committer<C>>,
    /// Pre-committed and not yet committed, oldest first.
    pending: Vec<(CheckpointId, C)>,
    context: SinkContext,
    retry: CommitRetry,
    _records: PhantomData<fn(T)>,
}

impl<T, C: Serialize + DeserializeOwned + Debug + Send> TwoPhaseSink<T, C> {
    /// Commits every pending committable of checkpoints up to `upto`,
    /// oldest first, each retried per the policy; those committed leave the
    /// pending list even when a later one fails.
    fn commit_upto(&mut self, upto: CheckpointId) -> Result<()> {
        while let Some((checkpoint, committable)) =
            self.pending.first().filter(|(id, _)| *id <= upto)
        {
            commit_with_retry(
                self.committer.as_mut(),
                self.retry,
                *checkpoint,
                committable,
            )?;
            self.pending.remove(0);
        }
        Ok(())
    }

    fn store(&self, state: &mut OperatorStateStore) -> Result<()> {
        let mut elements = Vec::with_capacity(self.pending.len());
        for (id, c) in &self.pending {
            let bytes = postcard::to_allocvec(&(id.get(), c)).map_err(|e| {
                ExecutorError::InvalidJob(format!(
                    "a committable of checkpoint {id} cannot be encoded: {e}"
                ))
            })?;
            elements.push(Bytes::from(bytes));
        }
        state.update(COMMITTABLES_STATE, elements)?;
        Ok(())
    }
}

fn commit_with_retry<C: Debug>(
    committer: &mut dyn Committer<C>,
    retry: CommitRetry,
    checkpoint: CheckpointId,
    committable: &C,
) -> Result<()> {
    let mut backoff = retry.initial_backoff;
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        match committer.commit(checkpoint, committable) {
            Ok(()) => {
                tracing::debug!(checkpoint_id = checkpoint.get(), ?committable, "committed");
                return Ok(());
            }
            Err(e) if attempt < attempts => {
                tracing::warn!(
                    checkpoint_id = checkpoint.get(),
                    attempt,
                    error = %e,
                    "commit of checkpoint {checkpoint} failed (try {attempt} of {attempts}); retrying in {} ms",
                    backoff.as_millis()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(e) => {
                return Err(ExecutorError::Checkpoint {
                    checkpoint,
                    reason: format!(
                        "committing its output failed {attempts} times, last: {e}; \
                         the job restores and commits it again"
                    ),
                });
            }
        }
    }
    Ok(())
}

impl<T, C> Sink<T> for TwoPhaseSink<T, C>
where
    T: Send,
    C: Serialize + DeserializeOwned + Debug + Send,
{
    fn open(&mut self, context: SinkContext, restored: Option<&OperatorStateStore>) -> Result<()> {
        self.context = context;
        if let Some(state) = restored
            && state
                .states()
                .iter()
                .any(|(name, _)| name == COMMITTABLES_STATE)
        {
            for bytes in state.get(COMMITTABLES_STATE)? {
                let (id, c): (u64, C) = postcard::from_bytes(bytes).map_err(|e| {
                    ExecutorError::InvalidJob(format!(
                        "a committable in the restored state of sink subtask {} does not \
                         decode (was the sink changed?): {e}",
                        context.subtask
                    ))
                })?;
                self.pending.push((CheckpointId(id), c));
            }
            self.pending.sort_by_key(|(id, _)| *id);
        }
        // The restored checkpoint completed: what it holds is committed now.
        if let Some(upto) = self.pending.last().map(|(id, _)| *id) {
            tracing::info!(
                subtask = context.subtask,
                committables = self.pending.len(),
                restored = context.restored.map(|id| id.get()),
                "committing the output of the restored checkpoint"
            );
            self.commit_upto(upto)?;
        }
        self.committer.recover(context.restored)
    }

    fn write(&mut self, record: T) -> Result<()> {
        self.writer.write(record)
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorStateStore,
    ) -> Result<()> {
        if !state
            .states()
            .iter()
            .any(|(name, _)| name == COMMITTABLES_STATE)
        {
            state.register(COMMITTABLES_STATE, OperatorStateMode::Split)?;
        }
        for c in self.writer.prepare_commit(checkpoint)? {
            self.pending.push((checkpoint, c));
        }
        self.store(state)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.commit_upto(checkpoint)
    }

    fn finish(&mut self) -> Result<()> {
        if self.context.checkpointing {
            // The final checkpoint pre-commits and commits the rest.
            return Ok(());
        }
        for c in self.writer.prepare_commit(END_OF_INPUT)? {
            self.pending.push((END_OF_INPUT, c));
        }
        self.commit_upto(END_OF_INPUT)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Buffers numbers; commits them into `committed`, failing the first
    /// `fail` commit calls.
    struct Numbers {
        committed: Arc<Mutex<Vec<u64>>>,
        fail: Arc<Mutex<u32>>,
    }
    struct Buffer(Vec<u64>);
    struct Commit {
        committed: Arc<Mutex<Vec<u64>>>,
        fail: Arc<Mutex<u32>>,
    }

    impl CommittingSink<u64> for Numbers {
        type Committable = Vec<u64>;
        fn writer(&self, _: SinkContext) -> Result<Box<dyn CommittingWriter<u64, Vec<u64>>>> {
            Ok(Box::new(Buffer(Vec::new())))
        }
        fn committer(&self, _: SinkContext) -> Result<Box<dyn Committer<Vec<u64>>>> {
            Ok(Box::new(Commit {
                committed: self.committed.clone(),
                fail: self.fail.clone(),
            }))
        }
    }
    impl CommittingWriter<u64, Vec<u64>> for Buffer {
        fn write(&mut self, record: u64) -> Result<()> {
            self.0.push(record);
            Ok(())
        }
        fn prepare_commit(&mut self, _: CheckpointId) -> Result<Vec<Vec<u64>>> {
            Ok(vec![std::mem::take(&mut self.0)])
        }
    }
    impl Committer<Vec<u64>> for Commit {
        fn commit(&mut self, _: CheckpointId, c: &Vec<u64>) -> Result<()> {
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(ExecutorError::InvalidJob("server busy".into()));
            }
            self.committed.lock().unwrap().extend(c);
            Ok(())
        }
        fn recover(&mut self, _: Option<CheckpointId>) -> Result<()> {
            Ok(())
        }
    }

    /// What the test committer committed.
    type Committed = Arc<Mutex<Vec<u64>>>;

    fn sink(fail: u32, attempts: u32) -> (Box<dyn Sink<u64>>, Committed) {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let factory = TwoPhaseCommit::new(Numbers {
            committed: committed.clone(),
            fail: Arc::new(Mutex::new(fail)),
        })
        .with_retry(CommitRetry {
            attempts,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        });
        let mut s = factory.create(SinkContext::new(0, 1)).unwrap();
        s.open(SinkContext::new(0, 1), None).unwrap();
        (s, committed)
    }

    #[test]
    fn a_failed_commit_is_retried_and_kept_until_it_succeeds() {
        let (mut s, committed) = sink(2, 3);
        let mut state = OperatorStateStore::new();
        s.write(1).unwrap();
        s.snapshot_state(CheckpointId(1), &mut state).unwrap();
        s.notify_checkpoint_complete(CheckpointId(1)).unwrap();
        assert_eq!(
            *committed.lock().unwrap(),
            [1],
            "committed on the third try"
        );

        // Retries used up: the error names the checkpoint, and the
        // committable stays pending, committed with the next checkpoint.
        let (mut s, committed) = sink(2, 2);
        s.write(7).unwrap();
        s.snapshot_state(CheckpointId(1), &mut state).unwrap();
        let err = s.notify_checkpoint_complete(CheckpointId(1)).unwrap_err();
        assert!(err.to_string().contains("checkpoint 1 failed"), "{err}");
        assert!(err.to_string().contains("2 times"), "{err}");
        assert!(committed.lock().unwrap().is_empty());
        s.write(8).unwrap();
        s.snapshot_state(CheckpointId(2), &mut state).unwrap();
        s.notify_checkpoint_complete(CheckpointId(2)).unwrap();
        assert_eq!(*committed.lock().unwrap(), [7, 8]);
    }

    #[test]
    fn undecodable_committables_in_a_restored_state_are_refused() {
        let mut state = OperatorStateStore::new();
        state
            .register(COMMITTABLES_STATE, OperatorStateMode::Split)
            .unwrap();
        state
            .update(
                COMMITTABLES_STATE,
                vec![Bytes::from_static(b"\xff\xff\xff")],
            )
            .unwrap();
        let factory = TwoPhaseCommit::new(Numbers {
            committed: Arc::new(Mutex::new(Vec::new())),
            fail: Arc::new(Mutex::new(0)),
        });
        let ctx = SinkContext::new(0, 1).restored_from(Some(CheckpointId(3)));
        let mut s = factory.create(ctx).unwrap();
        let err = s.open(ctx, Some(&state)).unwrap_err().to_string();
        assert!(err.contains("does not decode"), "{err}");
    }
}
