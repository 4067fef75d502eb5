//! Job configuration: parallelism, checkpointing and restarts, with Flink's
//! defaults. Parsed from strings only in `cli` (see [`crate::args`]).

use std::time::Duration;

use state_core::ExternalizedCheckpointCleanup;
use state_core::JobId;

/// Checkpointing guarantee (Flink's `CheckpointingMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CheckpointingMode {
    /// Barriers are aligned on every input: state reflects every record exactly once (default).
    #[default]
    ExactlyOnce,
    /// Barriers are not aligned: records after a barrier may be in the snapshot
    /// and are replayed again after a restore.
    AtLeastOnce,
}

/// Periodic checkpointing settings (Flink's `CheckpointConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    /// Time between checkpoint triggers (`execution.checkpointing.interval`).
    pub interval: Duration,
    /// Exactly-once (aligned) or at-least-once.
    pub mode: CheckpointingMode,
    /// A checkpoint not completed within this time is aborted (Flink: 10 min).
    pub timeout: Duration,
    /// Least time from the end of one checkpoint to the trigger of the next (Flink: 0).
    pub min_pause: Duration,
    /// Most checkpoints in flight at once (Flink: 1).
    pub max_concurrent: u32,
    /// Failed checkpoints tolerated in a row before the job fails over (Flink: 0).
    pub tolerable_failures: u32,
    /// Completed checkpoints kept (`state.checkpoints.num-retained`, Flink: 1).
    pub retained: usize,
    /// What happens to retained checkpoints when the job is cancelled.
    pub cleanup: ExternalizedCheckpointCleanup,
    /// Unaligned checkpoints (the next executor issue; must be false for now).
    pub unaligned: bool,
    /// With unaligned checkpoints, how long to try aligned first.
    pub alignment_timeout: Duration,
}

impl CheckpointConfig {
    /// Checkpoints every `interval` with Flink's defaults for everything else.
    pub fn every(interval: Duration) -> Self {
        CheckpointConfig {
            interval,
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 1,
            cleanup: ExternalizedCheckpointCleanup::default(),
            unaligned: false,
            alignment_timeout: Duration::ZERO,
        }
    }
}

/// How a failed job is restarted (Flink's restart strategies).
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategyConfig {
    /// Never restart: the first failure fails the job.
    None,
    /// Restart up to `attempts` times, waiting `delay` before each.
    FixedDelay {
        /// Restarts allowed (Flink's default with checkpointing: unbounded).
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart unless more than `max_failures` happened within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The measuring window.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart with a delay that grows by `multiplier` from `initial` to `max`,
    /// with `jitter` (0..1 of the delay), reset to `initial` after
    /// `reset_threshold` without failures.
    ExponentialDelay {
        /// First delay.
        initial: Duration,
        /// Largest delay.
        max: Duration,
        /// Growth per failure (Flink: 2.0).
        multiplier: f64,
        /// Random fraction of the delay added or removed (Flink: 0.1).
        jitter: f64,
        /// Time without failure after which the delay resets (Flink: 1 h).
        reset_threshold: Duration,
    },
}

/// Everything about a job that is not its dataflow.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The job id; names its checkpoint directory.
    pub job_id: JobId,
    /// Default parallelism of operators.
    pub parallelism: u32,
    /// Number of key groups; `None` = Flink's default for the parallelism.
    pub max_parallelism: Option<u32>,
    /// Periodic checkpointing; `None` = disabled (Flink's default).
    pub checkpointing: Option<CheckpointConfig>,
    /// Restart strategy; `None` = Flink's default: no restart without
    /// checkpointing, fixed delay with unbounded attempts (1 s delay) with it.
    pub restart: Option<RestartStrategyConfig>,
    /// Records per batch on exchanges between subtasks.
    pub batch_size: usize,
    /// Batches buffered per channel before the sender blocks (backpressure).
    pub channel_capacity: usize,
}

impl JobConfig {
    /// A job with parallelism 1, no checkpointing and the default restart strategy.
    pub fn new(job_id: JobId) -> Self {
        JobConfig {
            job_id,
            parallelism: 1,
            max_parallelism: None,
            checkpointing: None,
            restart: None,
            batch_size: 256,
            channel_capacity: 16,
        }
    }

    /// The restart strategy in force: the configured one, or Flink's default.
    pub fn effective_restart_strategy(&self) -> RestartStrategyConfig {
        match (&self.restart, &self.checkpointing) {
            (Some(r), _) => r.clone(),
            (None, None) => RestartStrategyConfig::None,
            (None, Some(_)) => RestartStrategyConfig::FixedDelay {
                attempts: u32::MAX,
                delay: Duration::from_secs(1),
            },
        }
    }
}
