//! Job configuration: parallelism, checkpointing and restarts, with Flink's
//! defaults, and [`JobConfig::validate`], the range checks every front end
//! shares. Strings are parsed into it only in `cli` (its `--parallelism`,
//! `--checkpoint-interval`, ... options).

use std::fmt;
use std::time::Duration;

use state_core::ExternalizedCheckpointCleanup;
use state_core::JobId;
use state_core::{MaxParallelism, UPPER_BOUND_MAX_PARALLELISM};

use crate::error::ExecutorError;

/// Flink's smallest checkpoint interval and timeout.
const MIN_CHECKPOINT_TIME: Duration = Duration::from_millis(10);

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
    /// Start even when the checkpoint given to
    /// [`StreamEnv::restore_from`](crate::StreamEnv::restore_from) holds
    /// state of an operator uid the job does not have, dropping that state
    /// (Flink's `--allowNonRestoredState`). Off by default: the start fails
    /// and names the uid, because a renamed or removed operator would lose
    /// its state silently.
    pub allow_non_restored_state: bool,
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
            allow_non_restored_state: false,
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

/// A setting of a [`JobConfig`] whose value [`JobConfig::validate`] checks.
///
/// Front ends map it to their own name for the setting (the `cairn` command
/// to its option, `Parallelism` to `--parallelism`); [`Setting::name`] is the
/// setting's name in the configuration itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// [`JobConfig::parallelism`].
    Parallelism,
    /// [`JobConfig::max_parallelism`].
    MaxParallelism,
    /// [`CheckpointConfig::interval`].
    CheckpointInterval,
    /// [`CheckpointConfig::timeout`].
    CheckpointTimeout,
    /// [`CheckpointConfig::max_concurrent`].
    MaxConcurrentCheckpoints,
    /// [`CheckpointConfig::retained`].
    RetainedCheckpoints,
    /// `max_failures` of [`RestartStrategyConfig::FailureRate`].
    FailureRateMaxFailures,
    /// `interval` of [`RestartStrategyConfig::FailureRate`].
    FailureRateInterval,
    /// `initial` of [`RestartStrategyConfig::ExponentialDelay`].
    BackoffInitial,
    /// `max` of [`RestartStrategyConfig::ExponentialDelay`].
    BackoffMax,
    /// `multiplier` of [`RestartStrategyConfig::ExponentialDelay`].
    BackoffMultiplier,
    /// `jitter` of [`RestartStrategyConfig::ExponentialDelay`].
    BackoffJitter,
    /// `reset_threshold` of [`RestartStrategyConfig::ExponentialDelay`].
    BackoffResetThreshold,
}

impl Setting {
    /// The setting's path in a [`JobConfig`] (`parallelism`, `checkpointing.interval`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Setting::Parallelism => "parallelism",
            Setting::MaxParallelism => "max_parallelism",
            Setting::CheckpointInterval => "checkpointing.interval",
            Setting::CheckpointTimeout => "checkpointing.timeout",
            Setting::MaxConcurrentCheckpoints => "checkpointing.max_concurrent",
            Setting::RetainedCheckpoints => "checkpointing.retained",
            Setting::FailureRateMaxFailures => "restart.max_failures",
            Setting::FailureRateInterval => "restart.interval",
            Setting::BackoffInitial => "restart.initial",
            Setting::BackoffMax => "restart.max",
            Setting::BackoffMultiplier => "restart.multiplier",
            Setting::BackoffJitter => "restart.jitter",
            Setting::BackoffResetThreshold => "restart.reset_threshold",
        }
    }
}

/// What is wrong with the value of an [`InvalidSetting`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingProblem {
    /// The value is outside the allowed range; the text says the range
    /// (`must be at least 10ms`).
    OutOfRange(String),
    /// The value is below that of another setting that bounds it.
    LessThan {
        /// The bounding setting.
        setting: Setting,
        /// Its value, as shown to users.
        value: String,
    },
}

/// A [`JobConfig`] value outside its range: the setting, its value and the
/// rule it breaks. Its message names settings by [`Setting::name`];
/// [`InvalidSetting::describe`] names them as a front end does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe(Setting::name))]
pub struct InvalidSetting {
    /// The setting whose value is wrong.
    pub setting: Setting,
    /// Its value, as shown to users (`5ms`, `0`).
    pub value: String,
    /// What is wrong with it.
    pub problem: SettingProblem,
}

impl InvalidSetting {
    fn out_of_range(setting: Setting, value: impl fmt::Display, rule: impl Into<String>) -> Self {
        InvalidSetting {
            setting,
            value: value.to_string(),
            problem: SettingProblem::OutOfRange(rule.into()),
        }
    }

    /// The message, with every setting called by `name`: `{setting} {value}: {rule}`,
    /// or `{setting} {value} is less than {other} {its value}`.
    ///
    /// ```
    /// use executor::JobConfig;
    /// use state_core::JobId;
    ///
    /// let mut config = JobConfig::new(JobId::new("job")?);
    /// config.parallelism = 0;
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error.describe(|_| "-p"), "-p 0: must be between 1 and 32768");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn describe<'a>(&self, name: impl Fn(Setting) -> &'a str) -> String {
        match &self.problem {
            SettingProblem::OutOfRange(rule) => {
                format!("{} {}: {rule}", name(self.setting), self.value)
            }
            SettingProblem::LessThan { setting, value } => format!(
                "{} {} is less than {} {value}",
                name(self.setting),
                self.value,
                name(*setting)
            ),
        }
    }
}

impl From<InvalidSetting> for ExecutorError {
    fn from(error: InvalidSetting) -> Self {
        ExecutorError::InvalidJob(error.to_string())
    }
}

impl JobConfig {
    /// Checks every value against its range: [`JobConfig::validate_parallelism`],
    /// then [`CheckpointConfig::validate`] and [`RestartStrategyConfig::validate`]
    /// for what is configured. The first value out of range is the error.
    ///
    /// [`crate::StreamEnv::start`] checks only what it cannot run without;
    /// front ends call this first to refuse settings Flink refuses (a
    /// checkpoint interval below 10ms, for one).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use executor::{CheckpointConfig, JobConfig, Setting};
    /// use state_core::JobId;
    ///
    /// let mut config = JobConfig::new(JobId::new("job")?);
    /// assert!(config.validate().is_ok());
    /// config.checkpointing = Some(CheckpointConfig::every(Duration::from_millis(5)));
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error.setting, Setting::CheckpointInterval);
    /// assert_eq!(error.to_string(), "checkpointing.interval 5ms: must be at least 10ms");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.validate_parallelism()?;
        if let Some(checkpointing) = &self.checkpointing {
            checkpointing.validate()?;
        }
        if let Some(restart) = &self.restart {
            restart.validate()?;
        }
        Ok(())
    }

    /// Checks the parallelism (`1..=32768`) and the max parallelism (a valid
    /// number of key groups, not below the parallelism).
    pub fn validate_parallelism(&self) -> Result<(), InvalidSetting> {
        if self.parallelism == 0 || self.parallelism > UPPER_BOUND_MAX_PARALLELISM {
            return Err(InvalidSetting::out_of_range(
                Setting::Parallelism,
                self.parallelism,
                format!("must be between 1 and {UPPER_BOUND_MAX_PARALLELISM}"),
            ));
        }
        if let Some(max) = self.max_parallelism {
            MaxParallelism::new(max).map_err(|e| {
                InvalidSetting::out_of_range(Setting::MaxParallelism, max, e.to_string())
            })?;
            if max < self.parallelism {
                return Err(InvalidSetting {
                    setting: Setting::MaxParallelism,
                    value: max.to_string(),
                    problem: SettingProblem::LessThan {
                        setting: Setting::Parallelism,
                        value: self.parallelism.to_string(),
                    },
                });
            }
        }
        Ok(())
    }
}

impl CheckpointConfig {
    /// Checks the interval and timeout (at least 10ms, as Flink requires),
    /// the checkpoints in flight and the checkpoints retained (at least 1).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let at_least_min = "must be at least 10ms";
        if self.interval < MIN_CHECKPOINT_TIME {
            return Err(InvalidSetting::out_of_range(
                Setting::CheckpointInterval,
                DisplayDuration(self.interval),
                at_least_min,
            ));
        }
        if self.timeout < MIN_CHECKPOINT_TIME {
            return Err(InvalidSetting::out_of_range(
                Setting::CheckpointTimeout,
                DisplayDuration(self.timeout),
                at_least_min,
            ));
        }
        if self.max_concurrent == 0 {
            return Err(InvalidSetting::out_of_range(
                Setting::MaxConcurrentCheckpoints,
                0,
                "must be at least 1",
            ));
        }
        if self.retained == 0 {
            return Err(InvalidSetting::out_of_range(
                Setting::RetainedCheckpoints,
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl RestartStrategyConfig {
    /// Checks the settings of the strategy: failure-rate needs at least one
    /// failure per interval and an interval of at least 1ms; exponential-delay
    /// needs delays of at least 1ms, a max delay not below the initial one, a
    /// multiplier above 1 and a jitter in `0..=1`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let one_ms = Duration::from_millis(1);
        let at_least_1ms = "must be at least 1ms";
        match self {
            RestartStrategyConfig::None | RestartStrategyConfig::FixedDelay { .. } => Ok(()),
            RestartStrategyConfig::FailureRate {
                max_failures,
                interval,
                ..
            } => {
                if *max_failures == 0 {
                    Err(InvalidSetting::out_of_range(
                        Setting::FailureRateMaxFailures,
                        0,
                        "must be at least 1",
                    ))
                } else if *interval < one_ms {
                    Err(InvalidSetting::out_of_range(
                        Setting::FailureRateInterval,
                        DisplayDuration(*interval),
                        at_least_1ms,
                    ))
                } else {
                    Ok(())
                }
            }
            RestartStrategyConfig::ExponentialDelay {
                initial,
                max,
                multiplier,
                jitter,
                reset_threshold,
            } => {
                if *initial < one_ms {
                    Err(InvalidSetting::out_of_range(
                        Setting::BackoffInitial,
                        DisplayDuration(*initial),
                        at_least_1ms,
                    ))
                } else if max < initial {
                    Err(InvalidSetting {
                        setting: Setting::BackoffMax,
                        value: DisplayDuration(*max).to_string(),
                        problem: SettingProblem::LessThan {
                            setting: Setting::BackoffInitial,
                            value: DisplayDuration(*initial).to_string(),
                        },
                    })
                } else if !(multiplier.is_finite() && *multiplier > 1.0) {
                    Err(InvalidSetting::out_of_range(
                        Setting::BackoffMultiplier,
                        multiplier,
                        "must be greater than 1",
                    ))
                } else if !(0.0..=1.0).contains(jitter) {
                    Err(InvalidSetting::out_of_range(
                        Setting::BackoffJitter,
                        jitter,
                        "must be between 0 and 1",
                    ))
                } else if *reset_threshold < one_ms {
                    Err(InvalidSetting::out_of_range(
                        Setting::BackoffResetThreshold,
                        DisplayDuration(*reset_threshold),
                        at_least_1ms,
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Formats a duration the way job options take it (`500ms`, `10s`, `5min`, `1h`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DisplayDuration(pub(crate) Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = millis(self.0);
        if ms == 0 {
            f.write_str("0ms")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}min", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobConfig {
        JobConfig::new(JobId::new("job").unwrap())
    }

    fn err(config: &JobConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let mut config = job();
        assert_eq!(config.validate(), Ok(()));
        config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(30)));
        config.restart = Some(RestartStrategyConfig::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.1,
            reset_threshold: Duration::from_secs(3600),
        });
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn parallelism_ranges() {
        let mut config = job();
        config.parallelism = 0;
        assert_eq!(err(&config), "parallelism 0: must be between 1 and 32768");
        config.parallelism = 4;
        config.max_parallelism = Some(2);
        assert_eq!(err(&config), "max_parallelism 2 is less than parallelism 4");
        config.max_parallelism = Some(0);
        let e = config.validate().unwrap_err();
        assert_eq!(e.setting, Setting::MaxParallelism);
        assert!(e.to_string().starts_with("max_parallelism 0: "), "{e}");
    }

    #[test]
    fn checkpoint_ranges() {
        let bad = |edit: fn(&mut CheckpointConfig)| {
            let mut c = CheckpointConfig::every(Duration::from_secs(1));
            edit(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.interval = Duration::from_millis(5)),
            "checkpointing.interval 5ms: must be at least 10ms"
        );
        assert_eq!(
            bad(|c| c.timeout = Duration::ZERO),
            "checkpointing.timeout 0ms: must be at least 10ms"
        );
        assert_eq!(
            bad(|c| c.max_concurrent = 0),
            "checkpointing.max_concurrent 0: must be at least 1"
        );
        assert_eq!(
            bad(|c| c.retained = 0),
            "checkpointing.retained 0: must be at least 1"
        );
    }

    #[test]
    fn restart_ranges() {
        let rate = RestartStrategyConfig::FailureRate {
            max_failures: 0,
            interval: Duration::from_secs(60),
            delay: Duration::ZERO,
        };
        assert_eq!(
            rate.validate().unwrap_err().to_string(),
            "restart.max_failures 0: must be at least 1"
        );
        let backoff = |initial: u64, max: u64, multiplier: f64, jitter: f64| {
            RestartStrategyConfig::ExponentialDelay {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(max),
                multiplier,
                jitter,
                reset_threshold: Duration::from_secs(3600),
            }
            .validate()
            .unwrap_err()
        };
        let e = backoff(10_000, 1_000, 2.0, 0.1);
        assert_eq!(
            e.to_string(),
            "restart.max 1s is less than restart.initial 10s"
        );
        assert_eq!(
            e.describe(|s| if s == Setting::BackoffMax {
                "max"
            } else {
                "initial"
            }),
            "max 1s is less than initial 10s"
        );
        assert_eq!(
            backoff(0, 1_000, 2.0, 0.1).to_string(),
            "restart.initial 0ms: must be at least 1ms"
        );
        assert_eq!(
            backoff(1, 1_000, 1.0, 0.1).to_string(),
            "restart.multiplier 1: must be greater than 1"
        );
        assert_eq!(
            backoff(1, 1_000, 2.0, 1.5).problem,
            SettingProblem::OutOfRange("must be between 0 and 1".to_owned())
        );
        let error: ExecutorError = backoff(1, 1_000, 2.0, 1.5).into();
        assert_eq!(
            error.to_string(),
            "invalid job: restart.jitter 1.5: must be between 0 and 1"
        );
    }
}
