//! What flows between a worker's checkpoint participants, its driver loop
//! and the committer: acknowledgements of one participant's part of a
//! checkpoint, and the notice that a checkpoint completed.
//!
//! Checkpoint `n` covers every record of the epochs before `n` (timestamps
//! `< n`). A participant acknowledges `n` at timestamp `n - 1` on the
//! acknowledgement stream, which the driver advances past `n - 1` only once
//! every participant of its worker has; so when the committer's input
//! frontier passes `n - 1`, it holds the acknowledgement of every
//! participant of every worker (timely's progress tracking is the ack
//! protocol).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use state_core::{CheckpointId, KeyedStateHandle, OperatorId, SubtaskSnapshot};

/// One participant's part of checkpoint `checkpoint`, durable in storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The checkpoint acknowledged.
    pub checkpoint: u64,
    /// The operator uid the part belongs to.
    pub operator: OperatorId,
    /// The number of workers (the operator's parallelism).
    pub parallelism: u32,
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// What goes into `_metadata`; `None` for a participant with nothing to
    /// restore (a sink whose pre-committed files are found by name).
    pub snapshot: Option<SubtaskSnapshot>,
    /// For sources: whether every partition of this worker had ended when
    /// the epoch closed.
    pub source_exhausted: Option<bool>,
    /// When the epoch closed (job clock, ms since the Unix epoch), for sources.
    pub timestamp_millis: Option<u64>,
    /// Why this participant's part could not be written: the checkpoint
    /// is aborted (and counted towards the tolerable failures).
    pub failure: Option<String>,
}

/// Checkpoint `checkpoint` completed: its `_metadata` is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Completion {
    /// The checkpoint.
    pub checkpoint: u64,
    /// Checkpoints retention removed because of it.
    pub subsumed: Vec<u64>,
    /// Every source had ended: this is the job's final checkpoint.
    pub last: bool,
    /// The checkpoint failed and was aborted: nothing completed, nothing
    /// is committed; the next checkpoint covers its epochs too.
    pub aborted: bool,
}

/// An asynchronous snapshot part being written off the worker thread.
#[derive(Debug)]
pub(crate) struct PendingPart {
    pub checkpoint: u64,
    pub done: mpsc::Receiver<state_core::Result<Option<KeyedStateHandle>>>,
    pub thread: Option<JoinHandle<()>>,
}

/// A participant's progress, shared by its operator and the driver loop of
/// one worker (same thread).
#[derive(Debug)]
pub(crate) struct Slot {
    pub operator: OperatorId,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Every checkpoint up to this one is acknowledged (or restored).
    pub acked_upto: u64,
    /// Parts written off-thread, oldest first.
    pub pending: VecDeque<PendingPart>,
    /// Acknowledgements ready to be sent.
    pub ready: Vec<Ack>,
    /// Completed checkpoints not yet told to the operator's backend.
    pub completed: Vec<CheckpointId>,
    /// Subsumed checkpoints not yet told to the operator's backend.
    pub subsumed: Vec<CheckpointId>,
    /// Aborted checkpoints not yet told to the operator's backend.
    pub aborted: Vec<CheckpointId>,
}

/// A shared handle on a [`Slot`].
pub(crate) type SlotRef = Rc<RefCell<Slot>>;

impl Slot {
    /// A participant that has acknowledged everything up to `start`.
    pub(crate) fn new(
        operator: OperatorId,
        subtask: u32,
        parallelism: u32,
        max_parallelism: u32,
        start: u64,
    ) -> SlotRef {
        Rc::new(RefCell::new(Slot {
            operator,
            subtask,
            parallelism,
            max_parallelism,
            acked_upto: start,
            pending: VecDeque::new(),
            ready: Vec::new(),
            completed: Vec::new(),
            subsumed: Vec::new(),
            aborted: Vec::new(),
        }))
    }

    /// An acknowledgement of this participant for `checkpoint`.
    pub(crate) fn ack(&self, checkpoint: u64, snapshot: Option<SubtaskSnapshot>) -> Ack {
        Ack {
            checkpoint,
            operator: self.operator.clone(),
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            snapshot,
            source_exhausted: None,
            timestamp_millis: None,
            failure: None,
        }
    }

    /// Acknowledges `checkpoint` as failed: this participant's part could
    /// not be written, so the committer aborts the checkpoint.
    pub(crate) fn fail(&mut self, checkpoint: u64, err: &dyn std::fmt::Display) {
        tracing::warn!(
            operator = %self.operator,
            worker = self.subtask,
            checkpoint_id = checkpoint,
            error = %err,
            "operator {} worker {}: its part of checkpoint {checkpoint} failed: {err}",
            self.operator,
            self.subtask
        );
        let mut ack = self.ack(checkpoint, None);
        ack.failure = Some(format!(
            "operator {} worker {}: {err}",
            self.operator, self.subtask
        ));
        self.ready.push(ack);
        self.acked_upto = checkpoint;
    }

    /// Moves the parts whose writing finished, in checkpoint order, to the
    /// ready acknowledgements; a part that failed is acknowledged as failed.
    pub(crate) fn poll_pending(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            let result = match front.done.try_recv() {
                Ok(result) => result,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => Err(state_core::StateError::invalid(
                    "the snapshot thread ended without a result",
                )),
            };
            let checkpoint = front.checkpoint;
            if let Some(thread) = front.thread.take() {
                let _ = thread.join();
            }
            self.pending.pop_front();
            match result {
                Ok(handle) => {
                    let snapshot = SubtaskSnapshot {
                        subtask: self.subtask,
                        keyed: handle.into_iter().collect(),
                        operator: None,
                    };
                    let ack = self.ack(checkpoint, Some(snapshot));
                    self.ready.push(ack);
                    self.acked_upto = checkpoint;
                }
                Err(err) => self.fail(checkpoint, &err),
            }
        }
    }

    /// Waits for every part still being written (the job is ending).
    pub(crate) fn join_pending(&mut self) {
        for part in self.pending.drain(..) {
            if let Some(thread) = part.thread {
                let _ = thread.join();
            }
        }
    }
}

/// The participants of one worker.
#[derive(Debug, Default)]
pub(crate) struct Participants {
    pub slots: Vec<SlotRef>,
}

impl Participants {
    /// Registers a participant.
    pub(crate) fn add(&mut self, slot: SlotRef) {
        self.slots.push(slot);
    }

    /// The newest checkpoint every participant acknowledged.
    pub(crate) fn acked_upto(&self) -> Option<u64> {
        self.slots.iter().map(|s| s.borrow().acked_upto).min()
    }
}
