//! [`JobArgs::job_config`]: options validated together into a [`JobConfig`].

use std::time::Duration;

use state_core::ExternalizedCheckpointCleanup;
use state_core::JobId;
use state_core::{MaxParallelism, UPPER_BOUND_MAX_PARALLELISM};

use super::{DEFAULT_JOB_ID, JobArgs, RestartStrategyKind};
use crate::config::{CheckpointConfig, JobConfig, RestartStrategyConfig};
use crate::error::{ExecutorError, Result};
use crate::restart::DisplayDuration;

/// Flink's smallest checkpoint interval and timeout.
const MIN_CHECKPOINT_TIME: Duration = Duration::from_millis(10);

fn invalid(msg: String) -> ExecutorError {
    ExecutorError::InvalidJob(msg)
}

impl JobArgs {
    /// The job configuration these options describe, with Flink's defaults
    /// for what is not given. Errors name the option and its value: values
    /// out of range, and options that have no effect with the others (a
    /// checkpoint setting without `--checkpoint-interval`, a restart setting
    /// of another strategy).
    pub fn job_config(&self) -> Result<JobConfig> {
        self.job_config_with_default_id(DEFAULT_JOB_ID)
    }

    /// [`JobArgs::job_config`] with `default_job_id` when `--job-id` is not given.
    pub fn job_config_with_default_id(&self, default_job_id: &str) -> Result<JobConfig> {
        let id = self.job_id.as_deref().unwrap_or(default_job_id);
        let job_id = JobId::new(id).map_err(|e| invalid(format!("--job-id {id:?}: {e}")))?;
        let mut config = JobConfig::new(job_id);
        if self.parallelism == 0 || self.parallelism > UPPER_BOUND_MAX_PARALLELISM {
            return Err(invalid(format!(
                "--parallelism {}: must be between 1 and {UPPER_BOUND_MAX_PARALLELISM}",
                self.parallelism
            )));
        }
        config.parallelism = self.parallelism;
        if let Some(max) = self.max_parallelism {
            MaxParallelism::new(max)
                .map_err(|e| invalid(format!("--max-parallelism {max}: {e}")))?;
            if max < self.parallelism {
                return Err(invalid(format!(
                    "--max-parallelism {max} is less than --parallelism {}",
                    self.parallelism
                )));
            }
            config.max_parallelism = Some(max);
        }
        config.checkpointing = self.checkpoint_config()?;
        config.restart = self.restart_config()?;
        Ok(config)
    }

    fn checkpoint_config(&self) -> Result<Option<CheckpointConfig>> {
        let Some(interval) = self.checkpoint_interval else {
            let given = [
                ("--checkpoint-mode", self.checkpoint_mode.is_some()),
                ("--checkpoint-timeout", self.checkpoint_timeout.is_some()),
                ("--min-pause", self.min_pause.is_some()),
                (
                    "--max-concurrent-checkpoints",
                    self.max_concurrent_checkpoints.is_some(),
                ),
                (
                    "--tolerable-failed-checkpoints",
                    self.tolerable_failed_checkpoints.is_some(),
                ),
                ("--retained", self.retained.is_some()),
                ("--retain-on-cancel", self.retain_on_cancel),
            ];
            if let Some((option, _)) = given.iter().find(|(_, g)| *g) {
                return Err(invalid(format!(
                    "{option} needs --checkpoint-interval: checkpointing is disabled without it"
                )));
            }
            return Ok(None);
        };
        if interval < MIN_CHECKPOINT_TIME {
            return Err(invalid(format!(
                "--checkpoint-interval {}: must be at least 10ms",
                DisplayDuration(interval)
            )));
        }
        let mut c = CheckpointConfig::every(interval);
        if let Some(mode) = self.checkpoint_mode {
            c.mode = mode.into();
        }
        if let Some(timeout) = self.checkpoint_timeout {
            if timeout < MIN_CHECKPOINT_TIME {
                return Err(invalid(format!(
                    "--checkpoint-timeout {}: must be at least 10ms",
                    DisplayDuration(timeout)
                )));
            }
            c.timeout = timeout;
        }
        if let Some(pause) = self.min_pause {
            c.min_pause = pause;
        }
        if let Some(n) = self.max_concurrent_checkpoints {
            if n == 0 {
                return Err(invalid(
                    "--max-concurrent-checkpoints 0: must be at least 1".to_owned(),
                ));
            }
            c.max_concurrent = n;
        }
        if let Some(n) = self.tolerable_failed_checkpoints {
            c.tolerable_failures = n;
        }
        if let Some(n) = self.retained {
            if n == 0 {
                return Err(invalid("--retained 0: must be at least 1".to_owned()));
            }
            c.retained = n;
        }
        if self.retain_on_cancel {
            c.cleanup = ExternalizedCheckpointCleanup::RetainOnCancellation;
        }
        Ok(Some(c))
    }

    fn restart_config(&self) -> Result<Option<RestartStrategyConfig>> {
        let fixed = [
            ("--restart-attempts", self.restart_attempts.is_some()),
            ("--restart-delay", self.restart_delay.is_some()),
        ];
        let rate = [
            (
                "--failure-rate-max-failures",
                self.failure_rate_max_failures.is_some(),
            ),
            (
                "--failure-rate-interval",
                self.failure_rate_interval.is_some(),
            ),
        ];
        let backoff = [
            ("--backoff-initial", self.backoff_initial.is_some()),
            ("--backoff-max", self.backoff_max.is_some()),
            ("--backoff-multiplier", self.backoff_multiplier.is_some()),
            ("--backoff-jitter", self.backoff_jitter.is_some()),
            (
                "--backoff-reset-threshold",
                self.backoff_reset_threshold.is_some(),
            ),
        ];
        let allowed: &[&str] = match self.restart_strategy {
            None | Some(RestartStrategyKind::None) => &[],
            Some(RestartStrategyKind::FixedDelay) => &["--restart-attempts", "--restart-delay"],
            Some(RestartStrategyKind::FailureRate) => &[
                "--restart-delay",
                "--failure-rate-max-failures",
                "--failure-rate-interval",
            ],
            Some(RestartStrategyKind::ExponentialDelay) => &[
                "--backoff-initial",
                "--backoff-max",
                "--backoff-multiplier",
                "--backoff-jitter",
                "--backoff-reset-threshold",
            ],
        };
        for (option, given) in fixed.iter().chain(&rate).chain(&backoff) {
            if *given && !allowed.contains(option) {
                let belongs = match *option {
                    "--restart-delay" => "fixed-delay or failure-rate",
                    o if o.starts_with("--restart") => "fixed-delay",
                    o if o.starts_with("--failure-rate") => "failure-rate",
                    _ => "exponential-delay",
                };
                let current = match self.restart_strategy {
                    None => "no --restart-strategy".to_owned(),
                    Some(k) => format!("--restart-strategy {}", kind_name(k)),
                };
                return Err(invalid(format!(
                    "{option} applies to --restart-strategy {belongs}, not with {current}"
                )));
            }
        }
        let second = Duration::from_secs(1);
        let config = match self.restart_strategy {
            None => return Ok(None),
            Some(RestartStrategyKind::None) => RestartStrategyConfig::None,
            Some(RestartStrategyKind::FixedDelay) => RestartStrategyConfig::FixedDelay {
                attempts: self.restart_attempts.unwrap_or(1),
                delay: self.restart_delay.unwrap_or(second),
            },
            Some(RestartStrategyKind::FailureRate) => {
                let max_failures = self.failure_rate_max_failures.unwrap_or(1);
                if max_failures == 0 {
                    return Err(invalid(
                        "--failure-rate-max-failures 0: must be at least 1".to_owned(),
                    ));
                }
                let interval = self
                    .failure_rate_interval
                    .unwrap_or(Duration::from_secs(60));
                if interval < Duration::from_millis(1) {
                    return Err(invalid(format!(
                        "--failure-rate-interval {}: must be at least 1ms",
                        DisplayDuration(interval)
                    )));
                }
                RestartStrategyConfig::FailureRate {
                    max_failures,
                    interval,
                    delay: self.restart_delay.unwrap_or(second),
                }
            }
            Some(RestartStrategyKind::ExponentialDelay) => {
                let initial = self.backoff_initial.unwrap_or(second);
                let max = self.backoff_max.unwrap_or(Duration::from_secs(300));
                let multiplier = self.backoff_multiplier.unwrap_or(2.0);
                let jitter = self.backoff_jitter.unwrap_or(0.1);
                let reset_threshold = self
                    .backoff_reset_threshold
                    .unwrap_or(Duration::from_secs(3600));
                if initial < Duration::from_millis(1) {
                    return Err(invalid(format!(
                        "--backoff-initial {}: must be at least 1ms",
                        DisplayDuration(initial)
                    )));
                }
                if max < initial {
                    return Err(invalid(format!(
                        "--backoff-max {} is less than --backoff-initial {}",
                        DisplayDuration(max),
                        DisplayDuration(initial)
                    )));
                }
                if !(multiplier.is_finite() && multiplier > 1.0) {
                    return Err(invalid(format!(
                        "--backoff-multiplier {multiplier}: must be greater than 1"
                    )));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(invalid(format!(
                        "--backoff-jitter {jitter}: must be between 0 and 1"
                    )));
                }
                if reset_threshold < Duration::from_millis(1) {
                    return Err(invalid(format!(
                        "--backoff-reset-threshold {}: must be at least 1ms",
                        DisplayDuration(reset_threshold)
                    )));
                }
                RestartStrategyConfig::ExponentialDelay {
                    initial,
                    max,
                    multiplier,
                    jitter,
                    reset_threshold,
                }
            }
        };
        crate::restart::validate(&config)?;
        Ok(Some(config))
    }
}

fn kind_name(kind: RestartStrategyKind) -> &'static str {
    match kind {
        RestartStrategyKind::None => "none",
        RestartStrategyKind::FixedDelay => "fixed-delay",
        RestartStrategyKind::FailureRate => "failure-rate",
        RestartStrategyKind::ExponentialDelay => "exponential-delay",
    }
}
