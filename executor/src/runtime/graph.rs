//! The job graph: stages (chains of operators run by one task per subtask),
//! the keyed exchanges between them, and what a task needs to build itself.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::{Receiver, Sender};
use state_core::OperatorSnapshot;
use state_core::OperatorStateStore;
use state_core::{
    CheckpointMetadata, CheckpointStorage, Clock, KeyedStateHandle, MaxParallelism, OperatorId,
    SnapshotMode,
};

use super::chain::{Message, OpInfo};
use super::savepoint::SavepointTargets;
use super::task::Task;
use crate::config::CheckpointingMode;
use crate::error::{ExecutorError, Result};
use crate::metrics::MetricsRegistry;

/// The checkpoint a job attempt restores from.
#[derive(Debug)]
pub(crate) struct RestoreState {
    pub metadata: CheckpointMetadata,
    /// Where its files are: the job's storage, or another one (restore mode
    /// no-claim from another checkpoint directory).
    pub storage: Arc<dyn CheckpointStorage>,
    /// Whether the checkpoint is one of the job's retained checkpoints
    /// (resume, failover, claim mode). When it is not, backends are told to
    /// reference none of its files in their next checkpoints.
    pub owned: bool,
}

impl RestoreState {
    fn operator(&self, uid: &OperatorId) -> Option<&OperatorSnapshot> {
        self.metadata
            .operators
            .iter()
            .find(|op| &op.operator_id == uid)
    }

    /// Every keyed handle of operator `uid` (empty if it had no state).
    pub(crate) fn keyed_handles(
        &self,
        uid: &OperatorId,
        max: MaxParallelism,
    ) -> Result<Vec<KeyedStateHandle>> {
        let Some(op) = self.operator(uid) else {
            return Ok(Vec::new());
        };
        if op.max_parallelism != max.get() {
            return Err(ExecutorError::InvalidJob(format!(
                "operator {uid}: checkpoint {} was taken with max parallelism {}, the job has {}; \
                 the max parallelism of a keyed operator cannot change",
                self.metadata.checkpoint_id,
                op.max_parallelism,
                max.get()
            )));
        }
        Ok(op
            .subtasks
            .iter()
            .flat_map(|s| s.keyed.iter().cloned())
            .collect())
    }

    /// The operator state of subtask `subtask` of `parallelism` of operator
    /// `uid`, redistributed if the parallelism changed; `None` if it had none.
    pub(crate) fn operator_state(
        &self,
        uid: &OperatorId,
        parallelism: u32,
        subtask: u32,
        storage: &dyn CheckpointStorage,
    ) -> Result<Option<OperatorStateStore>> {
        let Some(op) = self.operator(uid) else {
            return Ok(None);
        };
        let mut subtasks: Vec<_> = op.subtasks.iter().collect();
        subtasks.sort_by_key(|s| s.subtask);
        let handles: Vec<_> = subtasks.iter().filter_map(|s| s.operator.clone()).collect();
        if handles.is_empty() {
            return Ok(None);
        }
        Ok(Some(OperatorStateStore::restore(
            &handles,
            storage,
            parallelism,
            subtask,
        )?))
    }
}

/// Every operator uid with state in `metadata` must be one of the job's,
/// unless `allow` (Flink's `--allowNonRestoredState`): state the job cannot
/// place is dropped only when the user said so, with a warning per uid.
pub(crate) fn check_restored_operators(
    graph: &JobGraph,
    metadata: &CheckpointMetadata,
    allow: bool,
) -> Result<()> {
    let unknown: Vec<&OperatorId> = metadata
        .operators
        .iter()
        .filter(|op| {
            op.subtasks
                .iter()
                .any(|s| !s.keyed.is_empty() || s.operator.is_some())
        })
        .map(|op| &op.operator_id)
        .filter(|uid| !graph.operators.iter().any(|(known, _)| known == *uid))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let names = unknown
        .iter()
        .map(|uid| format!("{:?}", uid.0))
        .collect::<Vec<_>>()
        .join(", ");
    if allow {
        for uid in &unknown {
            tracing::warn!(
                checkpoint_id = metadata.checkpoint_id.get(),
                uid = %uid.0,
                "Skipping the state of operator uid {:?} in checkpoint {}: the job has no such operator (allow_non_restored_state).",
                uid.0,
                metadata.checkpoint_id
            );
        }
        return Ok(());
    }
    Err(ExecutorError::InvalidJob(format!(
        "checkpoint {} holds state of operator uid {names}, which this job does not have \
         (renamed or removed?); start with allow_non_restored_state \
         (--allow-non-restored-state) to drop that state",
        metadata.checkpoint_id
    )))
}

/// Builds a subtask's task.
pub(crate) type MakeTask = Arc<dyn Fn(&mut TaskEnv) -> Result<Box<dyn Task>> + Send + Sync>;

/// Creates the channels of one exchange: `(senders per upstream subtask,
/// receivers per downstream subtask)`, each boxed as `Vec<Sender<Message<T>>>`
/// / `Vec<Receiver<Message<T>>>`.
pub(crate) type MakeChannels = Arc<
    dyn Fn(u32, u32, usize) -> (Vec<Box<dyn Any + Send>>, Vec<Box<dyn Any + Send>>) + Send + Sync,
>;

/// The channels of an exchange carrying `T`.
pub(crate) fn channels_for<T: Send + 'static>() -> MakeChannels {
    Arc::new(|up: u32, down: u32, capacity: usize| {
        let mut senders: Vec<Vec<Sender<Message<T>>>> = (0..up).map(|_| Vec::new()).collect();
        let mut receivers: Vec<Vec<Receiver<Message<T>>>> = (0..down).map(|_| Vec::new()).collect();
        for rx_list in receivers.iter_mut() {
            for tx_list in senders.iter_mut() {
                let (tx, rx) = crossbeam_channel::bounded(capacity);
                tx_list.push(tx);
                rx_list.push(rx);
            }
        }
        (
            senders
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Any + Send>)
                .collect(),
            receivers
                .into_iter()
                .map(|r| Box::new(r) as Box<dyn Any + Send>)
                .collect(),
        )
    })
}

/// One chain of operators.
pub(crate) struct Stage {
    /// Flink-style task name: the operator uids joined by ` -> `.
    pub name: String,
    pub parallelism: Option<u32>,
    /// The exchange feeding it (none for a source stage).
    pub input_edge: Option<usize>,
    /// The exchange it feeds (none when it ends in a sink).
    pub output_edge: Option<usize>,
    /// Set when the chain is terminated by a sink or an exchange.
    pub make: Option<MakeTask>,
}

/// A keyed exchange between two stages.
pub(crate) struct Edge {
    pub from: usize,
    pub to: usize,
    pub make_channels: MakeChannels,
}

/// Registered operators and stages.
#[derive(Default)]
pub(crate) struct JobGraph {
    pub stages: Vec<Stage>,
    pub edges: Vec<Edge>,
    /// Every operator uid with its stage, in declaration order.
    pub operators: Vec<(OperatorId, usize)>,
    /// The first error found while building (reported by `execute`).
    pub error: Option<String>,
}

impl std::fmt::Debug for JobGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobGraph")
            .field(
                "stages",
                &self.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("operators", &self.operators)
            .finish()
    }
}

impl JobGraph {
    /// Registers operator `uid` in `stage`; duplicate and unusable uids are
    /// recorded as the job's error.
    pub(crate) fn add_operator(&mut self, uid: &str, stage: usize) -> OperatorId {
        let ok = !uid.is_empty()
            && uid.len() <= 100
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            self.error.get_or_insert_with(|| {
                format!(
                    "operator uid {uid:?} must be 1 to 100 ASCII letters, digits, '-', '_' or '.'"
                )
            });
        }
        if self.operators.iter().any(|(u, _)| u.0 == uid) {
            self.error.get_or_insert_with(|| {
                format!("operator uid {uid:?} is used twice; uids must be unique")
            });
        }
        if let Some(s) = self.stages.get_mut(stage) {
            if s.name.is_empty() {
                s.name = uid.to_owned();
            } else {
                s.name = format!("{} -> {uid}", s.name);
            }
        }
        let id = OperatorId(uid.to_owned());
        self.operators.push((id.clone(), stage));
        id
    }

    /// A new stage fed by `input_edge`.
    pub(crate) fn add_stage(&mut self, input_edge: Option<usize>) -> usize {
        self.stages.push(Stage {
            name: String::new(),
            parallelism: None,
            input_edge,
            output_edge: None,
            make: None,
        });
        self.stages.len() - 1
    }
}

/// What every task of an attempt shares.
#[derive(Clone)]
pub(crate) struct AttemptShared {
    pub clock: Arc<dyn Clock>,
    /// Whether the job takes checkpoints.
    pub checkpointing: bool,
    pub restore: Option<Arc<RestoreState>>,
    pub max_parallelism: MaxParallelism,
    pub batch_size: usize,
    pub mode: CheckpointingMode,
    pub snapshot_mode: SnapshotMode,
    /// The checkpoints in flight that are savepoints.
    pub savepoints: SavepointTargets,
    pub cancel: Arc<AtomicBool>,
    pub metrics: Arc<MetricsRegistry>,
}

/// What one subtask's task is built from.
pub(crate) struct TaskEnv {
    pub shared: AttemptShared,
    pub subtask: u32,
    pub parallelism: u32,
    pub inputs: Option<Box<dyn Any + Send>>,
    pub outputs: Option<Box<dyn Any + Send>>,
}

impl TaskEnv {
    /// The identity and counters of operator `uid` in this subtask.
    pub(crate) fn op_info(&self, uid: &OperatorId) -> OpInfo {
        OpInfo {
            uid: uid.clone(),
            subtask: self.subtask,
            parallelism: self.parallelism,
            max_parallelism: self.shared.max_parallelism,
            counters: self.shared.metrics.counters(uid, self.subtask),
        }
    }

    /// This subtask's operator state of `uid` from the restored checkpoint.
    pub(crate) fn restored_operator_state(
        &self,
        uid: &OperatorId,
    ) -> Result<Option<OperatorStateStore>> {
        match &self.shared.restore {
            Some(r) => r.operator_state(uid, self.parallelism, self.subtask, r.storage.as_ref()),
            None => Ok(None),
        }
    }

    fn take<X: 'static>(slot: &mut Option<Box<dyn Any + Send>>, what: &str) -> Result<X> {
        slot.take()
            .and_then(|b| b.downcast::<X>().ok())
            .map(|b| *b)
            .ok_or_else(|| {
                ExecutorError::InvalidJob(format!(
                    "task has no {what} channels of the expected type"
                ))
            })
    }

    /// The receivers of this subtask's input exchange.
    pub(crate) fn take_inputs<T: Send + 'static>(&mut self) -> Result<Vec<Receiver<Message<T>>>> {
        Self::take(&mut self.inputs, "input")
    }

    /// The senders of this subtask's output exchange.
    pub(crate) fn take_outputs<T: Send + 'static>(&mut self) -> Result<Vec<Sender<Message<T>>>> {
        Self::take(&mut self.outputs, "output")
    }
}
