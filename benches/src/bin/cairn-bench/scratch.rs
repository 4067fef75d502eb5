//! The harness's on-disk data and Ctrl-C: each run writes under a scratch
//! directory that is removed when the run ends (also after an error or
//! Ctrl-C) unless `--keep` is given.
//!
//! The first Ctrl-C asks the run to stop: the harness checks [`interrupted`]
//! between steps, cancels a running job, and returns [`Interrupted`], and the
//! scratch data is removed on the way out. A second Ctrl-C removes the
//! registered scratch data at once and exits with status 130.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once, PoisonError};

use anyhow::Context as _;

/// The exit status after Ctrl-C (128 + SIGINT), as shells report it.
pub(super) const EXIT_INTERRUPTED: u8 = 130;

static STOP: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();
static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The run was stopped by Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by Ctrl-C")
    }
}

impl std::error::Error for Interrupted {}

/// Whether Ctrl-C was pressed.
pub(super) fn interrupted() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// An error if Ctrl-C was pressed: call between the steps of a run.
pub(super) fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Installs the Ctrl-C handler (once per process). Failing to install it
/// is not fatal: Ctrl-C then kills the process the default way.
pub(super) fn install_handler() {
    HANDLER.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: do not wait for the run to notice.
                let paths = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
                for path in paths.iter() {
                    let _ = std::fs::remove_dir_all(path);
                }
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        });
        if let Err(err) = installed {
            tracing::warn!(error = %err, "cannot install the Ctrl-C handler");
        }
    });
}

/// A directory a run writes its checkpoints under.
#[derive(Debug)]
pub(super) struct Scratch {
    /// What this run created and removes at the end (unless kept).
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// A fresh directory for one run: `<dir>/<name>-<pid>-<n>` under `--dir`,
    /// or under the system temp directory without it. `--dir` is created if
    /// missing and never removed itself.
    pub(super) fn create(dir: Option<&Path>, name: &str, keep: bool) -> anyhow::Result<Self> {
        let parent = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("--dir {}", d.display()))?;
                d.to_path_buf()
            }
            None => std::env::temp_dir(),
        };
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{name}-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    REGISTERED
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(path.clone());
                    return Ok(Scratch { path, keep });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let shown = if dir.is_some() { "--dir " } else { "temp dir " };
                    return Err(anyhow::Error::new(e)
                        .context(format!("{shown}{}: cannot create", path.display())));
                }
            }
        }
    }

    /// The directory to write checkpoints under.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the data stays after the run (`--keep`).
    pub(super) fn kept(&self) -> bool {
        self.keep
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
        registered.retain(|p| p != &self.path);
        drop(registered);
        if !self.keep
            && let Err(err) = std::fs::remove_dir_all(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove bench data");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_removed_unless_kept() {
        let parent = tempfile::tempdir().unwrap();
        let a = Scratch::create(Some(parent.path()), "bench", false).unwrap();
        let b = Scratch::create(Some(parent.path()), "bench", true).unwrap();
        assert_ne!(a.path(), b.path());
        std::fs::write(a.path().join("x"), b"1").unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop(a);
        drop(b);
        assert!(!pa.exists());
        assert!(pb.exists());
        assert!(parent.path().exists());
    }
}
