//! How a timely job checkpoints: storage, key groups, epochs and flow control.

use std::sync::Arc;
use std::time::Duration;

use state_core::{
    CheckpointStorage, Clock, DEFAULT_NUM_RETAINED, JobId, MaxParallelism, SnapshotMode,
    SystemClock,
};

use crate::error::TimelyError;

/// When a source worker ends its current epoch (and so when checkpoints are
/// taken: one per epoch boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochPolicy {
    /// After this many records read by the worker (deterministic; tests).
    Records(u64),
    /// After this much time by the job's clock (Flink's checkpoint interval).
    Interval(Duration),
}

/// The checkpoint settings shared by every worker of a job.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The job, as written in every `_metadata`.
    pub job_id: JobId,
    /// Where checkpoints go; every process must see the same storage (a
    /// shared filesystem directory or object store).
    pub storage: Arc<dyn CheckpointStorage>,
    /// The number of key groups; fixed for the life of the job's state.
    pub max_parallelism: MaxParallelism,
    /// How many epochs may be open (read but not yet covered by a completed
    /// checkpoint) at once; a source waits beyond that (at least 1).
    pub epochs_in_flight: u64,
    /// How many completed checkpoints the store keeps (at least 1).
    pub retained: usize,
    /// When epochs end.
    pub epochs: EpochPolicy,
    /// Full or incremental snapshots (incremental where the backend can).
    pub snapshot_mode: SnapshotMode,
    /// The clock for epoch intervals, TTL and metadata timestamps.
    pub clock: Arc<dyn Clock>,
    /// Failed checkpoints tolerated in a row (Flink's
    /// `execution.checkpointing.tolerable-failed-checkpoints`, default 0).
    /// A checkpoint whose part could not be written (a storage error, a
    /// full disk) or whose metadata could not be written is aborted and
    /// counted, and the next epoch checkpoints again; one more failure in a
    /// row than this stops the process (fail-stop: the supervisor restarts
    /// the job from the newest checkpoint).
    pub tolerable_failures: u32,
    /// How many keys a [`crate::StateStream::keyed_value`] operator keeps
    /// as typed values in memory on each worker (default 1,048,576, at
    /// least 1). A full cache writes its changed values to the backend and
    /// forgets half of its keys. The memory is this many keys and values
    /// beside the backend's own copy (which for the heap backend is in
    /// memory too).
    pub value_cache_entries: usize,
}

impl CheckpointConfig {
    /// Settings with Flink's defaults: max parallelism 128, one retained
    /// checkpoint, two epochs in flight, full snapshots, an epoch every 2 s,
    /// no failed checkpoint tolerated, 1,048,576 cached values per
    /// `keyed_value` operator.
    pub fn new(job_id: JobId, storage: Arc<dyn CheckpointStorage>) -> Self {
        CheckpointConfig {
            job_id,
            storage,
            max_parallelism: MaxParallelism::default_for(1),
            epochs_in_flight: 2,
            retained: DEFAULT_NUM_RETAINED,
            epochs: EpochPolicy::Interval(Duration::from_secs(2)),
            snapshot_mode: SnapshotMode::Full,
            clock: Arc::new(SystemClock),
            tolerable_failures: 0,
            value_cache_entries: 1 << 20,
        }
    }

    /// Refuses settings no job can run with, naming the setting.
    pub fn validate(&self) -> Result<(), TimelyError> {
        if self.epochs_in_flight == 0 {
            return Err(TimelyError::Config(
                "epochs_in_flight must be at least 1, got 0".into(),
            ));
        }
        if self.value_cache_entries == 0 {
            return Err(TimelyError::Config(
                "value_cache_entries (values a keyed_value operator keeps) must be at least 1, \
                 got 0"
                    .into(),
            ));
        }
        if self.retained == 0 {
            return Err(TimelyError::Config(
                "retained (completed checkpoints kept) must be at least 1, got 0".into(),
            ));
        }
        match self.epochs {
            EpochPolicy::Records(0) => Err(TimelyError::Config(
                "epochs: Records(0) would never end an epoch; use at least 1".into(),
            )),
            EpochPolicy::Interval(d) if d.is_zero() => Err(TimelyError::Config(
                "epochs: Interval(0) would end an epoch per record; use at least 1 ms".into(),
            )),
            _ => Ok(()),
        }
    }
}
