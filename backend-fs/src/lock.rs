//! [`JobLock`]: one process at a time per job directory.
//!
//! Two processes running the same job directory would delete each other's
//! in-progress checkpoints, subsume each other's retained ones and reuse
//! checkpoint ids. The lock is an OS lock (`flock`, through
//! [`std::fs::File::try_lock`]) on `<job-dir>/_lock`, which also names the
//! owner (pid, host, start time) for the error the second process prints.
//! The kernel releases the lock when its owner dies, however it dies, so a
//! lock file left by a killed process is stale and is taken over; its
//! previous owner is logged.
//!
//! The file is never deleted: deleting it while another process has it open
//! would let two processes lock two different files of the same name. A
//! clean release empties it, so a non-empty unlocked file means the previous
//! owner did not release it (it was killed).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use state_core::{Result, StateError};

/// The lock file's name inside the job directory.
pub const LOCK_FILE_NAME: &str = "_lock";

/// Who holds (or held) a job directory's lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// The owner's process id.
    pub pid: u32,
    /// The owner's host name.
    pub host: String,
    /// When the owner took the lock, in milliseconds since the Unix epoch.
    pub started_millis: u64,
}

impl LockOwner {
    /// This process on this host, taking the lock at `started_millis`.
    pub fn this_process(started_millis: u64) -> Self {
        LockOwner {
            pid: std::process::id(),
            host: host_name(),
            started_millis,
        }
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "pid={}\nhost={}\nstarted_ms={}\n",
            self.pid, self.host, self.started_millis
        )
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut pid = None;
        let mut host = None;
        let mut started = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("host", v)) => host = Some(v.to_owned()),
                Some(("started_ms", v)) => started = v.parse().ok(),
                _ => {}
            }
        }
        Some(LockOwner {
            pid: pid?,
            host: host?,
            started_millis: started?,
        })
    }
}

impl std::fmt::Display for LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} (started at {} ms since the epoch)",
            self.pid, self.host, self.started_millis
        )
    }
}

/// Whether a job directory's lock is held, as [`JobLock::probe`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No live process holds the lock (or there is no lock file).
    Free,
    /// A live process holds it; the owner its lock file names, if readable.
    Held(Option<LockOwner>),
}

/// The exclusive lock on one job directory, held until dropped.
#[derive(Debug)]
pub struct JobLock {
    file: File,
    path: PathBuf,
    stale: Option<LockOwner>,
}

impl JobLock {
    /// Takes the lock of `job_dir` (created if missing) for `owner`.
    ///
    /// Errors: [`StateError::InvalidArgument`] naming the job directory and
    /// the owner when another live process holds it; [`StateError::Io`] on
    /// the lock file.
    pub fn acquire(job_dir: &Path, owner: &LockOwner) -> Result<Self> {
        std::fs::create_dir_all(job_dir).map_err(|e| StateError::io(job_dir, e))?;
        let path = job_dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StateError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_owner(&mut file, &path)?;
                let who = holder.map_or_else(|| "another process".to_owned(), |h| h.to_string());
                return Err(StateError::invalid(format!(
                    "job directory {} is in use by {who} (lock {}); stop that job first, \
                     two processes must not run one job directory",
                    job_dir.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(StateError::io(&path, e)),
        }
        let stale = read_owner(&mut file, &path)?;
        if let Some(previous) = &stale {
            tracing::warn!(
                lock = %path.display(),
                previous_pid = previous.pid,
                previous_host = %previous.host,
                "taking over the stale lock of {previous}: it ended without releasing it"
            );
        }
        write_owner(&mut file, &path, Some(owner))?;
        Ok(JobLock { file, path, stale })
    }

    /// Whether a live process holds the lock of `job_dir`, without taking
    /// it and without creating anything: a shared lock is tried and released
    /// at once. A `cairn run` starting in that instant is refused as if the
    /// directory were in use, so probe for reports, not in a loop.
    ///
    /// Errors: [`StateError::Io`] on the lock file.
    pub fn probe(job_dir: &Path) -> Result<LockState> {
        let path = job_dir.join(LOCK_FILE_NAME);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
            Err(e) => return Err(StateError::io(&path, e)),
        };
        match file.try_lock_shared() {
            // Dropping the file releases the shared lock.
            Ok(()) => Ok(LockState::Free),
            Err(TryLockError::WouldBlock) => Ok(LockState::Held(read_owner(&mut file, &path)?)),
            Err(TryLockError::Error(e)) => Err(StateError::io(&path, e)),
        }
    }

    /// The previous owner, when it ended without releasing the lock.
    pub fn taken_over_from(&self) -> Option<&LockOwner> {
        self.stale.as_ref()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Emptied = released cleanly; closing the file releases the lock.
        if let Err(e) = write_owner(&mut self.file, &self.path, None) {
            tracing::warn!(lock = %self.path.display(), error = %e, "cannot clear the job lock");
        }
    }
}

fn read_owner(file: &mut File, path: &Path) -> Result<Option<LockOwner>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(|e| StateError::io(path, e))?;
    Ok(LockOwner::decode(&text))
}

fn write_owner(file: &mut File, path: &Path, owner: Option<&LockOwner>) -> Result<()> {
    let text = owner.map(LockOwner::encode).unwrap_or_default();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_data())
        .map_err(|e| StateError::io(path, e))
}

/// This machine's host name (`/proc/sys/kernel/hostname`, then
/// `/etc/hostname`), or `unknown`.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32) -> LockOwner {
        LockOwner {
            pid,
            host: "test-host".into(),
            started_millis: 1_000,
        }
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_owner_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        let first = JobLock::acquire(&job, &owner(41)).unwrap();
        assert!(first.taken_over_from().is_none());
        // Another open file description: flock treats it as another owner.
        let err = JobLock::acquire(&job, &owner(42)).unwrap_err().to_string();
        assert!(err.contains("pid 41 on host test-host"), "{err}");
        assert!(err.contains(&job.display().to_string()), "{err}");
        drop(first);
        assert_eq!(
            std::fs::read_to_string(job.join(LOCK_FILE_NAME)).unwrap(),
            ""
        );
        let second = JobLock::acquire(&job, &owner(42)).unwrap();
        assert!(
            second.taken_over_from().is_none(),
            "a clean release is not stale"
        );
    }

    #[test]
    fn probe_names_a_live_owner_and_leaves_a_free_lock_free() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        assert_eq!(JobLock::probe(&job).unwrap(), LockState::Free);
        assert!(!job.exists(), "the probe created the job directory");
        let held = JobLock::acquire(&job, &owner(5)).unwrap();
        assert_eq!(
            JobLock::probe(&job).unwrap(),
            LockState::Held(Some(owner(5)))
        );
        drop(held);
        assert_eq!(JobLock::probe(&job).unwrap(), LockState::Free);
        // The probe released its shared lock: the job directory can be taken.
        let _again = JobLock::acquire(&job, &owner(6)).unwrap();
    }

    #[test]
    fn a_job_directory_that_cannot_be_created_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let job = file.join("job");
        let err = JobLock::acquire(&job, &owner(1)).unwrap_err();
        assert_eq!(err.kind(), state_core::ErrorKind::Io);
        assert!(
            err.to_string().contains(&job.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn an_unreleased_lock_file_is_stale_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed owner leaves: its record, and no lock held.
        std::fs::write(dir.path().join(LOCK_FILE_NAME), owner(7).encode()).unwrap();
        let lock = JobLock::acquire(dir.path(), &owner(8)).unwrap();
        assert_eq!(lock.taken_over_from(), Some(&owner(7)));
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(LockOwner::decode(&text), Some(owner(8)));
    }
}
