//! # `cairn-bench`: the benchmark harness that sizes hardware for cairn and
//! holds it against other engines on the same machine
//!
//! ```text
//! cairn-bench job        [--records N] [--keys K] [--parallelism P] [--backend heap|fs|rocks]
//!                        [--incremental] [--local-recovery] [--rocks-value-cache BYTES]
//!                        [--checkpoint-interval 2s] [--fail-at i]
//!                        [--dir DIR] [--keep] [--json]
//! cairn-bench state-size [--backend heap,fs,…] [--incremental] [--keys K] [--value-size S]
//!                        [--update-fraction F] [--rounds R] [--parallelism P] [--seed N]
//!                        [--sweep keys=…|value-size=…]… [--plot FILE.svg]
//!                        [--dir DIR] [--keep] [--json]
//! cairn-bench sinks      [--records N] [--keys K] [--parallelism P] [--checkpoint-interval 1s]
//!                        [--sinks print,file,postgres,postgres-insert,sqlite,sqlite-insert]
//!                        [--postgres CONNINFO] [--json]
//! ```
//!
//! Build and run it with RocksDB:
//! `cargo run --release -p cairn-benches --features rocks --bin cairn-bench -- job …`
//! (without `--features rocks`, `--backend rocks` says it is not in the build).
//!
//! Both measure the real backend on real files (fs, rocks) or memory (heap),
//! wall time, and this process's peak memory and I/O. Progress bars go to
//! stderr (hidden with `--json` or when stderr is not a terminal). Ctrl-C
//! stops the run and removes its data unless `--keep` is given (exit status
//! 130). Bad input or usage exits 2 with one line on stderr, `error: ...`,
//! naming the option. The JSON fields are documented in `--help` and in
//! `benches/README.md`.
//!
//! # Place in the workspace
//! The harness runs the executor and picks its backend through `cairn-cli`'s
//! library (`cairn_cli::backend`, the one place naming concrete backends);
//! its workload generator is the benches library's, shared with the
//! criterion benches.

/// mimalloc, as in the `cairn` binary: the figures in `benches/README.md`
/// were measured with it (heap state is millions of small allocations).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod job;
mod proc_stats;
mod report;
mod scratch;
mod sinks;
mod state_size;

use std::io::Write;
use std::process::ExitCode;

use cairn_cli::process::{self, DEFAULT_LOG_FILTER, init_tracing};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    version,
    about = "Benchmark harness: state size and job throughput of cairn on this machine",
    after_help = "Exit status: 0 ok, 2 bad input or usage, 130 interrupted by Ctrl-C.\n\
                  Logs go to stderr (level warn; set RUST_LOG=info or debug for more)."
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// `cairn-bench …`.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The keyed-count job on the executor: records/s, checkpoints, recovery time, exactness
    #[command(after_help = job::JSON_HELP)]
    Job(job::JobBenchArgs),
    /// Load, checkpoint, update and restore keyed state: sizes, phase times, restore time
    #[command(after_help = state_size::JSON_HELP)]
    StateSize(state_size::StateSizeArgs),
    /// The keyed-count job into each sink (print, file, PostgreSQL, SQLite): records/s, commit latency
    #[command(after_help = sinks::JSON_HELP)]
    Sinks(sinks::SinksBenchArgs),
}

fn main() -> ExitCode {
    cairn_cli::allocator::keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(DEFAULT_LOG_FILTER);
    // Not locked: task threads of a running job may print to stdout too.
    let mut stdout = std::io::stdout();
    let result = run(cli.command, &mut stdout);
    process::finish(result, &mut stdout, &mut std::io::stderr())
}

/// Runs the command; Ctrl-C ends it with [`scratch::EXIT_INTERRUPTED`].
fn run(command: BenchCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    scratch::install_handler();
    let result = match command {
        BenchCommand::Job(args) => job::run(&args, out),
        BenchCommand::StateSize(args) => state_size::run(&args, out),
        BenchCommand::Sinks(args) => sinks::run(&args, out),
    };
    match result {
        Err(err) if err.is::<scratch::Interrupted>() => {
            let _ = writeln!(
                std::io::stderr(),
                "interrupted: stopped the benchmark and removed its data (unless --keep)"
            );
            Ok(ExitCode::from(scratch::EXIT_INTERRUPTED))
        }
        Err(err) => Err(err),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
