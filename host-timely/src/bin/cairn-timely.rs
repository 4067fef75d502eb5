//! `cairn-timely run`: starts the processes of a checkpointed timely job,
//! restarts all of them when one dies, and exits once all ended well.
//!
//! ```text
//! cairn-timely run [-n PROCESSES] [-w WORKERS] [--max-restarts N] -- PROGRAM [ARGS...]
//! ```
//!
//! Every process runs `PROGRAM ARGS... -w WORKERS [-n PROCESSES -h HOSTFILE -p INDEX]`
//! on free loopback ports; the program resumes from the newest intact
//! checkpoint itself (`cairn_timely::run_worker`).

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_timely::supervisor::{SupervisorConfig, supervise};

const USAGE: &str =
    "usage: cairn-timely run [-n PROCESSES] [-w WORKERS] [--max-restarts N] -- PROGRAM [ARGS...]";

fn parse(args: &[String]) -> Result<SupervisorConfig, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(USAGE.to_owned());
    };
    if cmd != "run" {
        return Err(format!("unknown command {cmd:?}; {USAGE}"));
    }
    let split = rest
        .iter()
        .position(|a| a == "--")
        .ok_or_else(|| format!("missing `-- PROGRAM`; {USAGE}"))?;
    let (options, program) = rest.split_at(split);
    let program = &program[1..];
    let Some((program, program_args)) = program.split_first() else {
        return Err(format!("missing PROGRAM after `--`; {USAGE}"));
    };
    let mut config = SupervisorConfig {
        program: PathBuf::from(program),
        args: program_args.to_vec(),
        env: Vec::new(),
        processes: 1,
        workers: 1,
        max_restarts: 10,
        work_dir: std::env::temp_dir(),
        timely_args_env: None,
    };
    let mut it = options.iter();
    while let Some(option) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("option {option} needs a value; {USAGE}"))?;
        let number = |name: &str| -> Result<usize, String> {
            value
                .parse::<usize>()
                .map_err(|_| format!("{name} takes a non-negative number, got {value:?}"))
        };
        match option.as_str() {
            "-n" | "--processes" => config.processes = number("--processes")?,
            "-w" | "--workers" => config.workers = number("--workers")?,
            "--max-restarts" => {
                config.max_restarts = u32::try_from(number("--max-restarts")?)
                    .map_err(|_| "--max-restarts is too large".to_owned())?;
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::from(2);
        }
    };
    match supervise(&config) {
        Ok(report) => {
            tracing::info!(attempts = report.attempts, "the job finished");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}
