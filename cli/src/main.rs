//! # `cairn`: run, restore and inspect cairn jobs and their checkpoints
//!
//! ```text
//! cairn demo [--dir DIR] [--restart-delay D]
//! cairn run wordcount --input <dir> --topic <t> [--bounded] [--output <dir>] [--filter-poison] [job options]
//! cairn log append <dir> <topic> [record…] [--partition N|--key K] [--partitions N] [--quiet]
//! cairn log tail   <dir> <topic> [--partition N [--from-offset O]] [--follow] [--json]
//! cairn checkpoints list    <job-dir>                      [--json]
//! cairn checkpoints inspect <chk-dir | _metadata>          [--json]
//! cairn checkpoints verify  <chk-dir | _metadata | job-dir> [--json]
//! cairn checkpoints gc      <job-dir> [--delete]           [--json]
//! cairn savepoint <job-dir> [--dir D] [--format canonical|native] [--timeout T] [--json]
//! cairn stop      <job-dir> [--savepoint-dir D] [--format canonical|native] [--timeout T] [--json]
//! cairn example --dir <base-dir> [--checkpoints N] [--retained R] [--force] [--json]
//! cairn checkpoints rescale|convert <checkpoint> [--parallelism N] --format canonical --out DIR
//! cairn state list      <checkpoint|savepoint>                      [--json]
//! cairn state dump      <checkpoint|savepoint> --operator UID --state NAME [--key K] [--json|--csv]
//! cairn state bootstrap --operator UID --state NAME --input keys.jsonl --out DIR --type T
//! ```
//!
//! Job options (`cairn run … --help`) come from one struct,
//! `JobArgs` (`job_args.rs`), with Flink's meanings.
//!
//! Output is for people by default; `--json` prints one JSON document on
//! stdout whose field names are stable (each command documents them in its
//! `--help` and in its module: [`list`], [`inspect`], [`verify`], [`gc`], [`example`]).
//!
//! Exit status: 0 on success; 1 when `verify` found a corrupt file, a job
//! ended FAILED or CANCELED, or the demo did not end as the WordCount
//! failure-and-recovery walk-through should; 2 for bad input or usage (a path
//! that is not a checkpoint, an unreadable `_metadata`, a bad option). Errors are one line on stderr, `error: ...`,
//! naming the path that is wrong. Logs go to stderr at level `warn` unless
//! `RUST_LOG` says otherwise.
//!
//! The benchmark harness is its own binary, `cairn-bench` in `benches/`
//! (`cargo run --release -p cairn-benches --features rocks --bin cairn-bench -- job …`).
//!
//! # Place in the workspace
//! `state-core <- backend-* <- executor <- cli`: this package is the one place
//! that picks concrete backends and storages (its library, [`cairn_cli`]:
//! `backend` and `human`).

/// mimalloc instead of the system allocator. Heap state is millions of small
/// allocations (a key and a value per entry): glibc's malloc spent ~15% of
/// the keyed-count thread in `malloc`/`free`/`malloc_consolidate`, and after
/// a large state was freed it consolidated its free lists inside the next
/// allocations (tens of ms added to a restore). Embedders choose their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod control;
mod demo;
mod example;
mod gc;
mod inspect;
mod job_dir;
mod list;
mod log_cmd;
mod rescale;
mod run_job;
mod sink_arg;
mod sql_sink;
mod state_bootstrap;
mod state_cmd;
mod state_codec;
mod state_open;
mod sweep;
mod verify;
mod wordcount;

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_cli::process::{self, DEFAULT_LOG_FILTER, init_tracing};
use cairn_cli::{backend, human, job_args};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Run, restore and inspect cairn stream jobs and their checkpoints",
    after_help = "Exit status: 0 ok, 1 verify found corruption or a job FAILED/CANCELED, 2 bad input or usage.\n\
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
    /// The WordCount failure-and-recovery walk-through: checkpoint, poison record, three restarts, FAILED, then recovery
    Demo(demo::DemoArgs),
    /// Run a bundled job with the standard job options (Flink's `flink run`)
    #[command(subcommand)]
    Run(run_job::RunCommand),
    /// Append to and read a replayable partitioned log (a Kafka topic on local files)
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Take a savepoint of the job running in a job directory (Flink's `flink savepoint`)
    #[command(after_help = SAVEPOINT_HELP)]
    Savepoint(SavepointArgs),
    /// Stop the job running in a job directory with a savepoint: it ends FINISHED with its
    /// sinks committed (Flink's `flink stop`)
    #[command(after_help = SAVEPOINT_HELP)]
    Stop(StopArgs),
    /// Read, dump and bootstrap keyed state of checkpoints and savepoints offline (the State Processor API)
    #[command(subcommand)]
    State(state_cmd::StateCommand),
}

const SAVEPOINT_HELP: &str = "The job is the `cairn run` process holding <job-dir>'s lock; it takes the savepoint into <dir>/savepoint-<job>-<n>-<hex>/, which it never rotates or deletes: restore it with `cairn run … --from <that dir> --checkpoint-dir <dir>`, on any backend and parallelism (canonical) or the same backend (native).\n\
Prints `Savepoint completed. Path: <dir>`; --json prints {ok, id, path, bytes, duration_ms, error}.\n\
Exit status: 0 done, 1 the savepoint failed (the job runs on), 2 no job runs there or bad input.";

#[derive(Debug, Args)]
struct SavepointArgs {
    /// The job directory (`<checkpoint-dir>/<job-id>`) of the running job
    job_dir: PathBuf,
    /// Where the savepoint goes (default: the job's --savepoint-dir)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// canonical (any backend, any parallelism) or native (the backend's own files)
    #[arg(long, value_enum, default_value_t)]
    format: control::FormatArg,
    /// How long to wait for the job's answer
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = job_args::parse_duration)]
    timeout: std::time::Duration,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// The job directory (`<checkpoint-dir>/<job-id>`) of the running job
    job_dir: PathBuf,
    /// Where the savepoint goes (default: the job's --savepoint-dir)
    #[arg(long, value_name = "DIR")]
    savepoint_dir: Option<PathBuf>,
    /// canonical (any backend, any parallelism) or native (the backend's own files)
    #[arg(long, value_enum, default_value_t)]
    format: control::FormatArg,
    /// How long to wait for the savepoint and the end of the job
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = job_args::parse_duration)]
    timeout: std::time::Duration,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
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
    /// Remove the files of a job directory that no completed checkpoint references (dry run unless --delete)
    #[command(after_help = gc::JSON_HELP)]
    Gc(GcArgs),
    /// Rewrite a checkpoint offline as a canonical savepoint at another parallelism
    Rescale(rescale::RescaleArgs),
    /// Rewrite a checkpoint offline as a canonical savepoint (any backend, any parallelism)
    Convert(rescale::RescaleArgs),
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
struct GcArgs {
    /// The job directory (`<checkpoint-dir>/<job-id>`)
    path: PathBuf,
    /// Remove the orphans (takes the job directory's lock; refused while a job runs in it)
    #[arg(long)]
    delete: bool,
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
    cairn_cli::allocator::keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(match cli.command {
        // The demo's failures are its script; its table tells them.
        Command::Demo(_) => DEMO_LOG_FILTER,
        _ => DEFAULT_LOG_FILTER,
    });
    // Not locked: task threads of a running job print to stdout too.
    let mut stdout = std::io::stdout();
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
        Command::Checkpoints(CheckpointsCommand::Gc(a)) => {
            gc::run(&a.path, a.delete, a.json, &mut stdout)
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
        Command::Demo(a) => demo::run(&a, &mut stdout),
        Command::Run(c) => run_job::run(c, &mut stdout),
        Command::Log(c) => log_cmd::run(c, &mut stdout),
        Command::Savepoint(a) => control::ask(
            &control::Ask {
                job_dir: &a.job_dir,
                dir: a.dir.as_deref(),
                format: a.format,
                stop: false,
                timeout: a.timeout,
                json: a.json,
            },
            &mut stdout,
        ),
        Command::Stop(a) => control::ask(
            &control::Ask {
                job_dir: &a.job_dir,
                dir: a.savepoint_dir.as_deref(),
                format: a.format,
                stop: true,
                timeout: a.timeout,
                json: a.json,
            },
            &mut stdout,
        ),
        Command::State(c) => state_cmd::run(c, &mut stdout),
        Command::Checkpoints(CheckpointsCommand::Rescale(a)) => rescale::run(&a, true, &mut stdout),
        Command::Checkpoints(CheckpointsCommand::Convert(a)) => {
            rescale::run(&a, false, &mut stdout)
        }
    };
    process::finish(result, &mut stdout, &mut std::io::stderr())
}

/// The demo's log filter without `RUST_LOG` (`RUST_LOG=info cairn demo`
/// shows the Flink-like job log beside the table).
const DEMO_LOG_FILTER: &str = "error";
