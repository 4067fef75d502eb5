//! # `cairn`: the operator's command for cairn checkpoints
//!
//! ```text
//! cairn checkpoints list    <job-dir>                      [--json]
//! cairn checkpoints inspect <chk-dir | _metadata>          [--json]
//! cairn checkpoints verify  <chk-dir | _metadata | job-dir> [--json]
//! cairn example --dir <base-dir> [--checkpoints N] [--retained R] [--force] [--json]
//! ```
//!
//! Output is for people by default; `--json` prints one JSON document on
//! stdout whose field names are stable (each command documents them in its
//! `--help` and in its module: [`list`], [`inspect`], [`verify`], [`example`]).
//!
//! Exit status: 0 on success, 1 when `verify` found a corrupt file, 2 for bad
//! input or usage (a path that is not a checkpoint, an unreadable
//! `_metadata`, a bad option). Errors are one line on stderr, `error: ...`,
//! naming the path that is wrong. Logs go to stderr at level `warn` unless
//! `RUST_LOG` says otherwise.
//!
//! # Place in the workspace
//! `state-core <- backend-{heap,fs} <- cli`: this binary picks the concrete
//! backend (heap) and storage (filesystem) and depends on everything.

mod example;
mod human;
mod inspect;
mod job_dir;
mod list;
mod verify;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The exit status for bad input or usage (clap uses it for usage errors too).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Inspect and verify cairn checkpoints, and run a small example job",
    after_help = "Exit status: 0 ok, 1 verify found corruption, 2 bad input or usage.\n\
                  Logs go to stderr (level warn; set RUST_LOG=info or debug for more)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, inspect and verify the checkpoints of a job
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Run a small word count with checkpoints on the filesystem, then restore it
    #[command(after_help = example::JSON_HELP)]
    Example(ExampleArgs),
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// One row per chk-<n> directory of a job directory: id, time, kind, sizes, status
    #[command(after_help = list::JSON_HELP)]
    List(ListArgs),
    /// Everything one checkpoint holds: operators, subtasks, files, operator state
    #[command(after_help = inspect::JSON_HELP)]
    Inspect(InspectArgs),
    /// Re-read every file of one checkpoint, or of every checkpoint of a job directory
    #[command(after_help = verify::JSON_HELP)]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The job directory (`<checkpoint-dir>/<job-id>`)
    path: PathBuf,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A `chk-<n>` directory or its `_metadata` file
    path: PathBuf,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// A `chk-<n>` directory, its `_metadata` file, or a job directory (every checkpoint in it)
    path: PathBuf,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExampleArgs {
    /// The checkpoint base directory; the job writes into `<dir>/example`
    #[arg(long)]
    dir: PathBuf,
    /// How many checkpoints to take while counting
    #[arg(long, default_value_t = 3)]
    checkpoints: usize,
    /// How many completed checkpoints to retain
    #[arg(long, default_value_t = 2)]
    retained: usize,
    /// Delete `<dir>/example` first if it already holds checkpoints
    #[arg(long)]
    force: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command {
        Command::Checkpoints(CheckpointsCommand::List(a)) => {
            list::run(&a.path, a.json, &mut stdout)
        }
        Command::Checkpoints(CheckpointsCommand::Inspect(a)) => {
            inspect::run(&a.path, a.json, &mut stdout)
        }
        Command::Checkpoints(CheckpointsCommand::Verify(a)) => {
            verify::run(&a.path, a.json, &mut stdout)
        }
        Command::Example(a) => example::run(
            &example::Options {
                base_dir: a.dir,
                checkpoints: a.checkpoints,
                retained: a.retained,
                force: a.force,
            },
            a.json,
            &mut stdout,
        ),
    };
    let flushed = stdout.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Ok(code) => code,
        Err(err) => {
            // One line, whatever the sources of the error say.
            let message = format!("{err:#}").replace(['\n', '\r'], " ");
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// The log filter without `RUST_LOG`: warnings, except the per-file
/// warnings of checkpoint verification, which `verify` prints itself.
const DEFAULT_LOG_FILTER: &str = "warn,state_core::checkpoint_store::verify=error";

/// Logs to stderr; level `warn` unless `RUST_LOG` is set.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
