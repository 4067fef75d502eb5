//! What this process used, from Linux's `/proc/self`: peak resident memory
//! (`VmHWM` in `status`), its anonymous and file-backed parts sampled over a
//! phase ([`ResidentSampler`]), and bytes read from and written to storage
//! (`read_bytes` / `write_bytes` in `io`); and what each allocator holds
//! ([`heaps`]: mimalloc for Rust's allocations, glibc's malloc for RocksDB's
//! C++). Elsewhere the figures are `None`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Peak resident set size of this process in bytes (`VmHWM`).
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmHWM:").map(|kib| kib.saturating_mul(1024))
}

/// Resets the peak resident set size to the current one, where the kernel
/// allows it (`5` into `/proc/self/clear_refs`), so each run of a sweep
/// reports its own peak. Without it, the peak is the process's so far.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// Resident memory of this process (`/proc/self/status`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Resident {
    /// `RssAnon`: the allocators' memory (and thread stacks).
    pub anon: u64,
    /// `RssFile`: pages of mapped files (checkpoint streams the filesystem
    /// storage maps to read them), page cache the kernel can take back.
    pub file: u64,
}

impl Resident {
    /// The figures now.
    pub(super) fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name| kib_field(&status, name).map(|kib| kib.saturating_mul(1024));
        Some(Resident {
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }

    fn max(self, other: Resident) -> Resident {
        Resident {
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
        }
    }
}

/// How often [`ResidentSampler`] reads `/proc/self/status`.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Reads [`Resident`] every 10 ms on a thread of its own and keeps the
/// highest of each figure, so a phase's peak of anonymous memory is known
/// apart from the mapped files' pages (the kernel's `VmHWM` counts both
/// together). A peak shorter than 10 ms may be missed; `VmHWM` still has it.
pub(super) struct ResidentSampler {
    highest: Arc<Mutex<Resident>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResidentSampler {
    /// Starts sampling; where `/proc/self/status` cannot be read, every
    /// phase reports `None`.
    pub(super) fn start() -> Self {
        let first = Resident::now();
        let highest = Arc::new(Mutex::new(first.unwrap_or_default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = first.is_some().then(|| {
            let (highest, stop) = (highest.clone(), stop.clone());
            std::thread::Builder::new()
                .name("cairn-bench-rss".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(now) = Resident::now()
                            && let Ok(mut h) = highest.lock()
                        {
                            *h = h.max(now);
                        }
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })
                .ok()
        });
        ResidentSampler {
            highest,
            stop,
            thread: thread.flatten(),
        }
    }

    /// The highest figures since the last call (or the start), with one
    /// more sample now, and that sample; the next phase starts from it.
    pub(super) fn take(&self) -> Option<(Resident, Resident)> {
        self.thread.as_ref()?;
        let now = Resident::now()?;
        let mut h = self.highest.lock().ok()?;
        let phase = h.max(now);
        *h = now;
        Some((phase, now))
    }
}

impl Drop for ResidentSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the two allocators of this process hold now, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub(super) struct Heaps {
    /// mimalloc's committed memory (`mi_process_info`'s `current_commit`):
    /// Rust's allocations and the free pages mimalloc keeps (the binaries
    /// never return freed memory; see `cairn_cli::allocator`).
    pub rust_committed: u64,
    /// glibc's malloc, in use (`mallinfo2`: `uordblks + hblkhd`): RocksDB's
    /// C++ allocations (block cache, memtables, table readers).
    pub c_in_use: Option<u64>,
    /// glibc's malloc, free but held by its arenas (`fordblks`): the
    /// fragmentation C++ allocations leave.
    pub c_free_held: Option<u64>,
}

/// The allocators' figures now.
pub(super) fn heaps() -> Heaps {
    let mut commit = 0usize;
    let mut unused = [0usize; 6];
    let [elapsed, user, system, rss, peak_rss, peak_commit] = &mut unused;
    let mut faults = 0usize;
    // SAFETY: `mi_process_info` writes one `usize` through each pointer,
    // all of which point at live locals, and reads nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_process_info(
            elapsed,
            user,
            system,
            rss,
            peak_rss,
            &mut commit,
            peak_commit,
            &mut faults,
        );
    }
    let (c_in_use, c_free_held) = c_heap();
    Heaps {
        rust_committed: commit as u64,
        c_in_use,
        c_free_held,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn c_heap() -> (Option<u64>, Option<u64>) {
    // SAFETY: `mallinfo2` takes no arguments and returns a struct by
    // value; glibc sums its arenas under their locks.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    (
        Some((info.uordblks + info.hblkhd) as u64),
        Some(info.fordblks as u64),
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn c_heap() -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// Bytes this process made the storage layer read and write so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct IoCounters {
    /// `read_bytes`.
    pub read_bytes: u64,
    /// `write_bytes`.
    pub write_bytes: u64,
}

impl IoCounters {
    /// The counters now, if `/proc/self/io` is readable.
    pub(super) fn now() -> Option<Self> {
        let io = std::fs::read_to_string("/proc/self/io").ok()?;
        Some(IoCounters {
            read_bytes: plain_field(&io, "read_bytes:")?,
            write_bytes: plain_field(&io, "write_bytes:")?,
        })
    }

    /// The bytes read and written since `earlier`.
    pub(super) fn since(self, earlier: IoCounters) -> IoCounters {
        IoCounters {
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
        }
    }
}

fn plain_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\tcairn\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048));
        assert_eq!(kib_field(status, "VmRSS:"), None);
        let io = "rchar: 5\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(plain_field(io, "read_bytes:"), Some(4096));
        assert_eq!(plain_field(io, "write_bytes:"), Some(8192));
        assert_eq!(plain_field("read_bytes: x", "read_bytes:"), None);
    }

    #[test]
    fn reads_this_process_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
            let now = Resident::now().unwrap();
            assert!(now.anon > 0, "{now:?}");
        }
    }

    #[test]
    fn the_sampler_sees_a_phase_peak_after_its_memory_is_freed() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let sampler = ResidentSampler::start();
        let (_, before) = sampler.take().unwrap();
        // 64 MiB touched, kept past a few samples, then freed.
        let block = vec![1u8; 64 << 20];
        std::thread::sleep(SAMPLE_EVERY * 5);
        assert_eq!(block.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
        drop(block);
        let (phase, now) = sampler.take().unwrap();
        assert!(
            phase.anon >= before.anon + (48 << 20),
            "before {before:?}, phase {phase:?}"
        );
        assert!(
            now.anon <= phase.anon,
            "the phase's peak includes its last sample"
        );
    }
}
