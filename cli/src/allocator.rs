//! The allocator policy of cairn's binaries (`cairn`, `cairn-bench`).
//!
//! Both use mimalloc. By default mimalloc returns freed memory to the OS
//! after a second (`purge_delay`). A heap-state job frees and allocates its
//! tables in a cycle: after each checkpoint, the first write to a key group
//! copies that group's table (copy-on-write against the snapshot still
//! reading it), and the old copy is freed when the snapshot is written. With
//! purging, every cycle gives the pages back and faults them in again,
//! zeroed by the kernel: 118,000 page faults and 15% more CPU time in a
//! 10M-record keyed count at 1M keys (`benches/README.md`, "Issue 14",
//! "Where a heap record's time goes").
//! Memory a process freed therefore stays with it for reuse, as a JVM keeps
//! its heap; the resident set stays at its peak instead of shrinking, and
//! the peak itself is higher where one phase's freed memory is not reused
//! by the next: 5.56 against 4.23 GB for 10M heap keys through load,
//! checkpoints and restores (`benches/README.md`, "Heap state's peak
//! memory at 10M keys"). `MIMALLOC_PURGE_DELAY` chooses the other side.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`; the
/// Rust binding names the option after it, checked below).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(libmimalloc_sys::mi_option_use_numa_nodes == PURGE_DELAY + 1);

/// Tells mimalloc never to return freed memory to the OS, unless the
/// standard `MIMALLOC_PURGE_DELAY` environment variable chooses a delay
/// (then mimalloc's own reading of it stands). Call it first in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    set_purge_delay(-1);
}

/// The purge delay in milliseconds (-1: never).
fn set_purge_delay(millis: std::ffi::c_long) {
    // SAFETY: `mi_option_set` stores an integer option in mimalloc's option
    // table; it takes no pointers and is safe to call from any thread at
    // any time (mimalloc reads the option on its next purge).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, millis)
    };
}

/// mimalloc's current purge delay (for the test).
#[cfg(test)]
fn purge_delay() -> std::ffi::c_long {
    // SAFETY: reads an integer option; no pointers.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // mimalloc's documented default of `purge_delay` is 1000 ms (v3):
        // reading it first shows the index names that option, not a
        // neighbour (their defaults are 0, 1, 2 or 10).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        set_purge_delay(-1);
        assert_eq!(purge_delay(), -1);
        set_purge_delay(1000);
        assert_eq!(purge_delay(), 1000);
    }
}
