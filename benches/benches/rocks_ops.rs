//! State operations of the RocksDB backend on 1,000,000 keys, each beside a
//! baseline of the raw `rocksdb` crate doing the same get/put/merge on the
//! same keys in the same order, in the same criterion group; then checkpoint
//! figures (full and incremental bytes, synchronous-phase time, restore time
//! from the local copy and from storage), printed once to stderr.
//!
//! Groups are named `rocks/op/value_size`, functions `backend` or `raw`.
//!
//! Environment: `CAIRN_BENCH_KEYS` (default 1000000), `CAIRN_BENCH_VALUE_SIZE` (default 100).
//! Run: `cargo bench -p cairn-benches --features rocks --bench rocks_ops`.

#![allow(clippy::unwrap_used)] // A bench that cannot set up its state should stop loudly.
#![allow(clippy::print_stderr)] // The checkpoint figures are a report for the reader.
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn benches`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use backend_fs::FsCheckpointStorage;
use backend_rocks::rocksdb::{
    self, BlockBasedOptions, Cache, DB, Options, WriteBufferManager, WriteOptions,
};
use backend_rocks::{RestoreStats, RocksBackend, RocksBackendFactory, RocksBackendOptions};
use bytes::Bytes;
use cairn_benches::{ORDER_LEN, States, Workload, splitmix64, value};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use state_core::{
    BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, JobId, KeyedStateBackend,
    KeyedStateHandle, SnapshotMode,
};

fn factory(dir: &Path, local_recovery: bool) -> RocksBackendFactory {
    RocksBackendFactory::new(RocksBackendOptions::new(dir).with_local_recovery(local_recovery))
        .unwrap()
}

/// A backend holding every key in its value, list and map states.
fn loaded(f: &RocksBackendFactory, w: &Workload) -> (RocksBackend, States) {
    let mut b = f.create(&w.context()).unwrap();
    let s = States::register(&mut b).unwrap();
    for i in 0..w.keys.len() as u64 {
        let e = w.entry(i);
        let v = w.values[(i % 64) as usize].clone();
        b.put(s.value, &e, v.clone()).unwrap();
        b.append(s.list, &e, v.clone()).unwrap();
        b.map_put(s.map, &e, b"field", v).unwrap();
    }
    (b, s)
}

fn list_concat(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// The baseline: a raw RocksDB with the same block cache size, memtable
/// budget charged to it, bloom filter and memtable size, no WAL, holding the same keys (plain key bytes) in
/// three column families like the backend's value, list and map states.
struct Raw {
    db: DB,
    wo: WriteOptions,
}

fn raw_db(dir: &Path, w: &Workload) -> Raw {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // The backend's memory setup: memtables (at most half the budget) are
    // charged to the 256 MiB block cache.
    let cache = Cache::new_lru_cache(256 << 20);
    opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(
        128 << 20,
        false,
        cache.clone(),
    ));
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let cf = |merge: bool| {
        let mut o = Options::default();
        o.set_write_buffer_size(64 << 20);
        o.set_block_based_table_factory(&table);
        if merge {
            o.set_merge_operator_associative("concat", list_concat);
        }
        o
    };
    let cfs = vec![
        rocksdb::ColumnFamilyDescriptor::new("value", cf(false)),
        rocksdb::ColumnFamilyDescriptor::new("list", cf(true)),
        rocksdb::ColumnFamilyDescriptor::new("map", cf(false)),
    ];
    let db = DB::open_cf_descriptors(&opts, dir, cfs).unwrap();
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    for (i, k) in w.keys.iter().enumerate() {
        let v = &w.values[i % 64];
        db.put_cf_opt(db.cf_handle("value").unwrap(), k, v, &wo)
            .unwrap();
        db.merge_cf_opt(db.cf_handle("list").unwrap(), k, v, &wo)
            .unwrap();
        db.put_cf_opt(
            db.cf_handle("map").unwrap(),
            [&k[..], b"field"].concat(),
            v,
            &wo,
        )
        .unwrap();
    }
    Raw { db, wo }
}

fn bench_ops(c: &mut Criterion) {
    let w = Workload::from_env();
    let size = w.value_size();
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), false);
    let (mut b, s) = loaded(&f, &w);
    let raw = raw_db(&dir.path().join("raw"), &w);
    let wo = &raw.wo;
    let (value_cf, list_cf, map_cf) = (
        raw.db.cf_handle("value").unwrap(),
        raw.db.cf_handle("list").unwrap(),
        raw.db.cf_handle("map").unwrap(),
    );
    // Both start from fully compacted column families: the backend's keys
    // are spread over the key space by their key-group prefix while the raw
    // keys arrive sorted, so uncompacted L0 files would favour the baseline.
    b.compact_all().unwrap();
    for name in ["value", "list", "map"] {
        let cf = raw.db.cf_handle(name).unwrap();
        raw.db.flush_cf(cf).unwrap();
        raw.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    }
    let map_keys: Vec<Vec<u8>> = w.keys.iter().map(|k| [&k[..], b"field"].concat()).collect();
    let mut n = 0usize;
    let mut next = || {
        n = (n + 1) & (ORDER_LEN - 1);
        n
    };

    let mut g = c.benchmark_group(format!("rocks/value_get/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |bch| {
        bch.iter(|| {
            let i = next();
            black_box(
                raw.db
                    .get_pinned_cf(value_cf, &w.keys[w.order[i] as usize])
                    .unwrap()
                    .map(|v| Bytes::copy_from_slice(&v)),
            )
        })
    });
    g.bench_function("backend", |bch| {
        bch.iter(|| {
            let i = next();
            black_box(b.get(s.value, &w.entry(w.order[i])).unwrap())
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rocks/value_update/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |bch| {
        bch.iter(|| {
            let i = next();
            raw.db
                .put_cf_opt(
                    value_cf,
                    &w.keys[w.order[i] as usize],
                    &w.values[i & 63],
                    wo,
                )
                .unwrap()
        })
    });
    g.bench_function("backend", |bch| {
        bch.iter(|| {
            let i = next();
            b.put(s.value, &w.entry(w.order[i]), w.values[i & 63].clone())
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rocks/list_append/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |bch| {
        bch.iter(|| {
            let i = next();
            raw.db
                .merge_cf_opt(list_cf, &w.keys[w.order[i] as usize], &w.values[i & 63], wo)
                .unwrap()
        })
    });
    g.bench_function("backend", |bch| {
        bch.iter(|| {
            let i = next();
            b.append(s.list, &w.entry(w.order[i]), w.values[i & 63].clone())
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rocks/map_put/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |bch| {
        bch.iter(|| {
            let i = next();
            raw.db
                .put_cf_opt(
                    map_cf,
                    &map_keys[w.order[i] as usize],
                    &w.values[i & 63],
                    wo,
                )
                .unwrap()
        })
    });
    g.bench_function("backend", |bch| {
        bch.iter(|| {
            let i = next();
            b.map_put(
                s.map,
                &w.entry(w.order[i]),
                b"field",
                w.values[i & 63].clone(),
            )
            .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rocks/map_get/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |bch| {
        bch.iter(|| {
            let i = next();
            black_box(
                raw.db
                    .get_pinned_cf(map_cf, &map_keys[w.order[i] as usize])
                    .unwrap()
                    .map(|v| Bytes::copy_from_slice(&v)),
            )
        })
    });
    g.bench_function("backend", |bch| {
        bch.iter(|| {
            let i = next();
            black_box(b.map_get(s.map, &w.entry(w.order[i]), b"field").unwrap())
        })
    });
    g.finish();
}

fn snapshot(
    b: &mut RocksBackend,
    storage: &dyn CheckpointStorage,
    id: u64,
    mode: SnapshotMode,
) -> (KeyedStateHandle, Duration) {
    let id = CheckpointId(id);
    storage.initialize_checkpoint(id).unwrap();
    let start = Instant::now();
    let pending = b.snapshot(id, mode).unwrap();
    let sync = start.elapsed();
    (pending.write(storage).unwrap().unwrap(), sync)
}

fn restore(
    f: &RocksBackendFactory,
    w: &Workload,
    h: &KeyedStateHandle,
    storage: &dyn CheckpointStorage,
) -> (Duration, RestoreStats) {
    let mut b = f.create(&w.context()).unwrap();
    let start = Instant::now();
    b.restore(std::slice::from_ref(h), storage).unwrap();
    let took = start.elapsed();
    (took, b.last_restore_stats().cloned().unwrap_or_default())
}

/// One pass of the checkpoint figures over the value state of every key.
fn report_checkpoints(_c: &mut Criterion) {
    let w = Workload::from_env();
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), true);
    let storage =
        FsCheckpointStorage::open(dir.path().join("storage"), JobId::new("bench").unwrap())
            .unwrap();
    // Unique incompressible values here (the op benches cycle through 64),
    // so the full stream is not shrunk by zstd finding repeats.
    let mut b = f.create(&w.context()).unwrap();
    let s = States::register(&mut b).unwrap();
    for i in 0..w.keys.len() as u64 {
        b.put(
            s.value,
            &w.entry(i),
            Bytes::from(value(i ^ 0xabcd, w.value_size())),
        )
        .unwrap();
    }

    let (full, full_sync) = snapshot(&mut b, &storage, 1, SnapshotMode::Full);
    let full_bytes = full.checkpointed_size(CheckpointId(1));
    let (first, first_sync) = snapshot(&mut b, &storage, 2, SnapshotMode::Incremental);
    b.notify_checkpoint_complete(CheckpointId(2)).unwrap();
    let first_bytes = first.checkpointed_size(CheckpointId(2));
    let n = w.keys.len() as u64;
    for j in 0..n / 100 {
        let i = splitmix64(j ^ 0xc0ffee) % n;
        b.put(
            s.value,
            &w.entry(i),
            Bytes::from(value(j ^ 0x5151, w.value_size())),
        )
        .unwrap();
    }
    let (incr, incr_sync) = snapshot(&mut b, &storage, 3, SnapshotMode::Incremental);
    let incr_bytes = incr.checkpointed_size(CheckpointId(3));
    let (local_time, local_stats) = restore(&f, &w, &incr, &storage);
    let KeyedStateHandle::Incremental(h) = &incr else {
        unreachable!("incremental mode")
    };
    std::fs::remove_dir_all(b.instance_dir().join("chk-3")).unwrap();
    let (remote_time, remote_stats) = restore(&f, &w, &incr, &storage);
    let (full_restore, _) = restore(&f, &w, &full, &storage);
    eprintln!(
        "rocks checkpoint figures, {n} keys of {} bytes (value state):",
        w.value_size()
    );
    eprintln!("  full snapshot (key-group stream): {full_bytes} bytes, sync phase {full_sync:?}");
    eprintln!("  first incremental: {first_bytes} bytes, sync phase {first_sync:?}");
    eprintln!(
        "  incremental after updating 1% of keys: {incr_bytes} bytes = {:.2}% of the full incremental state {} bytes, {:.2}% of the full snapshot; sync phase {incr_sync:?}; {} shared files, {} new",
        100.0 * incr_bytes as f64 / incr.state_size() as f64,
        incr.state_size(),
        100.0 * incr_bytes as f64 / full_bytes as f64,
        h.shared.len(),
        h.shared
            .iter()
            .filter(|f| f.uploaded_by == CheckpointId(3))
            .count()
    );
    eprintln!(
        "  restore from local copy: {local_time:?} ({:?}, {} bytes from storage)",
        local_stats.source(),
        local_stats.bytes_from_storage
    );
    eprintln!(
        "  restore from storage: {remote_time:?} ({:?}, {} bytes from storage)",
        remote_stats.source(),
        remote_stats.bytes_from_storage
    );
    eprintln!("  restore of the full snapshot: {full_restore:?}");
}

criterion_group!(benches, report_checkpoints, bench_ops);
criterion_main!(benches);
