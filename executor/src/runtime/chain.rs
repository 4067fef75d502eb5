//! Chained operators: push-based, each operator forwards into the next on the
//! same thread; a chain ends in a sink or in a keyed exchange to the next stage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};
use state_core::OperatorStateStore;
use state_core::{AsyncSnapshot, CheckpointId, KeyGroup, MaxParallelism, OperatorId};

use crate::error::{ExecutorError, Result, UserError};
use crate::sink::Sink;

/// Records in and out of one operator subtask.
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
}

impl OpCounters {
    #[inline]
    pub(crate) fn inc_in(&self) {
        self.records_in.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn inc_out(&self, n: u64) {
        self.records_out.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which operator subtask a chained operator is, for errors and state.
#[derive(Debug, Clone)]
pub(crate) struct OpInfo {
    pub uid: OperatorId,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: MaxParallelism,
    pub counters: Arc<OpCounters>,
}

impl OpInfo {
    /// The task error for a user function's error. A state error of kind
    /// invalid argument that the function passed on (a state registered with
    /// another type or kind than its checkpoint recorded, say) is a problem
    /// of the job no restart can fix: [`ExecutorError::InvalidJob`], naming
    /// the operator, so the job fails at once instead of restarting forever.
    pub(crate) fn user_error(&self, e: UserError) -> ExecutorError {
        match e.downcast::<state_core::StateError>() {
            Ok(state) if state.kind() == state_core::ErrorKind::InvalidArgument => {
                ExecutorError::InvalidJob(format!(
                    "{} ({}/{}): {state}",
                    self.uid.0,
                    self.subtask + 1,
                    self.parallelism
                ))
            }
            Ok(state) => self.failed(state.to_string()),
            Err(e) => self.failed(e.to_string()),
        }
    }

    /// The task error with `message`.
    pub(crate) fn failed(&self, message: impl Into<String>) -> ExecutorError {
        ExecutorError::Task {
            operator: self.uid.0.clone(),
            subtask: self.subtask,
            parallelism: self.parallelism,
            message: message.into(),
        }
    }

    /// The stable name of this subtask's operator-state stream.
    pub(crate) fn operator_stream_name(&self) -> String {
        format!("{}-{}-operator", self.uid.0, self.subtask)
    }
}

/// The state one operator subtask hands to a checkpoint: the synchronous
/// part is done; the asynchronous part runs off the task thread.
pub(crate) struct OperatorPart {
    pub info: OpInfo,
    pub keyed: Option<Box<dyn AsyncSnapshot>>,
    pub operator_state: Option<OperatorStateStore>,
}

impl std::fmt::Debug for OperatorPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorPart")
            .field("operator", &self.info.uid)
            .field("subtask", &self.info.subtask)
            .field("keyed", &self.keyed.is_some())
            .finish()
    }
}

/// Events that travel through a chain besides records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainEvent {
    /// Snapshot for checkpoint `id` (synchronous part), then forward.
    Barrier { id: CheckpointId, timestamp: u64 },
    /// Checkpoint `id` completed.
    Complete(CheckpointId),
    /// Checkpoint `id` was aborted.
    Aborted(CheckpointId),
    /// Checkpoint `id` is no longer retained (local copies can go).
    Subsumed(CheckpointId),
    /// Processing time advanced (fire timers, flush buffers).
    Tick { now_millis: u64 },
    /// The input has nothing now: flush buffered records.
    Flush,
    /// The input ended (Flink's end of data): fire what is left, flush and
    /// finish. A final checkpoint may still pass through after it.
    End,
    /// Nothing more comes, not even a barrier: the final checkpoint is done
    /// (Flink's end of partition). Downstream tasks may exit.
    EndOfPartition,
}

/// One step of a chain.
pub(crate) trait Output<T>: Send {
    /// Processes one record.
    fn push(&mut self, record: T) -> Result<()>;
    /// Handles an event, adding snapshot parts on a barrier, and forwards it.
    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()>;
}

/// A function of `map`.
pub(crate) type MapFn<T, U> = Arc<dyn Fn(T) -> Result<U, UserError> + Send + Sync>;
/// A function of `flat_map`.
pub(crate) type FlatMapFn<T, U> =
    Arc<dyn Fn(T, &mut Vec<U>) -> Result<(), UserError> + Send + Sync>;
/// A function of `filter`.
pub(crate) type FilterFn<T> = Arc<dyn Fn(&T) -> Result<bool, UserError> + Send + Sync>;

pub(crate) struct MapOp<T, U> {
    pub f: MapFn<T, U>,
    pub info: OpInfo,
    pub next: Box<dyn Output<U>>,
}

impl<T: Send, U: Send> Output<T> for MapOp<T, U> {
    fn push(&mut self, record: T) -> Result<()> {
        self.info.counters.inc_in();
        let out = (self.f)(record).map_err(|e| self.info.user_error(e))?;
        self.info.counters.inc_out(1);
        self.next.push(out)
    }
    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()> {
        self.next.event(event, parts)
    }
}

pub(crate) struct FlatMapOp<T, U> {
    pub f: FlatMapFn<T, U>,
    pub info: OpInfo,
    pub buffer: Vec<U>,
    pub next: Box<dyn Output<U>>,
}

impl<T: Send, U: Send> Output<T> for FlatMapOp<T, U> {
    fn push(&mut self, record: T) -> Result<()> {
        self.info.counters.inc_in();
        self.buffer.clear();
        (self.f)(record, &mut self.buffer).map_err(|e| self.info.user_error(e))?;
        self.info.counters.inc_out(self.buffer.len() as u64);
        for out in self.buffer.drain(..) {
            self.next.push(out)?;
        }
        Ok(())
    }
    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()> {
        self.next.event(event, parts)
    }
}

pub(crate) struct FilterOp<T> {
    pub f: FilterFn<T>,
    pub info: OpInfo,
    pub next: Box<dyn Output<T>>,
}

impl<T: Send> Output<T> for FilterOp<T> {
    fn push(&mut self, record: T) -> Result<()> {
        self.info.counters.inc_in();
        if (self.f)(&record).map_err(|e| self.info.user_error(e))? {
            self.info.counters.inc_out(1);
            self.next.push(record)?;
        }
        Ok(())
    }
    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()> {
        self.next.event(event, parts)
    }
}

/// The end of a chain that writes into a [`Sink`].
pub(crate) struct SinkOp<T> {
    pub sink: Box<dyn Sink<T>>,
    pub state: OperatorStateStore,
    pub info: OpInfo,
}

impl<T: Send> Output<T> for SinkOp<T> {
    fn push(&mut self, record: T) -> Result<()> {
        self.info.counters.inc_in();
        self.sink.write(record)
    }
    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()> {
        match event {
            ChainEvent::Barrier { id, .. } => {
                self.sink.snapshot_state(*id, &mut self.state)?;
                if !self.state.states().is_empty() {
                    parts.push(OperatorPart {
                        info: self.info.clone(),
                        keyed: None,
                        operator_state: Some(self.state.clone()),
                    });
                }
                Ok(())
            }
            ChainEvent::Complete(id) => self.sink.notify_checkpoint_complete(*id),
            ChainEvent::End => self.sink.finish(),
            ChainEvent::Aborted(_)
            | ChainEvent::Subsumed(_)
            | ChainEvent::EndOfPartition
            | ChainEvent::Tick { .. }
            | ChainEvent::Flush => Ok(()),
        }
    }
}

/// What travels between stages.
#[derive(Debug)]
pub(crate) enum Message<T> {
    Records(Vec<T>),
    Barrier {
        id: CheckpointId,
        timestamp: u64,
    },
    /// No more records from this channel; barriers still come.
    EndOfData,
    /// Nothing more at all from this channel.
    End,
}

/// Serializes a record's key into the (cleared) scratch buffer.
pub(crate) type RouteFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// Sends `message` on `tx`, waiting while the channel is full (backpressure)
/// but giving up when the job is cancelled or the receiver is gone.
pub(crate) fn send_blocking<T>(
    tx: &Sender<Message<T>>,
    mut message: Message<T>,
    cancel: &AtomicBool,
) -> Result<()> {
    loop {
        match tx.send_timeout(message, Duration::from_millis(20)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(m)) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(ExecutorError::Canceled);
                }
                message = m;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(ExecutorError::Canceled),
        }
    }
}

/// The end of a chain that routes records by key group to the subtasks of
/// the next stage, in batches.
pub(crate) struct ExchangeOut<T> {
    pub route: RouteFn<T>,
    pub max_parallelism: MaxParallelism,
    pub senders: Vec<Sender<Message<T>>>,
    pub buffers: Vec<Vec<T>>,
    pub batch_size: usize,
    pub scratch: Vec<u8>,
    pub cancel: Arc<AtomicBool>,
}

impl<T: Send> ExchangeOut<T> {
    fn flush(&mut self) -> Result<()> {
        for (tx, buf) in self.senders.iter().zip(self.buffers.iter_mut()) {
            if !buf.is_empty() {
                let batch = std::mem::replace(buf, Vec::with_capacity(self.batch_size));
                send_blocking(tx, Message::Records(batch), &self.cancel)?;
            }
        }
        Ok(())
    }

    fn broadcast(&mut self, make: impl Fn() -> Message<T>) -> Result<()> {
        self.flush()?;
        for tx in &self.senders {
            send_blocking(tx, make(), &self.cancel)?;
        }
        Ok(())
    }
}

impl<T: Send> Output<T> for ExchangeOut<T> {
    fn push(&mut self, record: T) -> Result<()> {
        self.scratch.clear();
        (self.route)(&record, &mut self.scratch)?;
        let kg: KeyGroup = self.max_parallelism.key_group_of(&self.scratch);
        let p = self.senders.len() as u32;
        let target = self.max_parallelism.subtask_for_key_group(p, kg) as usize;
        let Some(buf) = self.buffers.get_mut(target) else {
            return Err(ExecutorError::InvalidJob(format!(
                "key group {kg} routed to subtask {target} of {p}"
            )));
        };
        buf.push(record);
        if buf.len() >= self.batch_size {
            let batch = std::mem::replace(buf, Vec::with_capacity(self.batch_size));
            if let Some(tx) = self.senders.get(target) {
                send_blocking(tx, Message::Records(batch), &self.cancel)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, event: &ChainEvent, _parts: &mut Vec<OperatorPart>) -> Result<()> {
        match event {
            ChainEvent::Barrier { id, timestamp } => {
                let (id, timestamp) = (*id, *timestamp);
                self.broadcast(|| Message::Barrier { id, timestamp })
            }
            ChainEvent::End => self.broadcast(|| Message::EndOfData),
            ChainEvent::EndOfPartition => self.broadcast(|| Message::End),
            ChainEvent::Flush | ChainEvent::Tick { .. } => self.flush(),
            ChainEvent::Complete(_) | ChainEvent::Aborted(_) | ChainEvent::Subsumed(_) => Ok(()),
        }
    }
}
