//! [`FaultyFs`]: an [`Fs`] wrapper that fails or "crashes" at a chosen
//! mutating operation, for crash-consistency tests of checkpoint storage.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use state_core::backend_support::{FileInfo, Fs, FsFile};

/// The kinds of mutating operation [`FaultyFs`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsOp {
    /// [`Fs::create_dir_all`].
    CreateDir,
    /// [`Fs::create`].
    Create,
    /// One `write` or `write_all` call on a created file.
    Write,
    /// [`FsFile::sync_all`].
    SyncAll,
    /// [`Fs::sync_dir`].
    SyncDir,
    /// [`Fs::rename`].
    Rename,
    /// [`Fs::remove_file`] or [`Fs::remove_dir_all`].
    Remove,
    /// [`Fs::hard_link`].
    HardLink,
}

impl FsOp {
    const ALL: [FsOp; 8] = [
        FsOp::CreateDir,
        FsOp::Create,
        FsOp::Write,
        FsOp::SyncAll,
        FsOp::SyncDir,
        FsOp::Rename,
        FsOp::Remove,
        FsOp::HardLink,
    ];

    fn index(self) -> usize {
        match self {
            FsOp::CreateDir => 0,
            FsOp::Create => 1,
            FsOp::Write => 2,
            FsOp::SyncAll => 3,
            FsOp::SyncDir => 4,
            FsOp::Rename => 5,
            FsOp::Remove => 6,
            FsOp::HardLink => 7,
        }
    }
}

/// What an armed fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// The operation fails once; later operations succeed.
    Fail,
    /// The operation and every later one fail, as if the process died.
    Crash,
}

#[derive(Debug, Clone, Copy)]
struct Armed {
    kind: Option<FsOp>,
    /// The matching count (of `kind`, or of all operations) that fires.
    at: u64,
    mode: FaultMode,
}

/// Bytes written to and synced of one file since it was created.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    written: u64,
    synced: u64,
}

#[derive(Debug, Default)]
struct State {
    total: u64,
    by_kind: [u64; FsOp::ALL.len()],
    armed: Option<Armed>,
    fired: u64,
    crashed: bool,
    files: HashMap<PathBuf, Track>,
}

#[derive(Debug)]
struct Shared {
    inner: Arc<dyn Fs>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one mutating operation and fires an armed fault on it.
    fn check(&self, kind: FsOp, path: &Path) -> io::Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        if st.crashed {
            return Err(crashed_error(path));
        }
        st.total += 1;
        st.by_kind[kind.index()] += 1;
        let Some(armed) = st.armed else {
            return Ok(st);
        };
        let count = match armed.kind {
            Some(k) if k != kind => return Ok(st),
            Some(k) => st.by_kind[k.index()],
            None => st.total,
        };
        if count != armed.at {
            return Ok(st);
        }
        st.armed = None;
        st.fired += 1;
        match armed.mode {
            FaultMode::Fail => {
                tracing::debug!(?kind, path = %path.display(), "injected I/O failure");
                Err(io::Error::other(format!(
                    "injected failure of {kind:?} on {}",
                    path.display()
                )))
            }
            FaultMode::Crash => {
                tracing::debug!(?kind, path = %path.display(), "simulated crash");
                st.crashed = true;
                self.lose_unsynced(&mut st);
                Err(crashed_error(path))
            }
        }
    }

    /// Fails if the simulated process has crashed (for reads).
    fn alive(&self, path: &Path) -> io::Result<()> {
        if self.lock().crashed {
            Err(crashed_error(path))
        } else {
            Ok(())
        }
    }

    /// Cuts every file back to its last synced length.
    fn lose_unsynced(&self, st: &mut State) {
        for (path, track) in st.files.drain() {
            if track.written == track.synced {
                continue;
            }
            // Best effort: a file that cannot be rewritten keeps its bytes.
            let Ok(bytes) = self.inner.read(&path) else {
                continue;
            };
            let keep = usize::try_from(track.synced).unwrap_or(usize::MAX);
            let prefix = bytes.get(..keep).unwrap_or(&bytes).to_vec();
            drop(bytes);
            if let Ok(mut file) = self.inner.create(&path) {
                let _ = file.write_all(&prefix);
                let _ = file.sync_all();
            }
        }
    }
}

fn crashed_error(path: &Path) -> io::Error {
    io::Error::other(format!(
        "simulated crash: the process is gone (operation on {})",
        path.display()
    ))
}

/// An [`Fs`] that counts mutating operations and fails or crashes at a chosen one.
///
/// Every mutating operation (directory creation, file creation, each write,
/// `sync_all`, `sync_dir`, rename, removal, hard link) is counted. A test runs
/// its workload once to learn how many operations it performs
/// ([`FaultyFs::op_count`]), then runs it again for every `n` in `1..=count`
/// with the `n`-th operation armed to:
///
/// - **fail** ([`FaultyFs::fail_at`]): that one operation returns an
///   `io::Error`, later ones succeed — a transient I/O error;
/// - **crash** ([`FaultyFs::crash_at`]): that operation and every later one,
///   reads included, fail — the process died there. At the crash, every file
///   holding bytes written since its last `sync_all` is cut back to its synced
///   length (zero if never synced), as a power loss would leave it. Directory
///   entries are not rolled back: a rename or removal that returned is kept.
///
/// Afterwards the test opens a fresh storage on the same directory with a real
/// file system and checks that recovery reaches the last completed checkpoint.
#[derive(Debug)]
pub struct FaultyFs {
    shared: Arc<Shared>,
}

impl FaultyFs {
    /// Wraps `inner`; nothing is armed.
    pub fn new(inner: Arc<dyn Fs>) -> Self {
        FaultyFs {
            shared: Arc::new(Shared {
                inner,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The number of mutating operations so far, of every kind (including
    /// the one a fault fired on).
    pub fn op_count(&self) -> u64 {
        self.shared.lock().total
    }

    /// The number of mutating operations of `kind` so far.
    pub fn op_count_of(&self, kind: FsOp) -> u64 {
        self.shared.lock().by_kind[kind.index()]
    }

    /// Makes the `n`-th mutating operation from now (1-based; of `kind`, or
    /// of any kind if `None`) fail once with an `io::Error`.
    pub fn fail_at(&self, n: u64, kind: Option<FsOp>) {
        self.arm(n, kind, FaultMode::Fail);
    }

    /// Makes the `n`-th mutating operation from now (1-based; of `kind`, or
    /// of any kind if `None`) and every operation after it fail, losing the
    /// bytes not yet synced.
    pub fn crash_at(&self, n: u64, kind: Option<FsOp>) {
        self.arm(n, kind, FaultMode::Crash);
    }

    /// Arms a fault at the `n`-th matching operation from now (`n >= 1`; 0 is taken as 1).
    pub fn arm(&self, n: u64, kind: Option<FsOp>, mode: FaultMode) {
        let mut st = self.shared.lock();
        let base = match kind {
            Some(k) => st.by_kind[k.index()],
            None => st.total,
        };
        st.armed = Some(Armed {
            kind,
            at: base + n.max(1),
            mode,
        });
    }

    /// Removes an armed fault that has not fired.
    pub fn disarm(&self) {
        self.shared.lock().armed = None;
    }

    /// How many faults have fired.
    pub fn faults_fired(&self) -> u64 {
        self.shared.lock().fired
    }

    /// Whether a crash has happened (every operation now fails).
    pub fn has_crashed(&self) -> bool {
        self.shared.lock().crashed
    }
}

/// A file created through [`FaultyFs`].
struct FaultyFile {
    inner: Box<dyn FsFile>,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl FaultyFile {
    fn wrote(&self, n: usize) {
        let mut st = self.shared.lock();
        if let Some(t) = st.files.get_mut(&self.path) {
            t.written += n as u64;
        }
    }
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        drop(self.shared.check(FsOp::Write, &self.path)?);
        let n = self.inner.write(buf)?;
        self.wrote(n);
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        drop(self.shared.check(FsOp::Write, &self.path)?);
        self.inner.write_all(buf)?;
        self.wrote(buf.len());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.shared.alive(&self.path)?;
        self.inner.flush()
    }
}

impl FsFile for FaultyFile {
    fn sync_all(&mut self) -> io::Result<()> {
        drop(self.shared.check(FsOp::SyncAll, &self.path)?);
        self.inner.sync_all()?;
        let mut st = self.shared.lock();
        if let Some(t) = st.files.get_mut(&self.path) {
            t.synced = t.written;
        }
        Ok(())
    }
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::CreateDir, path)?);
        self.shared.inner.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        drop(self.shared.check(FsOp::Create, path)?);
        let inner = self.shared.inner.create(path)?;
        self.shared
            .lock()
            .files
            .insert(path.to_path_buf(), Track::default());
        Ok(Box::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            shared: self.shared.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::Rename, from)?);
        self.shared.inner.rename(from, to)?;
        let mut st = self.shared.lock();
        st.files.remove(to);
        if let Some(t) = st.files.remove(from) {
            st.files.insert(to.to_path_buf(), t);
        }
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::SyncDir, path)?);
        self.shared.inner.sync_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::Remove, path)?);
        self.shared.inner.remove_file(path)?;
        self.shared.lock().files.remove(path);
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::Remove, path)?);
        self.shared.inner.remove_dir_all(path)?;
        self.shared.lock().files.retain(|p, _| !p.starts_with(path));
        Ok(())
    }
    fn read(&self, path: &Path) -> io::Result<Bytes> {
        self.shared.alive(path)?;
        self.shared.inner.read(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.shared.alive(path)?;
        self.shared.inner.read_dir(path)
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        self.shared.alive(path)?;
        self.shared.inner.stat(path)
    }
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        drop(self.shared.check(FsOp::HardLink, dst)?);
        self.shared.inner.hard_link(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::backend_support::{StdFs, write_atomic};

    fn faulty() -> (tempfile::TempDir, FaultyFs) {
        (tempfile::tempdir().unwrap(), FaultyFs::new(Arc::new(StdFs)))
    }

    #[test]
    fn counts_each_kind() {
        let (dir, fs) = faulty();
        write_atomic(&fs, &dir.path().join("a"), b"x").unwrap();
        // create, write, sync_all, rename, sync_dir
        assert_eq!(fs.op_count(), 5);
        assert_eq!(fs.op_count_of(FsOp::SyncDir), 1);
        fs.read(&dir.path().join("a")).unwrap();
        assert_eq!(fs.op_count(), 5, "reads are not counted");
    }

    #[test]
    fn fail_fires_once_on_the_chosen_op() {
        let (dir, fs) = faulty();
        let path = dir.path().join("a");
        fs.fail_at(1, Some(FsOp::Rename));
        let err = write_atomic(&fs, &path, b"x").unwrap_err();
        assert!(
            err.to_string().contains("injected failure of Rename"),
            "{err}"
        );
        assert_eq!(fs.faults_fired(), 1);
        write_atomic(&fs, &path, b"y").unwrap();
        assert_eq!(&fs.read(&path).unwrap()[..], b"y");
    }

    #[test]
    fn crash_fails_everything_after_and_loses_unsynced_bytes() {
        let (dir, fs) = faulty();
        let synced = dir.path().join("synced");
        let unsynced = dir.path().join("unsynced");
        let mut f = fs.create(&synced).unwrap();
        f.write_all(b"durable").unwrap();
        f.sync_all().unwrap();
        f.write_all(b" lost").unwrap();
        let mut g = fs.create(&unsynced).unwrap();
        g.write_all(b"all lost").unwrap();
        fs.crash_at(1, None);
        assert!(fs.sync_dir(dir.path()).is_err());
        assert!(fs.has_crashed());
        assert!(f.write_all(b"more").is_err());
        assert!(fs.read(&synced).is_err());
        assert_eq!(&StdFs.read(&synced).unwrap()[..], b"durable");
        assert_eq!(StdFs.read(&unsynced).unwrap().len(), 0);
    }

    #[test]
    fn renamed_files_keep_their_sync_state() {
        let (dir, fs) = faulty();
        write_atomic(&fs, &dir.path().join("meta"), b"complete").unwrap();
        fs.crash_at(1, None);
        assert!(fs.create(&dir.path().join("b")).is_err());
        assert_eq!(
            &StdFs.read(&dir.path().join("meta")).unwrap()[..],
            b"complete"
        );
    }
}
