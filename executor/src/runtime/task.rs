//! Tasks: one thread per subtask of a stage, reading a source or the
//! stage's input exchange and pushing into its chain of operators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};
use state_core::OperatorStateStore;
use state_core::SubtaskSnapshot;
use state_core::{CheckpointId, CheckpointStorage, Clock};

use super::barrier::{BarrierAction, BarrierHandler};
use super::chain::{ChainEvent, Message, OpInfo, OperatorPart, Output};
use super::savepoint::SavepointTargets;
use crate::error::{ExecutorError, Result};
use crate::source::{Source, SourcePoll};

/// How often a busy task advances processing time (timers, buffer flushes).
const TICK: Duration = Duration::from_millis(10);

/// A command from the job master to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskCommand {
    /// Sources only: snapshot the read position and emit barrier `id`;
    /// with `stop` (stop with savepoint), read nothing more after it until
    /// [`TaskCommand::Finish`], or until `id` is aborted.
    Trigger {
        id: CheckpointId,
        timestamp: u64,
        stop: bool,
    },
    /// Checkpoint `id` completed.
    Complete(CheckpointId),
    /// Checkpoint `id` was aborted.
    Abort(CheckpointId),
    /// Checkpoint `id` was subsumed: no longer retained.
    Subsumed(CheckpointId),
    /// Sources only, after their input ended or they stopped for a
    /// savepoint: the final checkpoint or the savepoint (if any) completed;
    /// end the stream so every task can exit.
    Finish,
}

/// One operator subtask's part of an acknowledgement.
pub(crate) type AckedState = state_core::SubtaskPart;

/// What tasks report to the job master.
#[derive(Debug)]
pub(crate) enum TaskReport {
    Ack {
        task: usize,
        id: CheckpointId,
        states: Vec<AckedState>,
    },
    Decline {
        id: CheckpointId,
        reason: String,
        /// Whether it counts towards the tolerable failed checkpoints.
        counted: bool,
    },
    /// A source's input ended; it waits for [`TaskCommand::Finish`].
    InputEnded { task: usize },
    /// The task ended: `Ok` when its input ended, else why it stopped.
    Exited { task: usize, result: Result<()> },
}

/// The threads writing the asynchronous parts of an attempt's snapshots.
/// The attempt joins them when the job ends (or hands them to the job's
/// reapers on failover), so no snapshot writes into checkpoint storage
/// after the job has returned.
pub(crate) type SnapshotThreads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// What a running task talks to.
pub(crate) struct TaskRuntime {
    pub task: usize,
    pub control: Receiver<TaskCommand>,
    pub reports: Sender<(u32, TaskReport)>,
    pub attempt: u32,
    pub cancel: Arc<AtomicBool>,
    pub storage: Arc<dyn CheckpointStorage>,
    /// Savepoints write to their own storage instead of `storage`.
    pub savepoints: SavepointTargets,
    pub clock: Arc<dyn Clock>,
    pub snapshots: SnapshotThreads,
}

impl TaskRuntime {
    pub(crate) fn report(&self, report: TaskReport) {
        // The master is gone only when the job is over.
        let _ = self.reports.send((self.attempt, report));
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(ExecutorError::Canceled)
        } else {
            Ok(())
        }
    }

    /// Runs the asynchronous part of the snapshot off the task thread and
    /// acknowledges (or declines) checkpoint `id`.
    fn acknowledge(&self, id: CheckpointId, parts: Vec<OperatorPart>) {
        let task = self.task;
        if parts.is_empty() {
            self.report(TaskReport::Ack {
                task,
                id,
                states: Vec::new(),
            });
            return;
        }
        let storage = self.savepoints.storage(id, &self.storage);
        let reports = self.reports.clone();
        let attempt = self.attempt;
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{id}-{task}"))
            .spawn(move || {
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write_parts(id, parts, storage.as_ref())
                }));
                let report = match written {
                    Ok(Ok(states)) => TaskReport::Ack { task, id, states },
                    Ok(Err(e)) => TaskReport::Decline {
                        id,
                        reason: e.to_string(),
                        counted: true,
                    },
                    Err(payload) => TaskReport::Decline {
                        id,
                        reason: format!(
                            "the asynchronous snapshot panicked: {}",
                            panic_message(payload.as_ref())
                        ),
                        counted: true,
                    },
                };
                let _ = reports.send((attempt, report));
            });
        match spawned {
            Ok(thread) => {
                let mut threads = self
                    .snapshots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                threads.retain(|t| !t.is_finished());
                threads.push(thread);
            }
            Err(e) => self.report(TaskReport::Decline {
                id,
                reason: format!("cannot start the snapshot thread: {e}"),
                counted: true,
            }),
        }
    }
}

fn write_parts(
    id: CheckpointId,
    parts: Vec<OperatorPart>,
    storage: &dyn CheckpointStorage,
) -> Result<Vec<AckedState>> {
    let mut states = Vec::with_capacity(parts.len());
    for part in parts {
        let keyed = match part.keyed {
            Some(snapshot) => snapshot.write(storage)?.into_iter().collect(),
            None => Vec::new(),
        };
        let operator = match &part.operator_state {
            Some(store) => store.snapshot(id, storage)?,
            None => None,
        };
        if keyed.is_empty() && operator.is_none() {
            continue;
        }
        states.push(AckedState {
            operator: part.info.uid.clone(),
            parallelism: part.info.parallelism,
            max_parallelism: part.info.max_parallelism.get(),
            snapshot: SubtaskSnapshot {
                subtask: part.info.subtask,
                keyed,
                operator,
            },
        });
    }
    Ok(states)
}

/// A subtask's work.
pub(crate) trait Task: Send {
    /// Runs until the input ends (`Ok`), an error, or cancellation. The
    /// task (its chain and state) stays with the caller, which frees it once
    /// the master no longer waits for this task.
    fn run(&mut self, rt: &TaskRuntime) -> Result<()>;
}

/// Reads a source and pushes into the chain.
pub(crate) struct SourceTask<T> {
    pub source: Box<dyn Source<T>>,
    pub state: OperatorStateStore,
    pub info: OpInfo,
    pub head: Box<dyn Output<T>>,
    /// The stop-with-savepoint whose barrier this source emitted: it reads
    /// nothing more unless that savepoint is aborted.
    pub stopped_at: Option<CheckpointId>,
}

impl<T: Send> SourceTask<T> {
    fn command(&mut self, rt: &TaskRuntime, command: TaskCommand) -> Result<()> {
        let mut parts = Vec::new();
        match command {
            // Only sent after the input ended or the source stopped, to
            // `wait_for_finish`.
            TaskCommand::Finish => {}
            TaskCommand::Trigger {
                id,
                timestamp,
                stop,
            } => {
                if stop {
                    self.stopped_at = Some(id);
                }
                self.source.snapshot_state(&mut self.state)?;
                parts.push(OperatorPart {
                    info: self.info.clone(),
                    keyed: None,
                    operator_state: Some(self.state.clone()),
                });
                self.head
                    .event(&ChainEvent::Barrier { id, timestamp }, &mut parts)?;
                rt.acknowledge(id, parts);
            }
            TaskCommand::Complete(id) => {
                self.source.notify_checkpoint_complete(id)?;
                self.head.event(&ChainEvent::Complete(id), &mut parts)?;
            }
            TaskCommand::Abort(id) => {
                if self.stopped_at == Some(id) {
                    tracing::info!(
                        checkpoint_id = id.get(),
                        "the stop-with-savepoint failed: reading on"
                    );
                    self.stopped_at = None;
                }
                self.head.event(&ChainEvent::Aborted(id), &mut parts)?;
            }
            TaskCommand::Subsumed(id) => self.head.event(&ChainEvent::Subsumed(id), &mut parts)?,
        }
        Ok(())
    }

    /// Stopped for a savepoint: serves commands, reading nothing, until the
    /// master says [`TaskCommand::Finish`] (the savepoint completed: `true`)
    /// or the savepoint is aborted (`false`: read on).
    fn wait_while_stopped(&mut self, rt: &TaskRuntime) -> Result<bool> {
        let mut parts = Vec::new();
        self.head.event(&ChainEvent::Flush, &mut parts)?;
        while self.stopped_at.is_some() {
            rt.check_cancel()?;
            match rt.control.recv_timeout(TICK) {
                Ok(TaskCommand::Finish) => {
                    return self
                        .head
                        .event(&ChainEvent::EndOfPartition, &mut parts)
                        .map(|()| true);
                }
                Ok(command) => self.command(rt, command)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(ExecutorError::Canceled),
            }
        }
        Ok(false)
    }
}

impl<T: Send> SourceTask<T> {
    /// After the input ended: keeps serving checkpoints (the final one
    /// among them) until the master says [`TaskCommand::Finish`], then ends
    /// the stream.
    fn wait_for_finish(&mut self, rt: &TaskRuntime) -> Result<()> {
        rt.report(TaskReport::InputEnded { task: rt.task });
        loop {
            rt.check_cancel()?;
            match rt.control.recv_timeout(TICK) {
                Ok(TaskCommand::Finish) => {
                    let mut parts = Vec::new();
                    return self.head.event(&ChainEvent::EndOfPartition, &mut parts);
                }
                Ok(command) => self.command(rt, command)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(ExecutorError::Canceled),
            }
        }
    }
}

impl<T: Send> Task for SourceTask<T> {
    fn run(&mut self, rt: &TaskRuntime) -> Result<()> {
        let mut last_tick = Instant::now();
        let mut since_check = 0u32;
        let mut parts = Vec::new();
        loop {
            loop {
                match rt.control.try_recv() {
                    Ok(command) => self.command(rt, command)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(ExecutorError::Canceled),
                }
            }
            if self.stopped_at.is_some() && self.wait_while_stopped(rt)? {
                return Ok(());
            }
            match self.source.poll_next()? {
                SourcePoll::Record(record) => {
                    self.info.counters.inc_out(1);
                    self.head.push(record)?;
                    since_check += 1;
                    if since_check >= 256 {
                        since_check = 0;
                        rt.check_cancel()?;
                        if last_tick.elapsed() >= TICK {
                            last_tick = Instant::now();
                            let now_millis = rt.clock.now_millis();
                            self.head
                                .event(&ChainEvent::Tick { now_millis }, &mut parts)?;
                        }
                    }
                }
                SourcePoll::Idle => {
                    rt.check_cancel()?;
                    self.head.event(&ChainEvent::Flush, &mut parts)?;
                    if last_tick.elapsed() >= TICK {
                        last_tick = Instant::now();
                        let now_millis = rt.clock.now_millis();
                        self.head
                            .event(&ChainEvent::Tick { now_millis }, &mut parts)?;
                    }
                    match rt.control.recv_timeout(Duration::from_millis(2)) {
                        Ok(command) => self.command(rt, command)?,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return Err(ExecutorError::Canceled),
                    }
                }
                SourcePoll::End => {
                    self.head.event(&ChainEvent::End, &mut parts)?;
                    return self.wait_for_finish(rt);
                }
            }
        }
    }
}

/// Reads a keyed exchange, aligning barriers, and pushes into the chain.
pub(crate) struct ExchangeTask<T> {
    pub inputs: Vec<Receiver<Message<T>>>,
    pub barriers: BarrierHandler,
    pub head: Box<dyn Output<T>>,
    /// Channels that sent [`Message::EndOfData`] (or [`Message::End`]).
    pub data_ended: Vec<bool>,
    /// Whether [`ChainEvent::End`] went down the chain.
    pub end_signalled: bool,
}

impl<T: Send> ExchangeTask<T> {
    /// A task reading `inputs`, aligning with `barriers`, into `head`.
    pub(crate) fn new(
        inputs: Vec<Receiver<Message<T>>>,
        barriers: BarrierHandler,
        head: Box<dyn Output<T>>,
    ) -> Self {
        let data_ended = vec![false; inputs.len()];
        ExchangeTask {
            inputs,
            barriers,
            head,
            data_ended,
            end_signalled: false,
        }
    }

    /// Channel `channel` sent its last record: once every channel did, the
    /// chain's input ended.
    fn end_of_data(&mut self, channel: usize) -> Result<()> {
        if let Some(ended) = self.data_ended.get_mut(channel) {
            *ended = true;
        }
        if !self.end_signalled && self.data_ended.iter().all(|&e| e) {
            self.end_signalled = true;
            let mut parts = Vec::new();
            self.head.event(&ChainEvent::End, &mut parts)?;
        }
        Ok(())
    }
}

impl<T: Send> ExchangeTask<T> {
    fn act(&mut self, rt: &TaskRuntime, action: BarrierAction, timestamp: u64) -> Result<()> {
        let (aborted, snapshot) = match action {
            BarrierAction::None => return Ok(()),
            BarrierAction::Snapshot(id) => (Vec::new(), Some(id)),
            BarrierAction::Abort(ids) => (ids, None),
            BarrierAction::AbortAndSnapshot(ids, id) => (ids, Some(id)),
        };
        for id in aborted {
            rt.report(TaskReport::Decline {
                id,
                reason: format!(
                    "checkpoint {id} was overtaken by a newer barrier during alignment"
                ),
                counted: false,
            });
        }
        if let Some(id) = snapshot {
            let mut parts = Vec::new();
            self.head
                .event(&ChainEvent::Barrier { id, timestamp }, &mut parts)?;
            rt.acknowledge(id, parts);
        }
        Ok(())
    }

    fn command(&mut self, rt: &TaskRuntime, command: TaskCommand) -> Result<()> {
        let mut parts = Vec::new();
        match command {
            TaskCommand::Trigger { .. } | TaskCommand::Finish => Ok(()),
            TaskCommand::Complete(id) => self.head.event(&ChainEvent::Complete(id), &mut parts),
            TaskCommand::Subsumed(id) => self.head.event(&ChainEvent::Subsumed(id), &mut parts),
            TaskCommand::Abort(id) => {
                self.barriers.on_abort(id);
                let _ = rt;
                self.head.event(&ChainEvent::Aborted(id), &mut parts)
            }
        }
    }
}

impl<T: Send> Task for ExchangeTask<T> {
    fn run(&mut self, rt: &TaskRuntime) -> Result<()> {
        let mut last_tick = Instant::now();
        let mut parts = Vec::new();
        loop {
            rt.check_cancel()?;
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now_millis = rt.clock.now_millis();
                self.head
                    .event(&ChainEvent::Tick { now_millis }, &mut parts)?;
            }
            let mut select = Select::new();
            let mut channels = Vec::with_capacity(self.inputs.len());
            for (i, rx) in self.inputs.iter().enumerate() {
                if !self.barriers.is_blocked(i) {
                    select.recv(rx);
                    channels.push(i);
                }
            }
            let control_index = select.recv(&rt.control);
            let op = match select.select_timeout(TICK) {
                Ok(op) => op,
                Err(_) => {
                    self.head.event(&ChainEvent::Flush, &mut parts)?;
                    continue;
                }
            };
            if op.index() == control_index {
                match op.recv(&rt.control) {
                    Ok(command) => self.command(rt, command)?,
                    Err(_) => return Err(ExecutorError::Canceled),
                }
                continue;
            }
            let Some(&channel) = channels.get(op.index()) else {
                continue;
            };
            let Some(rx) = self.inputs.get(channel) else {
                continue;
            };
            let message = op.recv(rx).map_err(|_| ExecutorError::Canceled)?;
            match message {
                Message::Records(batch) => {
                    for record in batch {
                        self.head.push(record)?;
                    }
                }
                Message::Barrier { id, timestamp } => {
                    // Completions sent before this barrier's checkpoint was
                    // triggered come first (a random pick of the select could
                    // take the barrier first): a two-phase-commit sink then
                    // commits checkpoint n before it pre-commits n + 1, so a
                    // new transaction never waits on the locks of the last.
                    while let Ok(command) = rt.control.try_recv() {
                        self.command(rt, command)?;
                    }
                    let action = self.barriers.on_barrier(channel, id);
                    self.act(rt, action, timestamp)?;
                }
                Message::EndOfData => self.end_of_data(channel)?,
                Message::End => {
                    self.end_of_data(channel)?;
                    let action = self.barriers.on_end_of_input(channel);
                    self.act(rt, action, rt.clock.now_millis())?;
                    if self.barriers.all_ended() {
                        // Notifications sent before the stream ended (the
                        // final checkpoint's completion: sinks commit) are
                        // handled before the task exits.
                        while let Ok(command) = rt.control.try_recv() {
                            self.command(rt, command)?;
                        }
                        self.head.event(&ChainEvent::EndOfPartition, &mut parts)?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
