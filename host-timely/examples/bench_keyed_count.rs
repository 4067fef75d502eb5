//! The cost of fault tolerance on timely: keyed-count records/s with cairn
//! state (heap, RocksDB) and checkpoints every 2 s, beside the same job on
//! timely with a plain `HashMap` and no checkpoints and on cairn's own
//! executor (heap state, 2 s checkpoints), in one run.
//!
//! ```text
//! cargo run --release -p cairn-timely --example bench_keyed_count -- --records 4000000 --keys 100000
//! ```
//!
//! Prints one line per configuration: `variant workers processes records/s
//! ratio` (ratio: to the plain `HashMap` job at the same workers), and for
//! the cairn-on-timely ones in one process the checkpoints completed (the
//! final one included). Record
//! `i` has key `i · 2654435761 mod keys`; each worker reads every
//! `workers`-th record; every update goes to a sink that drops it.
//! `--only VARIANT` runs one variant: `timely-hashmap` (std's `HashMap`,
//! the baseline of every ratio), `timely-hashmap-foldhash` (the same with
//! foldhash, the hasher of `keyed_value`'s cache); `keyed_process`
//! with `update_with` on a value state as `timely-cairn-heap`,
//! `timely-cairn-rocks` and `timely-cairn-heap-nockpt` (one final
//! checkpoint only); `keyed_value` (typed values cached between
//! checkpoints) as `timely-cairn-value-heap`, `timely-cairn-value-rocks`
//! and `timely-cairn-value-heap-nockpt`; `executor-heap`; and the two
//! processes of two workers `timely-cairn-heap-2x2` and
//! `timely-cairn-value-heap-2x2`. `--workers 1,2` runs those worker counts
//! (for a profile). `--child DIR` (with `--child-value` for `keyed_value`,
//! `--child-plain` for the `HashMap` job) runs one process of a
//! two-process configuration (the bench starts those through the
//! supervisor).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use cairn_timely::supervisor::{SupervisorConfig, supervise};
use cairn_timely::{
    CheckpointConfig, EpochPolicy, EpochSink, PartitionedSource, ReadOutcome, StateStream,
    TimelyError, run_worker,
};
use executor::sink::{Sink, SinkContext};
use executor::source::{Source, SourceContext, SourcePoll};
use executor::{JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use state_core::typed::ValueStateDescriptor;
use state_core::{
    BackendFactory, CheckpointId, JobId, MaxParallelism, OperatorStateMode, OperatorStateStore,
};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{InputHandleVec, ProbeHandle};

fn key_of(i: u64, keys: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) % keys
}

/// Records `i` with `i % partitions == p` as partition `p`.
#[derive(Debug, Clone)]
struct Generator {
    records: u64,
    keys: u64,
    partitions: u32,
}

impl PartitionedSource for Generator {
    type Item = u64;

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn read(
        &mut self,
        partition: u32,
        offset: u64,
        max: usize,
        out: &mut Vec<u64>,
    ) -> Result<ReadOutcome, TimelyError> {
        let p = u64::from(self.partitions);
        let mut n = 0;
        let mut o = offset;
        while n < max {
            let i = o * p + u64::from(partition);
            if i >= self.records {
                break;
            }
            out.push(key_of(i, self.keys));
            o += 1;
            n += 1;
        }
        Ok(if n == 0 {
            ReadOutcome::Ended
        } else {
            ReadOutcome::Read(n)
        })
    }
}

/// Drops what it is given.
#[derive(Debug, Clone, Copy)]
struct Discard;

impl EpochSink<(u64, u64)> for Discard {
    fn recover(&mut self, _: Option<CheckpointId>) -> Result<(), TimelyError> {
        Ok(())
    }
    fn write(&mut self, _: CheckpointId, records: Vec<(u64, u64)>) -> Result<(), TimelyError> {
        std::hint::black_box(records);
        Ok(())
    }
    fn pre_commit(&mut self, _: CheckpointId) -> Result<(), TimelyError> {
        Ok(())
    }
    fn commit(&mut self, _: CheckpointId) -> Result<(), TimelyError> {
        Ok(())
    }
}

/// Which cairn operator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `keyed_process` with `update_with` on a value state.
    Process,
    /// `keyed_value`: typed values cached between checkpoints.
    Value,
}

fn cairn_job<F: BackendFactory + Clone + Send + Sync + 'static>(
    timely: timely::Config,
    dir: &Path,
    records: u64,
    keys: u64,
    factory: F,
    interval: Duration,
    op: Op,
) -> usize {
    let storage = FsCheckpointStorage::open(dir, JobId::new("bench").unwrap()).unwrap();
    let mut config = CheckpointConfig::new(JobId::new("bench").unwrap(), Arc::new(storage));
    config.max_parallelism = MaxParallelism::new(128).unwrap();
    config.epochs = EpochPolicy::Interval(interval);
    config.epochs_in_flight = 2;
    let partitions = match &timely.communication {
        timely::CommunicationConfig::Cluster {
            threads, addresses, ..
        } => threads * addresses.len(),
        timely::CommunicationConfig::Process(n) => *n,
        _ => 1,
    } as u32;
    let source = Generator {
        records,
        keys,
        partitions,
    };
    let guards = timely::execute(timely, move |worker| {
        let factory = factory.clone();
        let source = source.clone();
        run_worker(
            worker,
            &config,
            move |_| Ok(source),
            |_| Ok(Discard),
            move |cairn, keys| match op {
                Op::Process => keys.keyed_process(
                    cairn,
                    "count",
                    factory,
                    |k: &u64| *k,
                    |st| st.value_state(&ValueStateDescriptor::<u64>::new("count")),
                    |st, count, key, out| {
                        let n = count.update_with(st, |n| n.unwrap_or(0) + 1)?;
                        out.push((key, n));
                        Ok(())
                    },
                ),
                Op::Value => keys.keyed_value(
                    cairn,
                    "count",
                    factory,
                    ValueStateDescriptor::<u64>::new("count"),
                    |k: &u64| *k,
                    |_, count, key, out| {
                        let n = count.get_or_insert(0);
                        *n += 1;
                        out.push((key, *n));
                        Ok(())
                    },
                ),
            },
        )
    })
    .unwrap();
    // Checkpoints completed, the final one included (worker 0's count).
    let reports: Vec<_> = guards
        .join()
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    reports.first().map_or(0, |r| r.completed.len())
}

/// The same count on timely with a `HashMap` hashing with `H` (std's
/// SipHash, or foldhash as `keyed_value`'s cache), no state backend, no
/// checkpoints.
fn plain_job<H: std::hash::BuildHasher + Default + 'static>(
    timely: timely::Config,
    records: u64,
    keys: u64,
) {
    let guards =
        timely::execute(timely, move |worker| {
            let index = worker.index() as u64;
            let peers = worker.peers() as u64;
            let probe = ProbeHandle::new();
            let mut input =
                worker.dataflow::<u64, _, _>(|scope| {
                    let mut input = InputHandleVec::<u64, u64>::new();
                    let stream = input.to_stream(scope);
                    stream
                .unary::<timely::container::CapacityContainerBuilder<Vec<(u64, u64)>>, _, _, _>(
                    Exchange::new(|k: &u64| *k),
                    "count",
                    |_, _| {
                        let mut counts: HashMap<u64, u64, H> = HashMap::default();
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let mut session = output.session(&cap);
                                for k in data.drain(..) {
                                    let n = counts.entry(k).or_insert(0);
                                    *n += 1;
                                    session.give((k, *n));
                                }
                            });
                        }
                    },
                )
                .probe_with(&probe)
                .sink(timely::dataflow::channels::pact::Pipeline, "discard", |(input, _)| {
                    input.for_each(|_, data| {
                        std::hint::black_box(data);
                    });
                });
                    input
                });
            let mut i = index;
            let mut epoch = 0u64;
            while i < records {
                for _ in 0..10_000 {
                    if i >= records {
                        break;
                    }
                    input.send(key_of(i, keys));
                    i += peers;
                }
                epoch += 1;
                input.advance_to(epoch);
                // As many epochs in flight as the cairn job allows.
                while probe.less_than(&epoch.saturating_sub(2)) {
                    worker.step();
                }
            }
        })
        .unwrap();
    for r in guards.join() {
        r.unwrap();
    }
}

/// The executor's generator: records `subtask, subtask + parallelism, …`.
struct ExecutorSource {
    records: u64,
    keys: u64,
    subtask: u64,
    parallelism: u64,
    position: u64,
}

impl Source<u64> for ExecutorSource {
    fn open(
        &mut self,
        context: SourceContext,
        restored: Option<&OperatorStateStore>,
    ) -> executor::Result<()> {
        self.subtask = u64::from(context.subtask);
        self.parallelism = u64::from(context.parallelism);
        if let Some(state) = restored {
            self.position = state
                .get_typed::<u64>("position")?
                .first()
                .copied()
                .unwrap_or(0);
        }
        Ok(())
    }

    fn poll_next(&mut self) -> executor::Result<SourcePoll<u64>> {
        let i = self.position * self.parallelism + self.subtask;
        if i >= self.records {
            return Ok(SourcePoll::End);
        }
        self.position += 1;
        Ok(SourcePoll::Record(key_of(i, self.keys)))
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> executor::Result<()> {
        state.register("position", OperatorStateMode::Split)?;
        state.update_typed("position", &[self.position])?;
        Ok(())
    }
}

/// The executor's sink: drops what it is given.
struct ExecutorDiscard;

impl Sink<(u64, i64)> for ExecutorDiscard {
    fn open(&mut self, _: SinkContext, _: Option<&OperatorStateStore>) -> executor::Result<()> {
        Ok(())
    }
    fn write(&mut self, record: (u64, i64)) -> executor::Result<()> {
        std::hint::black_box(record);
        Ok(())
    }
}

/// The same count on cairn's executor: heap state, checkpoints every 2 s.
fn executor_job(parallelism: u32, dir: &Path, records: u64, keys: u64) {
    let job = JobId::new("bench-executor").unwrap();
    let mut config = JobConfig::new(job.clone());
    config.parallelism = parallelism;
    config.checkpointing = Some(executor::CheckpointConfig::every(Duration::from_secs(2)));
    config.restart = Some(RestartStrategyConfig::None);
    let storage = Arc::new(FsCheckpointStorage::open(dir, job).unwrap());
    let env = StreamEnv::new(
        config,
        HeapBackendFactory::new(HeapBackendOptions::default()),
        storage,
    );
    env.source("generator", move |_: SourceContext| {
        Ok(Box::new(ExecutorSource {
            records,
            keys,
            subtask: 0,
            parallelism: 1,
            position: 0,
        }) as Box<dyn Source<u64>>)
    })
    .map("to-pair", |k: u64| Ok((k, 1i64)))
    .key_by(|(k, _): &(u64, i64)| *k)
    .sum("count", |t| t.1, |t, v| t.1 = v)
    .sink("discard", |_: SinkContext| {
        Ok(Box::new(ExecutorDiscard) as Box<dyn Sink<(u64, i64)>>)
    });
    let result = env.start().unwrap().wait().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
}

/// Checkpoints every 2 s, as Flink's interval in the target.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// An interval no run reaches: one epoch, one (final) checkpoint.
const NO_CHECKPOINTS: Duration = Duration::from_secs(24 * 3600);

/// The cairn-on-timely configurations of one worker count, in run order:
/// name, operator, RocksDB (else heap), epoch interval.
const CAIRN_VARIANTS: [(&str, Op, bool, Duration); 6] = [
    (
        "timely-cairn-heap-nockpt",
        Op::Process,
        false,
        NO_CHECKPOINTS,
    ),
    ("timely-cairn-heap", Op::Process, false, CHECKPOINT_INTERVAL),
    (
        "timely-cairn-value-heap",
        Op::Value,
        false,
        CHECKPOINT_INTERVAL,
    ),
    ("timely-cairn-rocks", Op::Process, true, CHECKPOINT_INTERVAL),
    (
        "timely-cairn-value-rocks",
        Op::Value,
        true,
        CHECKPOINT_INTERVAL,
    ),
    (
        "timely-cairn-value-heap-nockpt",
        Op::Value,
        false,
        NO_CHECKPOINTS,
    ),
];

fn main() {
    let mut records = 4_000_000u64;
    let mut keys = 100_000u64;
    let mut child = None;
    let mut child_op = Op::Process;
    let mut child_plain = false;
    let mut only: Option<String> = None;
    let mut worker_counts = vec![1usize, 2, 4];
    let mut timely_args = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => records = args.next().unwrap().parse().unwrap(),
            "--keys" => keys = args.next().unwrap().parse().unwrap(),
            "--child" => child = Some(args.next().unwrap()),
            "--child-value" => child_op = Op::Value,
            "--child-plain" => child_plain = true,
            "--only" => only = Some(args.next().unwrap()),
            "--workers" => {
                worker_counts = args
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|w| w.parse().unwrap())
                    .collect();
            }
            _ => timely_args.push(arg),
        }
    }
    if let Some(dir) = child {
        let config = timely::Config::from_args(timely_args.into_iter()).unwrap();
        if child_plain {
            plain_job::<std::hash::RandomState>(config, records, keys);
            return;
        }
        cairn_job(
            config,
            Path::new(&dir),
            records,
            keys,
            HeapBackendFactory::new(HeapBackendOptions::default()),
            CHECKPOINT_INTERVAL,
            child_op,
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut case = 0;
    let mut dir = || {
        case += 1;
        scratch.path().join(format!("case-{case}"))
    };
    let wanted = |variant: &str| only.as_deref().is_none_or(|o| o == variant);
    let rate = |start: Instant| records as f64 / start.elapsed().as_secs_f64();
    // The ratio to the plain job of the same invocation; `-` when it did
    // not run (`--only` another variant).
    let of_plain = |r: f64, plain: f64| {
        if plain.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}", r / plain)
        }
    };
    println!("variant workers processes records_per_s ratio_to_plain");
    for workers in worker_counts {
        let mut plain = f64::NAN;
        if wanted("timely-hashmap") {
            let start = Instant::now();
            plain_job::<std::hash::RandomState>(timely::Config::process(workers), records, keys);
            plain = rate(start);
            println!("timely-hashmap {workers} 1 {plain:.0} 1.00");
        }
        if wanted("timely-hashmap-foldhash") {
            let start = Instant::now();
            plain_job::<foldhash::fast::RandomState>(
                timely::Config::process(workers),
                records,
                keys,
            );
            let fold = rate(start);
            println!(
                "timely-hashmap-foldhash {workers} 1 {fold:.0} {}",
                of_plain(fold, plain)
            );
        }
        for (name, op, rocks, interval) in CAIRN_VARIANTS {
            if !wanted(name) {
                continue;
            }
            let config = timely::Config::process(workers);
            let start = Instant::now();
            let checkpoints = if rocks {
                let rocks = RocksBackendFactory::new(RocksBackendOptions::new(dir())).unwrap();
                cairn_job(config, &dir(), records, keys, rocks, interval, op)
            } else {
                let heap = HeapBackendFactory::new(HeapBackendOptions::default());
                cairn_job(config, &dir(), records, keys, heap, interval, op)
            };
            let r = rate(start);
            println!(
                "{name} {workers} 1 {r:.0} {} checkpoints={checkpoints}",
                of_plain(r, plain)
            );
        }
        if wanted("executor-heap") {
            let start = Instant::now();
            executor_job(workers as u32, &dir(), records, keys);
            let exec = rate(start);
            println!(
                "executor-heap {workers} 1 {exec:.0} {}",
                of_plain(exec, plain)
            );
        }
        for (name, flag) in [
            ("timely-hashmap-2x2", Some("--child-plain")),
            ("timely-cairn-heap-2x2", None),
            ("timely-cairn-value-heap-2x2", Some("--child-value")),
        ] {
            if workers != 2 || !wanted(name) {
                continue;
            }
            let work = dir();
            std::fs::create_dir_all(&work).unwrap();
            let mut args = vec![
                "--records".into(),
                records.to_string(),
                "--keys".into(),
                keys.to_string(),
                "--child".into(),
                work.join("checkpoints").display().to_string(),
            ];
            if let Some(flag) = flag {
                args.push(flag.into());
            }
            let config = SupervisorConfig {
                program: std::env::current_exe().unwrap(),
                args,
                env: Vec::new(),
                processes: 2,
                workers: 2,
                max_restarts: 0,
                work_dir: work,
                timely_args_env: None,
            };
            let start = Instant::now();
            supervise(&config).unwrap();
            let two = rate(start);
            println!("{name} 2x2 2 {two:.0} {}", of_plain(two, plain));
        }
    }
}
