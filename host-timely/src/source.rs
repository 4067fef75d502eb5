//! Replayable partitioned sources, read by the worker's driver loop, with
//! their offsets kept per epoch.

use state_core::{
    CheckpointId, OperatorId, OperatorStateHandle, OperatorStateMode, OperatorStateStore,
    SubtaskSnapshot,
};
use timely::dataflow::InputHandleVec;

use crate::config::EpochPolicy;
use crate::context::Cairn;
use crate::error::TimelyError;
use crate::protocol::{Slot, SlotRef};

/// What one read of a partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many records were appended.
    Read(usize),
    /// Nothing now; more may come later (an unbounded source).
    Idle,
    /// The partition has ended: no record at or after this offset.
    Ended,
}

/// A source whose records can be read again from any offset: Kafka
/// partitions, cairn's replayable log, files, a deterministic generator.
///
/// Each worker gets an instance ([`crate::JobSpec::source`]) and reads the
/// partitions assigned to it; after a restore, the partitions and their
/// offsets come from the checkpoint (pooled and split again when the number
/// of workers changed).
pub trait PartitionedSource: 'static {
    /// The records.
    type Item;
    /// How many partitions the source has (the same on every worker).
    fn partitions(&self) -> u32;
    /// Appends up to `max` records of `partition`, starting at record
    /// `offset`, to `out`.
    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
        out: &mut Vec<Self::Item>,
    ) -> Result<ReadOutcome, TimelyError>;
}

/// The operator uid under which source offsets are checkpointed.
pub const SOURCE_UID: &str = "cairn-source";
const OFFSETS: &str = "offsets";
/// Records read from one partition before the next one gets its turn.
const READ_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Partition {
    id: u32,
    offset: u64,
    ended: bool,
}

/// The source side of a worker: reads, closes epochs, acknowledges offsets.
pub(crate) struct SourceDriver<S: PartitionedSource> {
    source: S,
    parts: Vec<Partition>,
    next: usize,
    slot: SlotRef,
    /// The epoch records are read into.
    pub epoch: u64,
    in_epoch: u64,
    epoch_started: u64,
    buf: Vec<S::Item>,
}

impl<S: PartitionedSource> std::fmt::Debug for SourceDriver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDriver")
            .field("parts", &self.parts)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<S: PartitionedSource> SourceDriver<S>
where
    S::Item: Clone + 'static,
{
    /// The source of this worker: its partitions and offsets from the
    /// restored checkpoint, or partitions `p` with `p % peers == worker` from 0.
    pub(crate) fn open(cairn: &Cairn, source: S) -> Result<Self, TimelyError> {
        let uid = OperatorId(SOURCE_UID.to_owned());
        let config = cairn.config();
        let count = source.partitions();
        let offsets: Vec<(u32, u64)> = match cairn.restored_operator(&uid) {
            Some(op) => {
                let handles: Vec<OperatorStateHandle> = op
                    .subtasks
                    .iter()
                    .filter_map(|s| s.operator.clone())
                    .collect();
                let store = OperatorStateStore::restore(
                    &handles,
                    config.storage.as_ref(),
                    cairn.peers(),
                    cairn.worker_index(),
                )?;
                store.get_typed(OFFSETS)?
            }
            None => (0..count)
                .filter(|p| p % cairn.peers() == cairn.worker_index())
                .map(|p| (p, 0))
                .collect(),
        };
        if let Some((p, _)) = offsets.iter().find(|(p, _)| *p >= count) {
            return Err(TimelyError::Config(format!(
                "the restored checkpoint has offsets for source partition {p}, the source has {count} partitions"
            )));
        }
        let slot = Slot::new(
            uid,
            cairn.worker_index(),
            cairn.peers(),
            config.max_parallelism.get(),
            cairn.start_epoch(),
        );
        cairn.register(std::rc::Rc::clone(&slot))?;
        Ok(SourceDriver {
            source,
            parts: offsets
                .into_iter()
                .map(|(id, offset)| Partition {
                    id,
                    offset,
                    ended: false,
                })
                .collect(),
            next: 0,
            slot,
            epoch: cairn.start_epoch(),
            in_epoch: 0,
            epoch_started: config.clock.now_millis(),
            buf: Vec::new(),
        })
    }

    /// Whether every partition of this worker has ended.
    pub(crate) fn exhausted(&self) -> bool {
        self.parts.iter().all(|p| p.ended)
    }

    /// One step: reads a batch if flow control lets the current epoch be
    /// read (`completed_upto`: every checkpoint up to it completed), and
    /// closes the epoch when the policy says so. Returns whether it did
    /// anything.
    pub(crate) fn step(
        &mut self,
        cairn: &Cairn,
        input: &mut InputHandleVec<u64, S::Item>,
        completed_upto: u64,
    ) -> Result<bool, TimelyError> {
        let config = cairn.config();
        if self.exhausted() {
            // Ended sources follow the completions one epoch at a time, so
            // that once every source ended, a completed checkpoint says so
            // and nothing is snapshotted after it.
            if completed_upto >= self.epoch {
                self.close_epoch(cairn, input)?;
                return Ok(true);
            }
            return Ok(false);
        }
        if self.epoch >= completed_upto + config.epochs_in_flight {
            return Ok(false);
        }
        let mut progressed = false;
        if let Some(i) = (0..self.parts.len())
            .map(|k| (self.next + k) % self.parts.len())
            .find(|&i| !self.parts[i].ended)
        {
            self.next = i + 1;
            let part = self.parts[i];
            let max = match config.epochs {
                EpochPolicy::Records(n) => READ_BATCH.min((n - self.in_epoch) as usize),
                EpochPolicy::Interval(_) => READ_BATCH,
            };
            match self.source.read(part.id, part.offset, max, &mut self.buf)? {
                ReadOutcome::Read(n) => {
                    self.parts[i].offset += n as u64;
                    self.in_epoch += n as u64;
                    progressed = n > 0;
                    // The batch as one message, not record by record.
                    input.send_batch(&mut self.buf);
                    self.buf.clear();
                }
                ReadOutcome::Idle => {}
                ReadOutcome::Ended => {
                    self.parts[i].ended = true;
                    progressed = true;
                }
            }
        }
        let due = match config.epochs {
            EpochPolicy::Records(n) => self.in_epoch >= n,
            EpochPolicy::Interval(d) => {
                let elapsed = config.clock.now_millis().saturating_sub(self.epoch_started);
                u128::from(elapsed) >= d.as_millis()
            }
        };
        if due || self.exhausted() {
            self.close_epoch(cairn, input)?;
            progressed = true;
        }
        Ok(progressed)
    }

    /// Ends the current epoch `e`: checkpoint `e + 1` gets this worker's
    /// offsets (written now: they are a few bytes), and the input advances.
    /// Offsets that cannot be written fail the checkpoint, not the job.
    fn close_epoch(
        &mut self,
        cairn: &Cairn,
        input: &mut InputHandleVec<u64, S::Item>,
    ) -> Result<(), TimelyError> {
        let config = cairn.config();
        let n = self.epoch + 1;
        let id = CheckpointId(n);
        let offsets: Vec<(u32, u64)> = self.parts.iter().map(|p| (p.id, p.offset)).collect();
        let written = config.storage.initialize_checkpoint(id).and_then(|()| {
            let mut store = OperatorStateStore::new();
            store.set_stream_name(&format!("{SOURCE_UID}-{}-offsets", cairn.worker_index()))?;
            store.register(OFFSETS, OperatorStateMode::Split)?;
            store.update_typed(OFFSETS, &offsets)?;
            store.snapshot(id, config.storage.as_ref())
        });
        let now = config.clock.now_millis();
        {
            let mut slot = self.slot.borrow_mut();
            match written {
                Ok(handle) => {
                    let mut ack = slot.ack(
                        n,
                        Some(SubtaskSnapshot {
                            subtask: cairn.worker_index(),
                            keyed: Vec::new(),
                            operator: handle,
                        }),
                    );
                    ack.source_exhausted = Some(self.exhausted());
                    ack.timestamp_millis = Some(now);
                    slot.ready.push(ack);
                    slot.acked_upto = n;
                }
                Err(err) => slot.fail(n, &err),
            }
        }
        input.advance_to(n);
        self.epoch = n;
        self.in_epoch = 0;
        self.epoch_started = now;
        Ok(())
    }
}
