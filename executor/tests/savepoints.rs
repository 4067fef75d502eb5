//! Savepoints (Flink's semantics): taken on demand into the user's own
//! directory, never rotated or deleted by the job (not by retention, not by
//! cancellation), relocatable, restorable at another parallelism; stop with
//! savepoint ends the job FINISHED after the sink was told the savepoint
//! completed; a failed savepoint leaves the job running.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_fs::FsCheckpointStorage;
use backend_heap::HeapBackendFactory;
use executor::sink::{Sink, SinkContext};
use executor::{
    CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, SavepointTarget, StreamEnv,
};
use job_support::{Collect, NumberLog};
use state_core::{
    CheckpointId, CheckpointStorage, ExternalizedCheckpointCleanup, JobId, MemoryCheckpointStorage,
    OperatorStateStore, SavepointFormat,
};

const KEYS: u64 = 10;

fn config() -> JobConfig {
    let mut config = JobConfig::new(JobId::new("savepoint-job").unwrap());
    config.parallelism = 2;
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.retained = 1;
    checkpoints.cleanup = ExternalizedCheckpointCleanup::DeleteOnCancellation;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(RestartStrategyConfig::None);
    config
}

fn count_job(
    env: &StreamEnv<HeapBackendFactory>,
    log: &NumberLog,
    bounded: bool,
    collect: &Collect<(u64, u64)>,
    keyed_parallelism: u32,
) {
    env.source("numbers", log.source(bounded, 7))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .parallelism(keyed_parallelism)
        .sink("collect", collect.sink());
}

/// A savepoint directory under `root`, named as `cairn savepoint` names them.
fn fs_target(root: &Path, format: SavepointFormat) -> SavepointTarget {
    let root = root.to_path_buf();
    SavepointTarget::new(format, move |id| {
        let name = JobId::new(format!("savepoint-savepoint-job-{}", id.get()))?;
        let storage = FsCheckpointStorage::open(&root, name)?;
        Ok(Arc::new(storage) as Arc<dyn CheckpointStorage>)
    })
}

/// The highest count each key reached.
fn final_counts(outputs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for &(k, n) in outputs {
        let e = out.entry(k).or_insert(0);
        *e = n.max(*e);
    }
    out
}

#[test]
fn a_savepoint_outlives_retention_and_cancellation_moves_and_restores_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let job_storage: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open(
            dir.path().join("ckpt"),
            JobId::new("savepoint-job").unwrap(),
        )
        .unwrap(),
    );
    let savepoints = dir.path().join("savepoints");

    let log = NumberLog::with_range(100);
    let collect = Collect::new();
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), job_storage.clone());
    count_job(&env, &log, false, &collect, 2);
    let job = env.start().unwrap();
    collect.wait_for(100);
    let info = job
        .trigger_savepoint(fs_target(&savepoints, SavepointFormat::Canonical))
        .unwrap();
    assert_eq!(info.format, SavepointFormat::Canonical);
    assert!(info.bytes > 0);
    // Records after the savepoint, and checkpoints that rotate (1 retained).
    log.append(100..130);
    collect.wait_for(130);
    for _ in 0..3 {
        let id = job.trigger_checkpoint().unwrap();
        job.wait_for_checkpoint(id).unwrap();
        assert!(id > info.id);
    }
    assert!(
        !job_storage.list_checkpoints().unwrap().contains(&info.id),
        "the savepoint is not one of the job's checkpoints"
    );
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    // Cancellation deleted the job's checkpoints, not the savepoint.
    assert!(job_storage.list_checkpoints().unwrap().is_empty());

    // The savepoint directory moves elsewhere and restores from there.
    let name = format!("savepoint-savepoint-job-{}", info.id.get());
    let moved = dir.path().join("moved-savepoint");
    std::fs::rename(savepoints.join(&name), &moved).unwrap();
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(FsCheckpointStorage::for_job_dir(&moved).unwrap());
    assert_eq!(storage.list_checkpoints().unwrap(), vec![info.id]);
    let metadata = storage.read_metadata(info.id).unwrap();
    assert!(metadata.streams().iter().all(|s| s.file_path().is_some()));

    let log2 = NumberLog::with_range(250);
    let collect2 = Collect::new();
    let fresh: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open(
            dir.path().join("ckpt2"),
            JobId::new("savepoint-job").unwrap(),
        )
        .unwrap(),
    );
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), fresh)
        .restore_from_storage(metadata, storage);
    count_job(&env, &log2, true, &collect2, 3);
    let result = env.start().unwrap().wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    // The 150 records after the savepoint's 100, counts continuing from
    // the savepoint's 10 per key: 25 per key, at keyed parallelism 3.
    let outputs = collect2.snapshot();
    assert_eq!(outputs.len(), 150);
    assert_eq!(
        final_counts(&outputs),
        (0..KEYS).map(|k| (k, 25)).collect::<BTreeMap<_, _>>()
    );
}

/// What the sink saw: `w` per record, `s<n>` at barrier n, `c<n>` when n
/// completed, `f` at the end of input.
#[derive(Clone, Default)]
struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Sink<(u64, u64)> for Trace {
    fn open(&mut self, _: SinkContext, _: Option<&OperatorStateStore>) -> executor::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: (u64, u64)) -> executor::Result<()> {
        self.0.lock().unwrap().push("w".into());
        Ok(())
    }
    fn snapshot_state(
        &mut self,
        id: CheckpointId,
        _: &mut OperatorStateStore,
    ) -> executor::Result<()> {
        self.0.lock().unwrap().push(format!("s{id}"));
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> executor::Result<()> {
        self.0.lock().unwrap().push(format!("c{id}"));
        Ok(())
    }
    fn finish(&mut self) -> executor::Result<()> {
        self.0.lock().unwrap().push("f".into());
        Ok(())
    }
}

#[test]
fn stop_with_savepoint_reads_nothing_after_it_tells_the_sink_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let log = NumberLog::with_range(500);
    let trace = Trace::default();
    let mut config = config();
    config.parallelism = 1;
    let env = StreamEnv::new(
        config,
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::default()),
    );
    let sink = trace.clone();
    env.source("numbers", log.source(false, 7))
        .map("pair", |v| Ok((v % KEYS, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("trace", move |_: SinkContext| {
            Ok(Box::new(sink.clone()) as Box<dyn Sink<(u64, u64)>>)
        });
    let job = env.start().unwrap();
    while trace.events().len() < 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let info = job
        .stop_with_savepoint(fs_target(dir.path(), SavepointFormat::Native))
        .unwrap();
    // More input after the stop is never read.
    log.append(500..600);
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let events = trace.events();
    let barrier = events
        .iter()
        .position(|e| *e == format!("s{}", info.id))
        .unwrap();
    let completed = events
        .iter()
        .position(|e| *e == format!("c{}", info.id))
        .unwrap();
    assert!(barrier < completed);
    assert!(
        events[barrier..].iter().all(|e| e != "w"),
        "a record was written after the savepoint's barrier: {:?}",
        &events[barrier..]
    );
    // Every record read before the stop went through the savepoint.
    let written = events.iter().filter(|e| *e == "w").count() as u64;
    let storage = FsCheckpointStorage::for_job_dir(
        dir.path()
            .join(format!("savepoint-savepoint-job-{}", info.id.get())),
    )
    .unwrap();
    let metadata = storage.read_metadata(info.id).unwrap();
    assert!((200..=500).contains(&written), "{written}");
    assert_eq!(metadata.checkpoint_id, info.id);
}

#[test]
fn a_failed_savepoint_or_stop_leaves_the_job_running() {
    let log = NumberLog::with_range(100);
    let collect = Collect::new();
    let env = StreamEnv::new(
        config(),
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::default()),
    );
    count_job(&env, &log, false, &collect, 2);
    let job = env.start().unwrap();
    collect.wait_for(100);

    // A storage that cannot be opened: the savepoint fails, naming why.
    let err = job
        .trigger_savepoint(SavepointTarget::new(SavepointFormat::Canonical, |_| {
            Err(state_core::StateError::invalid("no such bucket"))
        }))
        .unwrap_err();
    assert!(err.to_string().contains("no such bucket"), "{err}");

    // A storage too small for the state: writing fails, so does a stop
    // with it, and the stopped sources read on.
    let tiny = || {
        SavepointTarget::new(SavepointFormat::Canonical, |_| {
            Ok(Arc::new(MemoryCheckpointStorage::new(8)) as Arc<dyn CheckpointStorage>)
        })
    };
    assert!(job.trigger_savepoint(tiny()).is_err());
    assert!(job.stop_with_savepoint(tiny()).is_err());
    log.append(100..200);
    collect.wait_for(200);

    // Checkpoints go on, and were never counted as failures.
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    job.cancel();
    let result = job.wait().unwrap();
    assert_eq!(result.status, JobStatus::Canceled);
    assert_eq!(result.metrics.checkpoints_failed, 0);
    assert_eq!(
        final_counts(&collect.snapshot()),
        (0..KEYS).map(|k| (k, 20)).collect::<BTreeMap<_, _>>()
    );
}
