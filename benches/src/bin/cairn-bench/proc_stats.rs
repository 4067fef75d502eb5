//! What this process used, from Linux's `/proc/self`: peak resident memory
//! (`VmHWM` in `status`) and bytes read from and written to storage
//! (`read_bytes` / `write_bytes` in `io`). Elsewhere the figures are `None`.

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
        }
    }
}
