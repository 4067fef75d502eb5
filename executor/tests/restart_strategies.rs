//! Restart strategies' decisions at explicit times, as Flink's strategies make them.

// Test helpers unwrap: a panic there is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use executor::RestartStrategyConfig;
use executor::restart::{RestartDecision, RestartStrategy};

fn restart(ms: u64) -> RestartDecision {
    RestartDecision::Restart {
        delay: Duration::from_millis(ms),
    }
}

fn is_fail(d: &RestartDecision) -> bool {
    matches!(d, RestartDecision::Fail { .. })
}

fn failure_rate(max_failures: u32, interval_ms: u64) -> RestartStrategy {
    RestartStrategy::new(
        &RestartStrategyConfig::FailureRate {
            max_failures,
            interval: Duration::from_millis(interval_ms),
            delay: Duration::from_millis(250),
        },
        0,
    )
}

#[test]
fn failure_rate_fails_on_more_than_max_failures_within_interval() {
    // Flink's testFailuresExceedingRate: 3 failures at the same time restart, the 4th fails.
    let mut s = failure_rate(3, 10_000);
    for _ in 0..3 {
        assert_eq!(s.on_failure(1_000), restart(250));
    }
    match s.on_failure(1_000) {
        RestartDecision::Fail { reason } => {
            assert_eq!(reason, "failure-rate: more than 3 failures within 10s")
        }
        other => panic!("expected Fail, got {other:?}"),
    }
}

#[test]
fn failure_rate_window_slides() {
    // Flink's testManyFailuresWithinRate: 1 failure per 1 ms, failures 2 ms apart.
    let mut s = failure_rate(1, 1);
    for i in 0..10 {
        assert_eq!(s.on_failure(i * 2), restart(250), "failure {i}");
    }
    // Two failures 1 ms apart: exactly `interval` apart is within it.
    let mut s = failure_rate(1, 1);
    assert_eq!(s.on_failure(100), restart(250));
    assert!(is_fail(&s.on_failure(101)));

    // 3 per minute: failures at 0, 10 s, 20 s, then 61 s (0 has left the window),
    // then 65 s: 10 s, 20 s, 61 s, 65 s are four within 60 s.
    let mut s = failure_rate(3, 60_000);
    for t in [0, 10_000, 20_000, 61_000] {
        assert_eq!(s.on_failure(t), restart(250), "failure at {t}");
    }
    assert!(is_fail(&s.on_failure(65_000)));
}

fn exponential(jitter: f64, seed: u64) -> RestartStrategy {
    RestartStrategy::new(
        &RestartStrategyConfig::ExponentialDelay {
            initial: Duration::from_millis(1_000),
            max: Duration::from_millis(10_000),
            multiplier: 2.0,
            jitter,
            reset_threshold: Duration::from_millis(60_000),
        },
        seed,
    )
}

#[test]
fn exponential_delay_grows_caps_and_resets() {
    let mut s = exponential(0.0, 1);
    // Failures in quick succession: 1 s, 2 s, 4 s, 8 s, then capped at 10 s.
    let mut t = 0;
    for expected in [1_000, 2_000, 4_000, 8_000, 10_000, 10_000] {
        assert_eq!(s.on_failure(t), restart(expected), "at {t}");
        t += 100;
    }
    let last = t - 100;
    // Running for less than reset_threshold + current delay does not reset.
    let mut s2 = s.clone();
    assert_eq!(s2.on_failure(last + 69_999), restart(10_000));
    // Running for reset_threshold after the restart (threshold + delay after
    // the failure) resets to the initial delay, then growth starts again.
    assert_eq!(s.on_failure(last + 70_000), restart(1_000));
    assert_eq!(s.on_failure(last + 70_001), restart(2_000));
}

#[test]
fn exponential_delay_jitter_is_seeded_and_bounded() {
    let delays = |seed| {
        let mut s = exponential(0.5, seed);
        (0..6u64)
            .map(|i| match s.on_failure(i) {
                RestartDecision::Restart { delay } => delay.as_millis() as u64,
                RestartDecision::Fail { reason } => panic!("exponential delay failed: {reason}"),
            })
            .collect::<Vec<_>>()
    };
    let a = delays(7);
    assert_eq!(a, delays(7), "same seed, same delays");
    assert_ne!(a, delays(8), "another seed, other delays");
    let base = [1_000u64, 2_000, 4_000, 8_000, 10_000, 10_000];
    for (d, b) in a.iter().zip(base) {
        assert!(
            *d >= b - b / 2 && *d <= (b + b / 2).min(10_000),
            "{d} vs {b}"
        );
    }
}
