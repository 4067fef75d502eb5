//! State operations on 1,000,000 keys for each backend, each beside a baseline
//! of a plain `std::collections::HashMap<Vec<u8>, Vec<u8>>` doing the same
//! operation on the same keys in the same order, in the same criterion group.
//!
//! Groups are named `op/value_size`, functions `backend`:
//! `value_get/100/heap`, `value_get/100/hashmap`, ...
//!
//! Environment: `CAIRN_BENCH_KEYS` (default 1000000), `CAIRN_BENCH_VALUE_SIZE` (default 100).
//! Run: `cargo bench -p cairn-benches --bench state_ops`.

#![allow(clippy::unwrap_used)] // A bench that cannot set up its state should stop loudly.
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn benches`.

use std::collections::HashMap;
use std::hint::black_box;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use cairn_benches::{ORDER_LEN, States, Workload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use state_core::MemoryCheckpointStorage;
use state_core::{
    CheckpointId, CheckpointStorage, Checkpointable, JobId, KeyedStateBackend, SnapshotMode,
};

/// A heap backend holding every key in the value, list and map states.
fn loaded_heap(w: &Workload) -> (HeapBackend, States) {
    let mut b = HeapBackend::new(&w.context(), HeapBackendOptions::default()).unwrap();
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

/// The same state, checkpointed to filesystem storage and restored from it
/// (memory-mapped): the fs backend's state after a recovery.
fn restored_from_fs(w: &Workload, dir: &std::path::Path) -> (HeapBackend, States) {
    let (mut heap, _) = loaded_heap(w);
    let storage = FsCheckpointStorage::open(dir, JobId::new("bench").unwrap()).unwrap();
    let id = CheckpointId(1);
    storage.initialize_checkpoint(id).unwrap();
    let handle = heap
        .snapshot(id, SnapshotMode::Full)
        .unwrap()
        .write(&storage)
        .unwrap()
        .unwrap();
    drop(heap);
    let mut b = HeapBackend::new(&w.context(), HeapBackendOptions::default()).unwrap();
    b.restore(&[handle], &storage).unwrap();
    let s = States::register(&mut b).unwrap();
    (b, s)
}

fn baseline(w: &Workload) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut m = HashMap::with_capacity(w.keys.len());
    for (i, k) in w.keys.iter().enumerate() {
        m.insert(k.clone(), w.values[i % 64].to_vec());
    }
    m
}

fn bench_ops(c: &mut Criterion) {
    let w = Workload::from_env();
    let size = w.value_size();
    let dir = tempfile::tempdir().unwrap();
    let mut backends: Vec<(&str, HeapBackend, States)> = Vec::new();
    let (h, s) = loaded_heap(&w);
    backends.push(("heap", h, s));
    let (f, s) = restored_from_fs(&w, dir.path());
    backends.push(("fs", f, s));
    let mut base = baseline(&w);
    let mut base_map: HashMap<Vec<u8>, Vec<u8>> = w
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut uk = k.clone();
            uk.extend_from_slice(b"field");
            (uk, w.values[i % 64].to_vec())
        })
        .collect();
    let map_keys: Vec<Vec<u8>> = w
        .keys
        .iter()
        .map(|k| {
            let mut uk = k.clone();
            uk.extend_from_slice(b"field");
            uk
        })
        .collect();

    // value_get
    let mut g = c.benchmark_group(format!("value_get/{size}"));
    g.throughput(Throughput::Elements(1));
    let mut n = 0usize;
    g.bench_function("hashmap", |bch| {
        bch.iter(|| {
            n = (n + 1) & (ORDER_LEN - 1);
            black_box(base.get(&w.keys[w.order[n] as usize]).map(|v| v.len()))
        })
    });
    for (name, b, s) in &backends {
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| {
                n = (n + 1) & (ORDER_LEN - 1);
                black_box(
                    b.get(s.value, &w.entry(w.order[n]))
                        .unwrap()
                        .map(|v| v.len()),
                )
            })
        });
    }
    g.finish();

    // value_update
    let mut g = c.benchmark_group(format!("value_update/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("hashmap", |bch| {
        bch.iter(|| {
            n = (n + 1) & (ORDER_LEN - 1);
            let new = &w.values[n & 63];
            if let Some(v) = base.get_mut(&w.keys[w.order[n] as usize]) {
                v.clear();
                v.extend_from_slice(new);
            }
        })
    });
    for (name, b, s) in &mut backends {
        g.bench_function(BenchmarkId::from_parameter(*name), |bch| {
            bch.iter(|| {
                n = (n + 1) & (ORDER_LEN - 1);
                b.put(s.value, &w.entry(w.order[n]), w.values[n & 63].clone())
                    .unwrap()
            })
        });
    }
    g.finish();

    // list_append
    let mut g = c.benchmark_group(format!("list_append/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("hashmap", |bch| {
        bch.iter(|| {
            n = (n + 1) & (ORDER_LEN - 1);
            if let Some(v) = base.get_mut(&w.keys[w.order[n] as usize]) {
                v.extend_from_slice(&w.values[n & 63]);
            }
        })
    });
    for (name, b, s) in &mut backends {
        g.bench_function(BenchmarkId::from_parameter(*name), |bch| {
            bch.iter(|| {
                n = (n + 1) & (ORDER_LEN - 1);
                b.append(s.list, &w.entry(w.order[n]), w.values[n & 63].clone())
                    .unwrap()
            })
        });
    }
    g.finish();

    // map_put (overwrites the one user key of a key)
    let mut g = c.benchmark_group(format!("map_put/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("hashmap", |bch| {
        bch.iter(|| {
            n = (n + 1) & (ORDER_LEN - 1);
            let new = &w.values[n & 63];
            if let Some(v) = base_map.get_mut(&map_keys[w.order[n] as usize]) {
                v.clear();
                v.extend_from_slice(new);
            }
        })
    });
    for (name, b, s) in &mut backends {
        g.bench_function(BenchmarkId::from_parameter(*name), |bch| {
            bch.iter(|| {
                n = (n + 1) & (ORDER_LEN - 1);
                b.map_put(
                    s.map,
                    &w.entry(w.order[n]),
                    b"field",
                    w.values[n & 63].clone(),
                )
                .unwrap()
            })
        });
    }
    g.finish();

    // map_get
    let mut g = c.benchmark_group(format!("map_get/{size}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("hashmap", |bch| {
        bch.iter(|| {
            n = (n + 1) & (ORDER_LEN - 1);
            black_box(
                base_map
                    .get(&map_keys[w.order[n] as usize])
                    .map(|v| v.len()),
            )
        })
    });
    for (name, b, s) in &backends {
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| {
                n = (n + 1) & (ORDER_LEN - 1);
                black_box(
                    b.map_get(s.map, &w.entry(w.order[n]), b"field")
                        .unwrap()
                        .map(|v| v.len()),
                )
            })
        });
    }
    g.finish();
}

/// Full checkpoint of the loaded state (synchronous part, then the whole write)
/// into each storage, and restore from the filesystem.
fn bench_checkpoint(c: &mut Criterion) {
    let w = Workload::from_env();
    let size = w.value_size();
    let (mut heap, _) = loaded_heap(&w);
    let mut g = c.benchmark_group(format!("checkpoint/{size}"));
    g.sample_size(10);
    g.bench_function("heap/sync_phase", |bch| {
        let mut id = 0;
        bch.iter(|| {
            id += 1;
            black_box(heap.snapshot(CheckpointId(id), SnapshotMode::Full).unwrap())
        })
    });
    let memory = MemoryCheckpointStorage::new(u64::MAX);
    let mut id = 100;
    g.bench_function("heap/full_to_memory", |bch| {
        bch.iter(|| {
            id += 1;
            let cid = CheckpointId(id);
            memory.initialize_checkpoint(cid).unwrap();
            let h = heap
                .snapshot(cid, SnapshotMode::Full)
                .unwrap()
                .write(&memory);
            memory.discard_checkpoint(cid).unwrap();
            black_box(h.unwrap())
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let fs = FsCheckpointStorage::open(dir.path(), JobId::new("bench").unwrap()).unwrap();
    let mut last = None;
    g.bench_function("fs/full_to_disk", |bch| {
        bch.iter(|| {
            id += 1;
            let cid = CheckpointId(id);
            fs.initialize_checkpoint(cid).unwrap();
            let h = heap
                .snapshot(cid, SnapshotMode::Full)
                .unwrap()
                .write(&fs)
                .unwrap()
                .unwrap();
            if let Some(prev) = last.replace(cid) {
                fs.discard_checkpoint(prev).unwrap();
            }
            black_box(h)
        })
    });
    let cid = CheckpointId(id + 1);
    fs.initialize_checkpoint(cid).unwrap();
    let handle = heap
        .snapshot(cid, SnapshotMode::Full)
        .unwrap()
        .write(&fs)
        .unwrap()
        .unwrap();
    g.bench_function("fs/restore", |bch| {
        bch.iter(|| {
            let mut b = HeapBackend::new(&w.context(), HeapBackendOptions::default()).unwrap();
            b.restore(std::slice::from_ref(&handle), &fs).unwrap();
            black_box(b)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ops, bench_checkpoint);
criterion_main!(benches);
