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

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use bytes::Bytes;
use cairn_benches::{access_order, key, value};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use state_core::memory_storage::MemoryCheckpointStorage;
use state_core::{
    BackendContext, CheckpointId, CheckpointStorage, Checkpointable, EntryKey, JobId,
    KeyedStateBackend, MaxParallelism, OperatorId, SnapshotMode, StateDescriptor, StateId,
    StateKind, SystemClock,
};

const ORDER_LEN: usize = 1 << 20;

struct Workload {
    keys: Vec<Vec<u8>>,
    values: Vec<Bytes>,
    order: Vec<u64>,
    max: MaxParallelism,
}

impl Workload {
    fn new() -> Self {
        let n: u64 = env_or("CAIRN_BENCH_KEYS", 1_000_000);
        let size: usize = env_or("CAIRN_BENCH_VALUE_SIZE", 100);
        Workload {
            keys: (0..n).map(key).collect(),
            values: (0..64).map(|i| Bytes::from(value(i, size))).collect(),
            order: access_order(ORDER_LEN, n, 0x5eed),
            max: MaxParallelism::new(128).unwrap(),
        }
    }

    fn value_size(&self) -> usize {
        self.values[0].len()
    }

    fn entry(&self, i: u64) -> EntryKey<'_> {
        let key = &self.keys[i as usize];
        EntryKey {
            key_group: self.max.key_group_of(key),
            key,
            namespace: &[],
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct States {
    value: StateId,
    list: StateId,
    map: StateId,
}

fn context(max: MaxParallelism) -> BackendContext {
    BackendContext {
        operator_id: OperatorId("bench".into()),
        subtask: 0,
        parallelism: 1,
        max_parallelism: max,
        clock: Arc::new(SystemClock),
    }
}

fn register(b: &mut HeapBackend) -> States {
    States {
        value: b
            .register_state(&StateDescriptor::new("value", StateKind::Value))
            .unwrap(),
        list: b
            .register_state(&StateDescriptor::new("list", StateKind::List))
            .unwrap(),
        map: b
            .register_state(&StateDescriptor::new("map", StateKind::Map))
            .unwrap(),
    }
}

/// A heap backend holding every key in the value, list and map states.
fn loaded_heap(w: &Workload) -> (HeapBackend, States) {
    let mut b = HeapBackend::new(&context(w.max), HeapBackendOptions::default()).unwrap();
    let s = register(&mut b);
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
    let mut b = HeapBackend::new(&context(w.max), HeapBackendOptions::default()).unwrap();
    b.restore(&[handle], &storage).unwrap();
    let s = register(&mut b);
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
    let w = Workload::new();
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
    let w = Workload::new();
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
            let mut b = HeapBackend::new(&context(w.max), HeapBackendOptions::default()).unwrap();
            b.restore(std::slice::from_ref(&handle), &fs).unwrap();
            black_box(b)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ops, bench_checkpoint);
criterion_main!(benches);
