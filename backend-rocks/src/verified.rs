//! Files of local checkpoint copies whose CRC-32 this process has checked,
//! so a restore need not read them again.
//!
//! Local recovery may use a local copy only when every file holds the bytes
//! the handle names. Reading and checksumming the whole copy costs as much
//! as reading it from storage on a fast disk, which is most of what local
//! recovery is meant to save. So every time this process reads a local file
//! in full and knows its CRC-32 (uploading it, verifying it at a restore, or
//! the scrub after an upload), it notes the file's identity (device, inode),
//! length and modification time. A later restore trusts a file whose
//! identity, length and mtime are unchanged and whose noted CRC-32 equals
//! the handle's; any other file is read and checksummed in full.
//!
//! A write to the file through the filesystem changes its mtime, so it is
//! caught. The race — a write within the same timestamp tick as the one the
//! file had when it was read — is closed by noting only files whose mtime
//! was at least [`SETTLED`] older than the start of the read (Linux stamps
//! files with a clock of at most 10 ms granularity). Damage that bypasses the
//! filesystem (bit rot on the medium) is left to RocksDB's block checksums,
//! which every read verifies. Notes live in memory only: a new process
//! checks every file once. On non-Unix systems nothing is noted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How much older than the start of a read a file's mtime must be for the
/// read to be noted.
pub(crate) const SETTLED: Duration = Duration::from_millis(50);

/// What a noted file looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: SystemTime,
}

/// A file's (device, inode), length and mtime.
fn identify(path: &Path) -> Option<((u64, u64), Stamp)> {
    let meta = std::fs::metadata(path).ok()?;
    let stamp = Stamp {
        len: meta.len(),
        mtime: meta.modified().ok()?,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(((meta.dev(), meta.ino()), stamp))
    }
    #[cfg(not(unix))]
    {
        let _ = stamp;
        None
    }
}

/// The wall-clock time, to compare with file mtimes (which are wall-clock
/// times set by the kernel; the job's `Clock` has nothing to do with them).
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// A file about to be read in full: its identity before the read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    id: (u64, u64),
    stamp: Stamp,
    started: SystemTime,
}

/// The noted files, shared by the backends of one factory.
#[derive(Debug, Default)]
pub(crate) struct VerifiedFiles {
    noted: Mutex<HashMap<(u64, u64), (Stamp, u32)>>,
}

impl VerifiedFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), (Stamp, u32)>> {
        self.noted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call before reading `path` in full; `None` if it cannot be noted.
    pub(crate) fn before_read(path: &Path) -> Option<Reading> {
        let started = wall_clock();
        let (id, stamp) = identify(path)?;
        Some(Reading { id, stamp, started })
    }

    /// Notes that the read begun with `reading` found bytes with `crc32`, if
    /// the file did not change during the read and had settled before it.
    pub(crate) fn note(&self, path: &Path, reading: Option<Reading>, crc32: u32) {
        let Some(r) = reading else { return };
        let settled = r
            .stamp
            .mtime
            .checked_add(SETTLED)
            .is_some_and(|t| t <= r.started);
        let unchanged = identify(path).is_some_and(|(id, stamp)| id == r.id && stamp == r.stamp);
        if settled && unchanged {
            self.lock().insert(r.id, (r.stamp, crc32));
        }
    }

    /// Whether `path` is a noted file, unchanged since, of `len` bytes with
    /// CRC-32 `crc32`.
    pub(crate) fn trusted(&self, path: &Path, len: u64, crc32: u32) -> bool {
        let Some((id, stamp)) = identify(path) else {
            return false;
        };
        stamp.len == len
            && self
                .lock()
                .get(&id)
                .is_some_and(|&(noted, crc)| noted == stamp && crc == crc32)
    }

    /// Whether `path` is noted and unchanged (whatever its CRC).
    pub(crate) fn is_noted(&self, path: &Path) -> bool {
        identify(path).is_some_and(|(id, stamp)| {
            self.lock()
                .get(&id)
                .is_some_and(|&(noted, _)| noted == stamp)
        })
    }
}
