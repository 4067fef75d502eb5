//! RocksDB's own figures through the backend's public API: live SST files
//! per level, the compaction debt of a load, and waiting for it to be
//! paid, as `cairn-bench state-size --settle` and its JSON use them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

mod support;

use std::sync::Arc;
use std::time::Duration;

use state_core::{KeyedStateBackend, ManualClock, SnapshotMode, StateDescriptor, StateKind};
use support::*;

#[test]
fn a_load_shows_in_the_levels_and_settles_to_no_compaction_debt() {
    let dir = tempfile::tempdir().unwrap();
    // 256 KiB memtables and L0 compaction after RocksDB's default 4
    // files: a few MiB of blind writes leave several flushes behind.
    let f = backend_rocks::RocksBackendFactory::new(
        options(&dir.path().join("local"))
            .with_write_buffer_size(256 << 10)
            .with_incremental(true),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut b = create(&f, 0, 1, &clock);
    let empty = b.native_metrics().unwrap();
    assert_eq!(empty.live_sst_files_size, 0, "{empty:?}");
    assert!(b.sst_files().unwrap().is_empty());

    let id = b
        .register_state(&StateDescriptor::new("v", StateKind::Value))
        .unwrap();
    for i in 0..40_000u32 {
        let key = format!("key-{i:08}");
        b.put(id, &entry(key.as_bytes()), vec![b'x'; 100].into())
            .unwrap();
    }
    let loaded = b.native_metrics().unwrap();
    assert!(loaded.cur_size_all_mem_tables > 64 << 10, "{loaded:?}");
    assert!(
        loaded.levels.iter().map(|l| l.files).sum::<u64>() > 0,
        "4 MiB in 256 KiB memtables were flushed: {loaded:?}"
    );
    assert!(b.wait_for_compactions(Duration::from_secs(300)).unwrap());
    let settled = b.native_metrics().unwrap();
    assert_eq!(settled.estimate_pending_compaction_bytes, 0, "{settled:?}");
    assert_eq!(settled.num_running_compactions, 0);
    // Settling flushes: what is left is an empty memtable's first block.
    assert!(settled.cur_size_all_mem_tables < 16 << 10, "{settled:?}");
    let files = b.sst_files().unwrap();
    assert!(!files.is_empty());
    // The levels add up to the files, and their bytes to the live size.
    let by_level: u64 = settled.levels.iter().map(|l| l.files).sum();
    assert_eq!(by_level, files.len() as u64);
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    assert_eq!(settled.levels.iter().map(|l| l.bytes).sum::<u64>(), bytes);
    assert_eq!(settled.live_sst_files_size, bytes);
    // Table readers hold their pinned top-level index outside the cache;
    // what entries pin is part of the cache's usage.
    assert!(settled.estimate_table_readers_mem > 0, "{settled:?}");
    assert!(settled.block_cache_pinned_usage <= b.memory_usage() as u64);
    for (level, l) in settled.levels.iter().enumerate() {
        let n = files.iter().filter(|f| f.level as usize == level).count();
        assert_eq!(l.files, n as u64, "level {level}");
    }
    // Settled: compaction moved flushed files below L0, and fewer are left
    // in L0 than RocksDB's L0 compaction trigger (4 files).
    assert!(files.iter().any(|f| f.level > 0), "{files:?}");
    assert!(
        files.iter().filter(|f| f.level == 0).count() < 4,
        "L0 still holds a compaction's worth of files: {files:?}"
    );

    // The files are the ones a native checkpoint uploads.
    let storage = fs_storage(&dir.path().join("chk"));
    let handle = checkpoint(&mut b, storage.as_ref(), 1, SnapshotMode::Incremental);
    let state_core::KeyedStateHandle::Incremental(h) = handle else {
        panic!("an incremental snapshot gives an incremental handle");
    };
    let mut uploaded: Vec<&str> = h.shared.iter().map(|s| s.name.as_str()).collect();
    uploaded.sort_unstable();
    let live: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(uploaded, live);
}
