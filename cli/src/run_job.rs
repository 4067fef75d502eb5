//! `cairn run <job>`: runs a bundled job with the standard job options
//! ([`JobArgs`], Flink's `flink run`), printing its output on stdout, its
//! logs on stderr (`RUST_LOG=info` shows the Flink-like lines) and, at the
//! end, a one-line summary on stderr.
//!
//! ```text
//! cairn run wordcount --input <log dir> --topic <t> [--bounded] [--output <dir>]
//!                     [--filter-poison] [--from <chk-dir|_metadata> [--restore-mode M]
//!                     | --resume] [job options…]
//! ```
//!
//! Exit status: 0 when the job FINISHED, 1 when it FAILED (or was
//! cancelled), 2 for bad input (a missing topic, a `--from` path that is not
//! a checkpoint, inconsistent options).
//!
//! # `--from`, `--restore-mode` and `--resume`
//! `--from` opens the checkpoint with [`FsCheckpointStorage::for_checkpoint_path`]
//! (an `s3://`, `gs://` or `az://` URL: `ObjectCheckpointStorage::for_checkpoint_url`)
//! and checks every stream it references ([`load_verified`]) before the job
//! starts. Without `--checkpoint-dir` the job's own checkpoints go to the job
//! directory of the restored checkpoint. `--restore-mode` (Flink's claim
//! mode) says what the job may do with it:
//! - `no-claim` (the default): the checkpoint is never deleted or rewritten,
//!   even when the job finishes, and the first checkpoint after the restore
//!   references none of its files (RocksDB uploads every SST again), so
//!   `--checkpoint-dir` may name another directory.
//! - `claim`: it becomes one of the job's retained checkpoints and is deleted
//!   when a newer one subsumes it; it must be in the job's own directory.
//!
//! `--resume` continues from the newest intact checkpoint of
//! `--checkpoint-dir/<job-id>` (see [`StreamEnv::resume`]); a start without
//! either over a job directory that holds checkpoints is refused rather
//! than deleting them. New checkpoint ids continue above the restored id and
//! above every completed checkpoint of the job directory, so completed
//! checkpoints are never overwritten. One process at a time runs a job
//! directory ([`JobLock`]); before the job starts, with the lock held, the
//! job directory's orphans (`chk-<n>` directories without `_metadata` left
//! by a run that was killed while writing a checkpoint, unreferenced
//! uploads) and what dead rocks instances left in the local directory are
//! removed (`sweep.rs`), so no new checkpoint is written into stale files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
#[cfg(doc)]
use backend_fs::{FsCheckpointStorage, JobLock};
use executor::log::{LogSource, LogSourceOptions, StartPosition, Topic};
use executor::sink::file::FileSink;
use executor::sink::print::PrintSink;
use executor::sink::write_ahead::WriteAheadSink;
use executor::{JobResult, JobStatus, StreamEnv};
use state_core::load_verified;
use state_core::{
    BackendFactory, CheckpointMetadata, CheckpointStorage, Clock, JobId, RestoreMode, SnapshotMode,
    SystemClock,
};

use crate::backend::{self, BackendVisitor};
use crate::job_args::{DEFAULT_JOB_ID, JobArgs, RestoreModeArg};
use crate::sink_arg::{SinkMode, SinkSpec};
use crate::wordcount;

/// `cairn run` subcommands: the bundled jobs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunCommand {
    /// WordCount over a replayable log topic (the job of `cairn demo`): prints `(word,count)`
    /// per word read, as Flink's `print()` does
    #[command(after_help = WORDCOUNT_HELP)]
    Wordcount(Box<WordCountArgs>),
}

const WORDCOUNT_HELP: &str = "Output: one `(word,count)` line per word on stdout (prefixed \
`<subtask>> ` at parallelism above 1), or part files in --output.\n\
At the end one summary line on stderr: status, restarts, checkpoints completed, last checkpoint.\n\
Exit status: 0 FINISHED, 1 FAILED or CANCELED, 2 bad input.\n\
A finished job deletes its checkpoints (as Flink does); a failed or killed one keeps them for --from.";

/// `cairn run wordcount` options.
#[derive(Debug, clap::Args)]
pub(crate) struct WordCountArgs {
    /// The directory holding the log topic (as given to `cairn log append`)
    #[arg(long, value_name = "DIR")]
    input: PathBuf,
    /// The topic to read
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// Stop at the end of the topic as of the start (default: keep tailing it
    /// until the process is interrupted)
    #[arg(long)]
    bounded: bool,
    /// Write the output to exactly-once part files in this directory instead
    /// of stdout (the same as --sink file:<DIR>)
    #[arg(long, value_name = "DIR", conflicts_with = "sink")]
    output: Option<PathBuf>,
    /// Where the output goes: print (stdout, at-least-once; the default),
    /// file:<dir> (part files committed at each checkpoint: exactly-once),
    /// wal:<file> (held in the checkpoint, appended once it completed),
    /// postgres:<conninfo>#<table> or sqlite:<path>#<table> (rows word, count;
    /// exactly-once)
    #[arg(long, value_name = "SINK")]
    sink: Option<SinkSpec>,
    /// How the postgres: and sqlite: sinks write: upsert (one row per word,
    /// its latest count) or insert (one row per output record)
    #[arg(long, value_enum, default_value_t)]
    sink_mode: SinkMode,
    /// Drop records holding the poison word ERROR (how the demo's job is
    /// fixed before it is resumed from its retained checkpoint)
    #[arg(long)]
    filter_poison: bool,
    #[command(flatten)]
    job: JobArgs,
}

/// Runs a `cairn run` command. Job output goes to stdout directly (the
/// print sink's subtasks write there); `out` is flushed by the caller.
pub(crate) fn run(command: RunCommand, _out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        RunCommand::Wordcount(args) => run_wordcount(&args),
    }
}

/// The checkpoint to restore from, and where it is.
struct Restore {
    storage: Arc<dyn CheckpointStorage>,
    /// Its job location (a directory, or a URL for object stores).
    job_dir: PathBuf,
    metadata: CheckpointMetadata,
}

fn open_restore(path: &Path) -> anyhow::Result<Restore> {
    let (location, id) = crate::job_dir::open_restore_point(path)
        .with_context(|| format!("--from {}", path.display()))?;
    let storage = location.storage();
    let metadata = load_verified(storage.as_ref(), id)
        .with_context(|| format!("--from {}", path.display()))?;
    Ok(Restore {
        storage,
        job_dir: location.path(),
        metadata,
    })
}

fn run_wordcount(args: &WordCountArgs) -> anyhow::Result<ExitCode> {
    let restore = args.job.from.as_deref().map(open_restore).transpose()?;
    // Restoring without --job-id keeps the restored job's id (its directory
    // name; a savepoint's directory is named after it, so its metadata's).
    let from_savepoint = restore.as_ref().is_some_and(|r| {
        r.job_dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(backend_fs::is_savepoint_dir_name)
    });
    let default_id = match &restore {
        Some(r) if from_savepoint => r.metadata.job_id.as_str().to_owned(),
        _ => restore
            .as_ref()
            .and_then(|r| r.job_dir.file_name())
            .and_then(|n| n.to_str())
            .filter(|n| JobId::new(*n).is_ok())
            .unwrap_or(DEFAULT_JOB_ID)
            .to_owned(),
    };
    if let Some(r) = &restore
        && from_savepoint
        && args.job.checkpoint_dir.is_none()
    {
        bail!(
            "--from {} is a savepoint, which belongs to the user and is never written into: \
             give --checkpoint-dir for the job's own checkpoints",
            r.job_dir.display()
        );
    }
    let mut config = args.job.job_config_with_default_id(&default_id)?;
    if let (None, Some(r)) = (config.max_parallelism, &restore) {
        // Keyed state cannot change its number of key groups: keep the checkpoint's.
        config.max_parallelism = keyed_max_parallelism(&r.metadata);
    }
    // Fail before starting anything on input no restart can fix.
    check_paths(args)?;
    Topic::open(&args.input, &args.topic)
        .map_err(crate::log_cmd::plain)
        .with_context(|| format!("--input {} --topic {}", args.input.display(), args.topic))?;

    let placement = job_storage(&args.job, &config.job_id, restore.as_ref())?;
    let (storage, job_dir) = (placement.storage.clone(), placement.job_dir.clone());
    if args.job.resume && config.max_parallelism.is_none() {
        // As with --from: keep the key groups of the checkpoints resumed from.
        config.max_parallelism = newest_readable(storage.as_ref())
            .as_ref()
            .and_then(keyed_max_parallelism);
    }
    // One process per job directory, held until the job ended: taken before
    // anything in the directory is removed or written.
    let location = job_dir
        .as_deref()
        .map(crate::job_dir::location_for_run)
        .transpose()?;
    let lock = location
        .as_ref()
        .map(|l| l.lock(SystemClock.now_millis()))
        .transpose()?;
    if let (Some(location), Some(lock)) = (&location, &lock) {
        let restored = restore.as_ref().map(|r| r.metadata.checkpoint_id);
        crate::sweep::before_start(location, lock, &args.job, &config.job_id, restored)?;
    }
    let job_id = config.job_id.clone();
    let job = WordCountJob {
        config,
        source: LogSource::new(LogSourceOptions {
            dir: args.input.clone(),
            topic: args.topic.clone(),
            bounded: args.bounded,
            start: StartPosition::Earliest,
        }),
        filter_poison: args.filter_poison,
        sink: match (&args.output, &args.sink) {
            (Some(dir), _) => SinkSpec::File(dir.clone()),
            (None, Some(spec)) => spec.clone(),
            (None, None) => SinkSpec::Print,
        },
        sink_mode: args.sink_mode,
        restore: restore.map(|r| r.metadata),
        restore_storage: placement.restore_storage,
        restore_mode: args.job.restore_mode.unwrap_or_default().into(),
        resume: args.job.resume,
        incremental: args.job.incremental,
        // Request files need a local job directory (`control.rs`); a job on
        // an object store takes savepoints through `JobController` only.
        control: job_dir
            .clone()
            .filter(|dir| backend::object_url(dir).is_none())
            .map(|dir| (dir, args.job.savepoint_dir.clone())),
    };
    let local = backend::LocalState::from_args(&args.job);
    let result = backend::with_backend_local(args.job.backend, storage, &local, &job_id, job)?;
    let summary = summary(&job_id, &result, job_dir.as_deref());
    let _ = writeln!(std::io::stderr(), "{summary}");
    Ok(match result.status {
        JobStatus::Finished => ExitCode::SUCCESS,
        // Configuration or input no restart can fix: bad input, as before a start.
        JobStatus::Failed if result.permanent_failure => ExitCode::from(2),
        _ => ExitCode::from(1),
    })
}

/// Refuses output and local paths that can never work, naming the option:
/// a sink directory that is a file, a write-ahead target that is a
/// directory, a local directory that is a file.
fn check_paths(args: &WordCountArgs) -> anyhow::Result<()> {
    let file_sink = match (&args.output, &args.sink) {
        (Some(dir), _) => Some(("--output ", dir)),
        (None, Some(SinkSpec::File(dir))) => Some(("--sink file:", dir)),
        _ => None,
    };
    if let Some((option, dir)) = file_sink
        && dir.exists()
        && !dir.is_dir()
    {
        bail!("{option}{}: exists and is not a directory", dir.display());
    }
    if let Some(SinkSpec::WriteAhead(file)) = &args.sink
        && file.is_dir()
    {
        bail!("--sink wal:{}: is a directory, not a file", file.display());
    }
    if let Some(local) = &args.job.local_dir
        && local.exists()
        && !local.is_dir()
    {
        bail!(
            "--local-dir {}: exists and is not a directory",
            local.display()
        );
    }
    Ok(())
}

/// The newest checkpoint of `storage` whose metadata reads (`None` if none does).
fn newest_readable(storage: &dyn CheckpointStorage) -> Option<CheckpointMetadata> {
    let ids = storage.list_checkpoints().ok()?;
    ids.iter()
        .rev()
        .find_map(|&id| storage.read_metadata(id).ok())
}

/// The max parallelism of the checkpoint's keyed operators, if it has any.
fn keyed_max_parallelism(metadata: &CheckpointMetadata) -> Option<u32> {
    metadata
        .operators
        .iter()
        .find(|op| op.subtasks.iter().any(|s| !s.keyed.is_empty()))
        .map(|op| op.max_parallelism)
}

/// Where a job writes its checkpoints, and where the checkpoint it restores is.
struct Placement {
    /// The storage the job writes its checkpoints to.
    storage: Arc<dyn CheckpointStorage>,
    /// Its job directory, when it is on the filesystem.
    job_dir: Option<PathBuf>,
    /// The restored checkpoint's storage when it is another job directory
    /// (`None`: the job's own, or no restore).
    restore_storage: Option<Arc<dyn CheckpointStorage>>,
}

/// The storage the job writes its checkpoints to, and where the restored
/// checkpoint is read from.
fn job_storage(
    job: &JobArgs,
    job_id: &JobId,
    restore: Option<&Restore>,
) -> anyhow::Result<Placement> {
    let Some(restore) = restore else {
        let storage = backend::storage_for(job.backend, job.checkpoint_dir.as_deref(), job_id)?;
        let job_dir = job
            .checkpoint_dir
            .as_ref()
            .map(|d| backend::job_location(d, job_id));
        return Ok(Placement {
            storage,
            job_dir,
            restore_storage: None,
        });
    };
    let from_dir = restore.job_dir.clone();
    let Some(base) = &job.checkpoint_dir else {
        return Ok(Placement {
            storage: restore.storage.clone(),
            job_dir: Some(from_dir),
            restore_storage: None,
        });
    };
    let dir = backend::job_location(base, job_id);
    if same_dir(&dir, &from_dir) {
        let storage = backend::storage_for(job.backend, Some(base), job_id)?;
        return Ok(Placement {
            storage,
            job_dir: Some(dir),
            restore_storage: None,
        });
    }
    if job.restore_mode == Some(RestoreModeArg::Claim) {
        let from = job.from.as_deref().unwrap_or(&from_dir);
        bail!(
            "--restore-mode claim: --from {} is a checkpoint of job directory {}, but \
             --checkpoint-dir {} with job id {job_id} gives {}; claim takes over only a \
             checkpoint of the job's own directory: omit --checkpoint-dir, or restore in \
             no-claim mode",
            from.display(),
            from_dir.display(),
            base.display(),
            dir.display()
        );
    }
    let storage = backend::storage_for(job.backend, Some(base), job_id)?;
    let restore_storage: Arc<dyn CheckpointStorage> = restore.storage.clone();
    Ok(Placement {
        storage,
        job_dir: Some(dir),
        restore_storage: Some(restore_storage),
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        // Object-store locations: the same URL, options aside.
        _ => {
            let url =
                |p: &Path| backend::object_url(p).map(|u| u.split('?').next().map(str::to_owned));
            url(a).is_some() && url(a) == url(b)
        }
    }
}

/// `FINISHED: 0 restarts, 3 checkpoints completed, last chk-7 (<dir>/chk-7, ...)`.
fn summary(job_id: &JobId, result: &JobResult, job_dir: Option<&Path>) -> String {
    let last = match result.checkpoints.last() {
        None => "no checkpoint completed".to_owned(),
        Some(info) => match job_dir {
            None => format!("last checkpoint {} (in memory)", info.id),
            Some(dir) => {
                let path = dir.join(info.id.dir_name());
                let kept = if crate::job_dir::has_metadata(dir, info.id) {
                    "kept"
                } else {
                    "deleted when the job ended"
                };
                format!("last checkpoint {} ({kept})", path.display())
            }
        },
    };
    let mut line = format!(
        "job {job_id} {}: {} restarts, {} checkpoints completed, {last}",
        result.status,
        result.restarts,
        result.checkpoints.len()
    );
    if let Some(failure) = &result.failure {
        line.push_str("; failure: ");
        line.push_str(&failure.replace(['\n', '\r'], " "));
    }
    line
}

/// Builds and runs the WordCount on the backend the visitor is given.
struct WordCountJob {
    config: executor::JobConfig,
    source: LogSource,
    filter_poison: bool,
    sink: SinkSpec,
    sink_mode: SinkMode,
    restore: Option<CheckpointMetadata>,
    restore_storage: Option<Arc<dyn CheckpointStorage>>,
    restore_mode: RestoreMode,
    resume: bool,
    incremental: bool,
    /// The job directory to answer savepoint requests in (`control.rs`),
    /// and the default savepoint directory.
    control: Option<(PathBuf, Option<PathBuf>)>,
}

impl BackendVisitor for WordCountJob {
    type Output = JobResult;

    fn visit<F: BackendFactory + 'static>(
        self,
        factory: F,
        storage: Arc<dyn CheckpointStorage>,
    ) -> anyhow::Result<JobResult> {
        let mode = if self.incremental {
            SnapshotMode::Incremental
        } else {
            SnapshotMode::Full
        };
        let job_id = self.config.job_id.to_string();
        let mut env = StreamEnv::new(self.config, factory, storage).with_snapshot_mode(mode);
        if let Some(metadata) = self.restore {
            env = match self.restore_storage {
                Some(storage) => env.restore_from_storage(metadata, storage),
                None => env.restore_from(metadata),
            };
            env = env.with_restore_mode(self.restore_mode);
        }
        if self.resume {
            env = env.resume();
        }
        let (source, filter) = (self.source, self.filter_poison);
        match self.sink {
            SinkSpec::Print => wordcount::build(&env, source, filter, PrintSink::stdout()),
            SinkSpec::File(dir) => {
                wordcount::build(&env, source, filter, FileSink::exactly_once(dir));
            }
            SinkSpec::WriteAhead(file) => {
                wordcount::build(&env, source, filter, WriteAheadSink::to_file(file));
            }
            sql @ (SinkSpec::Postgres { .. } | SinkSpec::Sqlite { .. }) => {
                crate::sql_sink::build(&env, source, filter, sql, self.sink_mode, &job_id)?;
            }
        }
        let job_id = env.config().job_id.clone();
        let job = env.start()?;
        // Ctrl-C cancels the job (Flink's `flink cancel`): it ends CANCELED and
        // its retained checkpoints are kept or deleted per --retain-on-cancel.
        let canceller = job.canceller();
        if let Err(e) = ctrlc::set_handler(move || canceller.cancel()) {
            tracing::warn!(error = %e, "Ctrl-C will kill the job instead of cancelling it");
        }
        // `cairn savepoint` / `cairn stop` from other processes.
        let watcher = self
            .control
            .map(|(dir, savepoints)| {
                crate::control::Watcher::start(dir, savepoints, job_id, job.controller())
            })
            .transpose()?;
        let result = job.wait();
        if let Some(watcher) = watcher {
            watcher.finish();
        }
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use state_core::METADATA_FILE_NAME;
    use std::time::Duration;

    use executor::{CompletedCheckpointInfo, JobMetrics};
    use state_core::CheckpointId;

    use super::*;

    fn result(status: JobStatus, checkpoints: &[u64], failure: Option<&str>) -> JobResult {
        JobResult {
            status,
            restarts: 2,
            failure: failure.map(str::to_owned),
            permanent_failure: false,
            checkpoints: checkpoints
                .iter()
                .map(|&id| CompletedCheckpointInfo {
                    id: CheckpointId(id),
                    timestamp_millis: 0,
                    bytes: 1,
                    state_size: 1,
                    duration: Duration::ZERO,
                })
                .collect(),
            metrics: JobMetrics::default(),
        }
    }

    #[test]
    fn summary_names_status_restarts_checkpoints_and_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobId::new("wc").unwrap();
        std::fs::create_dir_all(dir.path().join("chk-4")).unwrap();
        std::fs::write(dir.path().join("chk-4").join(METADATA_FILE_NAME), b"x").unwrap();
        let kept = summary(
            &job,
            &result(JobStatus::Failed, &[3, 4], Some("boom\nline two")),
            Some(dir.path()),
        );
        assert_eq!(
            kept,
            format!(
                "job wc FAILED: 2 restarts, 2 checkpoints completed, last checkpoint {} (kept); \
                 failure: boom line two",
                dir.path().join("chk-4").display()
            )
        );
        let gone = summary(
            &job,
            &result(JobStatus::Finished, &[5], None),
            Some(dir.path()),
        );
        assert!(
            gone.ends_with("chk-5 (deleted when the job ended)"),
            "{gone}"
        );
        let memory = summary(&job, &result(JobStatus::Finished, &[5], None), None);
        assert!(
            memory.ends_with("last checkpoint 5 (in memory)"),
            "{memory}"
        );
        let none = summary(&job, &result(JobStatus::Finished, &[], None), None);
        assert!(none.ends_with("0 checkpoints completed, no checkpoint completed"));
    }
}
