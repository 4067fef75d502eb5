//! [`JobArgs::job_config_with_default_id`]: options validated together into a [`JobConfig`].
//!
//! The checks that need option names live here (a checkpoint setting without
//! `--checkpoint-interval`, a restart setting of another strategy); value
//! ranges are the executor's ([`JobConfig::validate_parallelism`],
//! [`CheckpointConfig::validate`], [`RestartStrategyConfig::validate`]),
//! reported under the option's name.

use std::time::Duration;

use executor::{
    CheckpointConfig, ExecutorError, InvalidSetting, JobConfig, RestartStrategyConfig, Result,
    Setting,
};
use state_core::ExternalizedCheckpointCleanup;
use state_core::JobId;

use super::{JobArgs, RestartStrategyKind};

fn invalid(msg: String) -> ExecutorError {
    ExecutorError::InvalidJob(msg)
}

/// The option that sets `setting`.
fn option_name(setting: Setting) -> &'static str {
    match setting {
        Setting::Parallelism => "--parallelism",
        Setting::MaxParallelism => "--max-parallelism",
        Setting::CheckpointInterval => "--checkpoint-interval",
        Setting::CheckpointTimeout => "--checkpoint-timeout",
        Setting::MaxConcurrentCheckpoints => "--max-concurrent-checkpoints",
        Setting::RetainedCheckpoints => "--retained",
        Setting::FailureRateMaxFailures => "--failure-rate-max-failures",
        Setting::FailureRateInterval => "--failure-rate-interval",
        Setting::BackoffInitial => "--backoff-initial",
        Setting::BackoffMax => "--backoff-max",
        Setting::BackoffMultiplier => "--backoff-multiplier",
        Setting::BackoffJitter => "--backoff-jitter",
        Setting::BackoffResetThreshold => "--backoff-reset-threshold",
        // A setting added to the executor later: its configuration name.
        other => other.name(),
    }
}

/// A value out of range, reported under its option's name.
fn out_of_range(error: InvalidSetting) -> ExecutorError {
    invalid(error.describe(option_name))
}

impl JobArgs {
    /// The job configuration these options describe, with `default_job_id`
    /// when `--job-id` is not given, and Flink's defaults
    /// for what else is not given. Errors name the option and its value: values
    /// out of range, and options that have no effect with the others (a
    /// checkpoint setting without `--checkpoint-interval`, a restart setting
    /// of another strategy).
    pub fn job_config_with_default_id(&self, default_job_id: &str) -> Result<JobConfig> {
        let id = self.job_id.as_deref().unwrap_or(default_job_id);
        let job_id = JobId::new(id).map_err(|e| invalid(format!("--job-id {id:?}: {e}")))?;
        let mut config = JobConfig::new(job_id);
        config.parallelism = self.parallelism;
        config.max_parallelism = self.max_parallelism;
        config.validate_parallelism().map_err(out_of_range)?;
        config.checkpointing = self.checkpoint_config()?;
        config.restart = self.restart_config()?;
        if self.allow_non_restored_state && self.from.is_none() {
            return Err(invalid(
                "--allow-non-restored-state needs --from: it only applies to a restore".to_owned(),
            ));
        }
        if let (Some(mode), None) = (self.restore_mode, &self.from) {
            let mode = state_core::RestoreMode::from(mode);
            return Err(invalid(format!(
                "--restore-mode {mode} needs --from: it says what the job may do with the checkpoint it restores"
            )));
        }
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(invalid(
                "--resume needs --checkpoint-dir: the job resumes from the checkpoints in <checkpoint-dir>/<job-id>"
                    .to_owned(),
            ));
        }
        config.allow_non_restored_state = self.allow_non_restored_state;
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
        let mut c = CheckpointConfig::every(interval);
        if let Some(mode) = self.checkpoint_mode {
            c.mode = mode.into();
        }
        if let Some(timeout) = self.checkpoint_timeout {
            c.timeout = timeout;
        }
        if let Some(pause) = self.min_pause {
            c.min_pause = pause;
        }
        if let Some(n) = self.max_concurrent_checkpoints {
            c.max_concurrent = n;
        }
        if let Some(n) = self.tolerable_failed_checkpoints {
            c.tolerable_failures = n;
        }
        if let Some(n) = self.retained {
            c.retained = n;
        }
        if self.retain_on_cancel {
            c.cleanup = ExternalizedCheckpointCleanup::RetainOnCancellation;
        }
        c.validate().map_err(out_of_range)?;
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
            Some(RestartStrategyKind::FailureRate) => RestartStrategyConfig::FailureRate {
                max_failures: self.failure_rate_max_failures.unwrap_or(1),
                interval: self
                    .failure_rate_interval
                    .unwrap_or(Duration::from_secs(60)),
                delay: self.restart_delay.unwrap_or(second),
            },
            Some(RestartStrategyKind::ExponentialDelay) => {
                RestartStrategyConfig::ExponentialDelay {
                    initial: self.backoff_initial.unwrap_or(second),
                    max: self.backoff_max.unwrap_or(Duration::from_secs(300)),
                    multiplier: self.backoff_multiplier.unwrap_or(2.0),
                    jitter: self.backoff_jitter.unwrap_or(0.1),
                    reset_threshold: self
                        .backoff_reset_threshold
                        .unwrap_or(Duration::from_secs(3600)),
                }
            }
        };
        config.validate().map_err(out_of_range)?;
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
