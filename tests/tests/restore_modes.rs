//! Restore modes on RocksDB incremental checkpoints: after a restore in
//! no-claim or claim mode, every path that deletes checkpoint files (an
//! aborted checkpoint, subsumption, cancel, finish) leaves every checkpoint
//! that must survive intact, and in claim mode the restored checkpoint goes
//! exactly when a new one subsumes it.
//!
//! Each test runs a keyed count over a log topic on the RocksDB backend with
//! incremental checkpoints: a first run completes checkpoints 1, 2 and 3
//! (each after more records, so they share SST files) and is cancelled
//! keeping them; later runs restore checkpoint 2, the middle one.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_fs::FsCheckpointStorage;
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use executor::log::{LogRecord, LogSource, LogSourceOptions, Topic, TopicWriter};
use executor::sink::collect::{CollectSink, Collected};
use executor::{
    CheckpointConfig, JobConfig, JobHandle, JobStatus, RestartStrategyConfig, StreamEnv,
};
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointOutput, CheckpointStorage,
    ExternalizedCheckpointCleanup, JobId, RestoreMode, SnapshotMode, StateError, StateScope,
    StreamLocation, SystemClock, load_verified, verify_checkpoint,
};
use state_testkit::{Intercept, InterceptStorage};
use tempfile::TempDir;

const KEYS: u64 = 7;
const JOB: &str = "counts";
const TOPIC: &str = "numbers";

/// Fails every shared (SST) stream of one checkpoint, so it is aborted.
#[derive(Default)]
struct FailUploads {
    checkpoint: AtomicU64,
}

impl Intercept for FailUploads {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if scope == StateScope::Shared && id.get() == self.checkpoint.load(Ordering::SeqCst) {
            return Err(StateError::io(
                name,
                std::io::Error::other("injected upload failure"),
            ));
        }
        inner.create_output(id, scope, name)
    }
}

/// A temp dir with the log topic, a checkpoint directory and a local dir.
struct World {
    dir: TempDir,
    writer: TopicWriter,
    appended: u64,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let topic = Topic::create(dir.path().join("log"), TOPIC, 1).unwrap();
        let writer = TopicWriter::open(&topic, Arc::new(SystemClock)).unwrap();
        World {
            dir,
            writer,
            appended: 0,
        }
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("ck")
    }

    fn job_dir(&self) -> PathBuf {
        self.checkpoints().join(JOB)
    }

    fn storage_in(&self, base: &Path) -> Arc<FsCheckpointStorage> {
        Arc::new(FsCheckpointStorage::open(base, JobId::new(JOB).unwrap()).unwrap())
    }

    fn storage(&self) -> Arc<FsCheckpointStorage> {
        self.storage_in(&self.checkpoints())
    }

    /// Appends `n` more numbers.
    fn append(&mut self, n: u64) {
        for v in self.appended..self.appended + n {
            self.writer
                .append(None, v.to_string().as_bytes(), None)
                .unwrap();
        }
        self.appended += n;
    }

    /// The count of every key after all numbers appended so far.
    fn expected(&self) -> BTreeMap<u64, u64> {
        let mut counts = BTreeMap::new();
        for v in 0..self.appended {
            *counts.entry(v % KEYS).or_default() += 1;
        }
        counts
    }

    /// Starts the keyed count; `run` names its local directory.
    fn start(
        &self,
        run: &str,
        storage: Arc<dyn CheckpointStorage>,
        bounded: bool,
        retained: usize,
        cleanup: ExternalizedCheckpointCleanup,
        restore: impl FnOnce(StreamEnv<RocksBackendFactory>) -> StreamEnv<RocksBackendFactory>,
    ) -> (JobHandle, Collected<(u64, u64)>) {
        let mut config = JobConfig::new(JobId::new(JOB).unwrap());
        let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
        checkpoints.retained = retained;
        checkpoints.cleanup = cleanup;
        // The injected upload failure aborts one checkpoint, not the job.
        checkpoints.tolerable_failures = 1;
        config.checkpointing = Some(checkpoints);
        config.restart = Some(RestartStrategyConfig::None);
        let factory = RocksBackendFactory::new(RocksBackendOptions::new(
            self.dir.path().join("local").join(run),
        ))
        .unwrap();
        let env =
            StreamEnv::new(config, factory, storage).with_snapshot_mode(SnapshotMode::Incremental);
        let env = restore(env);
        let mut options = LogSourceOptions::new(self.dir.path().join("log"), TOPIC);
        options.bounded = bounded;
        let (sink, out) = CollectSink::new();
        env.source("numbers", LogSource::new(options))
            .map("pair", |r: LogRecord| {
                Ok((r.value_str().parse::<u64>().unwrap() % KEYS, 1u64))
            })
            .key_by(|(k, _)| *k)
            .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
            .sink("out", sink);
        (env.start().unwrap(), out)
    }

    /// The first run: checkpoints 1, 2, 3, each after 200 more numbers were
    /// counted, then cancelled keeping them.
    fn first_run(&mut self) -> Vec<CheckpointMetadata> {
        let (job, out) = self.start(
            "first",
            self.storage(),
            false,
            3,
            ExternalizedCheckpointCleanup::RetainOnCancellation,
            |env| env,
        );
        for expected in 1..=3 {
            self.append(200);
            wait_until(|| out.len() as u64 == self.appended);
            let id = job.trigger_checkpoint().unwrap();
            job.wait_for_checkpoint(id).unwrap();
            assert_eq!(id, CheckpointId(expected));
        }
        job.cancel();
        assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
        let storage = self.storage();
        (1..=3)
            .map(|id| load_verified(storage.as_ref(), CheckpointId(id)).unwrap())
            .collect()
    }
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last count emitted per key.
fn last_counts(out: &Collected<(u64, u64)>) -> BTreeMap<u64, u64> {
    out.snapshot().into_iter().collect()
}

/// The shared files a checkpoint references, by path.
fn shared_paths(metadata: &CheckpointMetadata) -> BTreeSet<String> {
    metadata
        .streams()
        .into_iter()
        .filter_map(|h| match &h.location {
            StreamLocation::File(p) if p.starts_with("shared/") => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Every file of the directory tree with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "_lock" {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Checks every listed checkpoint completely; returns their ids.
fn all_intact(storage: &dyn CheckpointStorage) -> Vec<u64> {
    let ids = storage.list_checkpoints().unwrap();
    for &id in &ids {
        let report = verify_checkpoint(storage, id).unwrap();
        assert!(
            report.is_ok(),
            "checkpoint {id}: {:?}",
            report.failures().collect::<Vec<_>>()
        );
    }
    ids.into_iter().map(CheckpointId::get).collect()
}

fn checkpoint(job: &JobHandle) -> CheckpointId {
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    id
}

/// Starts a run restored from `restored` in `mode` (one retained
/// checkpoint, deleted on cancel), counts 100 more numbers, and has its
/// first checkpoint, 4, fail its uploads and be aborted: the abort path.
/// Checkpoints 1 to 3 are intact after it.
fn restore_and_abort_one(
    world: &mut World,
    restored: &CheckpointMetadata,
    mode: RestoreMode,
) -> (JobHandle, Collected<(u64, u64)>, Arc<dyn CheckpointStorage>) {
    let fails = Arc::new(FailUploads::default());
    fails.checkpoint.store(4, Ordering::SeqCst);
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(InterceptStorage::new(world.storage(), fails.clone()));
    let restored = restored.clone();
    let (job, out) = world.start(
        mode.as_str(),
        storage.clone(),
        false,
        1,
        ExternalizedCheckpointCleanup::DeleteOnCancellation,
        |env| env.restore_from(restored).with_restore_mode(mode),
    );
    world.append(100);
    wait_until(|| out.len() as u64 == world.appended - 400);
    let four = job.trigger_checkpoint().unwrap();
    assert_eq!(four, CheckpointId(4));
    assert!(
        job.wait_for_checkpoint(four).is_err(),
        "checkpoint 4 must fail"
    );
    fails.checkpoint.store(0, Ordering::SeqCst);
    assert_eq!(all_intact(storage.as_ref()), [1, 2, 3]);
    (job, out, storage)
}

#[test]
fn no_claim_never_touches_the_restored_checkpoint_nor_references_its_files() {
    let mut world = World::new();
    let first = world.first_run();
    let before = tree(&world.job_dir());
    let (job, out, storage) = restore_and_abort_one(&mut world, &first[1], RestoreMode::NoClaim);

    // The first completed checkpoint references none of checkpoint 2's files.
    let five = checkpoint(&job);
    let five_meta = load_verified(storage.as_ref(), five).unwrap();
    assert!(!shared_paths(&first[1]).is_empty());
    let reused: Vec<_> = shared_paths(&five_meta)
        .intersection(&shared_paths(&first[1]))
        .cloned()
        .collect();
    assert!(reused.is_empty(), "checkpoint {five} reuses {reused:?}");

    // Subsumption: 6 and 7 complete with one retained.
    world.append(100);
    wait_until(|| out.len() as u64 == world.appended - 400);
    checkpoint(&job);
    let seven = checkpoint(&job);
    assert_eq!(all_intact(storage.as_ref()), [1, 2, 3, seven.get()]);

    // Cancel, deleting the run's own checkpoints only.
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    assert_eq!(all_intact(storage.as_ref()), [1, 2, 3]);
    assert_eq!(
        tree(&world.job_dir()),
        before,
        "files of the first run changed"
    );

    // Finish: a bounded run from checkpoint 2 again reads to the end with
    // the right counts, and its FINISHED cleanup keeps 1, 2 and 3.
    world.append(50);
    let restored = first[1].clone();
    let (job, out) = world.start(
        "finish",
        world.storage(),
        true,
        1,
        ExternalizedCheckpointCleanup::DeleteOnCancellation,
        |env| env.restore_from(restored),
    );
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    assert_eq!(last_counts(&out), world.expected());
    assert_eq!(all_intact(world.storage().as_ref()), [1, 2, 3]);
    assert_eq!(tree(&world.job_dir()), before);
}

#[test]
fn claim_takes_the_restored_checkpoint_over_until_it_is_subsumed() {
    let mut world = World::new();
    let first = world.first_run();
    let (job, _out, storage) = restore_and_abort_one(&mut world, &first[1], RestoreMode::Claim);

    // Checkpoint 5 builds on 2's files and subsumes 2: 2 is gone, while 1
    // and 3 (not claimed) and 5 are intact.
    let five = checkpoint(&job);
    let five_meta = load_verified(storage.as_ref(), five).unwrap();
    assert!(
        !shared_paths(&five_meta).is_disjoint(&shared_paths(&first[1])),
        "claim mode builds on the claimed checkpoint's files"
    );
    assert_eq!(all_intact(storage.as_ref()), [1, 3, 5]);
    assert!(!world.job_dir().join("chk-2").exists());

    // Cancel deletes the run's own: 5; the unclaimed 1 and 3 stay.
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    assert_eq!(all_intact(storage.as_ref()), [1, 3]);

    // Resume continues from the newest intact, 3, and finishes with the
    // right counts.
    world.append(50);
    let (job, out) = world.start(
        "resume",
        world.storage(),
        true,
        1,
        ExternalizedCheckpointCleanup::DeleteOnCancellation,
        StreamEnv::resume,
    );
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    assert_eq!(last_counts(&out), world.expected());
}

#[test]
fn no_claim_into_another_directory_writes_self_contained_checkpoints() {
    let mut world = World::new();
    let first = world.first_run();
    let before = tree(&world.job_dir());
    let elsewhere = world.dir.path().join("elsewhere");
    let own = world.storage_in(&elsewhere);
    let from: Arc<dyn CheckpointStorage> = world.storage();
    let restored = first[1].clone();
    let (job, out) = world.start(
        "elsewhere",
        own.clone(),
        false,
        1,
        ExternalizedCheckpointCleanup::RetainOnCancellation,
        |env| env.restore_from_storage(restored, from),
    );
    world.append(100);
    wait_until(|| out.len() as u64 == world.appended - 400);
    checkpoint(&job);
    let second = checkpoint(&job);
    job.cancel();
    job.wait().unwrap();
    // Its checkpoints verify through their own directory alone, and the
    // first run's directory is exactly as it was.
    assert_eq!(all_intact(own.as_ref()), [second.get()]);
    assert_eq!(tree(&world.job_dir()), before);

    // Claim mode cannot take over a checkpoint of another directory.
    let from: Arc<dyn CheckpointStorage> = world.storage();
    let mut config = JobConfig::new(JobId::new(JOB).unwrap());
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(3600)));
    let env = StreamEnv::new(
        config,
        RocksBackendFactory::new(RocksBackendOptions::new(world.dir.path().join("local/x")))
            .unwrap(),
        world.storage_in(&world.dir.path().join("third")),
    )
    .restore_from_storage(first[1].clone(), from)
    .with_restore_mode(RestoreMode::Claim);
    env.source(
        "numbers",
        LogSource::new(LogSourceOptions::new(world.dir.path().join("log"), TOPIC)),
    )
    .map("pair", |r: LogRecord| Ok((r.value.len() as u64, 1u64)))
    .key_by(|(k, _)| *k)
    .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
    .sink("out", CollectSink::new().0);
    let err = env.start().unwrap_err().to_string();
    assert!(
        err.contains("restore mode claim takes over only a checkpoint of the job's own storage"),
        "{err}"
    );
    assert_eq!(tree(&world.job_dir()), before);
}

#[test]
fn an_empty_start_over_existing_checkpoints_is_refused() {
    let mut world = World::new();
    world.first_run();
    let before = tree(&world.job_dir());
    let mut config = JobConfig::new(JobId::new(JOB).unwrap());
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(3600)));
    let env = StreamEnv::new(
        config,
        RocksBackendFactory::new(RocksBackendOptions::new(world.dir.path().join("local/y")))
            .unwrap(),
        world.storage(),
    );
    env.source(
        "numbers",
        LogSource::new(LogSourceOptions::new(world.dir.path().join("log"), TOPIC)),
    )
    .map("pair", |r: LogRecord| Ok((r.value.len() as u64, 1u64)))
    .key_by(|(k, _)| *k)
    .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
    .sink("out", CollectSink::new().0);
    let err = env.start().unwrap_err().to_string();
    assert!(
        err.contains("already holds completed checkpoints of job counts (1, 2, 3)"),
        "{err}"
    );
    assert!(err.contains("resume"), "{err}");
    assert_eq!(tree(&world.job_dir()), before);
}
