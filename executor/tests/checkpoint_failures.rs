//! Failed checkpoints in a running job: a checkpoint whose state exceeds the
//! in-memory storage limit fails and is discarded; the job tolerates
//! `tolerable_failures` of them in a row, then fails over.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::sync::Arc;
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use executor::{
    CheckpointConfig, ExecutorError, JobConfig, JobEvent, JobStatus, RestartStrategyConfig,
    StreamEnv,
};
use job_support::{Collect, NumberLog};
use state_core::{CheckpointStorage, JobId, MemoryCheckpointStorage};

#[test]
fn failed_checkpoints_are_tolerated_up_to_the_limit_then_fail_the_job() {
    let mut config = JobConfig::new(JobId::new("tolerable").unwrap());
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.tolerable_failures = 1;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(RestartStrategyConfig::None);
    // Far too small for the keyed state of 100 keys.
    let storage = Arc::new(MemoryCheckpointStorage::new(64));
    let env = StreamEnv::new(config, HeapBackendFactory::default(), storage.clone());
    let log = NumberLog::with_range(100);
    let out = Collect::<(u64, u64)>::new();
    env.source("numbers", log.source(false, 0))
        .map("pair", |v| Ok((v, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("out", out.sink());
    let job = env.start().unwrap();
    let events = job.events();
    out.wait_for(100);

    let first = job.trigger_checkpoint().unwrap();
    let err = job.wait_for_checkpoint(first).unwrap_err();
    assert!(matches!(err, ExecutorError::Checkpoint { checkpoint, .. } if checkpoint == first));
    // One failure is tolerated: the job keeps running; the failed
    // checkpoint never became visible.
    assert_eq!(job.status(), JobStatus::Running);
    assert_eq!(storage.list_checkpoints().unwrap(), vec![]);

    let second = job.trigger_checkpoint().unwrap();
    assert!(job.wait_for_checkpoint(second).is_err());
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.unwrap();
    assert!(
        failure.contains("tolerable failed checkpoints (1)"),
        "{failure}"
    );
    assert_eq!(result.metrics.checkpoints_failed, 2);
    assert_eq!(result.metrics.checkpoints_completed, 0);
    let failed: Vec<_> = events
        .try_iter()
        .filter_map(|e| match e {
            JobEvent::CheckpointFailed { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![first, second]);
}
