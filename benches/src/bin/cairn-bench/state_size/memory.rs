//! Where a `state-size` run's memory goes, phase by phase: the load, the
//! checkpoints, each restore (with the check that reads every key back).
//! For each phase: the kernel's peak resident set (`VmHWM`, reset at the
//! phase's start), the sampled peaks of its anonymous and file-backed parts,
//! what each allocator holds at the phase's end, and on RocksDB what the
//! backends account for inside their memory budget and outside it (table
//! readers). Issue 14's memory target ("RSS within the budget plus a stated
//! overhead") is read off these figures.

use serde::Serialize;

use super::subtasks::Subtask;
use crate::proc_stats::{Heaps, ResidentSampler, heaps, peak_rss_bytes, reset_peak_rss};

/// The memory of one phase of a run (bytes).
#[derive(Debug, Clone, Serialize)]
pub(super) struct PhaseMemory {
    /// `load`, `checkpoints`, `restore-local`, `restore-storage`.
    pub phase: &'static str,
    /// The kernel's peak resident set during the phase (`VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// The highest anonymous resident memory sampled (`RssAnon`, every
    /// 10 ms): the allocators' memory.
    pub peak_anon_bytes: Option<u64>,
    /// The highest file-backed resident memory sampled (`RssFile`): mapped
    /// checkpoint streams, page cache the kernel can take back.
    pub peak_file_bytes: Option<u64>,
    /// Anonymous resident memory at the phase's end.
    pub end_anon_bytes: Option<u64>,
    /// What the allocators hold at the phase's end.
    pub heaps: Heaps,
    /// RocksDB's accounting at the phase's end (rocks only).
    pub rocks: Option<RocksMemory>,
}

/// What the RocksDB backends of a phase account for (bytes; the budget's
/// parts are shared by every backend of the factory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct RocksMemory {
    /// `RocksBackendOptions::memory_budget`.
    pub budget_bytes: u64,
    /// The block cache's usage, memtables charged to it included.
    pub block_cache_bytes: u64,
    /// Of those, the memtables.
    pub write_buffers_bytes: u64,
    /// Of the block cache, what entries in use pin.
    pub pinned_bytes: u64,
    /// The value caches (inside the budget, beside the block cache).
    pub value_caches_bytes: u64,
    /// Table readers outside the block cache, summed over the backends.
    pub table_readers_bytes: u64,
}

/// Records the phases of one run.
pub(super) struct Phases {
    sampler: ResidentSampler,
    done: Vec<PhaseMemory>,
}

impl Phases {
    /// Starts the first phase now.
    pub(super) fn start() -> Self {
        reset_peak_rss();
        Phases {
            sampler: ResidentSampler::start(),
            done: Vec::new(),
        }
    }

    /// Ends the phase running now, reading the backends of `subtasks`, and
    /// starts the next.
    pub(super) fn end<B: 'static>(
        &mut self,
        phase: &'static str,
        subtasks: &[Subtask<B>],
    ) -> anyhow::Result<()> {
        // The kernel's peak, the last sample and the reset back to back, so
        // the two phases' figures meet at one moment.
        let peak_rss = peak_rss_bytes();
        let resident = self.sampler.take();
        reset_peak_rss();
        self.done.push(PhaseMemory {
            phase,
            peak_rss_bytes: peak_rss,
            peak_anon_bytes: resident.map(|(peak, _)| peak.anon),
            peak_file_bytes: resident.map(|(peak, _)| peak.file),
            end_anon_bytes: resident.map(|(_, now)| now.anon),
            heaps: heaps(),
            rocks: rocks_memory(subtasks)?,
        });
        Ok(())
    }

    /// The phases ended so far.
    pub(super) fn into_phases(self) -> Vec<PhaseMemory> {
        self.done
    }
}

#[cfg(feature = "rocks")]
fn rocks_memory<B: 'static>(subtasks: &[Subtask<B>]) -> anyhow::Result<Option<RocksMemory>> {
    let mut m: Option<RocksMemory> = None;
    for sub in subtasks {
        let Some(rocks) =
            (&sub.backend as &dyn std::any::Any).downcast_ref::<backend_rocks::RocksBackend>()
        else {
            return Ok(None);
        };
        let native = rocks.native_metrics()?;
        let m = m.get_or_insert_with(|| RocksMemory {
            budget_bytes: rocks.options().memory_budget as u64,
            block_cache_bytes: rocks.memory_usage() as u64,
            write_buffers_bytes: rocks.write_buffer_usage() as u64,
            pinned_bytes: native.block_cache_pinned_usage,
            value_caches_bytes: rocks.value_caches_usage() as u64,
            table_readers_bytes: 0,
        });
        m.table_readers_bytes += native.estimate_table_readers_mem;
    }
    Ok(m)
}

#[cfg(not(feature = "rocks"))]
fn rocks_memory<B: 'static>(_subtasks: &[Subtask<B>]) -> anyhow::Result<Option<RocksMemory>> {
    Ok(None)
}
