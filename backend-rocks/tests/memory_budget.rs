//! One memory budget for every backend of a factory: the value caches share
//! their bytes, and the memtables of all databases are bounded together by
//! one write-buffer manager (Flink's shared managed memory).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

mod support;

use std::sync::Arc;

use backend_rocks::{RocksBackend, RocksBackendFactory, RocksBackendOptions};
use state_core::backend_support::SmallBytes;
use state_core::{EntryKey, KeyedStateBackend, ManualClock, StateDescriptor, StateId, StateKind};
use support::*;

const BUDGET: usize = 32 << 20;
const VALUE_CACHES: usize = 4 << 20;
const WRITE_BUFFER: usize = 2 << 20;

fn factory(dir: &std::path::Path) -> RocksBackendFactory {
    RocksBackendFactory::new(
        RocksBackendOptions::new(dir)
            .with_memory_budget(BUDGET)
            .with_value_cache(VALUE_CACHES)
            .with_write_buffer_size(WRITE_BUFFER),
    )
    .unwrap()
}

fn count_state(b: &mut RocksBackend) -> StateId {
    b.register_state(&StateDescriptor::new("count", StateKind::Value))
        .unwrap()
}

/// Updates `keys` keys of the backend's key groups (a read-modify-write
/// through the value cache) and blind-writes 100-byte values for as many
/// more (straight into the memtable).
fn load(b: &mut RocksBackend, subtask: u32, keys: u32) {
    let id = count_state(b);
    let range = b.key_group_range();
    let mp = b.max_parallelism();
    let mut written = 0;
    let mut i = 0u32;
    while written < keys {
        let key = format!("key-{subtask}-{i:08}").into_bytes();
        i += 1;
        let key_group = mp.key_group_of(&key);
        if !range.contains(key_group) {
            continue;
        }
        let entry = EntryKey {
            key_group,
            key: &key,
            namespace: b"",
        };
        b.update_value(id, &entry, &mut |old| {
            let n = old.map_or(0, |v| v[0]);
            Ok(Some(SmallBytes::from_slice(&[n + 1; 8])))
        })
        .unwrap();
        let blind = EntryKey {
            key_group,
            key: &key,
            namespace: b"blind",
        };
        b.put(id, &blind, vec![7u8; 100].into()).unwrap();
        written += 1;
    }
}

#[test]
fn backends_of_one_factory_stay_within_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path());
    let clock = Arc::new(ManualClock::new(0));
    let mut a = create(&f, 0, 2, &clock);
    let mut b = create(&f, 1, 2, &clock);
    // Each backend alone would fill the value caches' whole share (about
    // 110 bytes per cached key) and several write buffers.
    load(&mut a, 0, 60_000);
    load(&mut b, 1, 60_000);

    // The value caches together: within their share, plus at most the
    // small-cache slack per backend (64 KiB each).
    let caches = a.value_caches_usage();
    assert_eq!(caches, b.value_caches_usage(), "one pool, seen from both");
    assert!(
        caches <= VALUE_CACHES + 2 * (64 << 10),
        "value caches hold {caches} bytes, their share is {VALUE_CACHES}"
    );
    assert!(caches > VALUE_CACHES / 2, "the caches were used: {caches}");

    // The memtables of both databases together: within the write-buffer
    // share of the block cache (half of it), plus the memtable being
    // written when the manager asked for the flush.
    let write_buffers = a.write_buffer_usage();
    assert_eq!(write_buffers, b.write_buffer_usage());
    let limit = (BUDGET - VALUE_CACHES) / 2;
    assert!(
        write_buffers <= limit + 2 * WRITE_BUFFER,
        "memtables use {write_buffers} bytes, their share is {limit}"
    );

    // Block cache and the memtables charged to it: within the rest of the budget.
    let cache = a.memory_usage();
    assert!(
        cache <= BUDGET - VALUE_CACHES + WRITE_BUFFER,
        "block cache + memtables use {cache} bytes of {}",
        BUDGET - VALUE_CACHES
    );

    // Dropping a backend returns its value-cache bytes to the pool.
    let before = b.value_caches_usage();
    drop(a);
    assert!(b.value_caches_usage() < before);
}

#[test]
fn a_value_cache_larger_than_half_the_budget_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = RocksBackendFactory::new(
        RocksBackendOptions::new(dir.path())
            .with_memory_budget(32 << 20)
            .with_value_cache(20 << 20),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("value_cache_bytes") && text.contains("memory_budget"),
        "{text}"
    );
}
