//! Sinks told when an epoch's checkpoint completed: the two-phase commit of
//! Flink's exactly-once sinks, driven by epochs.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use state_core::{CheckpointId, OperatorId};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::context::Cairn;
use crate::error::TimelyError;
use crate::protocol::{Slot, SlotRef};

mod file;

pub use file::EpochFileSink;

/// A two-phase-commit sink, one instance per worker (Flink's
/// `TwoPhaseCommitSinkFunction`, with a transaction per checkpoint).
///
/// Checkpoint `n` covers the records of the epochs before `n` (and after
/// the previous checkpoint). The worker hands each batch to
/// [`EpochSink::write`] as it arrives, naming the checkpoint whose
/// transaction it belongs to; with several epochs in flight, batches of
/// the next checkpoint can come before this one is pre-committed, never
/// after. Once every record of `n` has arrived the worker calls
/// [`EpochSink::pre_commit`] (the sink makes them durable but invisible),
/// acknowledges its part of `n` only after that returns, and calls
/// [`EpochSink::commit`] once `n` completed. A checkpoint that failed and
/// was aborted is never committed: its records are committed by the next
/// [`EpochSink::commit`] (which covers everything pre-committed up to its
/// id). After a restart, [`EpochSink::recover`] is called first with the
/// restored checkpoint: what was pre-committed up to it must be committed
/// (commit is idempotent), anything later discarded.
///
/// Nothing holds an epoch's output in memory on the sink's behalf: a sink
/// that writes each batch out at once (invisible until committed) needs
/// only its own buffers, whatever the epoch's length and rate.
pub trait EpochSink<T>: 'static {
    /// The job (re)starts from `restored` (`None`: empty state).
    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<(), TimelyError>;
    /// Adds `records` to the transaction of `checkpoint`: written out now
    /// or kept until [`EpochSink::pre_commit`], and invisible either way.
    fn write(&mut self, checkpoint: CheckpointId, records: Vec<T>) -> Result<(), TimelyError>;
    /// Makes every record written for `checkpoint` durable and invisible.
    /// Called once per checkpoint, in increasing order, also for one that
    /// got no records.
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError>;
    /// Checkpoint `checkpoint` completed: makes what was pre-committed up to
    /// it visible. Called again for the same id after a restart.
    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError>;
}

/// The operator uid of the sink participant.
pub const SINK_UID: &str = "cairn-sink";

/// What the sink's capture operator shares with the driver loop.
struct Captured<K> {
    sink: K,
    /// The input frontier's least epoch; `None` once the stream ended.
    frontier: Option<u64>,
    /// The first failed write, reported by the next [`SinkDriver::step`].
    failed: Option<TimelyError>,
}

/// The sink side of a worker.
pub(crate) struct SinkDriver<T, K> {
    captured: Rc<RefCell<Captured<K>>>,
    slot: SlotRef,
    epoch: u64,
    _records: PhantomData<fn(T)>,
}

impl<T, K> std::fmt::Debug for SinkDriver<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkDriver")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<T: 'static, K: EpochSink<T>> SinkDriver<T, K> {
    /// Attaches the sink to `stream` on this worker and recovers it.
    pub(crate) fn attach(
        cairn: &Cairn,
        stream: StreamVec<'_, u64, T>,
        mut sink: K,
    ) -> Result<Self, TimelyError> {
        sink.recover(cairn.restored_checkpoint())?;
        let captured = Rc::new(RefCell::new(Captured {
            sink,
            frontier: Some(cairn.start_epoch()),
            failed: None,
        }));
        let into = Rc::clone(&captured);
        stream.sink(Pipeline, "cairn-sink-capture", move |(input, frontier)| {
            let mut captured = into.borrow_mut();
            let captured = &mut *captured;
            let reached = frontier.frontier().iter().min().copied();
            input.for_each(|cap, data| {
                // A message without a time makes no progress claim: it
                // belongs to the epoch the frontier is at.
                let epoch = cap.least().copied().or(reached).unwrap_or(u64::MAX);
                if captured.failed.is_some() {
                    return;
                }
                let checkpoint = CheckpointId(epoch.saturating_add(1));
                if let Err(err) = captured.sink.write(checkpoint, std::mem::take(data)) {
                    captured.failed = Some(err);
                }
            });
            captured.frontier = reached;
        });
        let slot = Slot::new(
            OperatorId(SINK_UID.to_owned()),
            cairn.worker_index(),
            cairn.peers(),
            cairn.config().max_parallelism.get(),
            cairn.start_epoch(),
        );
        cairn.register(Rc::clone(&slot))?;
        Ok(SinkDriver {
            captured,
            slot,
            epoch: cairn.start_epoch(),
            _records: PhantomData,
        })
    }

    /// Pre-commits every checkpoint whose records have all arrived; fails
    /// with the first write that failed.
    pub(crate) fn step(&mut self) -> Result<bool, TimelyError> {
        let mut progressed = false;
        let mut captured = self.captured.borrow_mut();
        if let Some(err) = captured.failed.take() {
            return Err(err);
        }
        loop {
            match captured.frontier {
                Some(f) if self.epoch < f => {}
                _ => return Ok(progressed),
            }
            let n = self.epoch + 1;
            captured.sink.pre_commit(CheckpointId(n))?;
            let mut slot = self.slot.borrow_mut();
            let ack = slot.ack(n, None);
            slot.ready.push(ack);
            slot.acked_upto = n;
            self.epoch = n;
            progressed = true;
        }
    }

    /// Checkpoint `n` completed.
    pub(crate) fn commit(&mut self, n: u64) -> Result<(), TimelyError> {
        self.captured.borrow_mut().sink.commit(CheckpointId(n))
    }
}
