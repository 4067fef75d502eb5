//! [`StreamEnv`]: a job's configuration, backend and checkpoint storage, and
//! the start of its dataflow.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use state_core::{
    BackendFactory, CheckpointMetadata, CheckpointStorage, Clock, MaxParallelism, RestoreMode,
    SnapshotMode, SystemClock,
};

use super::env_core::EnvCore;
use super::handle::JobHandle;
use crate::config::JobConfig;
use crate::error::{ExecutorError, Result};
use crate::metrics::MetricsRegistry;
use crate::runtime::events::JobResult;
use crate::runtime::graph::JobGraph;
use crate::runtime::job_state::{JobShared, JobSpec, StartFrom};
use crate::runtime::master::Master;

/// Builds a job: its sources, operators and sinks, its configuration, the
/// state backend and the checkpoint storage (Flink's
/// `StreamExecutionEnvironment`).
///
/// Sources ([`StreamEnv::source`]) start streams; every stream must end in a
/// sink ([`DataStream::sink`](crate::DataStream::sink)) before [`StreamEnv::execute`] or
/// [`StreamEnv::start`] runs the job.
///
/// ```
/// # use std::sync::Arc;
/// # use backend_heap::HeapBackendFactory;
/// # use executor::sink::collect::CollectSink;
/// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
/// # use executor::{JobConfig, StreamEnv};
/// # use state_core::OperatorStateStore;
/// # use state_core::{JobId, MemoryCheckpointStorage};
/// # struct Items<T>(std::vec::IntoIter<T>);
/// # impl<T: Send> Source<T> for Items<T> {
/// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
/// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
/// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
/// #     }
/// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
/// # }
/// # /// A bounded source of `items` (not checkpointed: a restart reads them again).
/// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
/// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let storage = Arc::new(MemoryCheckpointStorage::default());
/// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
/// let (sink, out) = CollectSink::new();
/// env.source("numbers", items(vec![1, 2, 3]))
///     .map("double", |n: i32| Ok(n * 2))
///     .sink("collect", sink);
/// let result = env.execute()?;
/// assert_eq!(result.status, executor::JobStatus::Finished);
/// assert_eq!(out.snapshot(), [2, 4, 6]);
/// # Ok(())
/// # }
/// ```
pub struct StreamEnv<F: BackendFactory + 'static> {
    config: JobConfig,
    pub(super) core: Rc<EnvCore<F>>,
    storage: Arc<dyn CheckpointStorage>,
    clock: Arc<dyn Clock>,
    restore_from: Option<(CheckpointMetadata, Option<Arc<dyn CheckpointStorage>>)>,
    restore_mode: RestoreMode,
    resume: bool,
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
            restore_mode: RestoreMode::default(),
            resume: false,
            snapshot_mode: SnapshotMode::Full,
        }
    }

    /// The clock for checkpoint timestamps, TTL, processing-time timers and
    /// restart decisions (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts from this checkpoint of the job's storage instead of empty
    /// state (Flink's `-s`): keyed state, source offsets and sink state come
    /// from it, and [`StreamEnv::with_restore_mode`] says whether the job
    /// takes it over (default: no-claim, it is never touched). On failover
    /// the job restores from its latest completed checkpoint, or from this
    /// one if none completed yet. New checkpoints get ids above it and above
    /// every checkpoint already in storage.
    pub fn restore_from(mut self, metadata: CheckpointMetadata) -> Self {
        self.restore_from = Some((metadata, None));
        self
    }

    /// [`StreamEnv::restore_from`] a checkpoint in another storage than the
    /// job's (a checkpoint directory of another job, a copy): its files are
    /// read from `storage`, and the job writes its own checkpoints to its own
    /// storage, none of them referencing a file of `storage`. Only
    /// [`RestoreMode::NoClaim`] is possible (the job cannot own files of
    /// another storage): with [`RestoreMode::Claim`] the job does not start.
    pub fn restore_from_storage(
        mut self,
        metadata: CheckpointMetadata,
        storage: Arc<dyn CheckpointStorage>,
    ) -> Self {
        self.restore_from = Some((metadata, Some(storage)));
        self
    }

    /// What the job may do with the checkpoint of [`StreamEnv::restore_from`]
    /// (Flink's `execution.state-recovery.claim-mode`): [`RestoreMode::NoClaim`]
    /// (the default) never deletes or rewrites it and makes the first
    /// checkpoint after the restore reference none of its files;
    /// [`RestoreMode::Claim`] makes it one of the job's retained checkpoints,
    /// subsumed and deleted like the others.
    pub fn with_restore_mode(mut self, mode: RestoreMode) -> Self {
        self.restore_mode = mode;
        self
    }

    /// Continues the job where its last run stopped, as Flink's high
    /// availability does after a crash: restores from the newest intact
    /// completed checkpoint in the job's storage, passing over damaged ones
    /// (each logged, naming the file) by the rule of
    /// [`state_core::select_for_restore`], and starts empty, saying so in the
    /// log, only when the storage holds no checkpoint. The job does not start
    /// when every checkpoint is damaged. Excludes [`StreamEnv::restore_from`].
    pub fn resume(mut self) -> Self {
        self.resume = true;
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

    /// Runs the job on background threads; the [`JobHandle`] triggers
    /// checkpoints, cancels, and waits for the end.
    ///
    /// Refused before anything runs ([`ExecutorError::InvalidJob`]): an
    /// invalid graph or configuration; a start without
    /// [`StreamEnv::restore_from`] or [`StreamEnv::resume`] over a storage
    /// that already holds completed checkpoints (a fresh start would rotate
    /// them away); a restored checkpoint with state of an operator uid the
    /// job lacks (unless `allow_non_restored_state`) or with another max
    /// parallelism; claim mode for a checkpoint of another storage; a resume
    /// whose every checkpoint is damaged.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use backend_heap::HeapBackendFactory;
    /// # use executor::sink::collect::CollectSink;
    /// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
    /// # use executor::{JobConfig, StreamEnv};
    /// # use state_core::OperatorStateStore;
    /// # use state_core::{JobId, MemoryCheckpointStorage};
    /// # struct Items<T>(std::vec::IntoIter<T>);
    /// # impl<T: Send> Source<T> for Items<T> {
    /// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
    /// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
    /// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
    /// #     }
    /// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
    /// # }
    /// #     /// A bounded source of `items` (not checkpointed: a restart reads them again).
    /// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
    /// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
    /// let (sink, out) = CollectSink::new();
    /// env.source("numbers", items(vec![1, 2, 3])).sink("collect", sink);
    /// let handle = env.start()?;
    /// let result = handle.wait()?;
    /// assert_eq!(result.status, executor::JobStatus::Finished);
    /// assert_eq!(out.len(), 3);
    /// # Ok(())
    /// # }
    /// ```
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
        let start = match (self.restore_from, self.resume) {
            (Some(_), true) => {
                return Err(ExecutorError::InvalidJob(
                    "resume and restore_from exclude each other: resume picks the newest \
                     intact checkpoint of the job's storage itself"
                        .into(),
                ));
            }
            (Some((metadata, storage)), false) => StartFrom::Checkpoint {
                metadata,
                storage,
                mode: self.restore_mode,
            },
            (None, true) => StartFrom::Resume,
            (None, false) => StartFrom::Empty,
        };
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
            start,
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
        Ok(JobHandle::new(commands_tx, events_rx, shared, thread))
    }

    /// Runs the job and blocks until it reaches a terminal status. A job
    /// that failed for good is `Ok` with status FAILED and the failure.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use backend_heap::HeapBackendFactory;
    /// # use executor::sink::collect::CollectSink;
    /// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
    /// # use executor::{JobConfig, StreamEnv};
    /// # use state_core::OperatorStateStore;
    /// # use state_core::{JobId, MemoryCheckpointStorage};
    /// # struct Items<T>(std::vec::IntoIter<T>);
    /// # impl<T: Send> Source<T> for Items<T> {
    /// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
    /// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
    /// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
    /// #     }
    /// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
    /// # }
    /// #     /// A bounded source of `items` (not checkpointed: a restart reads them again).
    /// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
    /// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
    /// let (sink, _out) = CollectSink::new();
    /// env.source("numbers", items(vec![1, 2, 3]))
    ///     .map("fail-on-2", |n: i32| if n == 2 { Err("two".into()) } else { Ok(n) })
    ///     .sink("collect", sink);
    /// let result = env.execute()?;
    /// assert_eq!(result.status, executor::JobStatus::Failed);
    /// assert!(result.failure.unwrap().contains("two"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute(self) -> Result<JobResult> {
        self.start()?.wait()
    }
}
