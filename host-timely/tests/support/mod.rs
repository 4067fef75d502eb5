//! The keyed word count on timely with cairn state, shared by the tests and
//! the example (`examples/wordcount.rs` includes this file): a seeded,
//! replayable word source, the job, its exactly-once file output, and the
//! single-threaded reference.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use backend_fs::{FsCheckpointStorage, JobLock, LockOwner, sweep_orphans};
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use cairn_timely::{
    Cairn, CheckpointConfig, EpochFileSink, EpochPolicy, PartitionedSource, ReadOutcome,
    StateStream, TimelyError, WorkerReport, barrier, run_worker,
};
use state_core::typed::ValueStateDescriptor;
use state_core::{
    BackendFactory, CheckpointId, CheckpointOutput, CheckpointStorage, Clock, JobId,
    MaxParallelism, StateError, StateScope, StreamHandle, StreamLocation, SystemClock, TtlConfig,
};
use state_testkit::{Intercept, InterceptStorage};

/// SplitMix64: the seeded order of the words.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which words a job reads: `per_partition` words in each of `partitions`,
/// drawn from `vocabulary` words by `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    pub partitions: u32,
    pub per_partition: u64,
    pub vocabulary: u64,
    pub seed: u64,
}

impl Words {
    /// The word at `offset` of `partition`.
    pub fn word(&self, partition: u32, offset: u64) -> String {
        let h = splitmix(self.seed ^ (u64::from(partition) << 40) ^ offset);
        format!("w{}", h % self.vocabulary)
    }

    /// The single-threaded reference: every word's count.
    pub fn reference(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for p in 0..self.partitions {
            for o in 0..self.per_partition {
                *counts.entry(self.word(p, o)).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Records this process has read, for the kill switch.
static READ: AtomicU64 = AtomicU64::new(0);

/// The replayable word source; with `kill_after`, the process SIGKILLs
/// itself once it has read that many records.
#[derive(Debug, Clone)]
pub struct WordSource {
    pub words: Words,
    pub kill_after: Option<u64>,
}

impl PartitionedSource for WordSource {
    type Item = String;

    fn partitions(&self) -> u32 {
        self.words.partitions
    }

    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
        out: &mut Vec<String>,
    ) -> Result<ReadOutcome, TimelyError> {
        if offset >= self.words.per_partition {
            return Ok(ReadOutcome::Ended);
        }
        let n = (self.words.per_partition - offset).min(max as u64);
        for o in offset..offset + n {
            out.push(self.words.word(partition, o));
        }
        let total = READ.fetch_add(n, Ordering::SeqCst) + n;
        if let Some(limit) = self.kill_after
            && total >= limit
        {
            kill_self();
        }
        Ok(ReadOutcome::Read(n as usize))
    }
}

/// The test-binary arguments that run only the ignored `child_process`
/// entry point of the calling test file, as the supervisor's program.
pub fn child_process_args() -> Vec<String> {
    [
        "child_process",
        "--ignored",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// In a child process started by a test: the job it was given in
/// `job_env` and the timely configuration of the arguments in `args_env`;
/// `None` in a normal test run (the variable is not set).
pub fn child_job(job_env: &str, args_env: &str) -> Option<(WordCount, timely::Config)> {
    let spec = std::env::var(job_env).ok()?;
    let args = std::env::var(args_env).unwrap();
    let config = timely::Config::from_args(args.split_whitespace().map(str::to_owned)).unwrap();
    Some((WordCount::from_env(&spec), config))
}

/// SIGKILL to this process: no destructor, no flush, as a crash.
pub fn kill_self() -> ! {
    let _ = std::process::Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Where keyed state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Heap,
    /// RocksDB working in this local directory.
    Rocks(PathBuf),
}

/// Which keyed operator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `keyed_process` with a value state.
    Process,
    /// `keyed_value`: typed values cached between checkpoints.
    Value,
}

/// One keyed word count job.
#[derive(Debug, Clone)]
pub struct WordCount {
    pub checkpoint_dir: PathBuf,
    pub output: PathBuf,
    pub job: String,
    pub words: Words,
    pub records_per_epoch: u64,
    pub epochs_in_flight: u64,
    pub max_parallelism: u32,
    pub backend: Backend,
    pub operator: Operator,
    /// [`CheckpointConfig::value_cache_entries`].
    pub value_cache_entries: usize,
    pub kill_after: Option<u64>,
    /// The count's TTL in ms (`None`: no TTL).
    pub ttl_millis: Option<u64>,
    /// Checkpoints whose every stream fails to open (storage full).
    pub failing_checkpoints: Vec<u64>,
    /// [`CheckpointConfig::tolerable_failures`].
    pub tolerable_failures: u32,
    /// RocksDB: incremental checkpoints.
    pub incremental: bool,
    /// RocksDB: local recovery.
    pub local_recovery: bool,
    /// How often each checkpoint file was read, by path (in this process).
    pub reads: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl WordCount {
    /// A job over `words` with checkpoints in `dir/checkpoints` and output in `dir/out`.
    pub fn new(dir: &Path, words: Words) -> Self {
        WordCount {
            checkpoint_dir: dir.join("checkpoints"),
            output: dir.join("out"),
            job: "wordcount".into(),
            words,
            records_per_epoch: 500,
            epochs_in_flight: 2,
            max_parallelism: 128,
            backend: Backend::Heap,
            operator: Operator::Process,
            value_cache_entries: 1 << 20,
            kill_after: None,
            ttl_millis: None,
            failing_checkpoints: Vec::new(),
            tolerable_failures: 0,
            incremental: false,
            local_recovery: false,
            reads: Arc::default(),
        }
    }

    /// The job's checkpoint storage.
    pub fn storage(&self) -> FsCheckpointStorage {
        FsCheckpointStorage::open(&self.checkpoint_dir, JobId::new(&self.job).unwrap()).unwrap()
    }

    /// The job as `key=value` lines, for a child process's environment.
    pub fn to_env(&self) -> String {
        let backend = match &self.backend {
            Backend::Heap => "heap".to_owned(),
            Backend::Rocks(dir) => format!("rocks:{}", dir.display()),
        };
        [
            format!("checkpoint_dir={}", self.checkpoint_dir.display()),
            format!("output={}", self.output.display()),
            format!("job={}", self.job),
            format!("partitions={}", self.words.partitions),
            format!("per_partition={}", self.words.per_partition),
            format!("vocabulary={}", self.words.vocabulary),
            format!("seed={}", self.words.seed),
            format!("records_per_epoch={}", self.records_per_epoch),
            format!("epochs_in_flight={}", self.epochs_in_flight),
            format!("max_parallelism={}", self.max_parallelism),
            format!("backend={backend}"),
            format!(
                "operator={}",
                match self.operator {
                    Operator::Process => "process",
                    Operator::Value => "value",
                }
            ),
            format!("value_cache_entries={}", self.value_cache_entries),
            format!(
                "ttl_millis={}",
                self.ttl_millis.map_or(String::new(), |t| t.to_string())
            ),
            format!(
                "kill_after={}",
                self.kill_after.map_or(String::new(), |k| k.to_string())
            ),
            format!(
                "failing_checkpoints={}",
                self.failing_checkpoints
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("tolerable_failures={}", self.tolerable_failures),
        ]
        .join("\n")
    }

    /// The job [`WordCount::to_env`] wrote.
    pub fn from_env(text: &str) -> Self {
        let get = |key: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("job spec lacks {key}"))
                .to_owned()
        };
        let num = |key: &str| -> u64 { get(key).parse().unwrap() };
        let backend = get("backend");
        WordCount {
            checkpoint_dir: get("checkpoint_dir").into(),
            output: get("output").into(),
            job: get("job"),
            words: Words {
                partitions: num("partitions") as u32,
                per_partition: num("per_partition"),
                vocabulary: num("vocabulary"),
                seed: num("seed"),
            },
            records_per_epoch: num("records_per_epoch"),
            epochs_in_flight: num("epochs_in_flight"),
            max_parallelism: num("max_parallelism") as u32,
            backend: match backend.strip_prefix("rocks:") {
                Some(dir) => Backend::Rocks(dir.into()),
                None => Backend::Heap,
            },
            operator: match get("operator").as_str() {
                "value" => Operator::Value,
                _ => Operator::Process,
            },
            value_cache_entries: num("value_cache_entries") as usize,
            kill_after: get("kill_after").parse().ok(),
            ttl_millis: get("ttl_millis").parse().ok(),
            failing_checkpoints: get("failing_checkpoints")
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().unwrap())
                .collect(),
            tolerable_failures: num("tolerable_failures") as u32,
            incremental: false,
            local_recovery: false,
            reads: Arc::default(),
        }
    }
}

/// The test's storage: full for some checkpoints (every stream of them
/// fails to open, as a disk with no space left), and counting the reads of
/// each file.
#[derive(Debug)]
pub struct TestStorage {
    pub full: Vec<u64>,
    pub reads: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Intercept for TestStorage {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if self.full.contains(&id.get()) {
            return Err(StateError::io(
                format!("chk-{}/{name}", id.get()),
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        inner.create_output(id, scope, name)
    }

    fn read(
        &self,
        inner: &dyn CheckpointStorage,
        handle: &StreamHandle,
    ) -> state_core::Result<bytes::Bytes> {
        if let StreamLocation::File(path) = &handle.location {
            *self.reads.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
        }
        inner.read(handle)
    }
}

/// Runs this process's workers of `job` under `timely`. Worker 0 takes the job directory's lock and sweeps
/// orphans; every worker opens the storage only after the start-up
/// [`barrier`], so no worker touches it while the sweep runs.
pub fn run_process(
    job: &WordCount,
    timely: timely::Config,
    clock: Arc<dyn Clock>,
) -> Vec<WorkerReport> {
    match &job.backend {
        Backend::Heap => run_with(
            job,
            timely,
            clock,
            HeapBackendFactory::new(HeapBackendOptions::default()),
        ),
        Backend::Rocks(dir) => {
            let mut options = RocksBackendOptions::new(dir.join(&job.job));
            options.incremental = job.incremental;
            options.local_recovery = job.local_recovery;
            let factory = RocksBackendFactory::new(options).unwrap();
            run_with(job, timely, clock, factory)
        }
    }
}

/// The job's checkpoint settings over its storage, opened now.
fn checkpoint_config(job: &WordCount, clock: Arc<dyn Clock>) -> CheckpointConfig {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(InterceptStorage::new(
        Arc::new(job.storage()),
        TestStorage {
            full: job.failing_checkpoints.clone(),
            reads: Arc::clone(&job.reads),
        },
    ));
    let mut config = CheckpointConfig::new(JobId::new(&job.job).unwrap(), storage);
    config.tolerable_failures = job.tolerable_failures;
    config.value_cache_entries = job.value_cache_entries;
    config.max_parallelism = MaxParallelism::new(job.max_parallelism).unwrap();
    config.epochs = EpochPolicy::Records(job.records_per_epoch);
    config.epochs_in_flight = job.epochs_in_flight;
    config.clock = clock;
    config
}

fn run_with<F: BackendFactory + Clone + Send + Sync + 'static>(
    job: &WordCount,
    timely: timely::Config,
    clock: Arc<dyn Clock>,
    factory: F,
) -> Vec<WorkerReport> {
    let source = WordSource {
        words: job.words,
        kill_after: job.kill_after,
    };
    let output = job.output.clone();
    let ttl = job.ttl_millis;
    let operator = job.operator;
    let job = job.clone();
    let guards = timely::execute(timely, move |worker| {
        let factory = factory.clone();
        let source = source.clone();
        let output = output.clone();
        let _lock = (worker.index() == 0).then(|| {
            let storage = job.storage();
            let lock = JobLock::acquire(
                storage.job_dir(),
                &LockOwner::this_process(clock.now_millis()),
            )
            .unwrap();
            sweep_orphans(&storage, &lock).unwrap();
            lock
        });
        barrier(worker);
        let config = checkpoint_config(&job, Arc::clone(&clock));
        run_worker(
            worker,
            &config,
            move |_| Ok(source),
            move |cairn: &Cairn| {
                EpochFileSink::new(
                    output,
                    cairn.worker_index(),
                    cairn.peers(),
                    |(w, n): &(String, u64), s: &mut String| {
                        s.push_str(&format!("{w} {n}\n"));
                    },
                )
            },
            move |cairn, words| {
                let mut desc = ValueStateDescriptor::<u64>::new("count");
                if let Some(ms) = ttl {
                    let ttl = TtlConfig::new(std::time::Duration::from_millis(ms)).unwrap();
                    desc = desc.with_ttl(ttl);
                }
                match operator {
                    Operator::Process => words.keyed_process(
                        cairn,
                        "count",
                        factory,
                        |w: &String| w.clone(),
                        move |st| st.value_state(&desc),
                        |st, count, word, out| {
                            let n = count.update_with(st, |n| n.unwrap_or(0) + 1)?;
                            out.push((word, n));
                            Ok(())
                        },
                    ),
                    Operator::Value => words.keyed_value(
                        cairn,
                        "count",
                        factory,
                        desc,
                        |w: &String| w.clone(),
                        |_, count, word, out| {
                            let n = count.get_or_insert(0);
                            *n += 1;
                            out.push((word, *n));
                            Ok(())
                        },
                    ),
                }
            },
        )
    })
    .unwrap();
    guards
        .join()
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect()
}

/// The committed output files of `dir`, in name (checkpoint) order.
pub fn part_files(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("part-")
        })
        .collect()
}

/// Every count `files` hold, per word, in file order.
pub fn read_counts<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> BTreeMap<String, Vec<u64>> {
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for path in files {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let (w, n) = line.split_once(' ').unwrap();
            counts
                .entry(w.to_owned())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    counts
}

/// Every count the committed output holds, per word.
pub fn read_output(dir: &Path) -> BTreeMap<String, Vec<u64>> {
    read_counts(&part_files(dir))
}

/// The output is exactly once: each word's counts, sorted, are `1..=n`
/// with `n` its reference count (no count lost, none emitted twice).
pub fn assert_exactly_once(output: &BTreeMap<String, Vec<u64>>, reference: &BTreeMap<String, u64>) {
    assert_eq!(
        output.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "the words seen differ from the reference"
    );
    for (word, counts) in output {
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        let expected: Vec<u64> = (1..=reference[word]).collect();
        assert_eq!(
            sorted, expected,
            "word {word}: counts emitted are not 1..={}",
            reference[word]
        );
    }
}

/// The final counts of the output (the highest count per word).
pub fn final_counts(output: &BTreeMap<String, Vec<u64>>) -> BTreeMap<String, u64> {
    output
        .iter()
        .map(|(w, c)| (w.clone(), c.iter().copied().max().unwrap_or(0)))
        .collect()
}

/// The system clock, shared.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
