//! `cairn-bench sinks`: the keyed-count job into each sink, one after the
//! other in one run — print (to a discarding writer), the exactly-once file
//! sink, the PostgreSQL two-phase-commit sink and the SQLite sink, the SQL
//! ones in upsert and in insert mode — with its records/s, its share of the
//! print sink's, and the commit latency per checkpoint (median, p99: per
//! checkpoint the slowest subtask's commit calls).
//!
//! PostgreSQL is the server of `--postgres <conninfo>`, or else a private
//! cluster the harness starts in a temp dir (the tests' `pg_support`).

// The private cluster's helper is test code: it panics on a broken setup.
#[path = "../../../../executor/tests/pg_support/mod.rs"]
mod pg_support;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use backend_heap::HeapBackendFactory;
use cairn_benches::record_key;
use cairn_cli::job_args::parse_duration;
use executor::sink::committing::{Committer, CommittingSink, CommittingWriter, TwoPhaseCommit};
use executor::sink::file::FileSink;
use executor::sink::postgres::{PostgresOptions, PostgresSink};
use executor::sink::print::PrintSink;
use executor::sink::sql::{SqlColumn, SqlTable, SqlType, SqlValue, WriteMode};
use executor::sink::sqlite::{SqliteOptions, SqliteSink};
use executor::sink::{SinkContext, SinkFactory};
use executor::source::{Source, SourceContext};
use executor::{CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use serde::Serialize;
use state_core::{CheckpointId, JobId, MemoryCheckpointStorage};

use crate::job::Generator;

/// `cairn-bench sinks` options.
#[derive(Debug, clap::Args)]
pub(crate) struct SinksBenchArgs {
    /// Records the generator emits (each one output record)
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct keys
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Parallelism of the job (source, count and sink)
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// Time between checkpoints (500ms, 1s)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// The sinks to run, in order (print, file, postgres, postgres-insert, sqlite, sqlite-insert)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "print,file,postgres,postgres-insert,sqlite,sqlite-insert"
    )]
    pub sinks: Vec<String>,
    /// A PostgreSQL server to write (libpq conninfo); default: a private
    /// cluster started in a temp dir
    #[arg(long, value_name = "CONNINFO")]
    pub postgres: Option<String>,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

/// The JSON fields, for `--help`.
pub(crate) const JSON_HELP: &str = "JSON: {records, keys, parallelism, checkpoint_interval_ms, \
sinks: [{sink, status, seconds, records_per_sec, of_print, checkpoints, commit_ms_median, \
commit_ms_p99}]} (times in ms; of_print = records_per_sec / the print sink's; commit figures \
null for print)";

/// One output record: a key and its running count.
#[derive(Debug, Clone, Copy)]
struct Counted(u64, i64);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.0, self.1)
    }
}

fn row(c: &Counted) -> Vec<SqlValue> {
    vec![SqlValue::Int(c.0 as i64), SqlValue::Int(c.1)]
}

/// Commit calls per checkpoint and subtask, in ms.
type CommitTimes = Arc<Mutex<BTreeMap<(u64, u32), f64>>>;

/// A committing sink whose commit calls are timed.
struct Timed<S> {
    inner: S,
    times: CommitTimes,
}

struct TimedCommitter<C> {
    inner: Box<dyn Committer<C>>,
    subtask: u32,
    times: CommitTimes,
}

impl<S: CommittingSink<Counted>> CommittingSink<Counted> for Timed<S> {
    type Committable = S::Committable;

    fn writer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn CommittingWriter<Counted, S::Committable>>> {
        self.inner.writer(context)
    }

    fn committer(
        &self,
        context: SinkContext,
    ) -> executor::Result<Box<dyn Committer<S::Committable>>> {
        Ok(Box::new(TimedCommitter {
            inner: self.inner.committer(context)?,
            subtask: context.subtask,
            times: self.times.clone(),
        }))
    }
}

impl<C: Send> Committer<C> for TimedCommitter<C> {
    fn commit(&mut self, checkpoint: CheckpointId, c: &C) -> executor::Result<()> {
        let start = Instant::now();
        let result = self.inner.commit(checkpoint, c);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        *times.entry((checkpoint.get(), self.subtask)).or_default() += ms;
        result
    }

    fn recover(&mut self, restored: Option<CheckpointId>) -> executor::Result<()> {
        self.inner.recover(restored)
    }
}

/// One sink's figures.
#[derive(Debug, Serialize)]
struct SinkReport {
    sink: String,
    status: String,
    seconds: f64,
    records_per_sec: f64,
    of_print: Option<f64>,
    checkpoints: usize,
    commit_ms_median: Option<f64>,
    commit_ms_p99: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    keys: u64,
    parallelism: u32,
    checkpoint_interval_ms: f64,
    sinks: Vec<SinkReport>,
}

fn table(name: &str, upsert: bool) -> SqlTable {
    SqlTable::new(
        name,
        vec![
            SqlColumn::new("key", SqlType::BigInt),
            SqlColumn::new("count", SqlType::BigInt),
        ],
        if upsert {
            WriteMode::Upsert {
                key: vec!["key".into()],
            }
        } else {
            WriteMode::Insert
        },
    )
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i).map(|x| (x * 1000.0).round() / 1000.0)
}

/// Runs the keyed count into `sink`; returns status, seconds, checkpoints.
fn run_job<S: SinkFactory<Counted> + 'static>(
    args: &SinksBenchArgs,
    sink: S,
) -> anyhow::Result<(JobStatus, f64, usize)> {
    let mut config = JobConfig::new(JobId::new("sink-bench")?);
    config.parallelism = args.parallelism;
    config.checkpointing = Some(CheckpointConfig::every(args.checkpoint_interval));
    config.restart = Some(RestartStrategyConfig::None);
    let env = StreamEnv::new(
        config,
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::new(u64::MAX)),
    );
    let (records, keys) = (args.records, args.keys);
    env.source("generator", move |_: SourceContext| {
        Ok(Box::new(Generator::new(records)) as Box<dyn Source<u64>>)
    })
    .map("to-key", move |i: u64| Ok((record_key(i, keys), 1i64)))
    .key_by(|(k, _): &(u64, i64)| *k)
    .sum("count", |t| t.1, |t, v| t.1 = v)
    .map("counted", |(k, n)| Ok(Counted(k, n)))
    .sink("out", sink);
    let start = Instant::now();
    let result = env.execute()?;
    Ok((
        result.status,
        start.elapsed().as_secs_f64(),
        result.checkpoints.len(),
    ))
}

/// Runs the benchmark and writes its report to `out`.
pub(crate) fn run(args: &SinksBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.checkpoint_interval.is_zero() {
        bail!("--checkpoint-interval must be more than 0");
    }
    let scratch =
        tempfile::tempdir().context("creating a temp dir for the file and SQLite sinks")?;
    let needs_pg = args.sinks.iter().any(|s| s.starts_with("postgres"));
    let cluster = (needs_pg && args.postgres.is_none()).then(pg_support::PgCluster::start);
    let conninfo = args
        .postgres
        .clone()
        .or_else(|| cluster.as_ref().map(pg_support::PgCluster::conninfo))
        .unwrap_or_default();
    let mut reports = Vec::new();
    let mut print_rate = None;
    for (n, name) in args.sinks.iter().enumerate() {
        let times: CommitTimes = Arc::default();
        let t = format!("bench_{}_{n}", name.replace('-', "_"));
        let timed = |inner| {
            TwoPhaseCommit::new(Timed {
                inner,
                times: times.clone(),
            })
        };
        let (status, seconds, checkpoints) = match name.as_str() {
            "print" => {
                let discard: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(std::io::sink()));
                run_job(args, PrintSink::to_writer(discard))?
            }
            "file" => run_job(args, timed(FileSink::new(scratch.path().join(&t))))?,
            "postgres" | "postgres-insert" => {
                let options = PostgresOptions::new(
                    conninfo.clone(),
                    table(&t, name == "postgres"),
                    format!("cairn-bench-{t}"),
                );
                let sink = PostgresSink::new(options, row)?;
                let factory = TwoPhaseCommit::new(Timed {
                    inner: sink,
                    times: times.clone(),
                });
                run_job(args, factory)?
            }
            "sqlite" | "sqlite-insert" => {
                let options = SqliteOptions::new(
                    scratch.path().join(format!("{t}.db")),
                    table(&t, name == "sqlite"),
                    format!("cairn-bench-{t}"),
                );
                let sink = SqliteSink::new(options, row)?;
                let factory = TwoPhaseCommit::new(Timed {
                    inner: sink,
                    times: times.clone(),
                });
                run_job(args, factory)?
            }
            other => bail!(
                "--sinks: unknown sink {other:?} (print, file, postgres, postgres-insert, sqlite, \
                 sqlite-insert)"
            ),
        };
        let rate = args.records as f64 / seconds;
        if name == "print" {
            print_rate = Some(rate);
        }
        // Per checkpoint, the slowest subtask's commit time.
        let mut per_checkpoint: BTreeMap<u64, f64> = BTreeMap::new();
        for (&(id, _), &ms) in times.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let slot = per_checkpoint.entry(id).or_default();
            *slot = slot.max(ms);
        }
        let mut latencies: Vec<f64> = per_checkpoint.into_values().collect();
        latencies.sort_by(f64::total_cmp);
        reports.push(SinkReport {
            sink: name.clone(),
            status: format!("{status:?}"),
            seconds: (seconds * 1000.0).round() / 1000.0,
            records_per_sec: rate.round(),
            of_print: print_rate.map(|p| (rate / p * 1000.0).round() / 1000.0),
            checkpoints,
            commit_ms_median: quantile(&latencies, 0.5),
            commit_ms_p99: quantile(&latencies, 0.99),
        });
    }
    drop(cluster);
    let report = Report {
        records: args.records,
        keys: args.keys,
        parallelism: args.parallelism,
        checkpoint_interval_ms: args.checkpoint_interval.as_secs_f64() * 1000.0,
        sinks: reports,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "keyed count: {} records, {} keys, parallelism {}, checkpoints every {} ms",
        report.records, report.keys, report.parallelism, report.checkpoint_interval_ms
    )?;
    writeln!(
        out,
        "{:<16} {:>9} {:>8} {:>12} {:>8} {:>6} {:>11} {:>9}",
        "sink", "status", "seconds", "records/s", "of print", "ckpts", "commit p50", "p99 (ms)"
    )?;
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}"));
    for s in &report.sinks {
        writeln!(
            out,
            "{:<16} {:>9} {:>8.2} {:>12} {:>8} {:>6} {:>11} {:>9}",
            s.sink,
            s.status,
            s.seconds,
            s.records_per_sec,
            f(s.of_print),
            s.checkpoints,
            f(s.commit_ms_median),
            f(s.commit_ms_p99)
        )?;
    }
    Ok(())
}
