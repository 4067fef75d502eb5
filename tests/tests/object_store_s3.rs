//! The object storage against moto's S3 server on loopback (one server for
//! this test binary, one bucket per test): the conformance suite's
//! snapshot and restore cases on heap state, multipart uploads and ranged
//! parallel downloads, an incremental RocksDB chain with rotation resumed
//! by a new job, a second writer refused by the conditional `_metadata`
//! put, and faults injected by a proxy (dropped connections, delays, 503s).
//!
//! `moto_server` comes from `scripts/setup.sh`; without it the tests skip
//! outside CI and fail under `CI=true`.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backend_fs::object::{
    DEFAULT_INLINE_THRESHOLD, MIN_PART_SIZE, ObjectCheckpointStorage, ObjectJobLock,
    ObjectStorageOptions, ObjectUrl, RetryOptions,
};
use backend_fs::{LockOwner, find_orphans};
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use executor::log::{LogRecord, LogSource, LogSourceOptions, Topic, TopicWriter};
use executor::sink::collect::{CollectSink, Collected};
use executor::{CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, CompletedCheckpointStore, ErrorKind,
    ExternalizedCheckpointCleanup, JobId, OperatorId, OperatorSnapshot, OperatorStateHandle,
    SnapshotKind, SnapshotMode, StateScope, SubtaskSnapshot, SystemClock, verify_checkpoint,
};
use state_testkit::Setup;
use state_testkit::s3::{FaultProxy, Faults, S3Server};

/// The binary's moto server (`None`: skipped outside CI).
fn server() -> Option<&'static S3Server> {
    static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();
    SERVER.get_or_init(S3Server::moto_or_skip).as_ref()
}

/// A fresh bucket on the server.
fn bucket(server: &S3Server) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "cairn-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    server.create_bucket(&name);
    name
}

/// `s3://<bucket>/checkpoints` pointed at `endpoint` with the server's options.
fn url(server: &S3Server, bucket: &str, endpoint: &str) -> ObjectUrl {
    let mut url = ObjectUrl::parse(&format!("s3://{bucket}/checkpoints")).unwrap();
    for (k, v) in server.url_options() {
        url = url.with_option(k, v);
    }
    url.with_option("endpoint", endpoint)
}

fn open(server: &S3Server, bucket: &str, job: &str) -> ObjectCheckpointStorage {
    open_inlining_below(server, bucket, job, DEFAULT_INLINE_THRESHOLD)
}

/// A storage whose streams smaller than `inline_threshold` bytes stay in
/// `_metadata` (0: every stream is an object).
fn open_inlining_below(
    server: &S3Server,
    bucket: &str,
    job: &str,
    inline_threshold: usize,
) -> ObjectCheckpointStorage {
    let url = url(server, bucket, &server.endpoint());
    let options = ObjectStorageOptions::new(url, JobId::new(job).unwrap())
        .with_inline_threshold(inline_threshold);
    ObjectCheckpointStorage::open(options).unwrap()
}

fn heap_setup() -> Setup<HeapBackendFactory> {
    let server = server().expect("checked by the caller");
    // The suite's states are small: without inlining every stream is an
    // object, so the suite exercises uploads and downloads.
    let storage = open_inlining_below(server, &bucket(server), "conformance", 0);
    Setup::new(
        HeapBackendFactory::new(HeapBackendOptions::default()),
        Arc::new(storage),
    )
}

macro_rules! snapshot_cases {
    ($($name:ident),* $(,)?) => {
        /// The conformance suite's snapshot and restore cases, on S3.
        mod conformance_on_s3 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    if server().is_none() {
                        return;
                    }
                    state_testkit::conformance::$name(heap_setup());
                }
            )*
        }
    };
}

snapshot_cases!(
    snapshot_isolation,
    restore_round_trip_all_kinds,
    restore_replaces_existing_state,
    empty_backend_snapshot_restores_empty,
    corrupt_stream_restore_fails_and_leaves_empty,
    corrupt_bytes_never_panic_or_half_restore,
    rescale_4_to_3_and_5,
    timers_survive_snapshot_and_restore,
);

fn metadata(id: u64, job: &str, streams: Vec<state_core::StreamHandle>) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: CheckpointId(id),
        job_id: JobId::new(job).unwrap(),
        timestamp_millis: 0,
        kind: SnapshotKind::Full,
        operators: vec![OperatorSnapshot {
            operator_id: OperatorId("op".into()),
            parallelism: u32::try_from(streams.len().max(1)).unwrap(),
            max_parallelism: 128,
            subtasks: streams
                .into_iter()
                .enumerate()
                .map(|(i, stream)| SubtaskSnapshot {
                    subtask: u32::try_from(i).unwrap(),
                    keyed: Vec::new(),
                    operator: Some(OperatorStateHandle {
                        stream,
                        states: Vec::new(),
                    }),
                })
                .collect(),
        }],
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// With `checksum_algorithm`, every PUT and every part carries a checksum
/// of its body for the server to verify; single PUTs and multipart uploads
/// both complete and read back whole.
#[test]
fn uploads_with_a_server_verified_checksum_complete_and_read_back() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    for algorithm in ["crc64nvme", "sha256"] {
        let url = url(server, &b, &server.endpoint()).with_option("checksum_algorithm", algorithm);
        let job = format!("sum-{algorithm}");
        let storage = ObjectCheckpointStorage::open(
            ObjectStorageOptions::new(url, JobId::new(&job).unwrap()).with_part_size(MIN_PART_SIZE),
        )
        .unwrap();
        for (name, len) in [("one-put", 70_000), ("parts", MIN_PART_SIZE + 4_321)] {
            let bytes = pattern(len, 3);
            let mut out = storage
                .create_output(CheckpointId(1), StateScope::Exclusive, name)
                .unwrap();
            out.write_all(&bytes).unwrap();
            let handle = out.close().unwrap();
            assert_eq!(handle.file_path(), Some(format!("chk-1/{name}").as_str()));
            assert_eq!(
                &storage.read(&handle).unwrap()[..],
                &bytes[..],
                "{algorithm} {name}"
            );
        }
    }
}

#[test]
fn a_large_stream_goes_up_in_parallel_parts_and_comes_back_in_ranges() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    let url = url(server, &b, &server.endpoint());
    let storage = ObjectCheckpointStorage::open(
        ObjectStorageOptions::new(url, JobId::new("big").unwrap()).with_part_size(MIN_PART_SIZE),
    )
    .unwrap();
    let bytes = pattern(2 * MIN_PART_SIZE + 12_345, 7);
    let mut out = storage
        .create_output(CheckpointId(1), StateScope::Shared, "000001.sst")
        .unwrap();
    for chunk in bytes.chunks(100_000) {
        out.write_all(chunk).unwrap();
    }
    let handle = out.close().unwrap();
    assert_eq!(
        (handle.size, handle.crc32),
        (bytes.len() as u64, crc32fast::hash(&bytes))
    );
    assert_eq!(
        storage.list_dir("shared").unwrap(),
        [("000001.sst".to_owned(), Some(bytes.len() as u64))]
    );
    assert_eq!(&storage.read(&handle).unwrap()[..], &bytes[..]);
    // A handle that disagrees with the object is corruption naming it.
    let mut wrong = handle.clone();
    wrong.crc32 ^= 1;
    let err = storage.read(&wrong).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("shared/000001.sst"), "{err}");
}

#[test]
fn a_second_writer_of_the_same_job_is_refused_by_the_conditional_metadata_put() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    let first = open(server, &b, "job");
    let second = open(server, &b, "job");
    let mine = {
        let mut out = first
            .create_output(CheckpointId(1), StateScope::Exclusive, "op-0")
            .unwrap();
        out.write_all(b"first writer").unwrap();
        out.close().unwrap()
    };
    let theirs = {
        let mut out = second
            .create_output(CheckpointId(1), StateScope::Exclusive, "op-1")
            .unwrap();
        out.write_all(b"second writer").unwrap();
        out.close().unwrap()
    };
    first
        .write_metadata(&metadata(1, "job", vec![mine.clone()]))
        .unwrap();
    let err = second
        .write_metadata(&metadata(1, "job", vec![theirs]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("chk-1/_metadata") && msg.contains("another writer"),
        "{msg}"
    );
    assert_eq!(
        first.read_metadata(CheckpointId(1)).unwrap(),
        metadata(1, "job", vec![mine])
    );
    // Cooperating processes are kept apart before that by the lock object.
    let lock = ObjectJobLock::acquire(&first, &LockOwner::this_process(1)).unwrap();
    let err = ObjectJobLock::acquire(&second, &LockOwner::this_process(2)).unwrap_err();
    assert!(err.to_string().contains("is in use by"), "{err}");
    drop(lock);
    drop(ObjectJobLock::acquire(&second, &LockOwner::this_process(3)).unwrap());
}

const KEYS: u64 = 13;

fn counts_job(
    storage: Arc<dyn CheckpointStorage>,
    dir: &std::path::Path,
    run: &str,
    bounded: bool,
    resume: bool,
) -> (executor::JobHandle, Collected<(u64, u64)>) {
    let mut config = JobConfig::new(JobId::new("counts").unwrap());
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.retained = 2;
    checkpoints.cleanup = ExternalizedCheckpointCleanup::RetainOnCancellation;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(RestartStrategyConfig::None);
    let factory =
        RocksBackendFactory::new(RocksBackendOptions::new(dir.join("local").join(run))).unwrap();
    let mut env =
        StreamEnv::new(config, factory, storage).with_snapshot_mode(SnapshotMode::Incremental);
    if resume {
        env = env.resume();
    }
    let mut options = LogSourceOptions::new(dir.join("log"), "numbers");
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

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn last_counts(out: &Collected<(u64, u64)>) -> BTreeMap<u64, u64> {
    out.snapshot().into_iter().collect()
}

#[test]
fn an_incremental_rocksdb_chain_rotates_on_s3_and_a_new_job_resumes_it_exactly() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path().join("log"), "numbers", 1).unwrap();
    let mut writer = TopicWriter::open(&topic, Arc::new(SystemClock)).unwrap();
    // The state is small: at 1 KiB, RocksDB's CURRENT and the meta streams
    // stay inline while every SST is an object, so rotation deletes objects.
    let storage = Arc::new(open_inlining_below(server, &b, "counts", 1024));
    let (job, out) = counts_job(storage.clone(), dir.path(), "first", false, false);
    let mut appended = 0u64;
    for expected in 1..=5 {
        for v in appended..appended + 300 {
            writer.append(None, v.to_string().as_bytes(), None).unwrap();
        }
        appended += 300;
        wait_until(|| out.len() as u64 == appended);
        let id = job.trigger_checkpoint().unwrap();
        job.wait_for_checkpoint(id).unwrap();
        assert_eq!(id, CheckpointId(expected));
    }
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);

    // Two retained; the older ones and the files only they used are gone.
    assert_eq!(
        storage.list_checkpoints().unwrap(),
        [CheckpointId(4), CheckpointId(5)]
    );
    for id in [4, 5] {
        let report = verify_checkpoint(storage.as_ref(), CheckpointId(id)).unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
    let newest = storage.read_metadata(CheckpointId(5)).unwrap();
    assert_eq!(newest.kind, SnapshotKind::Incremental);
    let streams = newest.streams();
    let inline = streams.iter().filter(|h| h.file_path().is_none()).count();
    assert!(
        inline > 0 && inline < streams.len(),
        "both inline streams and objects: {inline} of {}",
        streams.len()
    );
    assert_eq!(
        find_orphans(&storage).unwrap().orphans,
        [],
        "rotation left objects behind"
    );

    // A new job resumes from checkpoint 5 and counts the rest exactly.
    for v in appended..appended + 100 {
        writer.append(None, v.to_string().as_bytes(), None).unwrap();
    }
    appended += 100;
    let again = Arc::new(open(server, &b, "counts"));
    let (job, out) = counts_job(again, dir.path(), "second", true, true);
    assert_eq!(job.wait().unwrap().status, JobStatus::Finished);
    let mut expected = BTreeMap::new();
    for v in 0..appended {
        *expected.entry(v % KEYS).or_insert(0u64) += 1;
    }
    assert_eq!(last_counts(&out), expected);
}

/// Writes checkpoint `id` (two streams and its metadata) through `store`.
fn complete_one(
    storage: &ObjectCheckpointStorage,
    store: &mut CompletedCheckpointStore,
    id: u64,
) -> state_core::Result<()> {
    let cid = CheckpointId(id);
    storage.initialize_checkpoint(cid)?;
    let mut streams = Vec::new();
    for (i, len) in [(0u8, 3_000usize), (1, 70_000)] {
        let mut out = storage.create_output(cid, StateScope::Exclusive, &format!("op-{i}"))?;
        out.write_all(&pattern(len, id as u8 + i))
            .map_err(|e| state_core::StateError::io("op", e))?;
        streams.push(out.close()?);
    }
    store.complete(metadata(id, "faulty", streams)).map(|_| ())
}

#[test]
fn checkpoints_complete_through_dropped_connections_delays_and_503s() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            drop_before: 0.08,
            drop_after: 0.05,
            unavailable: 0.1,
            delay: Duration::from_millis(2),
            seed: 0x0b5e_55ed,
        },
    );
    let retry = RetryOptions {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        ..RetryOptions::default()
    };
    let options = ObjectStorageOptions::new(
        url(server, &b, &proxy.endpoint()),
        JobId::new("faulty").unwrap(),
    )
    .with_retry(retry);
    let storage = Arc::new(ObjectCheckpointStorage::open(options).unwrap());
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 2, ExternalizedCheckpointCleanup::default())
            .unwrap();
    for id in 1..=12 {
        complete_one(&storage, &mut store, id).unwrap();
    }
    assert!(
        proxy.faults_injected() > 5,
        "faults injected: {:?}",
        proxy.counts()
    );

    // Read back directly (no proxy): the retained ones are whole, nothing else is left.
    let direct = open(server, &b, "faulty");
    assert_eq!(
        direct.list_checkpoints().unwrap(),
        [CheckpointId(11), CheckpointId(12)]
    );
    for id in [11, 12] {
        assert!(
            verify_checkpoint(&direct, CheckpointId(id))
                .unwrap()
                .is_ok()
        );
    }
    assert_eq!(find_orphans(&direct).unwrap().orphans, []);
}

#[test]
fn a_server_that_keeps_failing_fails_that_checkpoint_only_and_loses_nothing_committed() {
    let Some(server) = server() else { return };
    let b = bucket(server);
    let proxy = FaultProxy::start(server.addr(), Faults::default());
    let retry = RetryOptions {
        attempts: 2,
        request_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..RetryOptions::default()
    };
    let options = ObjectStorageOptions::new(
        url(server, &b, &proxy.endpoint()),
        JobId::new("faulty").unwrap(),
    )
    .with_retry(retry);
    let storage = Arc::new(ObjectCheckpointStorage::open(options).unwrap());
    let mut store =
        CompletedCheckpointStore::new(storage.clone(), 3, ExternalizedCheckpointCleanup::default())
            .unwrap();
    complete_one(&storage, &mut store, 1).unwrap();

    proxy.set_faults(Faults {
        unavailable: 1.0,
        ..Faults::default()
    });
    let err = complete_one(&storage, &mut store, 2).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&b) && msg.contains("faulty/chk-2"),
        "the error names the object: {msg}"
    );

    proxy.set_faults(Faults::default());
    store.abort(CheckpointId(2), &[]).unwrap();
    complete_one(&storage, &mut store, 3).unwrap();
    let direct = open(server, &b, "faulty");
    assert_eq!(
        direct.list_checkpoints().unwrap(),
        [CheckpointId(1), CheckpointId(3)]
    );
    for id in [1, 3] {
        assert!(
            verify_checkpoint(&direct, CheckpointId(id))
                .unwrap()
                .is_ok()
        );
    }
}
