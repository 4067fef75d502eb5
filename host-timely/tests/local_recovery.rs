//! Local recovery: with RocksDB incremental checkpoints and
//! `local_recovery`, each worker keeps a local copy of its part of every
//! retained checkpoint, and a restart at the same worker count restores
//! from it instead of downloading the files again.
//!
//! Every worker reads each file of the checkpoint it restores once to
//! verify it (`select_for_restore`); a restore that downloads reads the
//! files of its part a second time. So with local copies each file is read
//! exactly once per worker, and without them some file is read more often.

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use support::{
    Backend, WordCount, Words, assert_exactly_once, final_counts, read_output, run_process,
};

const WORKERS: usize = 2;

/// Runs the job, then again over a longer log (a restart from its last
/// checkpoint), and returns how often each file was read by the restart.
fn restart_reads(local_recovery: bool) -> BTreeMap<String, u32> {
    let dir = tempfile::tempdir().unwrap();
    let first = Words {
        partitions: 4,
        per_partition: 800,
        vocabulary: 200,
        seed: 17,
    };
    let mut job = WordCount::new(dir.path(), first);
    job.records_per_epoch = 400;
    job.backend = Backend::Rocks(dir.path().join("local"));
    job.incremental = true;
    job.local_recovery = local_recovery;
    run_process(
        &job,
        timely::Config::process(WORKERS),
        support::system_clock(),
    );

    let grown = Words {
        per_partition: 1_600,
        ..first
    };
    job.words = grown;
    job.reads.lock().unwrap().clear();
    let reports = run_process(
        &job,
        timely::Config::process(WORKERS),
        support::system_clock(),
    );
    for r in &reports {
        assert!(
            r.restored_from.is_some(),
            "worker {} did not restore",
            r.worker
        );
    }
    let output = read_output(&job.output);
    assert_exactly_once(&output, &grown.reference());
    assert_eq!(final_counts(&output), grown.reference());
    let reads = job.reads.lock().unwrap().clone();
    reads
        .into_iter()
        .filter(|(path, _)| path.starts_with("shared/"))
        .collect()
}

#[test]
fn a_restart_at_the_same_worker_count_restores_from_the_local_copies() {
    let local = restart_reads(true);
    assert!(!local.is_empty(), "the restore read no shared file");
    for (path, n) in &local {
        assert_eq!(
            *n, WORKERS as u32,
            "{path} was read {n} times: more than the verification by each worker"
        );
    }
    // Without local copies the restore downloads its files again.
    let remote = restart_reads(false);
    assert!(
        remote.values().any(|&n| n > WORKERS as u32),
        "without local recovery no file was read beyond the verification: {remote:?}"
    );
}
