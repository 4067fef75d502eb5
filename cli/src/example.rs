//! `cairn example`: a small, real word count that checkpoints to the
//! filesystem and restores, to show what cairn does so far.
//!
//! The job (id `example`) counts the words of a built-in text. A `source`
//! operator keeps its line offset as operator state; a `wordcount` operator
//! with 2 subtasks keeps one `ValueState<u64>` per word in a heap backend,
//! each word routed to the subtask that owns its key group (max parallelism
//! 128). Every K lines (K = lines / `--checkpoints`, rounded up) it takes a
//! full checkpoint into `FsCheckpointStorage` under `<dir>/example` through a
//! `CompletedCheckpointStore` retaining `--retained` checkpoints. At the end
//! it restores the newest intact checkpoint into fresh backends and checks
//! that every restored count, and the source offset, equal their values at
//! that checkpoint.
//!
//! JSON output (`--json`), stable field names:
//!
//! ```text
//! {
//!   "job_dir": "/tmp/ckpt/example", "lines": 28, "words": 280,
//!   "checkpoints": [{"id": 1, "after_line": 10, "state_size": 1234,
//!                    "checkpointed_size": 1234, "subsumed": []}],
//!   "retained": [2, 3],
//!   "restored": {"checkpoint_id": 3, "words": 120, "source_offset": 28, "counts_match": true},
//!   "top_words": [{"word": "the", "count": 40}],
//!   "commands": ["cairn checkpoints list /tmp/ckpt/example", ...]
//! }
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use serde::Serialize;
use state_core::OperatorStateStore;
use state_core::typed::{KeyedState, ValueState, ValueStateDescriptor};
use state_core::{
    BackendContext, CheckpointId, CheckpointMetadata, CheckpointStorage, Checkpointable, Clock,
    JobId, MaxParallelism, OperatorId, SnapshotKind, SnapshotMode, SystemClock, handles_for_range,
};
use state_core::{CompletedCheckpointStore, ExternalizedCheckpointCleanup, select_for_restore};
use state_core::{OperatorSnapshot, OperatorStateMode, SubtaskSnapshot};

use crate::human;

/// The `--json` documentation shown by `cairn example --help`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): {\"job_dir\": str, \"lines\": int, \"words\": int,
  \"checkpoints\": [{\"id\": int, \"after_line\": int, \"state_size\": int,
    \"checkpointed_size\": int, \"subsumed\": [int]}],
  \"retained\": [int], \"restored\": {\"checkpoint_id\": int, \"words\": int,
    \"source_offset\": int, \"counts_match\": bool},
  \"top_words\": [{\"word\": str, \"count\": int}], \"commands\": [str]}
Exit status 0, or 2 on bad options or if <dir>/example already holds checkpoints (use --force).";

/// The job id, and so the job directory's name under `--dir`.
const JOB_ID: &str = "example";
const MAX_PARALLELISM: u32 = 128;
const PARALLELISM: u32 = 2;
const SOURCE: &str = "source";
const WORDCOUNT: &str = "wordcount";
const OFFSETS: &str = "offsets";
const TEXT: &str = include_str!("example/words.txt");

/// What `cairn example` was asked to do.
#[derive(Debug)]
pub(crate) struct Options {
    /// The checkpoint base directory (the job directory is `<base>/example`).
    pub base_dir: PathBuf,
    /// How many checkpoints to take.
    pub checkpoints: usize,
    /// How many completed checkpoints to retain.
    pub retained: usize,
    /// Delete an existing `<base>/example` first.
    pub force: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    job_dir: String,
    lines: usize,
    words: u64,
    checkpoints: Vec<CheckpointReport>,
    retained: Vec<u64>,
    restored: RestoreReport,
    top_words: Vec<WordCount>,
    commands: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CheckpointReport {
    id: u64,
    after_line: usize,
    state_size: u64,
    checkpointed_size: u64,
    subsumed: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct RestoreReport {
    checkpoint_id: u64,
    words: usize,
    source_offset: u64,
    counts_match: bool,
}

#[derive(Debug, Serialize)]
struct WordCount {
    word: String,
    count: u64,
}

/// One subtask of the `wordcount` operator.
struct Subtask {
    state: KeyedState<HeapBackend>,
    count: ValueState<u64>,
}

/// Runs `cairn example`.
pub(crate) fn run(options: &Options, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let lines: Vec<&str> = TEXT.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        (1..=lines.len()).contains(&options.checkpoints),
        "--checkpoints must be between 1 and {} (the lines of the text), got {}",
        lines.len(),
        options.checkpoints
    );
    ensure!(
        options.retained >= 1,
        "--retained must be at least 1, got 0"
    );
    let job_dir = options.base_dir.join(JOB_ID);
    prepare_job_dir(&job_dir, options.force)?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let job = JobId::new(JOB_ID).map_err(human::anyhow)?;
    let storage =
        Arc::new(FsCheckpointStorage::open(&options.base_dir, job.clone()).map_err(human::anyhow)?);
    let mut store = CompletedCheckpointStore::new(
        storage.clone(),
        options.retained,
        ExternalizedCheckpointCleanup::RetainOnCancellation,
    )
    .map_err(human::anyhow)?;
    let max_parallelism = MaxParallelism::new(MAX_PARALLELISM).map_err(human::anyhow)?;

    let mut subtasks = (0..PARALLELISM)
        .map(|i| new_subtask(i, max_parallelism, &clock))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut source = OperatorStateStore::new();
    source
        .set_stream_name("source-0-operator")
        .map_err(human::anyhow)?;
    source
        .register(OFFSETS, OperatorStateMode::Split)
        .map_err(human::anyhow)?;

    let per_checkpoint = lines.len().div_ceil(options.checkpoints);
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut at_checkpoint: HashMap<CheckpointId, (HashMap<String, u64>, u64)> = HashMap::new();
    let mut reports = Vec::new();
    let mut words = 0u64;
    let mut key = Vec::new();
    for (n, chunk) in lines.chunks(per_checkpoint).enumerate() {
        for line in chunk {
            for word in line.split_whitespace() {
                key.clear();
                key = postcard::to_extend(word, key).context("encoding a word")?;
                let kg = max_parallelism.key_group_of(&key);
                let owner = max_parallelism.subtask_for_key_group(PARALLELISM, kg);
                let sub = subtasks
                    .get_mut(owner as usize)
                    .context("a key group routed to a missing subtask")?;
                sub.state
                    .set_current_key_bytes(&key)
                    .map_err(human::anyhow)?;
                let c = sub.count.value(&mut sub.state).map_err(human::anyhow)?;
                let c = c.unwrap_or(0) + 1;
                sub.count
                    .update(&mut sub.state, &c)
                    .map_err(human::anyhow)?;
                *counts.entry(word.to_owned()).or_default() += 1;
                words += 1;
            }
        }
        let after_line = (n * per_checkpoint + chunk.len()).min(lines.len());
        source
            .update_typed(OFFSETS, &[after_line as u64])
            .map_err(human::anyhow)?;
        let id = CheckpointId(n as u64 + 1);
        let metadata = checkpoint(
            id,
            &job,
            storage.as_ref(),
            &mut subtasks,
            &source,
            clock.as_ref(),
        );
        let metadata = match metadata {
            Ok(m) => m,
            Err(err) => {
                // Remove what the failed checkpoint wrote (best effort).
                let _ = store.abort(id, &[]);
                return Err(err.context(format!("checkpoint {id} failed")));
            }
        };
        let state_size = metadata.state_size();
        let checkpointed_size = metadata.checkpointed_size();
        let subsumed = store.complete(metadata).map_err(human::anyhow)?;
        for s in &subsumed {
            at_checkpoint.remove(s);
        }
        at_checkpoint.insert(id, (counts.clone(), after_line as u64));
        reports.push(CheckpointReport {
            id: id.get(),
            after_line,
            state_size,
            checkpointed_size,
            subsumed: subsumed.iter().map(|s| s.get()).collect(),
        });
    }
    let retained: Vec<u64> = store
        .retained()
        .iter()
        .map(|m| m.checkpoint_id.get())
        .collect();

    let restored = restore(storage.as_ref(), max_parallelism, &clock)?;
    let Some((expected, expected_offset)) = at_checkpoint.get(&restored.checkpoint) else {
        bail!(
            "restored checkpoint {} is not one this run retained",
            restored.checkpoint
        );
    };
    if &restored.counts != expected {
        let differing = expected
            .iter()
            .filter(|(w, c)| restored.counts.get(*w) != Some(c))
            .map(|(w, _)| w.as_str())
            .chain(
                restored
                    .counts
                    .keys()
                    .filter(|w| !expected.contains_key(*w))
                    .map(String::as_str),
            )
            .take(5)
            .collect::<Vec<_>>();
        bail!(
            "restored counts differ from the counts at checkpoint {} (for example: {})",
            restored.checkpoint,
            differing.join(", ")
        );
    }
    ensure!(
        restored.source_offset == *expected_offset,
        "restored source offset {} differs from {} at checkpoint {}",
        restored.source_offset,
        expected_offset,
        restored.checkpoint
    );

    let mut top: Vec<WordCount> = restored
        .counts
        .iter()
        .map(|(w, c)| WordCount {
            word: w.clone(),
            count: *c,
        })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    top.truncate(8);
    let job_dir_shown = storage.job_dir().display().to_string();
    let newest = retained
        .last()
        .copied()
        .unwrap_or(restored.checkpoint.get());
    let report = Report {
        commands: vec![
            format!("cairn checkpoints list {job_dir_shown}"),
            format!(
                "cairn checkpoints inspect {}",
                storage.checkpoint_dir(CheckpointId(newest)).display()
            ),
            format!("cairn checkpoints verify {job_dir_shown}"),
        ],
        job_dir: job_dir_shown,
        lines: lines.len(),
        words,
        checkpoints: reports,
        retained,
        restored: RestoreReport {
            checkpoint_id: restored.checkpoint.get(),
            words: restored.counts.len(),
            source_offset: restored.source_offset,
            counts_match: true,
        },
        top_words: top,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print(&report, per_checkpoint, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a job directory that already holds checkpoints, unless `force`,
/// which deletes it.
fn prepare_job_dir(job_dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(job_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if job_dir.is_file() => {
            bail!("{} is a file, not a directory ({e})", job_dir.display())
        }
        Err(e) => bail!("cannot read {}: {e}", job_dir.display()),
    };
    let mut chk: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    if chk.is_empty() {
        return Ok(());
    }
    if !force {
        chk.sort_by_key(|n| CheckpointId::from_dir_name(n).map(|id| id.get()));
        bail!(
            "{} already holds checkpoints ({}); pass --force to delete it first",
            job_dir.display(),
            chk.join(", ")
        );
    }
    std::fs::remove_dir_all(job_dir)
        .with_context(|| format!("cannot delete {}", job_dir.display()))?;
    tracing::info!(job_dir = %job_dir.display(), "deleted the previous example job directory");
    Ok(())
}

fn context(
    subtask: u32,
    max_parallelism: MaxParallelism,
    clock: &Arc<dyn Clock>,
) -> BackendContext {
    BackendContext {
        operator_id: OperatorId(WORDCOUNT.to_owned()),
        subtask,
        parallelism: PARALLELISM,
        max_parallelism,
        clock: Arc::clone(clock),
    }
}

fn new_subtask(
    subtask: u32,
    max_parallelism: MaxParallelism,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Subtask> {
    let ctx = context(subtask, max_parallelism, clock);
    let backend = HeapBackend::new(&ctx, HeapBackendOptions::default()).map_err(human::anyhow)?;
    let mut state = KeyedState::new(backend, Arc::clone(clock));
    let count = state
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .map_err(human::anyhow)?;
    Ok(Subtask { state, count })
}

/// Takes checkpoint `id` of both operators and returns its metadata (not
/// yet completed).
fn checkpoint(
    id: CheckpointId,
    job: &JobId,
    storage: &dyn CheckpointStorage,
    subtasks: &mut [Subtask],
    source: &OperatorStateStore,
    clock: &dyn Clock,
) -> anyhow::Result<CheckpointMetadata> {
    let timestamp_millis = clock.now_millis();
    storage.initialize_checkpoint(id).map_err(human::anyhow)?;
    // The synchronous parts first (as a barrier would trigger them), then the writes.
    let mut pending = Vec::with_capacity(subtasks.len());
    for sub in subtasks.iter_mut() {
        pending.push(
            sub.state
                .backend_mut()
                .snapshot(id, SnapshotMode::Full)
                .map_err(human::anyhow)?,
        );
    }
    let mut wordcount = Vec::with_capacity(pending.len());
    for (i, snapshot) in (0u32..).zip(pending) {
        let handle = snapshot.write(storage).map_err(human::anyhow)?;
        wordcount.push(SubtaskSnapshot {
            subtask: i,
            keyed: handle.into_iter().collect(),
            operator: None,
        });
    }
    let operator = source.snapshot(id, storage).map_err(human::anyhow)?;
    Ok(CheckpointMetadata {
        checkpoint_id: id,
        job_id: job.clone(),
        timestamp_millis,
        kind: SnapshotKind::Full,
        operators: vec![
            OperatorSnapshot {
                operator_id: OperatorId(SOURCE.to_owned()),
                parallelism: 1,
                max_parallelism: MAX_PARALLELISM,
                subtasks: vec![SubtaskSnapshot {
                    subtask: 0,
                    keyed: Vec::new(),
                    operator,
                }],
            },
            OperatorSnapshot {
                operator_id: OperatorId(WORDCOUNT.to_owned()),
                parallelism: PARALLELISM,
                max_parallelism: MAX_PARALLELISM,
                subtasks: wordcount,
            },
        ],
    })
}

/// What a restore into fresh backends found.
struct Restored {
    checkpoint: CheckpointId,
    counts: HashMap<String, u64>,
    source_offset: u64,
}

/// Restores the newest intact checkpoint into fresh backends and reads back
/// every count and the source offset.
fn restore(
    storage: &dyn CheckpointStorage,
    max_parallelism: MaxParallelism,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Restored> {
    let selection = select_for_restore(storage).map_err(human::anyhow)?;
    for (id, err) in &selection.skipped {
        tracing::warn!(checkpoint_id = id.get(), error = %err, "skipped a damaged checkpoint");
    }
    let metadata = selection.metadata;
    let operator = |uid: &str| {
        metadata
            .operators
            .iter()
            .find(|op| op.operator_id.0 == uid)
            .with_context(|| {
                format!(
                    "checkpoint {} has no operator {uid}",
                    metadata.checkpoint_id
                )
            })
    };
    let keyed: Vec<_> = operator(WORDCOUNT)?
        .subtasks
        .iter()
        .flat_map(|st| st.keyed.iter())
        .collect();
    let mut counts = HashMap::new();
    for i in 0..PARALLELISM {
        let ctx = context(i, max_parallelism, clock);
        let range = ctx.key_group_range().map_err(human::anyhow)?;
        let mut backend =
            HeapBackend::new(&ctx, HeapBackendOptions::default()).map_err(human::anyhow)?;
        let handles = handles_for_range(keyed.iter().copied(), range);
        backend.restore(&handles, storage).map_err(human::anyhow)?;
        let mut state = KeyedState::new(backend, Arc::clone(clock));
        let count = state
            .value_state(&ValueStateDescriptor::<u64>::new("count"))
            .map_err(human::anyhow)?;
        let words: Vec<String> = state.keys(&count, &()).map_err(human::anyhow)?;
        for word in words {
            state.set_current_key(&word).map_err(human::anyhow)?;
            if let Some(c) = count.value(&mut state).map_err(human::anyhow)? {
                counts.insert(word, c);
            }
        }
    }
    let source_handles: Vec<_> = operator(SOURCE)?
        .subtasks
        .iter()
        .filter_map(|st| st.operator.clone())
        .collect();
    let source =
        OperatorStateStore::restore(&source_handles, storage, 1, 0).map_err(human::anyhow)?;
    let source_offset = source
        .get_typed::<u64>(OFFSETS)
        .map_err(human::anyhow)?
        .first()
        .copied()
        .unwrap_or(0);
    Ok(Restored {
        checkpoint: metadata.checkpoint_id,
        counts,
        source_offset,
    })
}

fn print(report: &Report, per_checkpoint: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "word count of {} lines ({} words) by {PARALLELISM} subtasks (max parallelism {MAX_PARALLELISM}),",
        report.lines, report.words
    )?;
    writeln!(
        out,
        "a full checkpoint every {per_checkpoint} lines into {}",
        report.job_dir
    )?;
    for c in &report.checkpoints {
        let subsumed = if c.subsumed.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = c.subsumed.iter().map(|s| format!("chk-{s}")).collect();
            format!("  subsumed {}", ids.join(", "))
        };
        writeln!(
            out,
            "  checkpoint {}  after line {:>3}  state {:>9}  written {:>9}{subsumed}",
            c.id,
            c.after_line,
            human::size(c.state_size),
            human::size(c.checkpointed_size)
        )?;
    }
    let retained: Vec<String> = report.retained.iter().map(|s| format!("chk-{s}")).collect();
    writeln!(out, "retained: {}", retained.join(", "))?;
    writeln!(
        out,
        "restored checkpoint {} into fresh backends: {} words, source offset {}; every count matches",
        report.restored.checkpoint_id, report.restored.words, report.restored.source_offset
    )?;
    let top: Vec<String> = report
        .top_words
        .iter()
        .map(|w| format!("{} {}", w.word, w.count))
        .collect();
    writeln!(out, "top words: {}", top.join(", "))?;
    writeln!(out, "try:")?;
    for c in &report.commands {
        writeln!(out, "  {c}")?;
    }
    Ok(())
}
