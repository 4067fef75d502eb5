//! Restoring a job from a chosen older retained checkpoint (Flink's `-s`)
//! gives that checkpoint's keyed state and source offsets.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backend_fs::FsCheckpointStorage;
use backend_heap::HeapBackendFactory;
use executor::{
    CheckpointConfig, JobConfig, JobEvent, JobStatus, RestartStrategyConfig, StreamEnv,
};
use job_support::{Collect, NumberLog};
use state_core::ExternalizedCheckpointCleanup;
use state_core::{CheckpointStorage, JobId};

const KEYS: u64 = 10;

fn config() -> JobConfig {
    let mut config = JobConfig::new(JobId::new("restore-job").unwrap());
    config.parallelism = 2;
    // Periodic checkpoints far apart: the test triggers its own.
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.retained = 3;
    checkpoints.cleanup = ExternalizedCheckpointCleanup::RetainOnCancellation;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(RestartStrategyConfig::None);
    config
}

fn build(
    env: &StreamEnv<HeapBackendFactory>,
    log: &NumberLog,
    bounded: bool,
    collect: &Collect<(u64, u64)>,
) {
    build_with_keyed_parallelism(env, log, bounded, collect, 2);
}

fn build_with_keyed_parallelism(
    env: &StreamEnv<HeapBackendFactory>,
    log: &NumberLog,
    bounded: bool,
    collect: &Collect<(u64, u64)>,
    keyed_parallelism: u32,
) {
    env.source("numbers", log.source(bounded, 0))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .parallelism(keyed_parallelism)
        .sink("collect", collect.sink());
}

#[test]
fn restores_state_and_offsets_of_an_older_retained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open(dir.path(), JobId::new("restore-job").unwrap()).unwrap(),
    );

    // First run: 100 records, checkpoint A; 150 more, checkpoint B; cancel.
    let log = NumberLog::with_range(100);
    let collect = Collect::new();
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), storage.clone());
    build(&env, &log, false, &collect);
    let job = env.start().unwrap();
    let events = job.events();
    collect.wait_for(100);
    let a = job.trigger_checkpoint().unwrap();
    let info_a = job.wait_for_checkpoint(a).unwrap();
    assert!(info_a.bytes > 0);
    log.append(100..250);
    collect.wait_for(250);
    let b = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(b).unwrap();
    assert!(b > a);
    job.cancel();
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Canceled);
    assert_eq!(
        result.checkpoints.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    let statuses: Vec<JobStatus> = events
        .try_iter()
        .filter_map(|e| match e {
            JobEvent::StatusChanged { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![JobStatus::Running, JobStatus::Canceled]);
    assert_eq!(result.metrics.checkpoints_completed, 2);
    // Both are retained after the cancellation.
    assert_eq!(storage.list_checkpoints().unwrap(), vec![a, b]);

    // Second run from the older checkpoint A over the same 250 records.
    let metadata = storage.read_metadata(a).unwrap();
    let log2 = NumberLog::with_range(250);
    let collect2 = Collect::new();
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), storage.clone())
        .restore_from(metadata);
    build(&env, &log2, true, &collect2);
    let job = env.start().unwrap();
    let events = job.events();
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    assert!(
        events
            .try_iter()
            .any(|e| e == JobEvent::Restored { checkpoint: a })
    );

    // The sources resumed at A's offsets: 50 records each of the 2 subtasks.
    let mut opened = log2.opened_at.lock().unwrap().clone();
    opened.sort_unstable();
    assert_eq!(opened, vec![(0, 50), (1, 50)]);
    // Only the 150 records after A were read, and the counts continued from
    // A's state (10 per key), not B's (25 per key).
    let outputs = collect2.snapshot();
    assert_eq!(outputs.len(), 150);
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (k, n) in outputs {
        per_key.entry(k).or_default().push(n);
    }
    assert_eq!(per_key.len() as u64, KEYS);
    for (k, mut counts) in per_key {
        counts.sort_unstable();
        assert_eq!(counts, (11..=25).collect::<Vec<u64>>(), "key {k}");
    }
}

#[test]
fn keyed_state_restores_at_another_parallelism() {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(state_core::MemoryCheckpointStorage::default());
    let log = NumberLog::with_range(100);
    let collect = Collect::new();
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), storage.clone());
    build(&env, &log, false, &collect);
    let job = env.start().unwrap();
    collect.wait_for(100);
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    job.cancel();
    job.wait().unwrap();

    // The keyed operator now runs at parallelism 3 (the sources stay at 2).
    log.append(100..150);
    let collect2 = Collect::new();
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), storage.clone())
        .restore_from(storage.read_metadata(id).unwrap());
    build_with_keyed_parallelism(&env, &log, true, &collect2, 3);
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let mut outputs = collect2.snapshot();
    outputs.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..KEYS)
        .flat_map(|k| (11..=15).map(move |n| (k, n)))
        .collect();
    assert_eq!(outputs, expected);
}

/// The keyed-count job with its keyed operator under uid `count_uid`.
fn build_with_count_uid(
    env: &StreamEnv<HeapBackendFactory>,
    log: &NumberLog,
    collect: &Collect<(u64, u64)>,
    count_uid: &str,
) {
    env.source("numbers", log.source(true, 0))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum(count_uid, |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("collect", collect.sink());
}

#[test]
fn state_of_a_uid_the_job_lacks_is_refused_unless_allowed() {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(state_core::MemoryCheckpointStorage::default());
    let log = NumberLog::with_range(100);
    let collect = Collect::new();
    let mut first = config();
    first.parallelism = 1;
    let env = StreamEnv::new(
        first.clone(),
        HeapBackendFactory::default(),
        storage.clone(),
    );
    env.source("numbers", log.source(false, 0))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("collect", collect.sink());
    let job = env.start().unwrap();
    collect.wait_for(100);
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    job.cancel();
    job.wait().unwrap();
    let metadata = storage.read_metadata(id).unwrap();

    // The keyed operator was renamed: its state has nowhere to go.
    let env = StreamEnv::new(
        first.clone(),
        HeapBackendFactory::default(),
        storage.clone(),
    )
    .restore_from(metadata.clone());
    build_with_count_uid(
        &env,
        &NumberLog::with_range(100),
        &Collect::new(),
        "count-v2",
    );
    let err = env.start().unwrap_err().to_string();
    assert!(err.contains("\"count\""), "{err}");
    assert!(err.contains(&format!("checkpoint {id}")), "{err}");
    assert!(err.contains("allow_non_restored_state"), "{err}");

    // Allowed: the job starts, the source resumes at the checkpoint's
    // offset (its uid is unchanged) and the renamed operator counts from
    // zero: records 100..150 only, 5 per key, not 15.
    let mut allowed = first;
    allowed.allow_non_restored_state = true;
    let log2 = NumberLog::with_range(150);
    let collect2 = Collect::new();
    let env = StreamEnv::new(allowed, HeapBackendFactory::default(), storage.clone())
        .restore_from(metadata);
    build_with_count_uid(&env, &log2, &collect2, "count-v2");
    let result = env.start().unwrap().wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, n) in collect2.snapshot() {
        last.insert(k, n);
    }
    assert_eq!(last.len() as u64, KEYS);
    assert!(last.values().all(|&n| n == 5), "{last:?}");
}
