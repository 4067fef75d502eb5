//! Job control between processes: `cairn savepoint <job-dir>` and
//! `cairn stop <job-dir>` ask the `cairn run` process that holds the job
//! directory's lock for a savepoint (and, for stop, to end the job after
//! it), through request files in the job directory. A later job control
//! API puts the same calls ([`executor::JobController`]) on HTTP.
//!
//! Why files and not SIGUSR1: a signal carries no parameters (format,
//! directory) and no answer, and a request file names the job by the
//! directory its user already knows.
//!
//! **Protocol.** The requester checks that a live process holds the job
//! lock, then writes `<job-dir>/_savepoint-request-<nonce>.json`
//! (`{"format": "canonical"|"native", "dir": "/abs/dir" | null, "stop":
//! bool}`) with `write_atomic` (a dot-named temp file renamed into place),
//! so the job never reads half a request. The job polls its directory every 100 ms, removes the
//! request, takes the savepoint into `<dir>/savepoint-<job>-<n>-<hex>/`
//! (`dir` from the request, else the job's `--savepoint-dir`) and answers
//! in `_savepoint-response-<nonce>.json` (`{"ok", "id", "path", "bytes",
//! "duration_ms", "error"}`), also with `write_atomic`. The requester waits
//! for the answer, removes it and prints the savepoint's path; when the lock
//! is released first (the job ended or died), it fails saying so. Requests
//! and answers a killed process left behind are orphans to the next start's
//! sweep (`sweep.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend_fs::{FsCheckpointStorage, JobLock, LockState};
use executor::{JobController, SavepointInfo, SavepointTarget};
use serde::{Deserialize, Serialize};
use state_core::backend_support::{StdFs, write_atomic};
use state_core::{CheckpointStorage, Clock, JobId, SavepointFormat, SystemClock};

const REQUEST_PREFIX: &str = "_savepoint-request-";
const RESPONSE_PREFIX: &str = "_savepoint-response-";
/// How often the job looks for requests and a requester for the answer.
const POLL: Duration = Duration::from_millis(100);

/// A request file.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    format: String,
    dir: Option<PathBuf>,
    stop: bool,
}

/// An answer file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Response {
    ok: bool,
    id: Option<u64>,
    path: Option<PathBuf>,
    bytes: u64,
    duration_ms: u64,
    error: Option<String>,
}

/// The savepoint format option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FormatArg {
    /// Backend-portable: restores into heap or RocksDB at any parallelism
    #[default]
    Canonical,
    /// The backend's own files (RocksDB SSTs): faster, same backend only
    Native,
}

impl From<FormatArg> for SavepointFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Canonical => SavepointFormat::Canonical,
            FormatArg::Native => SavepointFormat::Native,
        }
    }
}

/// What `cairn savepoint` / `cairn stop` ask for.
pub(crate) struct Ask<'a> {
    pub job_dir: &'a Path,
    pub dir: Option<&'a Path>,
    pub format: FormatArg,
    pub stop: bool,
    pub timeout: Duration,
    pub json: bool,
}

/// `cairn savepoint` and `cairn stop`: asks the job running in `job_dir`
/// and prints the savepoint's path (Flink: "Savepoint completed. Path: …").
pub(crate) fn ask(ask: &Ask<'_>, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let job_dir = ask.job_dir;
    if !job_dir.is_dir() {
        bail!(
            "{}: not a job directory (no such directory)",
            job_dir.display()
        );
    }
    let owner = match JobLock::probe(job_dir).map_err(crate::human::anyhow)? {
        LockState::Held(owner) => owner,
        LockState::Free => bail!(
            "no job runs in {}: its lock is free (the job ended or never started); \
             a savepoint is taken by the running job (`cairn checkpoints convert` rewrites \
             a retained checkpoint offline)",
            job_dir.display()
        ),
    };
    let dir = ask
        .dir
        .map(std::path::absolute)
        .transpose()
        .context("the savepoint directory")?;
    if let Some(dir) = &dir
        && dir.exists()
        && !dir.is_dir()
    {
        bail!("{}: exists and is not a directory", dir.display());
    }
    let nonce = format!("{:x}-{:x}", std::process::id(), SystemClock.now_millis());
    let request = job_dir.join(format!("{REQUEST_PREFIX}{nonce}.json"));
    let response = job_dir.join(format!("{RESPONSE_PREFIX}{nonce}.json"));
    let body = serde_json::to_vec(&Request {
        format: SavepointFormat::from(ask.format).name().to_owned(),
        dir,
        stop: ask.stop,
    })?;
    write_atomic(&StdFs, &request, &body)
        .with_context(|| format!("writing the request {}", request.display()))?;
    tracing::info!(request = %request.display(), owner = ?owner, "asked the job for a savepoint");
    let started = Instant::now();
    let answer = loop {
        if let Ok(bytes) = std::fs::read(&response) {
            let _ = std::fs::remove_file(&response);
            break serde_json::from_slice::<Response>(&bytes)
                .with_context(|| format!("the job's answer {}", response.display()))?;
        }
        if matches!(JobLock::probe(job_dir), Ok(LockState::Free)) && !response.exists() {
            let _ = std::fs::remove_file(&request);
            bail!(
                "the job in {} ended before it answered the savepoint request",
                job_dir.display()
            );
        }
        if started.elapsed() >= ask.timeout {
            let _ = std::fs::remove_file(&request);
            bail!(
                "the job in {} did not answer within {:?} (--timeout)",
                job_dir.display(),
                ask.timeout
            );
        }
        std::thread::sleep(POLL / 2);
    };
    if !answer.ok {
        // Not bad input: the job runs on, and a later try may succeed.
        if ask.json {
            serde_json::to_writer_pretty(&mut *out, &answer)?;
            writeln!(out)?;
        }
        let _ = writeln!(
            std::io::stderr(),
            "error: the savepoint failed: {}",
            answer.error.as_deref().unwrap_or("no reason given")
        );
        return Ok(ExitCode::from(1));
    }
    let path = answer.path.clone().unwrap_or_default();
    if ask.stop {
        // Stop: the savepoint completed; the job is ending.
        while !matches!(JobLock::probe(job_dir), Ok(LockState::Free)) {
            if started.elapsed() >= ask.timeout {
                bail!(
                    "savepoint {} completed, but the job in {} did not end within {:?}",
                    path.display(),
                    job_dir.display(),
                    ask.timeout
                );
            }
            std::thread::sleep(POLL / 2);
        }
    }
    if ask.json {
        serde_json::to_writer_pretty(&mut *out, &answer)?;
        writeln!(out)?;
    } else {
        writeln!(out, "Savepoint completed. Path: {}", path.display())?;
        if ask.stop {
            writeln!(out, "The job ended.")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The running job's side: answers request files until finished.
pub(crate) struct Watcher {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `job_dir` for requests to `controller`; savepoints without a
    /// directory of their own go to `default_dir`.
    pub(crate) fn start(
        job_dir: PathBuf,
        default_dir: Option<PathBuf>,
        job_id: JobId,
        controller: JobController,
    ) -> anyhow::Result<Self> {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::Builder::new()
            .name("job-control".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for request in pending_requests(&job_dir) {
                        answer(&request, default_dir.as_deref(), &job_id, &controller);
                    }
                    std::thread::sleep(POLL);
                }
            })
            .context("starting the job control thread")?;
        Ok(Watcher {
            done,
            thread: Some(thread),
        })
    }

    /// Stops watching (the job ended) and waits for the thread.
    pub(crate) fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The request files in `job_dir`, oldest name first.
fn pending_requests(job_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(REQUEST_PREFIX) && n.ends_with(".json"))
        })
        .collect();
    found.sort();
    found
}

/// Takes one request, runs it, writes the answer next to it.
fn answer(request: &Path, default_dir: Option<&Path>, job_id: &JobId, controller: &JobController) {
    let Some(name) = request.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let response = request.with_file_name(name.replacen(REQUEST_PREFIX, RESPONSE_PREFIX, 1));
    let read = std::fs::read(request);
    let _ = std::fs::remove_file(request);
    let outcome = read
        .context("reading the request")
        .and_then(|bytes| serde_json::from_slice::<Request>(&bytes).context("decoding the request"))
        .and_then(|req| take(&req, default_dir, job_id, controller));
    let body = match outcome {
        Ok((info, path)) => Response {
            ok: true,
            id: Some(info.id.get()),
            path: Some(path),
            bytes: info.bytes,
            duration_ms: info.duration.as_millis() as u64,
            error: None,
        },
        Err(e) => {
            tracing::warn!(request = %request.display(), error = %format!("{e:#}"), "a savepoint request failed");
            Response {
                error: Some(format!("{e:#}")),
                ..Response::default()
            }
        }
    };
    let written = serde_json::to_vec(&body)
        .map_err(anyhow::Error::from)
        .and_then(|bytes| Ok(write_atomic(&StdFs, &response, &bytes)?));
    if let Err(e) = written {
        tracing::warn!(response = %response.display(), error = %e, "could not answer a savepoint request");
    }
}

/// Takes the savepoint a request asks for; its path on success.
fn take(
    req: &Request,
    default_dir: Option<&Path>,
    job_id: &JobId,
    controller: &JobController,
) -> anyhow::Result<(SavepointInfo, PathBuf)> {
    let format: SavepointFormat = req.format.parse()?;
    let Some(dir) = req.dir.as_deref().or(default_dir).map(Path::to_path_buf) else {
        bail!(
            "no savepoint directory: name one (cairn savepoint --dir, cairn stop \
             --savepoint-dir) or start the job with --savepoint-dir"
        );
    };
    let opened = Arc::new(std::sync::Mutex::new(None::<PathBuf>));
    let seen = opened.clone();
    let (target_dir, job) = (dir.clone(), job_id.clone());
    let target = SavepointTarget::new(format, move |id| {
        let storage =
            FsCheckpointStorage::create_savepoint(&target_dir, &job, id, SystemClock.now_millis())?;
        if let Ok(mut seen) = seen.lock() {
            *seen = Some(storage.job_dir().to_path_buf());
        }
        Ok(Arc::new(storage) as Arc<dyn CheckpointStorage>)
    });
    let result = if req.stop {
        controller.stop_with_savepoint(target)
    } else {
        controller.trigger_savepoint(target)
    };
    let path = opened.lock().ok().and_then(|p| p.clone());
    match result {
        Ok(info) => Ok((info, path.unwrap_or(dir))),
        Err(e) => {
            if let Some(path) = &path {
                FsCheckpointStorage::remove_empty_savepoint(path);
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use backend_fs::LockOwner;

    use super::*;

    fn ask_in(job_dir: &Path, timeout: Duration) -> anyhow::Result<ExitCode> {
        let mut out = Vec::new();
        ask(
            &Ask {
                job_dir,
                dir: None,
                format: FormatArg::Canonical,
                stop: false,
                timeout,
                json: false,
            },
            &mut out,
        )
    }

    #[test]
    fn a_job_that_never_answers_times_out_and_its_request_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        // This process holds the lock: a live job that does not watch.
        let _lock = JobLock::acquire(dir.path(), &LockOwner::this_process(1)).unwrap();
        let err = ask_in(dir.path(), Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("did not answer within"), "{err}");
        assert!(pending_requests(dir.path()).is_empty());
    }

    #[test]
    fn an_undecodable_answer_is_an_error_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let _lock = JobLock::acquire(dir.path(), &LockOwner::this_process(1)).unwrap();
        let job_dir = dir.path().to_path_buf();
        let garbler = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(request) = pending_requests(&job_dir).pop() {
                    let name = request.file_name().unwrap().to_str().unwrap();
                    let response =
                        request.with_file_name(name.replacen(REQUEST_PREFIX, RESPONSE_PREFIX, 1));
                    std::fs::write(response, b"{not json").unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let err = ask_in(dir.path(), Duration::from_secs(30)).unwrap_err();
        garbler.join().unwrap();
        assert!(format!("{err:#}").contains(RESPONSE_PREFIX), "{err:#}");
    }
}
