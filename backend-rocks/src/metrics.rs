//! RocksDB's own figures of one backend's database ([`NativeMetrics`],
//! Flink's `state.backend.rocksdb.metrics.*` of the same names), its live
//! SST files ([`SstFile`]), and waiting for its background work: what a
//! harness or an operator needs to tell flushes from compactions and to
//! see the compaction debt a checkpoint inherits.

use std::time::Duration;

use rocksdb::WaitForCompactOptions;
use state_core::Result;

use crate::RocksBackend;
use crate::db::cf_of;

/// RocksDB's figures of one backend's database, summed over the column
/// families of its states (one per state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NativeMetrics {
    /// `rocksdb.estimate-pending-compaction-bytes`: the bytes compaction
    /// estimates it must rewrite to bring every level within its target
    /// size (the debt a bulk load leaves behind).
    pub estimate_pending_compaction_bytes: u64,
    /// `rocksdb.num-running-compactions`.
    pub num_running_compactions: u64,
    /// `rocksdb.num-running-flushes`.
    pub num_running_flushes: u64,
    /// `rocksdb.cur-size-all-mem-tables`: bytes in the memtables, active
    /// and immutable (what the next flush writes).
    pub cur_size_all_mem_tables: u64,
    /// `rocksdb.live-sst-files-size`: bytes of the SST files the current
    /// version references.
    pub live_sst_files_size: u64,
    /// `rocksdb.estimate-table-readers-mem`: bytes the open SST files'
    /// readers hold outside the block cache (with partitioned index and
    /// filter blocks, their pinned top-level index; the rest is charged to
    /// the cache and counted by [`RocksBackend::memory_usage`]).
    pub estimate_table_readers_mem: u64,
    /// `rocksdb.block-cache-pinned-usage`: bytes of the shared block cache
    /// that entries in use pin (iterators, pinned index partitions); part
    /// of [`RocksBackend::memory_usage`].
    pub block_cache_pinned_usage: u64,
    /// Live SST files and their bytes per level (index 0 is L0).
    pub levels: Vec<LevelMetrics>,
}

/// The live SST files of one level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelMetrics {
    /// Files.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// One live SST file of a backend's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstFile {
    /// Its file name (`000123.sst`), as in the native checkpoints.
    pub name: String,
    /// Its level (0: a flush wrote it or it was moved there; deeper: a compaction).
    pub level: u32,
    /// Its size in bytes.
    pub bytes: u64,
}

impl RocksBackend {
    /// RocksDB's figures of this backend's database now (see [`NativeMetrics`]).
    pub fn native_metrics(&self) -> Result<NativeMetrics> {
        let db = self.db()?;
        let mut m = NativeMetrics::default();
        for s in &self.states {
            let cf = cf_of(db, s)?;
            let int = |name: &str| -> Result<u64> {
                db.property_int_value_cf(cf, name)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| self.err(e))
            };
            m.estimate_pending_compaction_bytes +=
                int("rocksdb.estimate-pending-compaction-bytes")?;
            m.cur_size_all_mem_tables += int("rocksdb.cur-size-all-mem-tables")?;
            m.live_sst_files_size += int("rocksdb.live-sst-files-size")?;
            m.estimate_table_readers_mem += int("rocksdb.estimate-table-readers-mem")?;
        }
        // Background jobs are per database, not per column family.
        let int = |name: &str| -> Result<u64> {
            db.property_int_value(name)
                .map(Option::unwrap_or_default)
                .map_err(|e| self.err(e))
        };
        m.num_running_compactions = int("rocksdb.num-running-compactions")?;
        m.num_running_flushes = int("rocksdb.num-running-flushes")?;
        // The cache is shared by the factory's databases: one figure.
        m.block_cache_pinned_usage = int("rocksdb.block-cache-pinned-usage")?;
        for file in self.sst_files()? {
            let level = file.level as usize;
            if m.levels.len() <= level {
                m.levels.resize(level + 1, LevelMetrics::default());
            }
            if let Some(l) = m.levels.get_mut(level) {
                l.files += 1;
                l.bytes += file.bytes;
            }
        }
        Ok(m)
    }

    /// The live SST files of this backend's database, by name.
    pub fn sst_files(&self) -> Result<Vec<SstFile>> {
        let db = self.db()?;
        let mut files: Vec<SstFile> = db
            .live_files()
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|f| SstFile {
                name: f.name.trim_start_matches('/').to_owned(),
                level: u32::try_from(f.level).unwrap_or_default(),
                bytes: f.size as u64,
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Writes the value cache back, flushes the memtables and waits until
    /// RocksDB has no flush or compaction left to run, or `timeout` passed
    /// (then it returns `Ok(false)`): the settled shape a long-running job's
    /// database has, rather than the compaction debt a bulk load leaves.
    pub fn wait_for_compactions(&self, timeout: Duration) -> Result<bool> {
        self.write_back_cache()?;
        let db = self.db()?;
        let mut opts = WaitForCompactOptions::default();
        opts.set_flush(true);
        opts.set_timeout(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX));
        match db.wait_for_compact(&opts) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == rocksdb::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}
