//! The job builder API: [`StreamEnv`], [`DataStream`], [`KeyedStream`], and
//! the [`JobHandle`] of a running job.
//!
//! Operators that need no exchange are chained on one thread; `key_by`
//! starts a new stage whose subtasks receive records routed by key group.
//! Every operator has a stable uid that keys its state in checkpoints.
//!
//! # Example
//!
//! A WordCount over a small checkpointed source, with keyed state in the
//! heap backend and checkpoints in memory:
//!
//! ```
//! use std::sync::Arc;
//!
//! use backend_heap::HeapBackendFactory;
//! use executor::sinks::CollectSink;
//! use executor::source::{Source, SourceContext, SourcePoll};
//! use executor::{JobConfig, JobStatus, StreamEnv};
//! use state_core::OperatorStateMode;
//! use state_core::OperatorStateStore;
//! use state_core::{JobId, MemoryCheckpointStorage};
//!
//! /// Reads a fixed list of lines; its offset is checkpointed.
//! struct Lines {
//!     lines: Vec<&'static str>,
//!     offset: usize,
//! }
//!
//! impl Source<String> for Lines {
//!     fn open(&mut self, _: SourceContext, restored: Option<&OperatorStateStore>) -> executor::Result<()> {
//!         if let Some(state) = restored {
//!             self.offset = state.get_typed::<usize>("offset")?.first().copied().unwrap_or(0);
//!         }
//!         Ok(())
//!     }
//!
//!     fn poll_next(&mut self) -> executor::Result<SourcePoll<String>> {
//!         let Some(line) = self.lines.get(self.offset) else {
//!             return Ok(SourcePoll::End);
//!         };
//!         self.offset += 1;
//!         Ok(SourcePoll::Record(line.to_string()))
//!     }
//!
//!     fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> executor::Result<()> {
//!         state.register("offset", OperatorStateMode::Split)?;
//!         Ok(state.update_typed("offset", &[self.offset])?)
//!     }
//! }
//!
//! # fn main() -> executor::Result<()> {
//! let config = JobConfig::new(JobId::new("word-count")?);
//! let storage = Arc::new(MemoryCheckpointStorage::default());
//! let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
//! let (sink, counts) = CollectSink::new();
//! env.source("lines", |_: SourceContext| {
//!     Ok(Box::new(Lines { lines: vec!["a b", "a c"], offset: 0 }) as Box<dyn Source<String>>)
//! })
//! .flat_map("split", |line: String, out: &mut Vec<(String, i64)>| {
//!     out.extend(line.split(' ').map(|word| (word.to_owned(), 1)));
//!     Ok(())
//! })
//! .key_by(|(word, _)| word.clone())
//! .sum("count", |(_, n)| *n, |(_, n), sum| *n = sum)
//! .sink("collect", sink);
//!
//! let result = env.execute()?;
//! assert_eq!(result.status, JobStatus::Finished);
//! let expected = [("a", 1), ("b", 1), ("a", 2), ("c", 1)];
//! assert_eq!(counts.snapshot(), expected.map(|(w, n)| (w.to_owned(), n)));
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::{
    BackendFactory, CheckpointId, CheckpointMetadata, CheckpointStorage, Clock, MaxParallelism,
    OperatorId, SnapshotMode, SystemClock,
};

use crate::config::JobConfig;
use crate::error::{ExecutorError, Result, UserError};
use crate::metrics::{JobMetrics, MetricsRegistry};
use crate::runtime::barrier::BarrierHandler;
use crate::runtime::chain::{
    ExchangeOut, FilterOp, FlatMapOp, MapOp, OpInfo, Output, RouteFn, SinkOp,
};
use crate::runtime::graph::{Edge, JobGraph, MakeTask, TaskEnv, channels_for};
use crate::runtime::keyed::{KeyedOp, KeyedOpSetup, Reduce};
use crate::runtime::master::{HandleCommand, JobShared, JobSpec, Master};
use crate::runtime::task::{ExchangeTask, SourceTask, Task};
use crate::sink::{SinkContext, SinkFactory};
use crate::source::{SourceContext, SourceFactory};

pub use crate::runtime::events::{CompletedCheckpointInfo, JobEvent, JobResult, JobStatus};
pub use crate::runtime::keyed::{KeyedContext, KeyedProcessFunction, TimeDomain, TimerServiceRef};

type Partial<T> =
    Arc<dyn Fn(&mut TaskEnv, Box<dyn Output<T>>) -> Result<Box<dyn Task>> + Send + Sync>;

struct EnvCore<F> {
    factory: Arc<F>,
    graph: RefCell<JobGraph>,
}

/// Builds a job: its sources, operators and sinks, its configuration, the
/// state backend and the checkpoint storage (Flink's
/// `StreamExecutionEnvironment`).
pub struct StreamEnv<F: BackendFactory + 'static> {
    config: JobConfig,
    core: Rc<EnvCore<F>>,
    storage: Arc<dyn CheckpointStorage>,
    clock: Arc<dyn Clock>,
    restore_from: Option<CheckpointMetadata>,
    snapshot_mode: SnapshotMode,
}

impl<F: BackendFactory + 'static> std::fmt::Debug for StreamEnv<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEnv")
            .field("config", &self.config)
            .field("backend", &self.core.factory.name())
            .field("storage", &self.storage.describe())
            .field("graph", &self.core.graph)
            .finish()
    }
}

impl<F: BackendFactory + 'static> StreamEnv<F> {
    /// A job with `config`, keyed state in backends made by `backend`, and
    /// checkpoints in `storage`.
    pub fn new(config: JobConfig, backend: F, storage: Arc<dyn CheckpointStorage>) -> Self {
        StreamEnv {
            config,
            core: Rc::new(EnvCore {
                factory: Arc::new(backend),
                graph: RefCell::new(JobGraph::default()),
            }),
            storage,
            clock: Arc::new(SystemClock),
            restore_from: None,
            snapshot_mode: SnapshotMode::Full,
        }
    }

    /// The clock for checkpoint timestamps, TTL, processing-time timers and
    /// restart decisions (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts from this checkpoint instead of empty state (Flink's `-s`):
    /// keyed state, source offsets and sink state come from it. On failover
    /// the job restores from its latest completed checkpoint, or from this
    /// one if none completed yet. New checkpoints get ids above it and above
    /// every checkpoint already in storage.
    pub fn restore_from(mut self, metadata: CheckpointMetadata) -> Self {
        self.restore_from = Some(metadata);
        self
    }

    /// Full (default) or incremental keyed-state snapshots, where the backend supports them.
    pub fn with_snapshot_mode(mut self, mode: SnapshotMode) -> Self {
        self.snapshot_mode = mode;
        self
    }

    /// The job's configuration.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Adds a source with a stable `uid`; one reader per subtask.
    pub fn source<T, S>(&self, uid: &str, factory: S) -> DataStream<T, F>
    where
        T: Send + 'static,
        S: SourceFactory<T> + 'static,
    {
        let mut graph = self.core.graph.borrow_mut();
        let stage = graph.add_stage(None);
        let id = graph.add_operator(uid, stage);
        let factory = Arc::new(factory);
        let partial: Partial<T> = Arc::new(move |env, head| {
            let info = env.op_info(&id);
            let context = SourceContext {
                subtask: env.subtask,
                parallelism: env.parallelism,
            };
            let mut source = factory.create(context)?;
            let restored = env.restored_operator_state(&id)?;
            source.open(context, restored.as_ref())?;
            let mut state = restored.unwrap_or_default();
            state.set_stream_name(&info.operator_stream_name())?;
            Ok(Box::new(SourceTask {
                source,
                state,
                info,
                head,
            }))
        });
        DataStream {
            core: self.core.clone(),
            stage,
            partial,
        }
    }

    /// Runs the job on background threads.
    pub fn start(self) -> Result<JobHandle> {
        let graph = std::mem::take(&mut *self.core.graph.borrow_mut());
        if let Some(error) = &graph.error {
            return Err(ExecutorError::InvalidJob(error.clone()));
        }
        if graph.stages.is_empty() {
            return Err(ExecutorError::InvalidJob("the job has no source".into()));
        }
        if let Some(open) = graph.stages.iter().find(|s| s.make.is_none()) {
            return Err(ExecutorError::InvalidJob(format!(
                "the stream after operator {:?} has no sink",
                open.name
            )));
        }
        if self.config.parallelism == 0 {
            return Err(ExecutorError::InvalidJob(
                "parallelism must be at least 1".into(),
            ));
        }
        if let Some(c) = &self.config.checkpointing {
            if c.unaligned {
                return Err(ExecutorError::InvalidJob(
                    "unaligned checkpoints are not supported yet (checkpointing.unaligned)".into(),
                ));
            }
            if c.interval.is_zero() {
                return Err(ExecutorError::InvalidJob(
                    "the checkpoint interval must be positive (checkpointing.interval)".into(),
                ));
            }
        }
        crate::restart::validate(&self.config.effective_restart_strategy())?;
        let max_p = graph
            .stages
            .iter()
            .map(|s| s.parallelism.unwrap_or(self.config.parallelism))
            .max()
            .unwrap_or(1);
        let max_parallelism = match self.config.max_parallelism {
            Some(m) => MaxParallelism::new(m)?,
            None => MaxParallelism::default_for(max_p),
        };
        for stage in &graph.stages {
            let p = stage.parallelism.unwrap_or(self.config.parallelism);
            if p == 0 || p > max_parallelism.get() {
                return Err(ExecutorError::InvalidJob(format!(
                    "operator {}: parallelism {p} must be between 1 and the max parallelism {max_parallelism}",
                    stage.name
                )));
            }
        }
        let metrics = Arc::new(MetricsRegistry::default());
        metrics.set_operators(graph.operators.iter().map(|(u, _)| u.clone()).collect());
        let shared = Arc::new(JobShared::new(metrics));
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let spec = JobSpec {
            graph,
            config: self.config,
            storage: self.storage,
            clock: self.clock,
            restore_from: self.restore_from,
            snapshot_mode: self.snapshot_mode,
            max_parallelism,
        };
        let job = spec.config.job_id.to_string();
        let master = Master::new(spec, shared.clone(), events_tx, commands_rx)?;
        let thread = std::thread::Builder::new()
            .name(format!("job-master-{job}"))
            .spawn(move || master.run())
            .map_err(|e| {
                ExecutorError::InvalidJob(format!("cannot start the job master thread: {e}"))
            })?;
        Ok(JobHandle {
            commands: commands_tx,
            events: events_rx,
            shared,
            thread: Some(thread),
        })
    }

    /// Runs the job and blocks until it reaches a terminal status. A job
    /// that failed for good is `Ok` with status FAILED and the failure.
    pub fn execute(self) -> Result<JobResult> {
        self.start()?.wait()
    }
}

/// A stream of records of type `T` in a job whose keyed state lives in
/// backends made by `F`.
pub struct DataStream<T, F: BackendFactory + 'static> {
    core: Rc<EnvCore<F>>,
    stage: usize,
    partial: Partial<T>,
}

impl<T, F: BackendFactory + 'static> std::fmt::Debug for DataStream<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("stage", &self.stage)
            .finish()
    }
}

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    fn register(&self, uid: &str) -> OperatorId {
        self.core.graph.borrow_mut().add_operator(uid, self.stage)
    }

    fn chain<U: Send + 'static>(
        self,
        uid: &str,
        wrap: impl Fn(OpInfo, Box<dyn Output<U>>) -> Box<dyn Output<T>> + Send + Sync + 'static,
    ) -> DataStream<U, F> {
        let id = self.register(uid);
        let prev = self.partial;
        DataStream {
            core: self.core,
            stage: self.stage,
            partial: Arc::new(move |env, next| {
                let info = env.op_info(&id);
                prev(env, wrap(info, next))
            }),
        }
    }

    /// Sets the parallelism of this stream's chain (the operators since the
    /// source or the last `key_by`, which run together on one thread per subtask).
    pub fn parallelism(self, parallelism: u32) -> Self {
        if let Some(stage) = self.core.graph.borrow_mut().stages.get_mut(self.stage) {
            stage.parallelism = Some(parallelism);
        }
        self
    }

    /// Transforms every record; an error fails the task.
    pub fn map<U, M>(self, uid: &str, f: M) -> DataStream<U, F>
    where
        U: Send + 'static,
        M: Fn(T) -> Result<U, UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(MapOp {
                f: f.clone(),
                info,
                next,
            })
        })
    }

    /// Emits zero or more records per record.
    pub fn flat_map<U, M>(self, uid: &str, f: M) -> DataStream<U, F>
    where
        U: Send + 'static,
        M: Fn(T, &mut Vec<U>) -> Result<(), UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(FlatMapOp {
                f: f.clone(),
                info,
                buffer: Vec::new(),
                next,
            })
        })
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<M>(self, uid: &str, f: M) -> DataStream<T, F>
    where
        M: Fn(&T) -> Result<bool, UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(FilterOp {
                f: f.clone(),
                info,
                next,
            })
        })
    }

    /// Partitions the stream by key: records with the same key go to the
    /// same subtask of the next operator (by key group).
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<T, K, F>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream {
            upstream: self,
            key: Arc::new(key),
        }
    }

    /// Writes the stream into a sink with a stable `uid`.
    pub fn sink<S>(self, uid: &str, factory: S)
    where
        S: SinkFactory<T> + 'static,
    {
        let id = self.register(uid);
        let factory = Arc::new(factory);
        let prev = self.partial;
        let make: MakeTask = Arc::new(move |env| {
            let info = env.op_info(&id);
            let context = SinkContext {
                subtask: env.subtask,
                parallelism: env.parallelism,
            };
            let mut sink = factory.create(context)?;
            let restored = env.restored_operator_state(&id)?;
            sink.open(context, restored.as_ref())?;
            let mut state = restored.unwrap_or_default();
            state.set_stream_name(&info.operator_stream_name())?;
            prev(env, Box::new(SinkOp { sink, state, info }))
        });
        if let Some(stage) = self.core.graph.borrow_mut().stages.get_mut(self.stage) {
            stage.make = Some(make);
        }
    }
}

/// A stream partitioned by key `K` (see [`DataStream::key_by`]).
pub struct KeyedStream<T, K, F: BackendFactory + 'static> {
    upstream: DataStream<T, F>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<T, K, F: BackendFactory + 'static> std::fmt::Debug for KeyedStream<T, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<T, K, F> KeyedStream<T, K, F>
where
    T: Send + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
    F: BackendFactory + 'static,
{
    /// Runs a [`KeyedProcessFunction`] with keyed state and timers.
    pub fn process<P>(self, uid: &str, function: P) -> DataStream<P::Out, F>
    where
        P: KeyedProcessFunction<F::Backend, Key = K, In = T>,
    {
        let core = self.upstream.core.clone();
        let mut graph = core.graph.borrow_mut();
        let edge = graph.edges.len();
        let stage = graph.add_stage(Some(edge));
        graph.edges.push(Edge {
            from: self.upstream.stage,
            to: stage,
            make_channels: channels_for::<T>(),
        });
        let id = graph.add_operator(uid, stage);
        // Close the upstream chain with the keyed exchange.
        let key = self.key;
        let route_key = key.clone();
        let route: RouteFn<T> = Arc::new(move |record, scratch| {
            let encoded = postcard::to_extend(&route_key(record), std::mem::take(scratch))
                .map_err(|e| {
                    ExecutorError::InvalidJob(format!("a key cannot be serialized: {e}"))
                })?;
            *scratch = encoded;
            Ok(())
        });
        let prev = self.upstream.partial;
        let up_make: MakeTask = Arc::new(move |env| {
            let senders = env.take_outputs::<T>()?;
            let batch_size = env.shared.batch_size;
            let out = ExchangeOut {
                route: route.clone(),
                max_parallelism: env.shared.max_parallelism,
                buffers: (0..senders.len())
                    .map(|_| Vec::with_capacity(batch_size))
                    .collect(),
                senders,
                batch_size,
                scratch: Vec::new(),
                cancel: env.shared.cancel.clone(),
            };
            prev(env, Box::new(out))
        });
        if let Some(up) = graph.stages.get_mut(self.upstream.stage) {
            up.output_edge = Some(edge);
            up.make = Some(up_make);
        }
        drop(graph);
        let factory = core.factory.clone();
        let partial: Partial<P::Out> = Arc::new(move |env, next| {
            let inputs = env.take_inputs::<T>()?;
            let setup = KeyedOpSetup {
                factory: factory.as_ref(),
                info: env.op_info(&id),
                clock: env.shared.clock.clone(),
                storage: env.shared.storage.as_ref(),
                restore: env.shared.restore.as_deref(),
                mode: env.shared.snapshot_mode,
            };
            let op = KeyedOp::create(setup, function.clone(), key.clone(), next)?;
            Ok(Box::new(ExchangeTask {
                barriers: BarrierHandler::new(env.shared.mode, inputs.len()),
                inputs,
                head: Box::new(op),
            }))
        });
        DataStream {
            core,
            stage,
            partial,
        }
    }

    /// Folds the records of each key with `f` and emits the running value
    /// per record (Flink's `reduce`).
    pub fn reduce<R>(self, uid: &str, f: R) -> DataStream<T, F>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
        R: Fn(&T, &T) -> T + Send + Sync + 'static,
    {
        self.process(
            uid,
            Reduce::<T, K> {
                f: Arc::new(f),
                state: None,
                _key: PhantomData,
            },
        )
    }

    /// Sums the field read by `get` per key, emitting the first record of
    /// the key with the field set to the running sum (Flink's `sum`).
    pub fn sum<G, S>(self, uid: &str, get: G, set: S) -> DataStream<T, F>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
        G: Fn(&T) -> i64 + Send + Sync + 'static,
        S: Fn(&mut T, i64) + Send + Sync + 'static,
    {
        self.reduce(uid, move |acc, next| {
            let mut out = acc.clone();
            set(&mut out, get(acc).saturating_add(get(next)));
            out
        })
    }
}

/// Cancels a running job from any thread (see [`JobHandle::canceller`]).
#[derive(Debug, Clone)]
pub struct JobCanceller {
    commands: Sender<HandleCommand>,
}

impl JobCanceller {
    /// Asks the job to cancel; a job that already ended ignores it. The job
    /// then applies its externalized-checkpoint cleanup policy (retained
    /// checkpoints are kept with `RetainOnCancellation`).
    pub fn cancel(&self) {
        let _ = self.commands.send(HandleCommand::Cancel);
    }
}

/// A running job (see [`StreamEnv::start`]).
#[derive(Debug)]
pub struct JobHandle {
    commands: Sender<HandleCommand>,
    events: Receiver<JobEvent>,
    shared: Arc<JobShared>,
    thread: Option<ThreadHandle<Result<JobResult>>>,
}

impl JobHandle {
    /// Triggers a checkpoint now (regardless of interval, min pause and max
    /// concurrent) and returns its id; see [`JobHandle::wait_for_checkpoint`].
    pub fn trigger_checkpoint(&self) -> Result<CheckpointId> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(HandleCommand::Trigger(tx))
            .map_err(|_| ExecutorError::InvalidJob("the job is not running".into()))?;
        rx.recv().map_err(|_| {
            ExecutorError::InvalidJob("the job ended before the checkpoint was triggered".into())
        })?
    }

    /// Blocks until checkpoint `id` completed (its info) or failed (an error
    /// with why), or the job ended without completing it.
    pub fn wait_for_checkpoint(&self, id: CheckpointId) -> Result<CompletedCheckpointInfo> {
        let mut outcomes = self
            .shared
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = outcomes.get(&id) {
                return outcome.clone().map_err(|reason| ExecutorError::Checkpoint {
                    checkpoint: id,
                    reason,
                });
            }
            if self.shared.status().is_terminal() {
                return Err(ExecutorError::Checkpoint {
                    checkpoint: id,
                    reason: format!(
                        "the job ended ({}) before it completed",
                        self.shared.status()
                    ),
                });
            }
            outcomes = self
                .shared
                .changed
                .wait_timeout(outcomes, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks the job to cancel; [`JobHandle::wait`] returns once it is CANCELED.
    pub fn cancel(&self) {
        let _ = self.commands.send(HandleCommand::Cancel);
    }

    /// A cloneable handle that cancels the job from another thread, such as a
    /// Ctrl-C handler, while this one waits in [`JobHandle::wait`].
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller {
            commands: self.commands.clone(),
        }
    }

    /// Blocks until the job reaches a terminal status.
    pub fn wait(mut self) -> Result<JobResult> {
        let Some(thread) = self.thread.take() else {
            return Err(ExecutorError::InvalidJob(
                "the job was already waited for".into(),
            ));
        };
        match thread.join() {
            Ok(result) => result,
            Err(payload) => Err(ExecutorError::InvalidJob(format!(
                "the job master panicked: {}",
                crate::runtime::task::panic_message(payload.as_ref())
            ))),
        }
    }

    /// The current status.
    pub fn status(&self) -> JobStatus {
        self.shared.status()
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> JobMetrics {
        self.shared.metrics.snapshot()
    }

    /// The job's events, in order. Every event is delivered once, to one of
    /// the receivers (take it once and keep it).
    pub fn events(&self) -> Receiver<JobEvent> {
        self.events.clone()
    }
}
