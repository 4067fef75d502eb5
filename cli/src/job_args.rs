//! [`JobArgs`]: the standard command-line options of every job `cairn`
//! runs, with the meaning Flink gives them, turned into a validated
//! [`executor::JobConfig`] (the range checks are the executor's,
//! [`executor::JobConfig::validate`]; this module names the options).
//!
//! Flattened into a subcommand's clap parser:
//!
//! ```text
//! #[derive(clap::Args)]
//! struct WordCountArgs {
//!     #[command(flatten)]
//!     job: JobArgs,
//! }
//! let config = args.job.job_config_with_default_id(DEFAULT_JOB_ID)?;
//! ```
//!
//! [`BackendKind`] is here, not in the executor: only `cli` names concrete
//! backends (see `backend.rs`).

use std::path::PathBuf;
use std::time::Duration;

use executor::CheckpointingMode;

mod job_config;

/// The job id used when `--job-id` is not given.
pub const DEFAULT_JOB_ID: &str = "cairn-job";

/// Which keyed-state backend a job uses; the cli maps it to a concrete one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// State in process memory, checkpoints through the checkpoint storage
    /// (Flink's HashMapStateBackend / MemoryStateBackend).
    #[default]
    Heap,
    /// Heap state with full snapshots to files (Flink's FsStateBackend).
    Fs,
    /// State in RocksDB with incremental checkpoints (Flink's RocksDBStateBackend).
    Rocks,
}

/// `--restore-mode` (Flink's `--claimMode`, `execution.state-recovery.claim-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum RestoreModeArg {
    /// Never delete or rewrite the checkpoint; the first new checkpoint
    /// references none of its files.
    #[default]
    #[value(alias = "NO_CLAIM")]
    NoClaim,
    /// Take the checkpoint over: it is deleted when a newer one subsumes it.
    #[value(alias = "CLAIM")]
    Claim,
}

impl From<RestoreModeArg> for state_core::RestoreMode {
    fn from(mode: RestoreModeArg) -> Self {
        match mode {
            RestoreModeArg::NoClaim => state_core::RestoreMode::NoClaim,
            RestoreModeArg::Claim => state_core::RestoreMode::Claim,
        }
    }
}

/// `--checkpoint-mode` (Flink's `execution.checkpointing.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum CheckpointModeArg {
    /// Aligned barriers: state reflects every record exactly once.
    #[default]
    #[value(alias = "EXACTLY_ONCE")]
    ExactlyOnce,
    /// Unaligned barriers: records may be counted again after a restore.
    #[value(alias = "AT_LEAST_ONCE")]
    AtLeastOnce,
}

impl From<CheckpointModeArg> for CheckpointingMode {
    fn from(mode: CheckpointModeArg) -> Self {
        match mode {
            CheckpointModeArg::ExactlyOnce => CheckpointingMode::ExactlyOnce,
            CheckpointModeArg::AtLeastOnce => CheckpointingMode::AtLeastOnce,
        }
    }
}

/// `--restart-strategy` (Flink's `restart-strategy`, with its aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum RestartStrategyKind {
    /// Never restart.
    #[value(alias = "off", alias = "disable")]
    None,
    /// A fixed number of restarts with a fixed delay.
    #[value(alias = "fixeddelay")]
    FixedDelay,
    /// Restart unless too many failures happen within an interval.
    #[value(alias = "failurerate")]
    FailureRate,
    /// Restart with a growing delay.
    #[value(alias = "exponentialdelay")]
    ExponentialDelay,
}

/// The standard options of a cairn job binary. Options a Flink user knows
/// keep Flink's meaning; [`JobArgs::job_config_with_default_id`] validates them together.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct JobArgs {
    /// Restore from this retained checkpoint: a `chk-<n>` directory or its
    /// `_metadata` file (Flink's `flink run -s <path>`).
    #[arg(long, value_name = "CHK_DIR|_METADATA")]
    pub from: Option<PathBuf>,

    /// With --from: start even if the checkpoint holds state of an operator
    /// uid this job lacks, and drop that state (Flink's
    /// `--allowNonRestoredState`); without it such a start fails naming the uid
    #[arg(long)]
    pub allow_non_restored_state: bool,

    /// With --from: what the job may do with that checkpoint (Flink's
    /// `--claimMode`). no-claim (default): it is never deleted or rewritten
    /// and the first new checkpoint references none of its files, so
    /// --checkpoint-dir may name another directory. claim: it becomes one
    /// of the job's retained checkpoints and is deleted when a newer one
    /// subsumes it; it must be in the job's own checkpoint directory
    #[arg(long, value_enum, value_name = "MODE")]
    pub restore_mode: Option<RestoreModeArg>,

    /// Continue the job from the newest intact checkpoint in its checkpoint
    /// directory (--checkpoint-dir/<job-id>), as after a crash: damaged
    /// ones are passed over with a warning naming the file, and the job
    /// starts empty (saying so) when there is none. Excludes --from
    #[arg(long, conflicts_with = "from")]
    pub resume: bool,

    /// Directory for checkpoints, `<dir>/<job-id>/chk-<n>/`
    /// (Flink's `state.checkpoints.dir`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Where `cairn savepoint <job-dir>` and `cairn stop <job-dir>` put the
    /// savepoints of this job when they name no directory (Flink's
    /// `state.savepoints.dir`; default: none, so they must name one).
    #[arg(long, value_name = "DIR")]
    pub savepoint_dir: Option<PathBuf>,

    /// Keyed-state backend (Flink's `state.backend`: hashmap, filesystem, rocksdb).
    #[arg(long, value_enum, default_value_t = BackendKind::Heap)]
    pub backend: BackendKind,

    /// Take incremental checkpoints (Flink's `state.backend.incremental`,
    /// default false): rocks uploads only new SST files; heap and fs write
    /// only the entries changed since the last completed checkpoint, on a
    /// base they rewrite before the changes outgrow it.
    #[arg(long)]
    pub incremental: bool,

    /// Keep a local copy of each checkpoint and restore from it when intact
    /// (Flink's `state.backend.local-recovery`, default false): rocks keeps
    /// its checkpoint files on local disk, heap and fs keep the snapshot in
    /// memory, shared with the live state.
    #[arg(long)]
    pub local_recovery: bool,

    /// Local working directory of the rocks backend: the job works in
    /// `<DIR>/<job-id>/`, one directory per backend instance with its
    /// databases and local checkpoint copies (Flink's
    /// `state.backend.rocksdb.localdir`; default `<temp>/cairn-rocks`). What
    /// killed runs left there is removed when the job starts again.
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Job id, naming the job's checkpoint directory (default "cairn-job").
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,

    /// Default parallelism of operators (Flink's `parallelism.default`, `-p`).
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        default_value_t = 1
    )]
    pub parallelism: u32,

    /// Number of key groups, the most the job can be rescaled to
    /// (Flink's `pipeline.max-parallelism`; default from the parallelism, at least 128).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub max_parallelism: Option<u32>,

    /// Time between checkpoints, e.g. 500ms, 2s, 1m; checkpointing is off
    /// without it (Flink's `execution.checkpointing.interval`).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub checkpoint_interval: Option<Duration>,

    /// exactly-once (aligned barriers, the default) or at-least-once
    /// (Flink's `execution.checkpointing.mode`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub checkpoint_mode: Option<CheckpointModeArg>,

    /// A checkpoint not complete after this long is aborted (Flink's
    /// `execution.checkpointing.timeout`, default 10min).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub checkpoint_timeout: Option<Duration>,

    /// Least time from the end of a checkpoint to the start of the next
    /// (Flink's `execution.checkpointing.min-pause`, default 0).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub min_pause: Option<Duration>,

    /// Most checkpoints in progress at once (Flink's
    /// `execution.checkpointing.max-concurrent-checkpoints`, default 1).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub max_concurrent_checkpoints: Option<u32>,

    /// Failed checkpoints tolerated in a row before the job fails over
    /// (Flink's `execution.checkpointing.tolerable-failed-checkpoints`, default 0).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub tolerable_failed_checkpoints: Option<u32>,

    /// Completed checkpoints kept (Flink's `state.checkpoints.num-retained`, default 1).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub retained: Option<usize>,

    /// Keep retained checkpoints when the job is cancelled (Flink's
    /// `execution.checkpointing.externalized-checkpoint-retention`:
    /// RETAIN_ON_CANCELLATION; they are deleted on cancel otherwise).
    #[arg(long)]
    pub retain_on_cancel: bool,

    /// Restart strategy (Flink's `restart-strategy`). Default: none without
    /// checkpointing, fixed-delay with unlimited attempts and 1s delay with it.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub restart_strategy: Option<RestartStrategyKind>,

    /// fixed-delay: restarts before the job fails (Flink's
    /// `restart-strategy.fixed-delay.attempts`, default 1).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub restart_attempts: Option<u32>,

    /// fixed-delay and failure-rate: wait before each restart (Flink's
    /// `restart-strategy.fixed-delay.delay` / `.failure-rate.delay`, default 1s).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub restart_delay: Option<Duration>,

    /// failure-rate: failures tolerated per interval (Flink's
    /// `restart-strategy.failure-rate.max-failures-per-interval`, default 1).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub failure_rate_max_failures: Option<u32>,

    /// failure-rate: the measuring interval (Flink's
    /// `restart-strategy.failure-rate.failure-rate-interval`, default 1min).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub failure_rate_interval: Option<Duration>,

    /// exponential-delay: first delay (Flink's
    /// `restart-strategy.exponential-delay.initial-backoff`, default 1s).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub backoff_initial: Option<Duration>,

    /// exponential-delay: largest delay (Flink's
    /// `restart-strategy.exponential-delay.max-backoff`, default 5min).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub backoff_max: Option<Duration>,

    /// exponential-delay: growth per failure, above 1 (Flink's
    /// `restart-strategy.exponential-delay.backoff-multiplier`, default 2.0).
    #[arg(long, allow_hyphen_values = true, value_name = "FACTOR")]
    pub backoff_multiplier: Option<f64>,

    /// exponential-delay: random fraction of the delay added or removed, 0..=1
    /// (Flink's `restart-strategy.exponential-delay.jitter-factor`, default 0.1).
    #[arg(long, allow_hyphen_values = true, value_name = "FRACTION")]
    pub backoff_jitter: Option<f64>,

    /// exponential-delay: time running without failure after which the delay
    /// resets (Flink's `restart-strategy.exponential-delay.reset-backoff-threshold`,
    /// default 1h).
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = parse_duration)]
    pub backoff_reset_threshold: Option<Duration>,
}

impl Default for JobArgs {
    fn default() -> Self {
        JobArgs {
            from: None,
            allow_non_restored_state: false,
            restore_mode: None,
            resume: false,
            checkpoint_dir: None,
            savepoint_dir: None,
            backend: BackendKind::Heap,
            incremental: false,
            local_recovery: false,
            local_dir: None,
            job_id: None,
            parallelism: 1,
            max_parallelism: None,
            checkpoint_interval: None,
            checkpoint_mode: None,
            checkpoint_timeout: None,
            min_pause: None,
            max_concurrent_checkpoints: None,
            tolerable_failed_checkpoints: None,
            retained: None,
            retain_on_cancel: false,
            restart_strategy: None,
            restart_attempts: None,
            restart_delay: None,
            failure_rate_max_failures: None,
            failure_rate_interval: None,
            backoff_initial: None,
            backoff_max: None,
            backoff_multiplier: None,
            backoff_jitter: None,
            backoff_reset_threshold: None,
        }
    }
}

/// Parses a duration as Flink writes them: a whole number and a unit
/// (`ms`, `s`, `m`/`min`, `h`, `d`, and their long forms), optionally
/// separated by a space; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!(
            "invalid duration {text:?}: a duration cannot be negative"
        ));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || {
        format!("invalid duration {text:?}: use a whole number and a unit, e.g. 500ms, 2s, 1m, 1h")
    };
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis_per = match unit.trim_start() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

#[cfg(test)]
mod tests;
