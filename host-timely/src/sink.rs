//! Sinks told when an epoch's checkpoint completed: the two-phase commit of
//! Flink's exactly-once sinks, driven by epochs.

use std::cell::RefCell;
use std::collections::BTreeMap;
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

/// A two-phase-commit sink, one instance per worker.
///
/// Checkpoint `n` covers the records of the epochs before `n`. The worker
/// calls [`EpochSink::pre_commit`] with them once every one has arrived
/// (the sink makes them durable but invisible), acknowledges its part of
/// `n` only after that returns, and calls [`EpochSink::commit`] once `n`
/// completed. A checkpoint that failed and was aborted is never committed:
/// its records are committed by the next [`EpochSink::commit`] (which covers
/// everything pre-committed up to its id). After a restart,
/// [`EpochSink::recover`] is called first with
/// the restored checkpoint: what was pre-committed up to it must be
/// committed (commit is idempotent), anything later discarded.
pub trait EpochSink<T>: 'static {
    /// The job (re)starts from `restored` (`None`: empty state).
    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<(), TimelyError>;
    /// Makes `records`, every record checkpoint `checkpoint` covers that
    /// reached this worker since the previous one, durable and invisible.
    fn pre_commit(&mut self, checkpoint: CheckpointId, records: Vec<T>) -> Result<(), TimelyError>;
    /// Checkpoint `checkpoint` completed: makes what was pre-committed up to
    /// it visible. Called again for the same id after a restart.
    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError>;
}

/// The operator uid of the sink participant.
pub const SINK_UID: &str = "cairn-sink";

/// What the sink's capture operator hands to the driver loop.
#[derive(Debug)]
pub(crate) struct Captured<T> {
    pub by_epoch: BTreeMap<u64, Vec<T>>,
    /// The input frontier's least epoch; `None` once the stream ended.
    pub frontier: Option<u64>,
}

/// The sink side of a worker.
pub(crate) struct SinkDriver<T, K> {
    sink: K,
    captured: Rc<RefCell<Captured<T>>>,
    slot: SlotRef,
    epoch: u64,
}

impl<T, K> std::fmt::Debug for SinkDriver<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkDriver")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + 'static, K: EpochSink<T>> SinkDriver<T, K> {
    /// Attaches the sink to `stream` on this worker and recovers it.
    pub(crate) fn attach(
        cairn: &Cairn,
        stream: StreamVec<'_, u64, T>,
        mut sink: K,
    ) -> Result<Self, TimelyError> {
        sink.recover(cairn.restored_checkpoint())?;
        let captured = Rc::new(RefCell::new(Captured {
            by_epoch: BTreeMap::new(),
            frontier: Some(cairn.start_epoch()),
        }));
        let into = Rc::clone(&captured);
        stream.sink(Pipeline, "cairn-sink-capture", move |(input, frontier)| {
            let mut captured = into.borrow_mut();
            let reached = frontier.frontier().iter().min().copied();
            input.for_each(|cap, data| {
                // A message without a time makes no progress claim: it
                // belongs to the epoch the frontier is at.
                let epoch = cap.least().copied().or(reached).unwrap_or(u64::MAX);
                captured.by_epoch.entry(epoch).or_default().append(data);
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
            sink,
            captured,
            slot,
            epoch: cairn.start_epoch(),
        })
    }

    /// Pre-commits every checkpoint whose records have all arrived.
    pub(crate) fn step(&mut self) -> Result<bool, TimelyError> {
        let mut progressed = false;
        loop {
            let records = {
                let mut captured = self.captured.borrow_mut();
                match captured.frontier {
                    Some(f) if self.epoch < f => {}
                    _ => return Ok(progressed),
                }
                let later = captured.by_epoch.split_off(&(self.epoch + 1));
                let due = std::mem::replace(&mut captured.by_epoch, later);
                // One epoch's batches are one vector already; several are
                // concatenated without touching records one by one.
                due.into_values()
                    .reduce(|mut all, mut more| {
                        all.append(&mut more);
                        all
                    })
                    .unwrap_or_default()
            };
            let n = self.epoch + 1;
            self.sink.pre_commit(CheckpointId(n), records)?;
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
        self.sink.commit(CheckpointId(n))
    }
}
