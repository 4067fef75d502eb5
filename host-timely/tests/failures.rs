//! A checkpoint that cannot be written does not end the job: it is
//! aborted, counted, and the next epoch checkpoints again (Flink's
//! tolerable failed checkpoints); one failure more in a row than tolerated
//! stops the process, and the supervisor restarts the job.
//!
//! The failure is a storage that is full for chosen checkpoints
//! ([`support::TestStorage`]): every stream of them fails to open, the
//! keyed state's and the source offsets' alike.

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use backend_fs::find_orphans;
use cairn_timely::supervisor::{ATTEMPT_ENV, SupervisorConfig, supervise};
use state_core::{CheckpointId, CheckpointStorage};
use support::{
    Operator, WordCount, Words, assert_exactly_once, child_process_args, final_counts, read_output,
    run_process,
};

const CHILD_ENV: &str = "CAIRN_TIMELY_FAILURES_CHILD";
const ARGS_ENV: &str = "CAIRN_TIMELY_FAILURES_ARGS";

fn words() -> Words {
    Words {
        partitions: 4,
        per_partition: 1_500,
        vocabulary: 120,
        seed: 13,
    }
}

#[test]
fn a_checkpoint_the_storage_cannot_hold_is_aborted_and_a_later_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let words = words();
    let mut job = WordCount::new(dir.path(), words);
    job.records_per_epoch = 300;
    job.failing_checkpoints = vec![3];
    job.tolerable_failures = 1;
    let reports = run_process(&job, timely::Config::process(2), support::system_clock());
    for r in &reports {
        assert_eq!(r.aborted, vec![CheckpointId(3)], "worker {}", r.worker);
        assert!(
            !r.completed.contains(&CheckpointId(3)),
            "worker {}",
            r.worker
        );
        assert!(
            r.completed.iter().any(|&c| c > CheckpointId(3)),
            "worker {}: no checkpoint after the failed one completed: {:?}",
            r.worker,
            r.completed
        );
    }
    let output = read_output(&job.output);
    assert_exactly_once(&output, &words.reference());
    assert_eq!(final_counts(&output), words.reference());
    // The aborted checkpoint left nothing behind.
    let storage = job.storage();
    assert!(!storage.job_dir().join("chk-3").exists());
    let orphans = find_orphans(&storage).unwrap();
    assert!(orphans.orphans.is_empty(), "{:?}", orphans.orphans);
    assert!(!storage.list_checkpoints().unwrap().is_empty());
}

/// The entry point of the child processes of the test below (run with
/// `--ignored --exact child_process`); ignored in a normal run.
#[test]
#[ignore = "the entry point of the child processes the other tests start"]
fn child_process() {
    let Some((mut job, config)) = support::child_job(CHILD_ENV, ARGS_ENV) else {
        return;
    };
    // The storage is full only during the first attempt.
    if std::env::var(ATTEMPT_ENV).unwrap() != "0" {
        job.failing_checkpoints.clear();
    }
    run_process(&job, config, support::system_clock());
}

#[test]
fn more_failures_in_a_row_than_tolerated_stop_the_process_and_the_job_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let words = words();
    let mut job = WordCount::new(dir.path(), words);
    job.records_per_epoch = 300;
    job.failing_checkpoints = vec![3, 4];
    job.tolerable_failures = 1;
    let config = SupervisorConfig {
        program: std::env::current_exe().unwrap(),
        args: child_process_args(),
        env: vec![(CHILD_ENV.to_owned(), job.to_env())],
        processes: 1,
        workers: 2,
        max_restarts: 2,
        work_dir: dir.path().to_path_buf(),
        timely_args_env: Some(ARGS_ENV.to_owned()),
    };
    let report = supervise(&config).unwrap();
    assert_eq!(report.attempts, 2, "{:?}", report.failures);
    assert!(
        report.failures[0].contains("code 70"),
        "the first attempt did not fail-stop: {:?}",
        report.failures
    );
    let output = read_output(&job.output);
    assert_exactly_once(&output, &words.reference());
    assert_eq!(final_counts(&output), words.reference());
}

/// `keyed_value` cannot expire cached values, so a state with a TTL is
/// refused when the operator opens, naming the operator and the state: the
/// process stops before reading a record, and writes no checkpoint and no
/// output.
#[test]
fn keyed_value_refuses_a_state_with_a_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = WordCount::new(dir.path(), words());
    job.operator = Operator::Value;
    job.ttl_millis = Some(60_000);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(child_process_args())
        .env(CHILD_ENV, job.to_env())
        .env(ARGS_ENV, "-w 2")
        .env(ATTEMPT_ENV, "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "not a fail-stop: {stderr}");
    assert!(
        stderr.contains("operator count") && stderr.contains("state 'count' has a TTL"),
        "{stderr}"
    );
    assert!(job.storage().list_checkpoints().unwrap().is_empty());
    assert!(!job.output.exists() || support::part_files(&job.output).is_empty());
}
