//! [`Cairn`]: what a worker's cairn operators share while its dataflow is built.

use std::cell::RefCell;
use std::rc::Rc;

use state_core::{CheckpointId, CheckpointMetadata, KeyGroup, OperatorId};

use crate::config::CheckpointConfig;
use crate::protocol::{Participants, SlotRef};

/// A worker's handle on the job's checkpointing, passed to the stateful
/// operators ([`crate::StateStream::keyed_process`]) as they are built.
///
/// Cheap to clone; it lives on the worker's thread (not `Send`).
#[derive(Debug, Clone)]
pub struct Cairn {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CheckpointConfig,
    restore: Option<CheckpointMetadata>,
    start: u64,
    index: u32,
    peers: u32,
    participants: RefCell<Participants>,
}

impl Cairn {
    pub(crate) fn new(
        config: CheckpointConfig,
        restore: Option<CheckpointMetadata>,
        start: u64,
        index: u32,
        peers: u32,
    ) -> Self {
        Cairn {
            inner: Rc::new(Inner {
                config,
                restore,
                start,
                index,
                peers,
                participants: RefCell::new(Participants::default()),
            }),
        }
    }

    /// The job's checkpoint settings.
    pub fn config(&self) -> &CheckpointConfig {
        &self.inner.config
    }

    /// This worker's index among all workers of all processes.
    pub fn worker_index(&self) -> u32 {
        self.inner.index
    }

    /// The number of workers of the job (the parallelism of every operator).
    pub fn peers(&self) -> u32 {
        self.inner.peers
    }

    /// The epoch the sources start at: the newest checkpoint id in storage
    /// (0 for a new job), so checkpoint ids keep increasing across restarts.
    pub fn start_epoch(&self) -> u64 {
        self.inner.start
    }

    /// The checkpoint this run restored from, if any.
    pub fn restored_checkpoint(&self) -> Option<CheckpointId> {
        self.inner.restore.as_ref().map(|m| m.checkpoint_id)
    }

    /// The metadata of the checkpoint this run restored from, if any.
    pub fn restored(&self) -> Option<&CheckpointMetadata> {
        self.inner.restore.as_ref()
    }

    /// The worker that owns key group `kg` (Flink's `kg·peers/maxP`).
    pub fn owner_of(&self, kg: KeyGroup) -> u32 {
        self.inner
            .config
            .max_parallelism
            .subtask_for_key_group(self.inner.peers, kg)
    }

    /// The worker that owns the key whose postcard encoding is `key`.
    pub fn owner_of_key(&self, key: &[u8]) -> u32 {
        self.owner_of(self.inner.config.max_parallelism.key_group_of(key))
    }

    /// Registers a checkpoint participant of this worker. Fails if the uid
    /// is already taken by another participant of this job.
    pub(crate) fn register(&self, slot: SlotRef) -> Result<(), crate::TimelyError> {
        let mut participants = self.inner.participants.borrow_mut();
        let uid = slot.borrow().operator.clone();
        if participants
            .slots
            .iter()
            .any(|s| s.borrow().operator == uid)
        {
            return Err(crate::TimelyError::Config(format!(
                "operator uid {uid} is used twice in the dataflow; every stateful operator needs its own"
            )));
        }
        participants.add(slot);
        Ok(())
    }

    /// Every participant registered so far.
    pub(crate) fn slots(&self) -> Vec<SlotRef> {
        self.inner.participants.borrow().slots.clone()
    }

    /// The newest checkpoint every participant of this worker acknowledged.
    pub(crate) fn acked_upto(&self) -> u64 {
        self.inner
            .participants
            .borrow()
            .acked_upto()
            .unwrap_or(self.inner.start)
    }

    /// The state of `uid` in the restored checkpoint.
    pub(crate) fn restored_operator(
        &self,
        uid: &OperatorId,
    ) -> Option<&state_core::OperatorSnapshot> {
        self.inner
            .restore
            .as_ref()?
            .operators
            .iter()
            .find(|op| &op.operator_id == uid)
    }
}
