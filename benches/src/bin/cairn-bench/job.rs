//! `cairn-bench job`: the keyed-count job on the executor, with an optional
//! injected failure, measured end to end.
//!
//! The job: a generated source (record `i` is the number `i`; subtask `s`
//! of `p` emits `s, s + p, …`; its position is checkpointed as operator
//! state) → `to-key` maps `i` to (key index `splitmix64(i) mod K`, 1) and
//! raises the injected failure → `key_by` the key `key-%07d` → `count`
//! (`sum`, keyed value state in the chosen backend) → `final-counts`, a sink
//! that keeps the last count written per key.
//!
//! After the job, the counts the sink holds are compared with the counts
//! computed directly from the generator: `exact` is true only when the job
//! FINISHED, every key's count equals its fault-free count, and the counts
//! sum to the number of records. The sink's last value per key is the final
//! state: after a restore every key with records after the checkpoint is
//! written again, and the others keep the value they had at the checkpoint.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_benches::{KeyName, expected_counts, record_key};
use cairn_cli::backend::{self, BackendVisitor, LocalState};
use cairn_cli::human;
use cairn_cli::job_args::{BackendKind, parse_duration};
use executor::sink::{Sink, SinkContext};
use executor::source::{Source, SourceContext, SourcePoll};
use executor::{
    CheckpointConfig, JobConfig, JobEvent, JobResult, JobStatus, RestartStrategyConfig, StreamEnv,
};
use serde::Serialize;
use state_core::OperatorStateMode;
use state_core::OperatorStateStore;
use state_core::{BackendFactory, CheckpointStorage, JobId, MemoryCheckpointStorage, SnapshotMode};

use crate::proc_stats::{IoCounters, peak_rss_bytes};
use crate::report::{CheckpointReport, ms, opt, progress};
use crate::scratch::{Scratch, check_interrupted, interrupted};

/// The fields of `cairn-bench job --json`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): one object: backend, incremental, local_recovery, records, keys,
parallelism, checkpoint_interval_ms, fail_at (record index or null), status (FINISHED...),
restarts, seconds, records_per_sec (records / seconds; replayed records are
not counted again), checkpoints [{id, full_bytes, written_bytes, sync_ms,
async_ms, duration_ms, discard_ms, storage_bytes}] (sync/async/discard/storage
are null: the job does not report them), recovery_ms (injected failure raised -> first record
out of the restarted count; null without --fail-at), recovery_phases_ms
{task_failed, restarting, restore_started, processing} (null without
--fail-at), restored_from (checkpoint id, null if none completed before), exact, counted (sum of the final counts),
wrong_keys, peak_rss_bytes, io_read_bytes, io_write_bytes (null where
/proc is missing), dir (null unless --keep). Sizes in bytes, times in ms.";

/// Options of `cairn-bench job`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct JobBenchArgs {
    /// Records the source generates
    #[arg(long, allow_hyphen_values = true, value_name = "N", default_value_t = 10_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Distinct keys (`key-0000000`…); record i has key splitmix64(i) mod K
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    pub keys: u64,
    /// Subtasks of the source and of the count
    #[arg(long, allow_hyphen_values = true, value_name = "P", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallelism: u32,
    /// Keyed-state backend (heap: checkpoints in memory; fs: checkpoints in files)
    #[arg(long, value_enum, default_value_t = BackendKind::Heap)]
    pub backend: BackendKind,
    /// Incremental checkpoints where the backend supports them
    #[arg(long)]
    pub incremental: bool,
    /// Keep local checkpoint copies and recover from them (rocks: on local
    /// disk in the run's directory; heap and fs: in memory)
    #[arg(long)]
    pub local_recovery: bool,
    /// Bytes of the rocks backend's value cache per subtask (0: none;
    /// default: the backend's, 64 MiB)
    #[arg(long, allow_hyphen_values = true, value_name = "BYTES")]
    pub rocks_value_cache: Option<usize>,
    /// The rocks backend's partitioned index and filter blocks (default:
    /// true; false for Flink's default, whole index and filter blocks)
    #[arg(long, value_name = "BOOL")]
    pub rocks_partitioned_index_filters: Option<bool>,
    /// Time between checkpoints (500ms, 2s, 1m)
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Inject one failure when record i reaches the job (restart at once, from the latest checkpoint)
    #[arg(long, value_name = "i")]
    pub fail_at: Option<u64>,
    /// Where checkpoint files go (fs, rocks); default: a temp directory
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the checkpoint data after the run (it is removed by default)
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `cairn-bench job` reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobReport {
    backend: &'static str,
    incremental: bool,
    local_recovery: bool,
    records: u64,
    keys: u64,
    parallelism: u32,
    checkpoint_interval_ms: f64,
    fail_at: Option<u64>,
    status: String,
    restarts: u32,
    seconds: f64,
    records_per_sec: f64,
    checkpoints: Vec<CheckpointReport>,
    recovery_ms: Option<f64>,
    recovery_phases_ms: Option<RecoveryPhases>,
    restored_from: Option<u64>,
    exact: bool,
    counted: u64,
    wrong_keys: u64,
    peak_rss_bytes: Option<u64>,
    io_read_bytes: Option<u64>,
    io_write_bytes: Option<u64>,
    dir: Option<String>,
}

/// When the job reported each step of its recovery, in ms after the
/// injected failure (as the harness received the events).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecoveryPhases {
    /// The task failure was reported (`TaskFailed`).
    task_failed: Option<f64>,
    /// Every task of the failed attempt ended; restart decided (`Restarting`).
    restarting: Option<f64>,
    /// The new attempt started restoring (`Restored`).
    restore_started: Option<f64>,
    /// The first record left the count again (= `recovery_ms`).
    processing: Option<f64>,
}

/// Runs `cairn-bench job`.
pub(crate) fn run(args: &JobBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(at) = args.fail_at
        && at >= args.records
    {
        anyhow::bail!(
            "--fail-at {at} must be a record index below --records {}",
            args.records
        );
    }
    if args.checkpoint_interval.is_zero() {
        anyhow::bail!("--checkpoint-interval must be positive");
    }
    let report = measure(args)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        write_human(&report, out)?;
    }
    Ok(())
}

fn measure(args: &JobBenchArgs) -> anyhow::Result<JobReport> {
    let job_id = JobId::new("bench-job").map_err(human::anyhow)?;
    let scratch = match args.backend {
        BackendKind::Heap => None,
        _ => Some(Scratch::create(
            args.dir.as_deref(),
            "cairn-bench-job",
            args.keep,
        )?),
    };
    let storage: Arc<dyn CheckpointStorage> = match &scratch {
        // Heap state with its checkpoints in memory (Flink's
        // HashMapStateBackend with JobManager storage), without the 5 MiB bound.
        None => Arc::new(MemoryCheckpointStorage::new(u64::MAX)),
        Some(scratch) => backend::storage_for(args.backend, Some(scratch.path()), &job_id)?,
    };
    let dir = scratch
        .as_ref()
        .filter(|s| s.kept())
        .map(|s| s.path().display().to_string());
    // Rocks works (databases, local checkpoint copies) inside the run's
    // directory, so it goes with it.
    let local = LocalState {
        dir: scratch.as_ref().map(|s| s.path().join("local")),
        recovery: args.local_recovery,
        rocks_value_cache: args.rocks_value_cache,
        rocks_partitioned_index_filters: args.rocks_partitioned_index_filters,
    };
    let visitor = JobVisitor {
        args,
        job_id: job_id.clone(),
        dir,
    };
    backend::with_backend_local(args.backend, storage, &local, &job_id, visitor)
}

struct JobVisitor<'a> {
    args: &'a JobBenchArgs,
    job_id: JobId,
    dir: Option<String>,
}

/// When the injected failure was raised and when the first record of the
/// restarted attempt left the count.
#[derive(Debug, Default)]
struct RecoveryProbe {
    failed: OnceLock<Instant>,
    recovered: OnceLock<Instant>,
}

impl BackendVisitor for JobVisitor<'_> {
    type Output = JobReport;

    fn visit<F: BackendFactory + 'static>(
        self,
        factory: F,
        storage: Arc<dyn CheckpointStorage>,
    ) -> anyhow::Result<JobReport> {
        let args = self.args;
        let mut config = JobConfig::new(self.job_id);
        config.parallelism = args.parallelism;
        config.checkpointing = Some(CheckpointConfig::every(args.checkpoint_interval));
        config.restart = Some(match args.fail_at {
            // Restart at once: recovery_ms measures the restore, not a delay.
            Some(_) => RestartStrategyConfig::FixedDelay {
                attempts: 1,
                delay: Duration::ZERO,
            },
            None => RestartStrategyConfig::None,
        });
        let mode = if args.incremental {
            SnapshotMode::Incremental
        } else {
            SnapshotMode::Full
        };
        let env = StreamEnv::new(config, factory, storage).with_snapshot_mode(mode);

        let keys = args.keys;
        let records = args.records;
        let fail_at = args.fail_at;
        let counts: Arc<Vec<AtomicU64>> = Arc::new(
            (0..usize::try_from(keys).context("--keys is too large for this machine")?)
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        let probe = Arc::new(RecoveryProbe::default());
        let map_probe = probe.clone();
        let sink_counts = counts.clone();
        let sink_probe = probe.clone();
        env.source("generator", move |ctx: SourceContext| {
            Ok(Box::new(Generator {
                records,
                subtask: ctx.subtask,
                parallelism: ctx.parallelism,
                position: 0,
            }) as Box<dyn Source<u64>>)
        })
        .map("to-key", move |i: u64| {
            if Some(i) == fail_at && map_probe.failed.set(Instant::now()).is_ok() {
                return Err(format!("injected failure at record {i}").into());
            }
            Ok((record_key(i, keys), 1i64))
        })
        .key_by(|(k, _): &(u64, i64)| KeyName(*k))
        .sum("count", |t| t.1, |t, v| t.1 = v)
        .sink("final-counts", move |_ctx: SinkContext| {
            Ok(Box::new(LastCounts {
                counts: sink_counts.clone(),
                // A sink created after the failure belongs to the restarted attempt.
                probe: sink_probe
                    .failed
                    .get()
                    .is_some()
                    .then(|| sink_probe.clone()),
            }) as Box<dyn Sink<(u64, i64)>>)
        });

        let io_before = IoCounters::now();
        let bar = progress(!args.json, records, "records");
        let start = Instant::now();
        let handle = env.start()?;
        let events = handle.events();
        let mut restored_from = None;
        let mut cancelled = false;
        let (mut task_failed, mut restarting, mut restore_started) = (None, None, None);
        loop {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(JobEvent::Restored { checkpoint }) => {
                    restored_from = Some(checkpoint.get());
                    restore_started.get_or_insert_with(Instant::now);
                }
                Ok(JobEvent::TaskFailed { .. }) => {
                    task_failed.get_or_insert_with(Instant::now);
                }
                Ok(JobEvent::Restarting { .. }) => {
                    restarting.get_or_insert_with(Instant::now);
                }
                Ok(_) => {}
                Err(e) if e.is_disconnected() => break,
                Err(_) => {}
            }
            if handle.status().is_terminal() {
                break;
            }
            if interrupted() && !cancelled {
                handle.cancel();
                cancelled = true;
            }
            if !bar.is_hidden() {
                let done = handle
                    .metrics()
                    .operators
                    .iter()
                    .find(|o| o.uid == "count")
                    .map_or(0, |o| o.records_in);
                bar.set_position(done.min(records));
            }
        }
        let result: JobResult = handle.wait()?;
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        for event in events.try_iter() {
            if let JobEvent::Restored { checkpoint } = event {
                restored_from = Some(checkpoint.get());
            }
        }
        check_interrupted()?;
        let io = IoCounters::now()
            .zip(io_before)
            .map(|(now, before)| now.since(before));

        let expected = expected_counts(records, keys);
        let mut counted = 0u64;
        let mut wrong_keys = 0u64;
        for (got, want) in counts.iter().zip(&expected) {
            let got = got.load(Ordering::Relaxed);
            counted = counted.saturating_add(got);
            wrong_keys += u64::from(got != *want);
        }
        let exact = result.status == JobStatus::Finished && wrong_keys == 0 && counted == records;
        let recovery_ms = match (probe.failed.get(), probe.recovered.get()) {
            (Some(failed), Some(recovered)) => {
                Some(ms(recovered.saturating_duration_since(*failed)))
            }
            _ => None,
        };
        let recovery_phases_ms = probe.failed.get().map(|failed| {
            let after = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(*failed)));
            RecoveryPhases {
                task_failed: after(task_failed),
                restarting: after(restarting),
                restore_started: after(restore_started),
                processing: recovery_ms,
            }
        });
        let seconds = elapsed.as_secs_f64();
        Ok(JobReport {
            backend: backend::name(args.backend),
            incremental: args.incremental,
            local_recovery: args.local_recovery,
            records,
            keys,
            parallelism: args.parallelism,
            checkpoint_interval_ms: ms(args.checkpoint_interval),
            fail_at,
            status: result.status.to_string(),
            restarts: result.restarts,
            seconds: (seconds * 1000.0).round() / 1000.0,
            records_per_sec: (records as f64 / seconds.max(1e-9)).round(),
            checkpoints: result
                .checkpoints
                .iter()
                .map(|c| CheckpointReport {
                    id: c.id.get(),
                    full_bytes: c.state_size,
                    written_bytes: c.bytes,
                    sync_ms: None,
                    async_ms: None,
                    duration_ms: Some(ms(c.duration)),
                    discard_ms: None,
                    storage_bytes: None,
                    rocks: None,
                })
                .collect(),
            recovery_ms,
            recovery_phases_ms,
            restored_from,
            exact,
            counted,
            wrong_keys,
            peak_rss_bytes: peak_rss_bytes(),
            io_read_bytes: io.map(|io| io.read_bytes),
            io_write_bytes: io.map(|io| io.write_bytes),
            dir: self.dir,
        })
    }
}

/// Generates records `subtask, subtask + parallelism, …` below `records`;
/// its position (records emitted) is checkpointed.
pub(super) struct Generator {
    records: u64,
    subtask: u32,
    parallelism: u32,
    position: u64,
}

impl Generator {
    /// The generator of `records` records (its subtask is set at `open`).
    pub(super) fn new(records: u64) -> Self {
        Generator {
            records,
            subtask: 0,
            parallelism: 1,
            position: 0,
        }
    }
}

impl Source<u64> for Generator {
    fn open(
        &mut self,
        context: SourceContext,
        restored: Option<&OperatorStateStore>,
    ) -> executor::Result<()> {
        self.subtask = context.subtask;
        self.parallelism = context.parallelism;
        if let Some(state) = restored {
            let positions: Vec<(u32, u64)> = state.get_typed("position")?;
            if let Some((_, p)) = positions.iter().find(|(s, _)| *s == context.subtask) {
                self.position = *p;
            }
        }
        Ok(())
    }

    fn poll_next(&mut self) -> executor::Result<SourcePoll<u64>> {
        let index = self
            .position
            .saturating_mul(u64::from(self.parallelism))
            .saturating_add(u64::from(self.subtask));
        if index >= self.records {
            return Ok(SourcePoll::End);
        }
        self.position += 1;
        Ok(SourcePoll::Record(index))
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> executor::Result<()> {
        state.register("position", OperatorStateMode::Split)?;
        state.update_typed("position", &[(self.subtask, self.position)])?;
        Ok(())
    }
}

/// Keeps the last count written per key (shared by every subtask and attempt).
struct LastCounts {
    counts: Arc<Vec<AtomicU64>>,
    /// Set in the attempt after the injected failure, until its first record.
    probe: Option<Arc<RecoveryProbe>>,
}

impl Sink<(u64, i64)> for LastCounts {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> executor::Result<()> {
        Ok(())
    }

    fn write(&mut self, (key, count): (u64, i64)) -> executor::Result<()> {
        if let Some(probe) = self.probe.take() {
            let _ = probe.recovered.set(Instant::now());
        }
        let slot = usize::try_from(key).ok().and_then(|k| self.counts.get(k));
        if let Some(slot) = slot {
            slot.store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(())
    }
}

fn write_human(r: &JobReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "keyed count: {} records, {} keys, parallelism {}, backend {}{}{}",
        r.records,
        r.keys,
        r.parallelism,
        r.backend,
        if r.incremental { " (incremental)" } else { "" },
        if r.local_recovery {
            " (local recovery)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "status {} after {:.3} s: {:.0} records/s, {} restart(s)",
        r.status, r.seconds, r.records_per_sec, r.restarts
    )?;
    writeln!(out, "checkpoints: {}", r.checkpoints.len())?;
    for c in &r.checkpoints {
        writeln!(
            out,
            "  chk-{:<4} full {:>10}  written {:>10}  {} ms",
            c.id,
            human::size(c.full_bytes),
            human::size(c.written_bytes),
            opt(c.duration_ms)
        )?;
    }
    if let Some(at) = r.fail_at {
        writeln!(
            out,
            "failure injected at record {at}; restored from checkpoint {}; processing again after {} ms",
            opt(r.restored_from),
            opt(r.recovery_ms)
        )?;
    }
    writeln!(
        out,
        "counts: {} (sum {} of {}, {} wrong key(s))",
        if r.exact { "exact" } else { "NOT exact" },
        r.counted,
        r.records,
        r.wrong_keys
    )?;
    writeln!(
        out,
        "peak RSS: {}",
        r.peak_rss_bytes.map_or("-".into(), human::size)
    )?;
    if let Some(dir) = &r.dir {
        writeln!(out, "checkpoint data kept in {dir}")?;
    }
    Ok(())
}
