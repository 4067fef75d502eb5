//! The checkpoint coordinator as a state machine, driven with explicit times:
//! timeout, tolerable failed checkpoints, min pause, max concurrent.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use executor::CheckpointConfig;
use executor::coordinator::{AckOutcome, CheckpointCoordinator};
use state_core::CheckpointId;

fn config(interval_ms: u64) -> CheckpointConfig {
    CheckpointConfig::every(Duration::from_millis(interval_ms))
}

fn complete(c: &mut CheckpointCoordinator<&'static str>, id: CheckpointId, tasks: usize, now: u64) {
    for t in 0..tasks {
        let outcome = c.acknowledge(id, t, "state", now);
        if t + 1 < tasks {
            assert!(matches!(outcome, AckOutcome::Pending));
        } else {
            match outcome {
                AckOutcome::Completed(done) => {
                    assert_eq!(done.id, id);
                    assert_eq!(done.acks.len(), tasks);
                }
                other => panic!("expected completion, got {other:?}"),
            }
        }
    }
}

#[test]
fn periodic_trigger_follows_the_interval() {
    let mut c = CheckpointCoordinator::new(&config(100), true, 2, CheckpointId(1), 0);
    assert_eq!(c.trigger_due(99), None);
    assert_eq!(c.trigger_due(100), Some(CheckpointId(1)));
    complete(&mut c, CheckpointId(1), 2, 150);
    assert_eq!(c.trigger_due(199), None);
    assert_eq!(c.trigger_due(200), Some(CheckpointId(2)));
    assert_eq!(c.next_checkpoint_id(), CheckpointId(3));
}

#[test]
fn checkpoint_times_out_and_counts_as_failure() {
    let mut cfg = config(100);
    cfg.timeout = Duration::from_millis(50);
    cfg.tolerable_failures = 1;
    let mut c = CheckpointCoordinator::new(&cfg, true, 2, CheckpointId(1), 0);
    let id = c.trigger_due(100).unwrap();
    assert!(matches!(
        c.acknowledge(id, 0, "s", 120),
        AckOutcome::Pending
    ));
    assert!(c.check_timeouts(149).is_empty());
    assert_eq!(c.next_wakeup(), Some(150));
    let expired = c.check_timeouts(150);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, id);
    assert!(
        expired[0].reason.contains("expired"),
        "{}",
        expired[0].reason
    );
    assert_eq!(
        expired[0].acks,
        vec!["s"],
        "the partial acks are handed back for cleanup"
    );
    assert!(!expired[0].fail_job, "one failure is tolerated");
    // A late ack of the expired checkpoint is unknown: its state must be discarded.
    assert!(matches!(
        c.acknowledge(id, 1, "late", 160),
        AckOutcome::Unknown("late")
    ));
}

#[test]
fn tolerable_failures_then_failover_and_reset_on_success() {
    let mut cfg = config(10);
    cfg.tolerable_failures = 2;
    let mut c = CheckpointCoordinator::<&str>::new(&cfg, true, 1, CheckpointId(1), 0);
    let a = c.trigger_due(10).unwrap();
    assert!(!c.fail(a, "declined", 11).unwrap().fail_job);
    let b = c.trigger_due(21).unwrap();
    assert!(!c.fail(b, "declined", 22).unwrap().fail_job);
    assert_eq!(c.consecutive_failures(), 2);
    // A success resets the count.
    let d = c.trigger_due(32).unwrap();
    complete(&mut c, d, 1, 33);
    assert_eq!(c.consecutive_failures(), 0);
    for t in [43, 54] {
        let id = c.trigger_due(t).unwrap();
        assert!(!c.fail(id, "declined", t + 1).unwrap().fail_job);
    }
    let id = c.trigger_due(65).unwrap();
    let failed = c.fail(id, "declined", 66).unwrap();
    assert!(
        failed.fail_job,
        "the third failure in a row exceeds 2 tolerable failures"
    );
    // Overtaken checkpoints are aborted without counting.
    let mut c = CheckpointCoordinator::<&str>::new(&config(10), true, 1, CheckpointId(1), 0);
    let id = c.trigger_now(0);
    assert!(!c.abort(id, "overtaken").unwrap().fail_job);
    assert_eq!(c.consecutive_failures(), 0);
}

#[test]
fn default_tolerates_no_failed_checkpoint() {
    let mut c = CheckpointCoordinator::<()>::new(&config(10), true, 1, CheckpointId(1), 0);
    let id = c.trigger_due(10).unwrap();
    assert!(c.fail(id, "async write failed", 12).unwrap().fail_job);
}

#[test]
fn min_pause_delays_the_next_trigger_after_completion() {
    let mut cfg = config(100);
    cfg.min_pause = Duration::from_millis(80);
    let mut c = CheckpointCoordinator::new(&cfg, true, 1, CheckpointId(1), 0);
    let id = c.trigger_due(100).unwrap();
    // The checkpoint takes 90 ms: the interval alone would trigger at 200.
    complete(&mut c, id, 1, 190);
    assert_eq!(c.trigger_due(200), None);
    assert_eq!(c.next_wakeup(), Some(270));
    assert_eq!(c.trigger_due(269), None);
    assert_eq!(c.trigger_due(270), Some(CheckpointId(2)));
}

#[test]
fn max_concurrent_holds_back_periodic_triggers() {
    let mut cfg = config(10);
    cfg.max_concurrent = 2;
    let mut c = CheckpointCoordinator::new(&cfg, true, 1, CheckpointId(1), 0);
    let a = c.trigger_due(10).unwrap();
    let b = c.trigger_due(20).unwrap();
    assert_eq!(c.trigger_due(30), None, "two checkpoints already in flight");
    assert_eq!(c.pending(), vec![a, b]);
    complete(&mut c, a, 1, 35);
    // Held back since 30, it fires as soon as a slot is free.
    assert_eq!(c.trigger_due(35), Some(CheckpointId(3)));
    // Manual triggers bypass the limit.
    assert_eq!(c.trigger_now(36), CheckpointId(4));
    assert_eq!(c.pending().len(), 3);
}

#[test]
fn without_periodic_checkpointing_only_manual_triggers() {
    let mut c = CheckpointCoordinator::<()>::new(&config(10), false, 1, CheckpointId(7), 0);
    assert_eq!(c.trigger_due(1_000_000), None);
    assert_eq!(c.next_wakeup(), None);
    assert_eq!(c.trigger_now(5), CheckpointId(7));
    let aborted = c.abort_all("failover");
    assert_eq!(aborted.len(), 1);
    assert!(!aborted[0].fail_job);
}
