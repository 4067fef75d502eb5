//! Failover restores the newest checkpoint it can: a retained checkpoint
//! whose restore finds a damaged file is skipped, never tried again, and
//! the next older one is restored; when none is intact the job fails with
//! that reason instead of restarting forever.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backend_fs::FsCheckpointStorage;
use backend_heap::HeapBackendFactory;
use executor::{
    CheckpointConfig, JobConfig, JobEvent, JobHandle, JobStatus, RestartStrategyConfig, StreamEnv,
};
use job_support::{Collect, NumberLog, fail_once_at};
use state_core::{CheckpointId, CheckpointStorage, JobId};

const KEYS: u64 = 10;

/// Unbounded restarts 10 ms apart: only the fallback rule can end a loop.
fn config(job: &str) -> JobConfig {
    let mut config = JobConfig::new(JobId::new(job).unwrap());
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.retained = 3;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(RestartStrategyConfig::FixedDelay {
        attempts: u32::MAX,
        delay: Duration::from_millis(10),
    });
    config
}

/// Starts the keyed count over `log`, failing once at record `fail_at`.
fn start(
    dir: &Path,
    job: &str,
    log: &NumberLog,
    out: &Collect<(u64, u64)>,
    fail_at: u64,
) -> JobHandle {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(FsCheckpointStorage::open(dir, JobId::new(job).unwrap()).unwrap());
    let env = StreamEnv::new(config(job), HeapBackendFactory::default(), storage);
    env.source("numbers", log.source(false, 0))
        .map("fail", fail_once_at(Some(fail_at)))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("out", out.sink());
    env.start().unwrap()
}

/// Takes a checkpoint once everything up to record `upto` was counted.
fn checkpoint_at(
    job: &JobHandle,
    log: &NumberLog,
    out: &Collect<(u64, u64)>,
    upto: u64,
) -> CheckpointId {
    log.append(out.len() as u64..upto);
    out.wait_for(upto as usize);
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    id
}

/// Flips a byte in the middle of checkpoint `id`'s keyed-state file.
fn damage(job_dir: &Path, id: CheckpointId) -> String {
    let chk = job_dir.join(id.dir_name());
    let file = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().contains("keyed"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    format!(
        "{}/{}",
        id.dir_name(),
        file.file_name().unwrap().to_str().unwrap()
    )
}

fn restored(events: &crossbeam_channel::Receiver<JobEvent>) -> Vec<CheckpointId> {
    events
        .try_iter()
        .filter_map(|e| match e {
            JobEvent::Restored { checkpoint } => Some(checkpoint),
            _ => None,
        })
        .collect()
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped_for_the_next_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = NumberLog::default();
    let out = Collect::new();
    let job = start(dir.path(), "fallback", &log, &out, 350);
    let events = job.events();
    let first = checkpoint_at(&job, &log, &out, 100);
    let second = checkpoint_at(&job, &log, &out, 200);
    let third = checkpoint_at(&job, &log, &out, 300);
    assert!(first < second && second < third);
    damage(&dir.path().join("fallback"), third);

    // Record 350 fails the job: the restore of the third checkpoint finds
    // the damage, the next restart restores the second, and the job goes
    // on to count every record once.
    log.append(300..400);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (k, n) in out.snapshot() {
            last.insert(k, n);
        }
        if last.len() as u64 == KEYS && last.values().all(|&n| n == 40) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "counts: {last:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    job.cancel();
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Canceled, "{:?}", result.failure);
    assert_eq!(restored(&events), vec![third, second]);
    assert_eq!(result.restarts, 2);
}

#[test]
fn with_every_checkpoint_damaged_the_job_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = NumberLog::default();
    let out = Collect::new();
    let job = start(dir.path(), "no-intact", &log, &out, 150);
    let events = job.events();
    let only = checkpoint_at(&job, &log, &out, 100);
    let file = damage(&dir.path().join("no-intact"), only);

    log.append(100..200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !matches!(
        job.status(),
        JobStatus::Failed | JobStatus::Finished | JobStatus::Canceled
    ) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job kept restarting on the damaged checkpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Failed);
    assert!(result.permanent_failure, "no restart can fix it");
    let failure = result.failure.unwrap();
    assert!(
        failure.contains("no intact checkpoint left to restore from"),
        "{failure}"
    );
    assert!(failure.contains(&file), "does not name {file}: {failure}");
    // Tried once, never again, although the restart strategy is unbounded.
    assert_eq!(restored(&events), vec![only]);
    assert_eq!(result.restarts, 1);
}
