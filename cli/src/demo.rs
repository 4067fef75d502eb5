//! `cairn demo`: the WordCount failure-and-recovery walk-through, on the
//! embedded defaults (heap state, checkpoints in memory) with no set-up.
//!
//! The story, as the walk-through tells it with Flink and Kafka:
//!
//! 1. A replayable log (a Kafka topic) already holds 25 records; the job
//!    starts reading at offset 25. Checkpoint 1 is taken.
//! 2. `a b a` arrive (offsets 25–27) and are counted; checkpoint 2 is taken.
//! 3. `a c ERROR` arrive (offsets 28–30). `a` and `c` are counted and printed;
//!    `ERROR` makes the job throw. The fixed-delay strategy restarts it (3
//!    attempts): every task restores checkpoint 2 and the source seeks back to
//!    offset 28, so `a` and `c` are replayed — the counts continue from the
//!    checkpoint, `(a,3)` not `(a,4)` (exactly-once state), while the printed
//!    output repeats (at-least-once output) — until `ERROR` throws again.
//! 4. After the third restart the job fails for good: FAILED. Its retained
//!    checkpoint is kept.
//! 5. Recovery: the job is fixed (the poison record filtered out) and started
//!    from the retained checkpoint (Flink's `-s`); the counts continue.
//!
//! The table is built from what the job actually did: the outputs its sink
//! received (tagged with the attempt that wrote them and the log offset of
//! the record that produced them), the checkpoints the job completed, the
//! source offsets stored in the checkpoint, and the job's restart events. The
//! demo only chooses when records arrive and when checkpoints are triggered,
//! so that they fall where the walk-through's table has them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend_fs::FsCheckpointStorage;
use backend_heap::HeapBackendFactory;
use executor::log::{LogSource, LogSourceOptions, OFFSETS_STATE, StartPosition, Topic};
use executor::sink::{Sink, SinkContext, SinkFactory};
use executor::{
    CheckpointConfig, CompletedCheckpointInfo, JobConfig, JobEvent, JobHandle, JobResult,
    JobStatus, RestartStrategyConfig, StreamEnv,
};
use state_core::OperatorStateStore;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, JobId, MemoryCheckpointStorage,
};

use crate::human;
use crate::wordcount::{self, POISON, WordCount, uid};

/// The topic of the demo's log.
const TOPIC: &str = "word";
/// Records already in the log before the demo's job starts (the
/// walk-through's consumer starts at committed offset 25).
const EARLIER_RECORDS: u64 = 25;
/// What arrives before checkpoint 2, and after it.
const BEFORE_CHECKPOINT: [&str; 3] = ["a", "b", "a"];
const AFTER_CHECKPOINT: [&str; 3] = ["a", "c", POISON];
/// Restart attempts of the fixed-delay strategy (the walk-through's
/// `RestartStrategies.fixedDelayRestart(3, 10000)`).
const RESTART_ATTEMPTS: u32 = 3;
/// How long the demo waits for the job to do something before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// `cairn demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the log and the checkpoints in this directory (`<dir>/log`,
    /// `<dir>/checkpoints/word-count/chk-<n>`) instead of a temporary
    /// directory and memory, so they can be inspected afterwards
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Wait between a failure and the restart (the Flink walk-through waits 10 s)
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", default_value = "500ms",
          value_parser = crate::job_args::parse_duration)]
    restart_delay: Duration,
}

/// Tags each output with the job attempt whose sink wrote it: every attempt
/// creates its sinks anew, so the n-th creation belongs to attempt n.
#[derive(Clone, Default)]
struct TaggingSink {
    attempts: Arc<AtomicU32>,
    outputs: Arc<Mutex<Vec<(u32, WordCount)>>>,
}

struct TaggingWriter {
    attempt: u32,
    outputs: Arc<Mutex<Vec<(u32, WordCount)>>>,
}

impl SinkFactory<WordCount> for TaggingSink {
    fn create(&self, _context: SinkContext) -> executor::Result<Box<dyn Sink<WordCount>>> {
        Ok(Box::new(TaggingWriter {
            attempt: self.attempts.fetch_add(1, Ordering::SeqCst),
            outputs: self.outputs.clone(),
        }))
    }
}

impl Sink<WordCount> for TaggingWriter {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> executor::Result<()> {
        Ok(())
    }

    fn write(&mut self, record: WordCount) -> executor::Result<()> {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.attempt, record));
        Ok(())
    }
}

impl TaggingSink {
    fn outputs(&self) -> Vec<(u32, WordCount)> {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `n` outputs were written.
    fn wait_for(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while self.outputs().len() < n {
            if Instant::now() > deadline {
                bail!(
                    "the job wrote {} outputs in {} s, expected {n}",
                    self.outputs().len(),
                    PATIENCE.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// One row of the table: a record read by the job, or a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// The walk-through's record id (offset − 24), empty for a note.
    pub record: String,
    /// The record's value.
    pub data: String,
    /// The output it produced, if any.
    pub output: String,
    /// Offset, checkpoint, restart, replay.
    pub note: String,
}

impl Row {
    fn note(note: impl Into<String>) -> Self {
        Row {
            record: String::new(),
            data: String::new(),
            output: String::new(),
            note: note.into(),
        }
    }
}

/// Where the demo keeps its log and checkpoints.
struct Place {
    log_dir: PathBuf,
    storage: Arc<dyn CheckpointStorage>,
    described: String,
    _temp: Option<tempfile::TempDir>,
}

fn place(args: &DemoArgs, job: &JobId) -> anyhow::Result<Place> {
    match &args.dir {
        Some(dir) => {
            let log_dir = dir.join("log");
            if log_dir.join(TOPIC).exists() {
                bail!(
                    "{} already holds a demo log; pass an empty or new --dir",
                    log_dir.display()
                );
            }
            let checkpoints = dir.join("checkpoints");
            let storage = FsCheckpointStorage::open(&checkpoints, job.clone())
                .with_context(|| format!("--dir {}", dir.display()))?;
            Ok(Place {
                log_dir,
                storage: Arc::new(storage),
                described: format!(
                    "checkpoints in {}",
                    checkpoints.join(job.as_str()).display()
                ),
                _temp: None,
            })
        }
        None => {
            let temp = tempfile::tempdir().context("creating a temporary directory")?;
            Ok(Place {
                log_dir: temp.path().join("log"),
                storage: Arc::new(MemoryCheckpointStorage::default()),
                described: "checkpoints in memory".to_owned(),
                _temp: Some(temp),
            })
        }
    }
}

fn config(job: &JobId, restart_delay: Duration) -> JobConfig {
    let mut config = JobConfig::new(job.clone());
    // The demo triggers its checkpoints itself, where the walk-through's table has
    // them; the periodic trigger is set far out of the way.
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(3600)));
    config.restart = Some(RestartStrategyConfig::FixedDelay {
        attempts: RESTART_ATTEMPTS,
        delay: restart_delay,
    });
    config
}

fn source(log_dir: &Path, bounded: bool) -> LogSource {
    LogSource::new(LogSourceOptions {
        dir: log_dir.to_path_buf(),
        topic: TOPIC.to_owned(),
        bounded,
        start: StartPosition::Offsets(vec![(0, EARLIER_RECORDS)]),
    })
}

/// The offset of partition 0 that the source stored in checkpoint `id`.
fn checkpointed_offset(storage: &dyn CheckpointStorage, id: CheckpointId) -> anyhow::Result<u64> {
    let metadata = storage.read_metadata(id)?;
    let op = metadata
        .operators
        .iter()
        .find(|op| op.operator_id.0 == uid::SOURCE)
        .with_context(|| format!("checkpoint {id} holds no state of {}", uid::SOURCE))?;
    let handles: Vec<_> = op
        .subtasks
        .iter()
        .filter_map(|s| s.operator.clone())
        .collect();
    let store = OperatorStateStore::restore(&handles, storage, 1, 0)?;
    store
        .get_typed::<(u32, u64)>(OFFSETS_STATE)?
        .into_iter()
        .find(|(partition, _)| *partition == 0)
        .map(|(_, offset)| offset)
        .with_context(|| format!("checkpoint {id} holds no offset of partition 0"))
}

fn wait_checkpoint(job: &JobHandle) -> anyhow::Result<CompletedCheckpointInfo> {
    let id = job.trigger_checkpoint()?;
    Ok(job.wait_for_checkpoint(id)?)
}

fn checkpoint_row(info: &CompletedCheckpointInfo) -> Row {
    Row::note(format!(
        "checkpoint {} completed ({})",
        info.id,
        human::size(info.bytes)
    ))
}

/// The rows of one attempt: every record it read from offset `start` up to
/// `end` (exclusive), or up to the record that failed it, with the output
/// each produced. `first_note` annotates the first record (a restore); the
/// poison record gets `failure_note`, or "filtered out" without one.
fn attempt_rows(
    values: &BTreeMap<u64, String>,
    outputs: &[WordCount],
    (start, end): (u64, u64),
    first_note: Option<String>,
    failure_note: Option<&str>,
) -> Vec<Row> {
    let by_offset: BTreeMap<u64, &WordCount> = outputs.iter().map(|o| (o.offset, o)).collect();
    let mut rows = Vec::new();
    for (&offset, value) in values.range(start..end) {
        let mut note = match (&first_note, rows.is_empty()) {
            (Some(first), true) => format!("{first} to offset {offset}"),
            _ => format!("offset {offset}"),
        };
        let is_poison = value == POISON;
        if is_poison {
            note = format!("{note}: {}", failure_note.unwrap_or("filtered out"));
        }
        rows.push(Row {
            record: (offset + 1 - EARLIER_RECORDS).to_string(),
            data: value.clone(),
            output: by_offset
                .get(&offset)
                .map(|o| o.to_string())
                .unwrap_or_default(),
            note,
        });
        if is_poison && failure_note.is_some() {
            break;
        }
    }
    rows
}

/// What the demo found; the text output is rendered from it.
#[derive(Debug)]
pub(crate) struct DemoReport {
    /// The failing run's table.
    pub failing: Vec<Row>,
    /// The failing run's result.
    pub failing_status: JobStatus,
    /// Its restarts.
    pub restarts: u32,
    /// The error that failed it for good.
    pub failure: Option<String>,
    /// The retained checkpoint the recovery restored.
    pub recovered_from: CheckpointId,
    /// The recovery run's table.
    pub recovery: Vec<Row>,
    /// The recovery run's status.
    pub recovery_status: JobStatus,
    /// Final counts by word after the recovery.
    pub counts: BTreeMap<String, i64>,
}

/// Runs both jobs and builds the report.
fn run_demo(args: &DemoArgs, out: &mut dyn Write) -> anyhow::Result<DemoReport> {
    let job_id = JobId::new("word-count")?;
    let place = place(args, &job_id)?;
    let topic = Topic::create(&place.log_dir, TOPIC, 1)?;
    let mut writer = topic.writer()?;
    let mut values = BTreeMap::new();
    for i in 0..EARLIER_RECORDS {
        writer.append(None, format!("earlier-{i}").as_bytes(), Some(0))?;
    }
    writeln!(
        out,
        "cairn demo: WordCount with a poison record, restarts, and recovery\n\
         job {job_id}: {} -> {} -> keyBy(word) -> {} -> {} -> {}\n\
         heap state, {}; restart strategy fixed-delay ({RESTART_ATTEMPTS} attempts, {:?} apart)\n\
         log {}/{TOPIC}: {EARLIER_RECORDS} earlier records; the job starts at offset {EARLIER_RECORDS}\n",
        uid::SOURCE,
        uid::MAP,
        uid::SUM,
        uid::CHECK,
        uid::SINK,
        place.described,
        args.restart_delay,
        place.log_dir.display(),
    )?;

    // The failing run.
    let sink = TaggingSink::default();
    let env = StreamEnv::new(
        config(&job_id, args.restart_delay),
        HeapBackendFactory::default(),
        place.storage.clone(),
    );
    wordcount::build(&env, source(&place.log_dir, false), false, sink.clone());
    let job = env.start()?;
    let events = job.events();
    let mut rows = Vec::new();
    let first = wait_checkpoint(&job)?;
    rows.push(checkpoint_row(&first));
    for value in BEFORE_CHECKPOINT {
        let (_, offset) = writer.append(None, value.as_bytes(), Some(0))?;
        values.insert(offset, value.to_owned());
    }
    sink.wait_for(BEFORE_CHECKPOINT.len())?;
    let second = wait_checkpoint(&job)?;
    for value in AFTER_CHECKPOINT {
        let (_, offset) = writer.append(None, value.as_bytes(), Some(0))?;
        values.insert(offset, value.to_owned());
    }
    let result: JobResult = job.wait()?;
    let events: Vec<JobEvent> = events.try_iter().collect();

    let outputs = sink.outputs();
    let of_attempt = |attempt: u32| -> Vec<WordCount> {
        outputs
            .iter()
            .filter(|(a, _)| *a == attempt)
            .map(|(_, o)| o.clone())
            .collect()
    };
    let restarts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Restarting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    let restored: Vec<CheckpointId> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Restored { checkpoint } => Some(*checkpoint),
            _ => None,
        })
        .collect();
    let attempts = result.restarts + 1;
    let failure_note = |attempt: u32| -> String {
        match restarts.get(attempt as usize) {
            Some(n) => format!("job fails, restart {n} of {RESTART_ATTEMPTS}"),
            None => "job fails, restart attempts exhausted: FAILED".to_owned(),
        }
    };

    // Attempt 0: records before checkpoint 2, the checkpoint, then the rest.
    let attempt0 = of_attempt(0);
    let after_start = EARLIER_RECORDS + BEFORE_CHECKPOINT.len() as u64;
    rows.extend(attempt_rows(
        &values,
        &attempt0,
        (0, after_start),
        None,
        None,
    ));
    rows.push(checkpoint_row(&second));
    rows.extend(attempt_rows(
        &values,
        &attempt0,
        (after_start, u64::MAX),
        None,
        Some(&failure_note(0)),
    ));
    for attempt in 1..attempts {
        let checkpoint = restored
            .get(attempt as usize - 1)
            .copied()
            .context("a restarted attempt reported no restored checkpoint")?;
        let offset = checkpointed_offset(place.storage.as_ref(), checkpoint)?;
        rows.extend(attempt_rows(
            &values,
            &of_attempt(attempt),
            (offset, u64::MAX),
            Some(format!("restored checkpoint {checkpoint}, seek")),
            Some(&failure_note(attempt)),
        ));
    }

    // Recovery: the fixed job resumes from the retained checkpoint.
    let retained = place.storage.list_checkpoints()?;
    let recovered_from = *retained
        .last()
        .context("the failed job kept no checkpoint to recover from")?;
    let metadata: CheckpointMetadata = place.storage.read_metadata(recovered_from)?;
    let offset = checkpointed_offset(place.storage.as_ref(), recovered_from)?;
    let recovery_sink = TaggingSink::default();
    let mut recovery_config = config(&job_id, args.restart_delay);
    recovery_config.restart = Some(RestartStrategyConfig::None);
    let env = StreamEnv::new(
        recovery_config,
        HeapBackendFactory::default(),
        place.storage.clone(),
    )
    .restore_from(metadata);
    wordcount::build(
        &env,
        source(&place.log_dir, true),
        true,
        recovery_sink.clone(),
    );
    let recovery_result = env.execute()?;
    let recovered: Vec<WordCount> = recovery_sink
        .outputs()
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    let recovery = attempt_rows(
        &values,
        &recovered,
        (offset, u64::MAX),
        Some(format!("restored checkpoint {recovered_from}, seek")),
        None,
    );
    let mut counts = BTreeMap::new();
    for o in attempt0
        .iter()
        .filter(|o| o.offset < after_start)
        .chain(&recovered)
    {
        counts.insert(o.word.clone(), o.count);
    }
    Ok(DemoReport {
        failing: rows,
        failing_status: result.status,
        restarts: result.restarts,
        failure: result.failure,
        recovered_from,
        recovery,
        recovery_status: recovery_result.status,
        counts,
    })
}

fn print_table(out: &mut dyn Write, rows: &[Row]) -> std::io::Result<()> {
    let header = Row {
        record: "record".into(),
        data: "data".into(),
        output: "output".into(),
        note: "note".into(),
    };
    let width = |f: fn(&Row) -> &str| {
        rows.iter()
            .chain([&header])
            .map(|r| f(r).len())
            .max()
            .unwrap_or(0)
    };
    let (w1, w2, w3) = (
        width(|r| &r.record),
        width(|r| &r.data),
        width(|r| &r.output),
    );
    for row in [&header].into_iter().chain(rows) {
        writeln!(
            out,
            "{:>w1$}  {:<w2$}  {:<w3$}  {}",
            row.record, row.data, row.output, row.note
        )?;
    }
    Ok(())
}

/// Runs the demo and prints the walk-through's table.
pub(crate) fn run(args: &DemoArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let report = run_demo(args, out)?;
    print_table(out, &report.failing)?;
    writeln!(
        out,
        "\njob {} after {} restarts: {}\n",
        report.failing_status,
        report.restarts,
        report.failure.as_deref().unwrap_or("no failure")
    )?;
    writeln!(
        out,
        "recovery: the poison record is filtered out and the job resumes from retained \
         checkpoint {} (Flink's `-s`):",
        report.recovered_from
    )?;
    print_table(out, &report.recovery)?;
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(w, n)| format!("({w},{n})"))
        .collect();
    writeln!(
        out,
        "\njob {}; counts {}\n\
         The state is exactly-once: every restart counted from checkpoint {} again, so `a` is 3, \
         not 3 plus the replays.\nThe printed output is at-least-once: (a,3) and (c,1) were \
         printed again on every replay: sinks without two-phase commit write again what they wrote since the checkpoint.",
        report.recovery_status,
        counts.join(" "),
        report.recovered_from
    )?;
    let ok =
        report.failing_status == JobStatus::Failed && report.recovery_status == JobStatus::Finished;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
