//! The worker's driver loop: restore, build the dataflow with its sources,
//! sink and committer, read under flow control, send acknowledgements, and
//! end after the final checkpoint.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use state_core::{
    CheckpointId, CompletedCheckpointStore, ExternalizedCheckpointCleanup, select_for_restore,
};
use timely::ExchangeData;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::committer::committer;
use crate::config::CheckpointConfig;
use crate::context::Cairn;
use crate::error::TimelyError;
use crate::protocol::Completion;
use crate::sink::{EpochSink, SinkDriver};
use crate::source::{PartitionedSource, SourceDriver};

/// What one worker did, returned by [`run_worker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// The worker's index.
    pub worker: u32,
    /// The checkpoint its state was restored from.
    pub restored_from: Option<CheckpointId>,
    /// The epoch its sources started at.
    pub start_epoch: u64,
    /// The checkpoints it saw complete, ascending; the last is the final one.
    pub completed: Vec<CheckpointId>,
    /// The checkpoints it saw fail and be aborted, ascending (at most
    /// [`CheckpointConfig::tolerable_failures`] in a row).
    pub aborted: Vec<CheckpointId>,
}

/// Returns once every worker of every process has called it: the start-up
/// barrier between worker 0's orphan sweep and everyone's first touch of
/// the storage.
///
/// Worker 0 takes the job directory's lock and sweeps orphans, then calls
/// this; every other worker calls it before it opens the storage. It is a
/// dataflow of its own (every worker must build it at the same point, as
/// any timely dataflow) whose probe passes only once every worker closed
/// its input, so no worker returns before worker 0 finished the sweep.
pub fn barrier(worker: &mut Worker) {
    let probe: ProbeHandle<u64> = ProbeHandle::new();
    let input = worker.dataflow::<u64, _, _>(|scope| {
        let mut input = InputHandleVec::<u64, ()>::new();
        input.to_stream(scope).probe_with(&probe);
        input
    });
    drop(input);
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
}

/// Runs one worker of a checkpointed job until its sources ended and the
/// final checkpoint completed.
///
/// At start every worker picks the newest intact checkpoint of
/// `config.storage` (the same one: nothing writes while they choose) and
/// restores its part of it; worker 0 also opens the completed-checkpoint
/// store, which keeps `config.retained` checkpoints. `source` and `sink`
/// make this worker's source and sink; `build` adds the user's operators
/// between them (stateful ones through [`crate::StateStream`]), on streams
/// whose timestamp is the epoch.
///
/// Errors are returned for what fails before the dataflow runs; once it
/// runs, an error stops the process (fail-stop).
pub fn run_worker<S, O, K, MS, MK, B>(
    worker: &mut Worker,
    config: &CheckpointConfig,
    source: MS,
    sink: MK,
    build: B,
) -> Result<WorkerReport, TimelyError>
where
    S: PartitionedSource,
    S::Item: ExchangeData + Clone,
    O: Clone + 'static,
    K: EpochSink<O>,
    MS: FnOnce(&Cairn) -> Result<S, TimelyError>,
    MK: FnOnce(&Cairn) -> Result<K, TimelyError>,
    B: for<'s> FnOnce(&Cairn, StreamVec<'s, u64, S::Item>) -> StreamVec<'s, u64, O>,
{
    config.validate()?;
    let index = u32::try_from(worker.index())
        .map_err(|_| TimelyError::Config("worker index beyond u32".into()))?;
    let peers = u32::try_from(worker.peers())
        .map_err(|_| TimelyError::Config("worker count beyond u32".into()))?;
    if peers > config.max_parallelism.get() {
        return Err(TimelyError::Config(format!(
            "{peers} workers but max parallelism {}: a worker would own no key group; \
             raise max_parallelism",
            config.max_parallelism
        )));
    }
    let storage = &config.storage;
    let listed = storage.list_checkpoints()?;
    let start = listed.last().map_or(0, |id| id.get());
    let restore = if listed.is_empty() {
        None
    } else {
        let selection = select_for_restore(storage.as_ref())?;
        for (id, err) in &selection.skipped {
            tracing::warn!(checkpoint_id = id.get(), error = %err, "Checkpoint {id} is damaged and is passed over: {err}");
        }
        Some(selection.metadata)
    };
    if index == 0 {
        match &restore {
            Some(m) => tracing::info!(
                job = %config.job_id,
                checkpoint_id = m.checkpoint_id.get(),
                workers = peers,
                "Resuming job {} from checkpoint {} with {peers} workers.",
                config.job_id,
                m.checkpoint_id
            ),
            None => {
                tracing::info!(job = %config.job_id, workers = peers, "Starting job {} with empty state.", config.job_id)
            }
        }
    }
    let store = if index == 0 {
        Some(CompletedCheckpointStore::recover(
            Arc::clone(storage),
            config.retained,
            ExternalizedCheckpointCleanup::RetainOnCancellation,
        )?)
    } else {
        None
    };
    let restored_from = restore.as_ref().map(|m| m.checkpoint_id);
    let cairn = Cairn::new(config.clone(), restore, start, index, peers);
    let completions: Rc<RefCell<VecDeque<Completion>>> = Rc::default();
    let probe: ProbeHandle<u64> = ProbeHandle::new();
    let into = Rc::clone(&completions);
    let job_id = config.job_id.clone();
    let clock = Arc::clone(&config.clock);
    let tolerable = config.tolerable_failures;
    let built = worker.dataflow::<u64, _, _>(|scope| {
        let mut input = InputHandleVec::<u64, S::Item>::new();
        let stream = input.to_stream(scope);
        let source = SourceDriver::open(&cairn, source(&cairn)?)?;
        let out = build(&cairn, stream);
        let sink = SinkDriver::attach(&cairn, out, sink(&cairn)?)?;
        let mut acks = InputHandleVec::new();
        let ack_stream = acks.to_stream(scope);
        committer(ack_stream, store, job_id, clock, tolerable)
            .broadcast()
            .inspect(move |c: &Completion| into.borrow_mut().push_back(c.clone()))
            .probe_with(&probe);
        Ok::<_, TimelyError>((input, acks, source, sink))
    });
    let (mut input, mut acks, mut source, mut sink) = built?;
    input.advance_to(start);
    acks.advance_to(start);
    let mut ack_time = start;
    let mut completed = Vec::new();
    let mut aborted = Vec::new();
    loop {
        let delivered: Vec<Completion> = completions.borrow_mut().drain(..).collect();
        let mut last = false;
        for c in delivered {
            if c.aborted {
                // Nothing to commit: the sink's records of the aborted
                // checkpoint are committed with the next one that completes.
                for slot in cairn.slots() {
                    slot.borrow_mut().aborted.push(CheckpointId(c.checkpoint));
                }
                aborted.push(CheckpointId(c.checkpoint));
                continue;
            }
            sink.commit(c.checkpoint)?;
            for slot in cairn.slots() {
                let mut slot = slot.borrow_mut();
                slot.completed.push(CheckpointId(c.checkpoint));
                slot.subsumed
                    .extend(c.subsumed.iter().copied().map(CheckpointId));
            }
            completed.push(CheckpointId(c.checkpoint));
            last |= c.last;
        }
        if last {
            break;
        }
        let completed_upto = probe
            .with_frontier(|f| f.iter().min().copied())
            .unwrap_or(u64::MAX);
        let mut busy = source.step(&cairn, &mut input, completed_upto)?;
        busy |= sink.step()?;
        for slot in cairn.slots() {
            let mut slot = slot.borrow_mut();
            slot.poll_pending();
            for ack in slot.ready.drain(..) {
                acks.send(ack);
            }
        }
        let upto = cairn.acked_upto();
        if upto > ack_time {
            acks.advance_to(upto);
            ack_time = upto;
        }
        if busy {
            worker.step();
        } else {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    }
    drop(input);
    drop(acks);
    while worker.has_dataflows() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    for slot in cairn.slots() {
        slot.borrow_mut().join_pending();
    }
    Ok(WorkerReport {
        worker: index,
        restored_from,
        start_epoch: start,
        completed,
        aborted,
    })
}
