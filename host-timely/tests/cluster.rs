//! The keyed word count on timely with cairn state, as a user runs it:
//! processes on loopback ports under the supervisor, SIGKILLs at seeded
//! moments, restores at other worker counts, and the checkpoints read by
//! `cairn checkpoints verify`.
//!
//! The child processes are this test binary again, entering through
//! [`child_process`] (their job in the environment).

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use backend_fs::find_orphans;
use cairn_timely::supervisor::{ATTEMPT_ENV, SupervisorConfig, SupervisorReport, supervise};
use state_core::{CheckpointStorage, verify_checkpoint};
use support::{
    Operator, WordCount, Words, assert_exactly_once, child_process_args, final_counts, read_output,
    splitmix,
};

const CHILD_ENV: &str = "CAIRN_TIMELY_TEST_CHILD";
const ARGS_ENV: &str = "CAIRN_TIMELY_TEST_ARGS";
/// `attempt:process:records,…`: in that attempt, that process SIGKILLs itself
/// once it has read that many records.
const KILL_ENV: &str = "CAIRN_TIMELY_TEST_KILL";

/// The entry point of the child processes the other tests start (run with
/// `--ignored --exact child_process`); ignored in a normal run, where it
/// would have nothing to do.
#[test]
#[ignore = "the entry point of the child processes the other tests start"]
fn child_process() {
    let Some((mut job, config)) = support::child_job(CHILD_ENV, ARGS_ENV) else {
        return;
    };
    let process = match &config.communication {
        timely::CommunicationConfig::Cluster { process, .. } => *process,
        _ => 0,
    };
    let attempt: u32 = std::env::var(ATTEMPT_ENV).unwrap().parse().unwrap();
    let kills = std::env::var(KILL_ENV).unwrap_or_default();
    for kill in kills.split(',').filter(|k| !k.is_empty()) {
        let parts: Vec<u64> = kill.split(':').map(|n| n.parse().unwrap()).collect();
        if parts[0] == u64::from(attempt) && parts[1] == process as u64 {
            job.kill_after = Some(parts[2]);
        }
    }
    support::run_process(&job, config, support::system_clock());
}

fn supervised(
    job: &WordCount,
    dir: &Path,
    processes: usize,
    workers: usize,
    kills: &str,
) -> SupervisorReport {
    let config = SupervisorConfig {
        program: std::env::current_exe().unwrap(),
        args: child_process_args(),
        env: vec![
            (CHILD_ENV.to_owned(), job.to_env()),
            (KILL_ENV.to_owned(), kills.to_owned()),
        ],
        processes,
        workers,
        max_restarts: 8,
        work_dir: dir.to_path_buf(),
        timely_args_env: Some(ARGS_ENV.to_owned()),
    };
    supervise(&config).unwrap()
}

/// Every retained checkpoint verifies and nothing in the job directory is an orphan.
fn assert_clean(job: &WordCount) {
    let storage = job.storage();
    let ids = storage.list_checkpoints().unwrap();
    assert!(!ids.is_empty(), "no checkpoint retained");
    for id in ids {
        let report = verify_checkpoint(&storage, id).unwrap();
        assert!(
            report.is_ok(),
            "checkpoint {id}: {:?}",
            report.failures().collect::<Vec<_>>()
        );
    }
    let orphans = find_orphans(&storage).unwrap();
    assert!(
        orphans.orphans.is_empty(),
        "orphaned files: {:?}",
        orphans.orphans
    );
}

/// The `cairn` binary of this workspace (built here if the run did not build it).
fn cairn_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let cairn = dir.join("cairn");
    if !cairn.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "cairn-cli", "--bin", "cairn"])
            .status()
            .unwrap();
        assert!(status.success(), "building the cairn binary failed");
    }
    cairn
}

#[test]
fn two_processes_of_two_workers_count_as_the_single_threaded_reference() {
    let dir = tempfile::tempdir().unwrap();
    let words = Words {
        partitions: 4,
        per_partition: 3_000,
        vocabulary: 300,
        seed: 7,
    };
    let job = WordCount::new(dir.path(), words);
    let report = supervised(&job, dir.path(), 2, 2, "");
    assert_eq!(report.attempts, 1, "{:?}", report.failures);
    let output = read_output(&job.output);
    assert_exactly_once(&output, &words.reference());
    assert_eq!(final_counts(&output), words.reference());
    assert_clean(&job);

    // The timely job's directory is a cairn job directory like any other.
    let job_dir = job.storage().job_dir().to_path_buf();
    let out = Command::new(cairn_binary())
        .args(["checkpoints", "verify"])
        .arg(&job_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cairn checkpoints verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

/// Runs `job` on 2 processes of 2 workers with three SIGKILLs at moments
/// drawn from `seed`, and checks the resumed output is exactly once.
fn sigkilled_at_seeded_moments(dir: &Path, job: &WordCount, seed: u64) {
    // Each process reads 6,000 records per attempt; three kills at moments
    // drawn from one seeded SplitMix64, alternating the victim's index by draw.
    let mut draw = seed;
    let kills: Vec<String> = (0..3)
        .map(|attempt| {
            draw = splitmix(draw);
            let process = draw % 2;
            let records = 1 + (draw >> 8) % 5_999;
            format!("{attempt}:{process}:{records}")
        })
        .collect();
    let report = supervised(job, dir, 2, 2, &kills.join(","));
    assert_eq!(report.attempts, 4, "kills {kills:?}: {:?}", report.failures);
    assert!(
        report.failures.iter().all(|f| f.contains("signal 9")),
        "{:?}",
        report.failures
    );
    let output = read_output(&job.output);
    assert_exactly_once(&output, &job.words.reference());
    assert_clean(job);
}

fn kill_test_words(seed: u64) -> Words {
    Words {
        partitions: 4,
        per_partition: 3_000,
        vocabulary: 300,
        seed,
    }
}

#[test]
fn processes_sigkilled_at_seeded_moments_resume_to_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = WordCount::new(dir.path(), kill_test_words(11));
    job.records_per_epoch = 400;
    sigkilled_at_seeded_moments(dir.path(), &job, 0x5EED);
}

/// The same kills with the count in `keyed_value`, whose values live in a
/// cache between checkpoints; a cache of 40 of the 300 words also writes
/// back and forgets keys between checkpoints.
#[test]
fn keyed_value_processes_sigkilled_at_seeded_moments_resume_to_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = WordCount::new(dir.path(), kill_test_words(17));
    job.records_per_epoch = 400;
    job.operator = Operator::Value;
    job.value_cache_entries = 40;
    sigkilled_at_seeded_moments(dir.path(), &job, 0xCA_C4E);
}
