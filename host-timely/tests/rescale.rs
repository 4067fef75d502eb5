//! State reached through the timely operator keeps cairn's guarantees: a
//! checkpoint taken at 4 workers restores at 3 and at 6 with exact counts
//! (snapshot and restore round trip, rescaled by key group), and TTL
//! expires restored state by the job's clock. (The operator exposes no
//! timers.)

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use state_core::{CheckpointId, ManualClock};
use support::{
    Operator, WordCount, Words, assert_exactly_once, part_files, read_counts, read_output,
    run_process,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn in_process(job: &WordCount, workers: usize) -> Vec<cairn_timely::WorkerReport> {
    run_process(
        job,
        timely::Config::process(workers),
        support::system_clock(),
    )
}

#[test]
fn a_checkpoint_taken_at_four_workers_restores_at_three_and_at_six() {
    let dir = tempfile::tempdir().unwrap();
    let first = Words {
        partitions: 8,
        per_partition: 600,
        vocabulary: 150,
        seed: 3,
    };
    let job = WordCount::new(&dir.path().join("four"), first);
    let reports = in_process(&job, 4);
    assert_eq!(reports.len(), 4);
    let taken_at_four: CheckpointId = *reports[0].completed.last().unwrap();

    // The log grew: the same partitions now hold twice as many words.
    let grown = Words {
        per_partition: 1_200,
        ..first
    };
    for workers in [3, 6] {
        let here = dir.path().join(format!("at-{workers}"));
        copy_dir(&dir.path().join("four"), &here);
        let mut job = WordCount::new(&here, grown);
        job.records_per_epoch = 300;
        let reports = in_process(&job, workers);
        assert_eq!(reports.len(), workers);
        for r in &reports {
            assert_eq!(r.restored_from, Some(taken_at_four), "worker {}", r.worker);
        }
        assert_exactly_once(&read_output(&job.output), &grown.reference());
    }
}

/// `keyed_value` writes the same state as `keyed_process`: each restores
/// the other's checkpoint, at another worker count.
#[test]
fn keyed_process_and_keyed_value_restore_each_others_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut words = Words {
        partitions: 6,
        per_partition: 400,
        vocabulary: 120,
        seed: 9,
    };
    let mut job = WordCount::new(dir.path(), words);
    job.records_per_epoch = 150;
    let mut last = None;
    for (operator, workers, cache) in [
        (Operator::Process, 4, 1 << 20),
        (Operator::Value, 3, 1 << 20),
        (Operator::Process, 6, 1 << 20),
        (Operator::Value, 2, 25),
    ] {
        // The log grows by 400 words per partition each run.
        job.words = words;
        job.operator = operator;
        job.value_cache_entries = cache;
        let reports = in_process(&job, workers);
        for r in &reports {
            assert_eq!(
                r.restored_from, last,
                "{operator:?} at {workers}, worker {}",
                r.worker
            );
        }
        assert_exactly_once(&read_output(&job.output), &words.reference());
        last = reports[0].completed.last().copied();
        words.per_partition += 400;
    }
}

/// The reference counts of offsets `from..to` of every partition.
fn reference_between(words: &Words, from: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for p in 0..words.partitions {
        for o in from..words.per_partition {
            *counts.entry(words.word(p, o)).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn restored_state_expires_by_its_ttl_and_lives_within_it() {
    let first = Words {
        partitions: 2,
        per_partition: 500,
        vocabulary: 40,
        seed: 5,
    };
    let grown = Words {
        per_partition: 900,
        ..first
    };
    for (advance, expired) in [(60_000, true), (1_000, false)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut job = WordCount::new(dir.path(), first);
        job.ttl_millis = Some(10_000);
        run_process(&job, timely::Config::process(2), clock.clone());
        let before = part_files(&job.output);

        clock.advance(advance);
        job.words = grown;
        run_process(&job, timely::Config::process(2), clock.clone());
        let second = read_counts(part_files(&job.output).difference(&before));
        if expired {
            // Every restored count expired: counting starts again at 1.
            assert_exactly_once(&second, &reference_between(&grown, 500));
        } else {
            // Within the TTL the counts go on from the restored ones.
            let total = grown.reference();
            let earlier = first.reference();
            for (word, counts) in &second {
                let mut sorted = counts.clone();
                sorted.sort_unstable();
                let from = earlier.get(word).copied().unwrap_or(0) + 1;
                assert_eq!(
                    sorted,
                    (from..=total[word]).collect::<Vec<_>>(),
                    "word {word}"
                );
            }
        }
    }
}
