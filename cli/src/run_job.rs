//! `cairn run <job>`: runs a bundled job with the standard job options
//! ([`JobArgs`], Flink's `flink run`), printing its output on stdout, its
//! logs on stderr (`RUST_LOG=info` shows the Flink-like lines) and, at the
//! end, a one-line summary on stderr.
//!
//! ```text
//! cairn run wordcount --input <log dir> --topic <t> [--bounded] [--output <dir>]
//!                     [--filter-poison] [--from <chk-dir|_metadata>] [job options…]
//! ```
//!
//! Exit status: 0 when the job FINISHED, 1 when it FAILED (or was
//! cancelled), 2 for bad input (a missing topic, a `--from` path that is not
//! a checkpoint, inconsistent options).
//!
//! # `--from` and checkpoint ids
//! The checkpoint is opened with [`FsCheckpointStorage::for_checkpoint_path`]
//! and every stream it references is checked ([`load_verified`]) before the
//! job starts. Without `--checkpoint-dir` the job's own checkpoints go to the
//! job directory of the restored checkpoint. New checkpoint ids continue above
//! the restored id and above every completed checkpoint of the job directory
//! (see [`StreamEnv::restore_from`]), so completed checkpoints are never
//! overwritten; before the job starts, with the lock held, the job directory's
//! orphans (`chk-<n>` directories without `_metadata` left by a run that was
//! killed while writing a checkpoint, unreferenced uploads) and what dead
//! rocks instances left in the local directory are removed (`sweep.rs`), so
//! no new checkpoint is written into stale files. Checkpoint handles name
//! files relative to their job directory, so `--checkpoint-dir` (with the
//! job id) must name the restored checkpoint's own job directory; another
//! one is refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use backend_fs::{FsCheckpointStorage, JobLock, LockOwner};
use executor::log::{LogSource, LogSourceOptions, StartPosition, Topic};
use executor::sink::file::FileSink;
use executor::sink::print::PrintSink;
use executor::{JobResult, JobStatus, StreamEnv};
use state_core::METADATA_FILE_NAME;
use state_core::load_verified;
use state_core::{
    BackendFactory, CheckpointMetadata, CheckpointStorage, Clock, JobId, SnapshotMode, SystemClock,
};

use crate::backend::{self, BackendVisitor};
use crate::job_args::{DEFAULT_JOB_ID, JobArgs};
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
    /// Append the output to part files in this directory instead of stdout
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
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
    storage: Arc<FsCheckpointStorage>,
    metadata: CheckpointMetadata,
}

fn open_restore(path: &Path) -> anyhow::Result<Restore> {
    let (storage, id) = FsCheckpointStorage::for_checkpoint_path(path)
        .with_context(|| format!("--from {}", path.display()))?;
    let metadata =
        load_verified(&storage, id).with_context(|| format!("--from {}", path.display()))?;
    Ok(Restore {
        storage: Arc::new(storage),
        metadata,
    })
}

fn run_wordcount(args: &WordCountArgs) -> anyhow::Result<ExitCode> {
    let restore = args.job.from.as_deref().map(open_restore).transpose()?;
    // Restoring without --job-id keeps the restored job's id (its directory name).
    let default_id = restore
        .as_ref()
        .and_then(|r| r.storage.job_dir().file_name())
        .and_then(|n| n.to_str())
        .filter(|n| JobId::new(*n).is_ok())
        .unwrap_or(DEFAULT_JOB_ID)
        .to_owned();
    let mut config = args.job.job_config_with_default_id(&default_id)?;
    if let (None, Some(r)) = (config.max_parallelism, &restore) {
        // Keyed state cannot change its number of key groups: keep the checkpoint's.
        config.max_parallelism = keyed_max_parallelism(&r.metadata);
    }
    // Fail before starting anything if the input is not there.
    Topic::open(&args.input, &args.topic)
        .map_err(crate::log_cmd::plain)
        .with_context(|| format!("--input {} --topic {}", args.input.display(), args.topic))?;

    let (storage, job_dir) = job_storage(&args.job, &config.job_id, restore.as_ref())?;
    // One process per job directory, held until the job ended: taken before
    // anything in the directory is removed or written.
    let lock = job_dir
        .as_deref()
        .map(|dir| JobLock::acquire(dir, &LockOwner::this_process(SystemClock.now_millis())))
        .transpose()
        .map_err(crate::human::anyhow)?;
    if let (Some(dir), Some(lock)) = (&job_dir, &lock) {
        let restored = restore.as_ref().map(|r| r.metadata.checkpoint_id);
        crate::sweep::before_start(dir, lock, &args.job, &config.job_id, restored)?;
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
        output: args.output.clone(),
        restore: restore.map(|r| r.metadata),
        incremental: args.job.incremental,
    };
    let local = backend::LocalState::from_args(&args.job);
    let result = backend::with_backend_local(args.job.backend, storage, &local, &job_id, job)?;
    let summary = summary(&job_id, &result, job_dir.as_deref());
    let _ = writeln!(std::io::stderr(), "{summary}");
    Ok(match result.status {
        JobStatus::Finished => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// The max parallelism of the checkpoint's keyed operators, if it has any.
fn keyed_max_parallelism(metadata: &CheckpointMetadata) -> Option<u32> {
    metadata
        .operators
        .iter()
        .find(|op| op.subtasks.iter().any(|s| !s.keyed.is_empty()))
        .map(|op| op.max_parallelism)
}

/// The storage the job writes its checkpoints to (and restores through),
/// and its job directory when it is on the filesystem.
fn job_storage(
    job: &JobArgs,
    job_id: &JobId,
    restore: Option<&Restore>,
) -> anyhow::Result<(Arc<dyn CheckpointStorage>, Option<PathBuf>)> {
    let Some(restore) = restore else {
        let storage = backend::storage_for(job.backend, job.checkpoint_dir.as_deref(), job_id)?;
        let dir = job.checkpoint_dir.as_ref().map(|d| d.join(job_id.as_str()));
        return Ok((storage, dir));
    };
    let from_dir = restore.storage.job_dir().to_path_buf();
    let Some(base) = &job.checkpoint_dir else {
        return Ok((restore.storage.clone(), Some(from_dir)));
    };
    let dir = base.join(job_id.as_str());
    if same_dir(&dir, &from_dir) {
        let storage = backend::storage_for(job.backend, Some(base), job_id)?;
        return Ok((storage, Some(dir)));
    }
    // Checkpoint handles name files relative to their job directory, so the
    // restored files must be read from the job directory they are in.
    let from = job.from.as_deref().unwrap_or(&from_dir);
    bail!(
        "--from {}: the checkpoint is in job directory {}, but --checkpoint-dir {} with job id \
         {job_id} gives {}; restoring into another job directory is not supported: omit \
         --checkpoint-dir to continue in the checkpoint's job directory, or pass its parent \
         and job id",
        from.display(),
        from_dir.display(),
        base.display(),
        dir.display()
    )
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
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
                let kept = if path.join(METADATA_FILE_NAME).exists() {
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
    output: Option<PathBuf>,
    restore: Option<CheckpointMetadata>,
    incremental: bool,
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
        let mut env = StreamEnv::new(self.config, factory, storage).with_snapshot_mode(mode);
        if let Some(metadata) = self.restore {
            env = env.restore_from(metadata);
        }
        match self.output {
            Some(dir) => {
                wordcount::build(&env, self.source, self.filter_poison, FileSink::new(dir))
            }
            None => wordcount::build(&env, self.source, self.filter_poison, PrintSink::stdout()),
        }
        let job = env.start()?;
        // Ctrl-C cancels the job (Flink's `flink cancel`): it ends CANCELED and
        // its retained checkpoints are kept or deleted per --retain-on-cancel.
        let canceller = job.canceller();
        if let Err(e) = ctrlc::set_handler(move || canceller.cancel()) {
            tracing::warn!(error = %e, "Ctrl-C will kill the job instead of cancelling it");
        }
        Ok(job.wait()?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use executor::{CompletedCheckpointInfo, JobMetrics};
    use state_core::CheckpointId;

    use super::*;

    fn result(status: JobStatus, checkpoints: &[u64], failure: Option<&str>) -> JobResult {
        JobResult {
            status,
            restarts: 2,
            failure: failure.map(str::to_owned),
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
