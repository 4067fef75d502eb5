//! [`RocksBackendOptions`]: the knobs of the RocksDB backend, its predefined
//! profiles, and the memory shared by every backend of one factory.

use std::path::PathBuf;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager};
use state_core::{Result, StateError};

/// Tuning profiles, after Flink's `PredefinedOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PredefinedProfile {
    /// RocksDB's defaults with fsync off (Flink's `DEFAULT`).
    #[default]
    Default,
    /// Flash / SSD: more background jobs, unlimited open files, small
    /// blocks (Flink's `FLASH_SSD_OPTIMIZED`).
    FlashSsd,
    /// Spinning disks: more background jobs, unlimited open files, larger
    /// blocks, files and compaction read-ahead, dynamic level sizes (Flink's
    /// `SPINNING_DISK_OPTIMIZED`).
    SpinningDisk,
}

/// A compression codec for one LSM level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, for upper levels.
    Lz4,
    /// Zstandard: dense, for the bottom level.
    Zstd,
}

impl Compression {
    fn to_rocks(self) -> DBCompressionType {
        match self {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        }
    }
}

/// Options of the RocksDB backend. Build with [`RocksBackendOptions::new`]
/// and the `with_*` methods; [`RocksBackendOptions::validate`] checks them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RocksBackendOptions {
    /// The local directory for working databases and local checkpoint copies.
    pub local_dir: PathBuf,
    /// The tuning profile applied before the explicit options below.
    pub profile: PredefinedProfile,
    /// Take incremental checkpoints even when the caller asks for
    /// [`state_core::SnapshotMode::Full`] (Flink's `state.backend.incremental`).
    /// [`state_core::SnapshotMode::Incremental`] is always honoured.
    pub incremental: bool,
    /// Keep each incremental checkpoint's local copy until it is subsumed and
    /// restore from it when it is intact (Flink's `state.backend.local-recovery`;
    /// off by default, as in Flink).
    pub local_recovery: bool,
    /// The total memory of the value caches, the block cache and the
    /// memtables of all backends created by one factory (and its clones), in
    /// bytes (Flink's managed memory, which Flink shares per slot; cairn
    /// shares it per factory, so a process with one factory has one budget).
    /// Default 256 MiB.
    pub memory_budget: usize,
    /// The share of `memory_budget` memtables may use (Flink's `writeBufferRatio`, 0.5).
    pub write_buffer_ratio: f64,
    /// Size of one memtable per column family, in bytes.
    pub write_buffer_size: usize,
    /// Memtables per column family before writes stall.
    pub max_write_buffer_number: i32,
    /// Compression of each level, top first; the last entry applies to
    /// deeper levels. Default: none for L0 and L1, LZ4 above, Zstd at the bottom.
    pub compression_per_level: Vec<Compression>,
    /// Bits per key of the bloom filter, or `None` for no filter.
    pub bloom_filter_bits_per_key: Option<f64>,
    /// Index and filter blocks of each SST split into 4 KiB partitions
    /// under a small top-level index, which stays pinned in the block cache
    /// (Flink's `state.backend.rocksdb.memory.partitioned-index-filters`,
    /// off by default there; on here). Without it a point read whose SST's
    /// whole filter or index block (hundreds of KiB for a 64 MiB file) was
    /// evicted reads and checksums all of it again: once the state outgrows
    /// the block cache that is most of the time of every read. Default on.
    pub partitioned_index_filters: bool,
    /// Open file limit (-1: unlimited).
    pub max_open_files: i32,
    /// Use `fsync` instead of `fdatasync` when RocksDB syncs (off by default).
    pub use_fsync: bool,
    /// Block size of SST files, in bytes.
    pub block_size: usize,
    /// Target size of an SST file at level 1, in bytes.
    pub target_file_size_base: u64,
    /// Background flush and compaction threads.
    pub max_background_jobs: i32,
    /// Bytes of the write-back caches of value, reducing and aggregating
    /// state entries the backends keep in front of RocksDB (0: no cache;
    /// see the crate docs). All backends of one factory share these bytes,
    /// and they are part of `memory_budget`: the block cache gets the rest.
    /// At most half the budget. Default 64 MiB.
    pub value_cache_bytes: usize,
    /// Dirty cache entries that trigger a write-back in one batch; bounds
    /// the write-back a snapshot's synchronous part does. Default 4,096.
    pub value_cache_max_dirty: usize,
    /// Files an incremental checkpoint uploads, and a restore downloads, at
    /// once (Flink's `state.backend.rocksdb.checkpoint.transfer.thread.num`).
    /// Default 4; 1 transfers one file after another.
    pub transfer_threads: usize,
}

impl RocksBackendOptions {
    /// Default options with working databases and local copies under `local_dir`.
    pub fn new(local_dir: impl Into<PathBuf>) -> Self {
        RocksBackendOptions {
            local_dir: local_dir.into(),
            profile: PredefinedProfile::Default,
            incremental: false,
            local_recovery: false,
            memory_budget: 256 << 20,
            write_buffer_ratio: 0.5,
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 2,
            compression_per_level: vec![
                Compression::None,
                Compression::None,
                Compression::Lz4,
                Compression::Lz4,
                Compression::Lz4,
                Compression::Lz4,
                Compression::Zstd,
            ],
            bloom_filter_bits_per_key: Some(10.0),
            partitioned_index_filters: true,
            max_open_files: -1,
            use_fsync: false,
            block_size: 4 << 10,
            target_file_size_base: 64 << 20,
            max_background_jobs: 2,
            value_cache_bytes: 64 << 20,
            value_cache_max_dirty: 4 << 10,
            transfer_threads: 4,
        }
    }

    /// The same options after applying `profile`'s settings.
    pub fn with_profile(mut self, profile: PredefinedProfile) -> Self {
        self.profile = profile;
        match profile {
            PredefinedProfile::Default => {}
            PredefinedProfile::FlashSsd => {
                self.max_background_jobs = 4;
                self.max_open_files = -1;
                self.block_size = 4 << 10;
            }
            PredefinedProfile::SpinningDisk => {
                self.max_background_jobs = 4;
                self.max_open_files = -1;
                self.block_size = 64 << 10;
                self.target_file_size_base = 256 << 20;
            }
        }
        self
    }

    /// Incremental checkpoints on or off (see [`RocksBackendOptions::incremental`]).
    pub fn with_incremental(mut self, on: bool) -> Self {
        self.incremental = on;
        self
    }

    /// Local recovery on or off (see [`RocksBackendOptions::local_recovery`]).
    pub fn with_local_recovery(mut self, on: bool) -> Self {
        self.local_recovery = on;
        self
    }

    /// Another total memory budget, in bytes.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Another memtable size, in bytes.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Another compression per level.
    pub fn with_compression_per_level(mut self, levels: Vec<Compression>) -> Self {
        self.compression_per_level = levels;
        self
    }

    /// Another bloom filter setting.
    pub fn with_bloom_filter(mut self, bits_per_key: Option<f64>) -> Self {
        self.bloom_filter_bits_per_key = bits_per_key;
        self
    }

    /// Partitioned index and filter blocks on or off (see
    /// [`RocksBackendOptions::partitioned_index_filters`]).
    pub fn with_partitioned_index_filters(mut self, on: bool) -> Self {
        self.partitioned_index_filters = on;
        self
    }

    /// Another open file limit.
    pub fn with_max_open_files(mut self, n: i32) -> Self {
        self.max_open_files = n;
        self
    }

    /// `fsync` on or off.
    pub fn with_use_fsync(mut self, on: bool) -> Self {
        self.use_fsync = on;
        self
    }

    /// Another size of the value caches in bytes (0 turns them off).
    pub fn with_value_cache(mut self, bytes: usize) -> Self {
        self.value_cache_bytes = bytes;
        self
    }

    /// Another bound on dirty value cache entries.
    pub fn with_value_cache_max_dirty(mut self, entries: usize) -> Self {
        self.value_cache_max_dirty = entries;
        self
    }

    /// Another number of transfer threads (see [`RocksBackendOptions::transfer_threads`]; default 4).
    pub fn with_transfer_threads(mut self, threads: usize) -> Self {
        self.transfer_threads = threads;
        self
    }

    /// Checks every option, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |option: &str, detail: String| {
            Err(StateError::invalid(format!(
                "rocks backend option {option}: {detail}"
            )))
        };
        if self.local_dir.as_os_str().is_empty() {
            return bad("local_dir", "must name a directory".into());
        }
        if self.memory_budget < (8 << 20) {
            return bad(
                "memory_budget",
                format!("{} bytes is below the minimum of 8 MiB", self.memory_budget),
            );
        }
        if !(self.write_buffer_ratio > 0.0 && self.write_buffer_ratio < 1.0) {
            return bad(
                "write_buffer_ratio",
                format!("{} must be between 0 and 1", self.write_buffer_ratio),
            );
        }
        if self.value_cache_bytes > 0 && self.value_cache_bytes < (64 << 10) {
            return bad(
                "value_cache_bytes",
                format!(
                    "{} bytes is below the minimum of 64 KiB (0 turns the cache off)",
                    self.value_cache_bytes
                ),
            );
        }
        if self.value_cache_bytes > self.memory_budget / 2 {
            return bad(
                "value_cache_bytes",
                format!(
                    "{} bytes is more than half of memory_budget ({} bytes), which also holds the block cache and the memtables",
                    self.value_cache_bytes, self.memory_budget
                ),
            );
        }
        if !(1..=256).contains(&self.transfer_threads) {
            return bad(
                "transfer_threads",
                format!("{} must be between 1 and 256", self.transfer_threads),
            );
        }
        if self.value_cache_max_dirty == 0 {
            return bad("value_cache_max_dirty", "must be at least 1".into());
        }
        if self.write_buffer_size < (64 << 10) {
            return bad(
                "write_buffer_size",
                format!(
                    "{} bytes is below the minimum of 64 KiB",
                    self.write_buffer_size
                ),
            );
        }
        if self.max_write_buffer_number < 1 {
            return bad(
                "max_write_buffer_number",
                format!("{} must be at least 1", self.max_write_buffer_number),
            );
        }
        if self.compression_per_level.is_empty() {
            return bad(
                "compression_per_level",
                "must name at least one level".into(),
            );
        }
        if let Some(bits) = self.bloom_filter_bits_per_key
            && !(bits > 0.0 && bits <= 64.0)
        {
            return bad(
                "bloom_filter_bits_per_key",
                format!("{bits} must be in (0, 64]"),
            );
        }
        if self.max_open_files == 0 || self.max_open_files < -1 {
            return bad(
                "max_open_files",
                format!("{} must be -1 or positive", self.max_open_files),
            );
        }
        if !(512..=(1 << 30)).contains(&self.block_size) {
            return bad(
                "block_size",
                format!("{} bytes is out of range", self.block_size),
            );
        }
        if self.target_file_size_base < (64 << 10) {
            return bad(
                "target_file_size_base",
                format!("{} bytes is below 64 KiB", self.target_file_size_base),
            );
        }
        if !(1..=256).contains(&self.max_background_jobs) {
            return bad(
                "max_background_jobs",
                format!("{} must be between 1 and 256", self.max_background_jobs),
            );
        }
        Ok(())
    }
}

/// The memory every backend of one factory shares (Flink's shared managed
/// memory): the value caches' pool (`value_cache_bytes`), one LRU block
/// cache holding the rest of the budget, and one write-buffer manager for
/// every backend's memtables, which charges them to that cache and flushes
/// the writing database when all memtables together pass their share. So
/// value caches, block cache and memtables stay within the budget together.
#[derive(Clone)]
pub(crate) struct SharedMemory {
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// The bytes all value caches hold, against their shared limit.
    pub(crate) value_pool: Arc<crate::value_cache::ValuePool>,
    /// Local-copy files this process has checksummed (see `verified`).
    pub(crate) verified: Arc<crate::verified::VerifiedFiles>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("cache_usage", &self.cache.get_usage())
            .field("write_buffer_usage", &self.write_buffers.get_usage())
            .field("value_cache_usage", &self.value_pool.used())
            .finish()
    }
}

impl SharedMemory {
    pub(crate) fn new(options: &RocksBackendOptions) -> Self {
        let block_cache = options
            .memory_budget
            .saturating_sub(options.value_cache_bytes);
        let cache = Cache::new_lru_cache(block_cache);
        let write_buffer_limit = (block_cache as f64 * options.write_buffer_ratio) as usize;
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_limit,
            false,
            cache.clone(),
        );
        SharedMemory {
            cache,
            write_buffers,
            value_pool: Arc::new(crate::value_cache::ValuePool::new(
                options.value_cache_bytes,
            )),
            verified: Arc::default(),
        }
    }

    /// Bytes the block cache and the memtables charged to it use now.
    pub(crate) fn usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes the memtables of every backend use now.
    pub(crate) fn write_buffer_usage(&self) -> usize {
        self.write_buffers.get_usage()
    }
}

/// The options of the database of one backend.
pub(crate) fn db_options(options: &RocksBackendOptions, memory: &SharedMemory) -> Options {
    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_max_open_files(options.max_open_files);
    db.set_use_fsync(options.use_fsync);
    db.set_max_background_jobs(options.max_background_jobs);
    db.set_stats_dump_period_sec(0);
    db.set_keep_log_file_num(2);
    if options.profile == PredefinedProfile::SpinningDisk {
        db.set_compaction_readahead_size(2 << 20);
    }
    if options.profile != PredefinedProfile::Default {
        db.set_bytes_per_sync(1 << 20);
    }
    // One manager for every database of the factory: memtables are bounded
    // together, not each database by the whole limit.
    db.set_write_buffer_manager(&memory.write_buffers);
    db
}

/// The options of one column family, without merge operator or compaction
/// filter (the caller adds those per state).
pub(crate) fn cf_options(options: &RocksBackendOptions, memory: &SharedMemory) -> Options {
    let mut cf = Options::default();
    cf.set_write_buffer_size(options.write_buffer_size);
    cf.set_max_write_buffer_number(options.max_write_buffer_number);
    cf.set_target_file_size_base(options.target_file_size_base);
    cf.set_max_bytes_for_level_base(options.target_file_size_base.saturating_mul(4));
    if options.profile == PredefinedProfile::SpinningDisk {
        cf.set_level_compaction_dynamic_level_bytes(true);
    }
    let levels: Vec<DBCompressionType> = (0..7)
        .map(|i| {
            options
                .compression_per_level
                .get(i)
                .or(options.compression_per_level.last())
                .copied()
                .unwrap_or(Compression::None)
                .to_rocks()
        })
        .collect();
    cf.set_compression_per_level(&levels);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&memory.cache);
    table.set_block_size(options.block_size);
    table.set_cache_index_and_filter_blocks(true);
    // Index and filter blocks are evicted last (the LRU cache's
    // high-priority pool).
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if options.partitioned_index_filters {
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(options.bloom_filter_bits_per_key.is_some());
        table.set_metadata_block_size(4 << 10);
        table.set_pin_top_level_index_and_filter(true);
    }
    if let Some(bits) = options.bloom_filter_bits_per_key {
        table.set_bloom_filter(bits, false);
        // Point reads are on whole keys; map scans use prefixes.
        table.set_whole_key_filtering(true);
        // A bloom filter over the memtable too (2% of its size), so a read
        // of a key the memtable lacks skips the skip-list search.
        cf.set_memtable_whole_key_filtering(true);
        cf.set_memtable_prefix_bloom_ratio(0.02);
    }
    cf.set_block_based_table_factory(&table);
    cf
}

/// The shared memory behind an `Arc`, as factories hand it to backends.
pub(crate) type SharedMemoryRef = Arc<SharedMemory>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_validation_name_the_option() {
        let o = RocksBackendOptions::new("/tmp/x").with_profile(PredefinedProfile::SpinningDisk);
        assert_eq!(o.block_size, 64 << 10);
        o.validate().unwrap();
        RocksBackendOptions::new("/tmp/x")
            .with_profile(PredefinedProfile::FlashSsd)
            .validate()
            .unwrap();
        let err = RocksBackendOptions::new("/tmp/x")
            .with_memory_budget(10)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("memory_budget"), "{err}");
        let err = RocksBackendOptions::new("/tmp/x")
            .with_bloom_filter(Some(-1.0))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("bloom_filter_bits_per_key"),
            "{err}"
        );
        let err = RocksBackendOptions::new("").validate().unwrap_err();
        assert!(err.to_string().contains("local_dir"), "{err}");
        let err = RocksBackendOptions::new("/tmp/x")
            .with_transfer_threads(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("transfer_threads"), "{err}");
    }
}
