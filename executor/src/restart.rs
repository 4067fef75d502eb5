//! Restart strategies: whether and when a failed job attempt is restarted,
//! with the semantics of Flink's `RestartBackoffTimeStrategy` implementations.
//!
//! The runtime calls [`RestartStrategy::on_failure`] once per failed attempt
//! with the current time from its [`state_core::Clock`]; the decision is
//! either a restart after a delay or the end of the job.
//!
//! - **none**: the first failure fails the job.
//! - **fixed-delay** (`attempts`, `delay`): failures 1..=`attempts` restart
//!   after `delay`; failure `attempts + 1` fails the job (Flink's
//!   `FixedDelayRestartBackoffTimeStrategy`).
//! - **failure-rate** (`max_failures`, `interval`, `delay`): restarts after
//!   `delay` unless this failure makes more than `max_failures` failures
//!   within `interval`, that is unless the failure `max_failures` failures
//!   before this one happened at most `interval` ago (Flink's
//!   `FailureRateRestartBackoffTimeStrategy`).
//! - **exponential-delay** (`initial`, `max`, `multiplier`, `jitter`,
//!   `reset_threshold`): always restarts. The delay starts at `initial`, is
//!   multiplied by `multiplier` on every further failure up to `max`, and
//!   goes back to `initial` when the job ran `reset_threshold` after its last
//!   restart (`reset_threshold + delay` after the last failure) without
//!   failing. A jitter of ±`jitter` × delay is drawn from a seeded generator
//!   and the result is capped at `max` (Flink's
//!   `ExponentialDelayRestartBackoffTimeStrategy`).
//!
//! [`validate`] checks a configuration with Flink's preconditions;
//! [`RestartStrategy::new`] never fails and clamps what [`validate`] rejects.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{DisplayDuration, RestartStrategyConfig, Setting, SettingProblem, millis};
use crate::error::{ExecutorError, Result};

/// What to do after a failed job attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the job after waiting `delay`.
    Restart {
        /// Time to wait before the restart.
        delay: Duration,
    },
    /// Give up: the job fails for good.
    Fail {
        /// Why, naming the strategy and its limit
        /// (e.g. "fixed-delay: 3 restart attempts exhausted").
        reason: String,
    },
}

/// The state of one job's restart strategy across its attempts.
#[derive(Debug, Clone)]
pub struct RestartStrategy {
    kind: Kind,
    failures: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    None,
    FixedDelay {
        attempts: u32,
        delay: Duration,
    },
    FailureRate {
        max_failures: u32,
        interval_millis: u64,
        delay: Duration,
        /// The times of the last `max_failures + 1` failures, oldest first.
        recent: VecDeque<u64>,
    },
    ExponentialDelay {
        initial_millis: u64,
        max_millis: u64,
        multiplier: f64,
        jitter: f64,
        reset_threshold_millis: u64,
        current_millis: u64,
        last_failure: Option<u64>,
        rng: SplitMix64,
    },
}

impl RestartStrategy {
    /// A fresh strategy for `config`. `seed` drives the exponential-delay
    /// jitter (there is no ambient randomness: the same seed and failure
    /// times give the same delays). Values [`validate`] rejects are clamped
    /// (multiplier below 1 to 1, jitter into 0..=1, `initial` to at most `max`).
    pub fn new(config: &RestartStrategyConfig, seed: u64) -> Self {
        let kind = match config {
            RestartStrategyConfig::None => Kind::None,
            RestartStrategyConfig::FixedDelay { attempts, delay } => Kind::FixedDelay {
                attempts: *attempts,
                delay: *delay,
            },
            RestartStrategyConfig::FailureRate {
                max_failures,
                interval,
                delay,
            } => Kind::FailureRate {
                max_failures: *max_failures,
                interval_millis: millis(*interval),
                delay: *delay,
                recent: VecDeque::new(),
            },
            RestartStrategyConfig::ExponentialDelay {
                initial,
                max,
                multiplier,
                jitter,
                reset_threshold,
            } => {
                let max_millis = millis(*max);
                let initial_millis = millis(*initial).min(max_millis);
                Kind::ExponentialDelay {
                    initial_millis,
                    max_millis,
                    multiplier: if multiplier.is_finite() {
                        multiplier.max(1.0)
                    } else {
                        1.0
                    },
                    jitter: if jitter.is_finite() {
                        jitter.clamp(0.0, 1.0)
                    } else {
                        0.0
                    },
                    reset_threshold_millis: millis(*reset_threshold),
                    current_millis: initial_millis,
                    last_failure: None,
                    rng: SplitMix64(seed),
                }
            }
        };
        RestartStrategy { kind, failures: 0 }
    }

    /// Records a failure at `now_millis` (from the job's clock) and decides.
    pub fn on_failure(&mut self, now_millis: u64) -> RestartDecision {
        self.failures += 1;
        let failures = self.failures;
        match &mut self.kind {
            Kind::None => RestartDecision::Fail {
                reason: "none: the restart strategy does not restart failed jobs".to_owned(),
            },
            Kind::FixedDelay { attempts, delay } => {
                if failures <= u64::from(*attempts) {
                    RestartDecision::Restart { delay: *delay }
                } else {
                    RestartDecision::Fail {
                        reason: format!("fixed-delay: {attempts} restart attempts exhausted"),
                    }
                }
            }
            Kind::FailureRate {
                max_failures,
                interval_millis,
                delay,
                recent,
            } => {
                let window = *max_failures as usize + 1;
                if recent.len() >= window {
                    recent.pop_front();
                }
                recent.push_back(now_millis);
                let exceeded = recent.len() >= window
                    && recent
                        .front()
                        .is_some_and(|&first| now_millis.saturating_sub(first) <= *interval_millis);
                if exceeded {
                    RestartDecision::Fail {
                        reason: format!(
                            "failure-rate: more than {max_failures} failures within {}",
                            DisplayDuration(Duration::from_millis(*interval_millis))
                        ),
                    }
                } else {
                    RestartDecision::Restart { delay: *delay }
                }
            }
            Kind::ExponentialDelay {
                initial_millis,
                max_millis,
                multiplier,
                jitter,
                reset_threshold_millis,
                current_millis,
                last_failure,
                rng,
            } => {
                let reset = match *last_failure {
                    None => true,
                    Some(last) => {
                        now_millis.saturating_sub(last)
                            >= reset_threshold_millis.saturating_add(*current_millis)
                    }
                };
                if reset {
                    *current_millis = *initial_millis;
                } else {
                    if *current_millis < *max_millis {
                        let grown = (*current_millis as f64 * *multiplier).min(u64::MAX as f64);
                        *current_millis = grown as u64;
                    }
                    *current_millis = (*current_millis).clamp(*initial_millis, *max_millis);
                }
                *last_failure = Some(now_millis);
                let offset = (*current_millis as f64 * *jitter) as u64;
                let delay = if offset == 0 {
                    *current_millis
                } else {
                    // Uniform in [current - offset, current + offset].
                    let span = offset.saturating_mul(2).saturating_add(1);
                    let draw = rng.next_u64() % span;
                    current_millis.saturating_sub(offset).saturating_add(draw)
                };
                RestartDecision::Restart {
                    delay: Duration::from_millis(delay.min(*max_millis)),
                }
            }
        }
    }

    /// Failures seen so far (the restarts the runtime made are those that
    /// were answered with [`RestartDecision::Restart`]).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The strategy's name as Flink's configuration spells it
    /// (`none`, `fixed-delay`, `failure-rate`, `exponential-delay`).
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::None => "none",
            Kind::FixedDelay { .. } => "fixed-delay",
            Kind::FailureRate { .. } => "failure-rate",
            Kind::ExponentialDelay { .. } => "exponential-delay",
        }
    }
}

/// Checks `config` with Flink's preconditions: failure-rate needs
/// `max_failures >= 1` and an interval of at least 1 ms; exponential-delay
/// needs `1 ms <= initial <= max`, `multiplier > 1`, `0 <= jitter <= 1` and
/// a reset threshold of at least 1 ms. The error names the setting and value.
///
/// The checks are [`RestartStrategyConfig::validate`]'s; this says them in
/// the words of the restart strategy.
pub fn validate(config: &RestartStrategyConfig) -> Result<()> {
    config.validate().map_err(|e| {
        let (strategy, setting) = match e.setting {
            Setting::FailureRateMaxFailures => ("failure-rate", "max failures per interval"),
            Setting::FailureRateInterval => ("failure-rate", "failure rate interval"),
            Setting::BackoffInitial => ("exponential-delay", "initial backoff"),
            Setting::BackoffMax => ("exponential-delay", "max backoff"),
            Setting::BackoffMultiplier => ("exponential-delay", "backoff multiplier"),
            Setting::BackoffJitter => ("exponential-delay", "jitter factor"),
            Setting::BackoffResetThreshold => ("exponential-delay", "reset backoff threshold"),
            other => ("the", other.name()),
        };
        ExecutorError::InvalidJob(match &e.problem {
            SettingProblem::OutOfRange(rule) => {
                format!("{strategy} restart strategy: {setting} {rule}, got {}", e.value)
            }
            SettingProblem::LessThan { value, .. } => format!(
                "{strategy} restart strategy: initial backoff {value} is larger than max backoff {}",
                e.value
            ),
        })
    })
}

/// SplitMix64: a small, fast, seedable generator for the jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(ms: u64) -> RestartDecision {
        RestartDecision::Restart {
            delay: Duration::from_millis(ms),
        }
    }

    #[test]
    fn none_fails_first_failure() {
        let mut s = RestartStrategy::new(&RestartStrategyConfig::None, 0);
        assert!(
            matches!(s.on_failure(5), RestartDecision::Fail { reason } if reason.starts_with("none"))
        );
        assert_eq!(s.name(), "none");
    }

    #[test]
    fn fixed_delay_fails_on_attempts_plus_one() {
        let cfg = RestartStrategyConfig::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(10),
        };
        let mut s = RestartStrategy::new(&cfg, 0);
        for t in 0..3 {
            assert_eq!(s.on_failure(t * 1000), restart(10_000));
        }
        assert_eq!(
            s.on_failure(99_000),
            RestartDecision::Fail {
                reason: "fixed-delay: 3 restart attempts exhausted".into()
            }
        );
        assert_eq!(s.failures(), 4);
        // Zero attempts: the first failure fails.
        let cfg = RestartStrategyConfig::FixedDelay {
            attempts: 0,
            delay: Duration::ZERO,
        };
        assert!(matches!(
            RestartStrategy::new(&cfg, 0).on_failure(0),
            RestartDecision::Fail { .. }
        ));
    }

    #[test]
    fn fixed_delay_unbounded_default() {
        let cfg = RestartStrategyConfig::FixedDelay {
            attempts: u32::MAX,
            delay: Duration::from_secs(1),
        };
        let mut s = RestartStrategy::new(&cfg, 0);
        for t in 0..10_000 {
            assert_eq!(s.on_failure(t), restart(1000));
        }
    }

    #[test]
    fn validate_names_the_setting() {
        let bad = RestartStrategyConfig::ExponentialDelay {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.1,
            reset_threshold: Duration::from_secs(3600),
        };
        let err = validate(&bad).unwrap_err().to_string();
        assert!(
            err.contains("initial backoff 10s is larger than max backoff 1s"),
            "{err}"
        );
        let bad = RestartStrategyConfig::FailureRate {
            max_failures: 0,
            interval: Duration::from_secs(60),
            delay: Duration::ZERO,
        };
        assert!(
            validate(&bad)
                .unwrap_err()
                .to_string()
                .contains("max failures")
        );
        let backoff = |initial: u64, multiplier: f64, jitter: f64, reset: u64| {
            validate(&RestartStrategyConfig::ExponentialDelay {
                initial: Duration::from_millis(initial),
                max: Duration::from_secs(60),
                multiplier,
                jitter,
                reset_threshold: Duration::from_millis(reset),
            })
            .unwrap_err()
            .to_string()
        };
        let name = "invalid job: exponential-delay restart strategy";
        for (got, expected) in [
            (
                backoff(0, 2.0, 0.1, 1),
                format!("{name}: initial backoff must be at least 1ms, got 0ms"),
            ),
            (
                backoff(1, 0.5, 0.1, 1),
                format!("{name}: backoff multiplier must be greater than 1, got 0.5"),
            ),
            (
                backoff(1, 2.0, 2.0, 1),
                format!("{name}: jitter factor must be between 0 and 1, got 2"),
            ),
            (
                backoff(1, 2.0, 0.1, 0),
                format!("{name}: reset backoff threshold must be at least 1ms, got 0ms"),
            ),
            (
                validate(&RestartStrategyConfig::FailureRate {
                    max_failures: 1,
                    interval: Duration::ZERO,
                    delay: Duration::ZERO,
                })
                .unwrap_err()
                .to_string(),
                "invalid job: failure-rate restart strategy: failure rate interval must be at least 1ms, got 0ms".to_owned(),
            ),
        ] {
            assert_eq!(got, expected);
        }
        assert!(validate(&RestartStrategyConfig::None).is_ok());
    }
}
