//! The value cache in front of RocksDB: a tiny cache that writes back and
//! evicts all the time must behave exactly like no cache, and a checkpoint
//! must hold the writes the cache had not yet written back.

// Test-only crate: the helpers below unwrap because a panic in them is a
// test failure with a backtrace, like an unwrap inside a #[test] fn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use backend_rocks::{RocksBackend, RocksBackendFactory};
use state_core::backend_support::SmallBytes;
use state_core::{
    CheckpointId, CheckpointStorage, Checkpointable, KeyedStateBackend, ManualClock, SnapshotMode,
    StateDescriptor, StateId, StateKind,
};
use support::*;

const KEYS: u32 = 5_000;

fn key(k: u32) -> Vec<u8> {
    format!("key-{k:07}").into_bytes()
}

fn value_state(b: &mut RocksBackend) -> StateId {
    b.register_state(&StateDescriptor::new("count", StateKind::Value))
        .unwrap()
}

fn factory_with_cache(
    dir: &std::path::Path,
    bytes: usize,
    max_dirty: usize,
) -> RocksBackendFactory {
    RocksBackendFactory::new(
        options(dir)
            .with_value_cache(bytes)
            .with_value_cache_max_dirty(max_dirty),
    )
    .unwrap()
}

/// Every (key, value) of the state, through `keys` and `get`.
fn contents(b: &mut RocksBackend) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let id = value_state(b);
    let mut keys = Vec::new();
    b.keys(id, &mut |k| {
        keys.push(k.key.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    keys.into_iter()
        .map(|k| {
            let v = b.get(id, &entry(&k)).unwrap().unwrap().to_vec();
            (k, v)
        })
        .collect()
}

/// A deterministic mix of reads, writes and clears; returns what every read saw.
fn workload(b: &mut RocksBackend) -> Vec<Option<Vec<u8>>> {
    let id = value_state(b);
    let mut seen = Vec::new();
    for round in 0..3u32 {
        for k in 0..KEYS {
            if (k + round) % 3 == 0 {
                // The same as one read-modify-write call; a short value
                // every other time (kept inline by the cache).
                let kb = key(k);
                b.update_value(id, &entry(&kb), &mut |old| {
                    seen.push(old.map(<[u8]>::to_vec));
                    if (k + round) % 7 == 0 {
                        return Ok(None);
                    }
                    let n = old.map_or(0, |v| u32::from_le_bytes(v[..4].try_into().unwrap()));
                    let mut v = (n + 1).to_le_bytes().to_vec();
                    if k % 2 == 0 {
                        v.extend_from_slice(&[round as u8; 60]);
                    }
                    Ok(Some(SmallBytes::from_slice(&v)))
                })
                .unwrap();
                continue;
            }
            let kb = key(k);
            let e = entry(&kb);
            // A keyed count: read, then write.
            let old = b.get(id, &e).unwrap();
            seen.push(old.as_ref().map(|v| v.to_vec()));
            if (k + round) % 7 == 0 {
                b.clear(id, &e).unwrap();
            } else {
                let n = old.map_or(0, |v| u32::from_le_bytes(v[..4].try_into().unwrap()));
                let mut v = (n + 1).to_le_bytes().to_vec();
                v.extend_from_slice(&[round as u8; 60]);
                b.put(id, &e, v.into()).unwrap();
            }
        }
    }
    seen
}

#[test]
fn a_tiny_cache_behaves_like_no_cache() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let budget = 64 << 10;
    let cached_factory = factory_with_cache(&dir.path().join("cached"), budget, 7);
    let plain_factory = factory_with_cache(&dir.path().join("plain"), 0, 1);
    let mut cached = create(&cached_factory, 0, 1, &clock);
    let mut plain = create(&plain_factory, 0, 1, &clock);

    let seen_cached = workload(&mut cached);
    assert!(
        cached.value_cache_usage() <= budget,
        "cache holds {} bytes, budget {budget}",
        cached.value_cache_usage()
    );
    assert_eq!(plain.value_cache_usage(), 0);
    let seen_plain = workload(&mut plain);
    assert_eq!(seen_cached, seen_plain);
    let expected = contents(&mut plain);
    assert!(expected.len() > (KEYS as usize) / 2);
    assert_eq!(contents(&mut cached), expected);

    // Both checkpoint the same state, and it restores into a backend
    // without a cache.
    for (name, backend) in [("cached", &mut cached), ("plain", &mut plain)] {
        let storage = fs_storage(&dir.path().join(format!("chk-{name}")));
        let handle = checkpoint(backend, storage.as_ref(), 1, SnapshotMode::Incremental);
        let mut restored = create(&plain_factory, 0, 1, &clock);
        restored.restore(&[handle], storage.as_ref()).unwrap();
        assert_eq!(contents(&mut restored), expected, "{name}");
    }
}

#[test]
fn checkpoints_hold_writes_the_cache_has_not_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    // Large enough that nothing is written back before the checkpoint.
    let factory = factory_with_cache(&dir.path().join("db"), 16 << 20, 1 << 20);
    for mode in [SnapshotMode::Full, SnapshotMode::Incremental] {
        let mut b = create(&factory, 0, 1, &clock);
        let id = value_state(&mut b);
        for k in 0..100 {
            let kb = key(k);
            // Read first (as a keyed count does), so the key is cached and
            // the write stays in the cache.
            assert_eq!(b.get(id, &entry(&kb)).unwrap(), None);
            b.put(id, &entry(&kb), format!("v{k}").into_bytes().into())
                .unwrap();
        }
        assert!(b.value_cache_usage() > 0);
        let storage = fs_storage(&dir.path().join(format!("{mode:?}")));
        storage.initialize_checkpoint(CheckpointId(1)).unwrap();
        let pending = b.snapshot(CheckpointId(1), mode).unwrap();
        // Written after the synchronous part: not in the checkpoint.
        let late = key(100);
        b.put(id, &entry(&late), "late".as_bytes().into()).unwrap();
        let handle = pending.write(storage.as_ref()).unwrap().unwrap();

        let mut restored = create(&factory, 0, 1, &clock);
        restored.restore(&[handle], storage.as_ref()).unwrap();
        let got = contents(&mut restored);
        assert_eq!(got.len(), 100, "{mode:?}");
        for k in 0..100 {
            assert_eq!(got[&key(k)], format!("v{k}").into_bytes(), "{mode:?}");
        }
    }
}

#[test]
fn a_too_small_cache_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = RocksBackendFactory::new(options(dir.path()).with_value_cache(1000)).unwrap_err();
    assert!(err.to_string().contains("value_cache_bytes"), "{err}");
    let err =
        RocksBackendFactory::new(options(dir.path()).with_value_cache_max_dirty(0)).unwrap_err();
    assert!(err.to_string().contains("value_cache_max_dirty"), "{err}");
}
