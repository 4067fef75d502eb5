//! Starts the processes of a timely job on loopback (or given) addresses,
//! restarts all of them when one dies, and stops once all ended well.
//!
//! Timely is fail-stop: when a worker or process fails, the computation
//! cannot go on. The supervisor kills the survivors and starts every
//! process again; each resumes from the newest intact checkpoint (see
//! [`crate::run_worker`]), with the same or another number of workers.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::error::TimelyError;

/// The environment variable that tells a child its attempt number (0 first).
pub const ATTEMPT_ENV: &str = "CAIRN_TIMELY_ATTEMPT";

/// What to run and how often to try.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The program of every process.
    pub program: PathBuf,
    /// Its arguments; the supervisor appends timely's `-w`, `-n`, `-p`, `-h`.
    pub args: Vec<String>,
    /// Extra environment variables of every process.
    pub env: Vec<(String, String)>,
    /// Processes (`-n`).
    pub processes: usize,
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Restarts allowed after the first attempt before giving up.
    pub max_restarts: u32,
    /// Where the host files go (one per attempt).
    pub work_dir: PathBuf,
    /// Pass timely's arguments in this environment variable (space
    /// separated) instead of appending them, for a program whose command
    /// line is not its own (a test harness re-running itself).
    pub timely_args_env: Option<String>,
}

/// How a supervised job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorReport {
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Why each failed attempt failed ("process 1 was killed by signal 9").
    pub failures: Vec<String>,
}

/// Runs the job to completion, restarting every process after a failure.
/// Fails when `max_restarts` restarts did not suffice, with every reason.
pub fn supervise(config: &SupervisorConfig) -> Result<SupervisorReport, TimelyError> {
    if config.processes == 0 || config.workers == 0 {
        return Err(TimelyError::Config(format!(
            "processes ({}) and workers ({}) must be at least 1",
            config.processes, config.workers
        )));
    }
    let mut failures = Vec::new();
    for attempt in 0..=config.max_restarts {
        let mut children = start(config, attempt)?;
        let outcome = wait_all(&mut children);
        match outcome {
            None => {
                return Ok(SupervisorReport {
                    attempts: attempt + 1,
                    failures,
                });
            }
            Some(reason) => {
                tracing::warn!(attempt, %reason, "attempt failed; restarting every process");
                failures.push(reason);
            }
        }
    }
    Err(TimelyError::Timely(format!(
        "the job failed {} times: {}",
        failures.len(),
        failures.join("; ")
    )))
}

/// Free loopback addresses, one per process: the kernel picks the ports.
fn free_addresses(n: usize) -> Result<Vec<String>, TimelyError> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| TimelyError::io("binding a loopback port", e))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.to_string())
                .map_err(|e| TimelyError::io("reading a loopback port", e))
        })
        .collect()
}

fn start(config: &SupervisorConfig, attempt: u32) -> Result<Vec<Child>, TimelyError> {
    let mut timely_args = vec!["-w".to_owned(), config.workers.to_string()];
    if config.processes > 1 {
        let hosts = config.work_dir.join(format!("hosts-{attempt}"));
        let mut file = std::fs::File::create(&hosts)
            .map_err(|e| TimelyError::io(format!("creating {}", hosts.display()), e))?;
        for address in free_addresses(config.processes)? {
            writeln!(file, "{address}")
                .map_err(|e| TimelyError::io(format!("writing {}", hosts.display()), e))?;
        }
        timely_args.extend([
            "-n".to_owned(),
            config.processes.to_string(),
            "-h".to_owned(),
            hosts.display().to_string(),
        ]);
    }
    let mut children = Vec::with_capacity(config.processes);
    for process in 0..config.processes {
        let mut args = timely_args.clone();
        if config.processes > 1 {
            args.extend(["-p".to_owned(), process.to_string()]);
        }
        let mut command = Command::new(&config.program);
        command.args(&config.args);
        match &config.timely_args_env {
            Some(var) => {
                command.env(var, args.join(" "));
            }
            None => {
                command.args(&args);
            }
        }
        command.env(ATTEMPT_ENV, attempt.to_string());
        for (k, v) in &config.env {
            command.env(k, v);
        }
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                kill_all(&mut children);
                return Err(TimelyError::io(
                    format!("starting {}", config.program.display()),
                    e,
                ));
            }
        }
    }
    tracing::info!(
        attempt,
        processes = config.processes,
        workers = config.workers,
        "started the job's processes"
    );
    Ok(children)
}

/// Waits until every child ended well (`None`) or one failed (its reason;
/// the others are killed and reaped).
fn wait_all(children: &mut [Child]) -> Option<String> {
    let mut done = vec![false; children.len()];
    loop {
        for (i, child) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            match child.try_wait() {
                Ok(Some(status)) if status.success() => done[i] = true,
                Ok(Some(status)) => {
                    let reason = format!("process {i} {}", describe(status));
                    kill_all(children);
                    return Some(reason);
                }
                Ok(None) => {}
                Err(e) => {
                    kill_all(children);
                    return Some(format!("process {i} could not be waited for: {e}"));
                }
            }
        }
        if done.iter().all(|&d| d) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "ended without an exit code".to_owned(),
    }
}

fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = child.kill();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}
