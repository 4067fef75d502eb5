//! Rescaled restores of incremental RocksDB snapshots, and TTL cleanup in
//! compaction.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use backend_rocks::RocksBackend;
use state_core::typed::{
    KeyedState, ListStateDescriptor, MapStateDescriptor, StateHandle, ValueStateDescriptor,
};
use state_core::{
    CheckpointId, CheckpointStorage, Checkpointable, KeyedStateBackend, ManualClock,
    MaxParallelism, SnapshotMode, StateId, TtlConfig, handles_for_range,
};
use support::*;

fn max() -> MaxParallelism {
    MaxParallelism::new(MAX_PARALLELISM).unwrap()
}

fn owner(k: u32, p: u32) -> u32 {
    max().subtask_for_key_group(p, max().key_group_of(&postcard::to_stdvec(&k).unwrap()))
}

/// The distinct keys (`u32`, postcard) `state` holds.
fn keys_of(b: &RocksBackend, state: StateId) -> Vec<u32> {
    let mut out = Vec::new();
    b.keys(state, &mut |e| {
        out.push(postcard::from_bytes::<u32>(e.key).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

#[test]
fn rescale_4_to_3_and_4_to_6_puts_every_key_once_at_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), false);
    let storage = fs_storage(&dir.path().join("storage"));
    let clock = Arc::new(ManualClock::new(1_000));
    let keys: Vec<u32> = (0..1_500).collect();
    let mut subtasks: Vec<KeyedState<RocksBackend>> = (0..4)
        .map(|i| KeyedState::new(create(&f, i, 4, &clock), clock.clone()))
        .collect();
    for &k in &keys {
        let st = &mut subtasks[owner(k, 4) as usize];
        let value = st
            .value_state(&ValueStateDescriptor::<u64>::new("v"))
            .unwrap();
        let list = st
            .list_state(&ListStateDescriptor::<u32>::new("l"))
            .unwrap();
        let map = st
            .map_state(&MapStateDescriptor::<u8, u32>::new("m"))
            .unwrap();
        st.set_current_key(&k).unwrap();
        value.update(st, &(u64::from(k) * 3)).unwrap();
        list.add(st, &k).unwrap();
        list.add(st, &(k + 1)).unwrap();
        map.put(st, &1, &k).unwrap();
        map.put(st, &2, &(k * 2)).unwrap();
    }
    let id = CheckpointId(1);
    storage.initialize_checkpoint(id).unwrap();
    let pending: Vec<_> = subtasks
        .iter_mut()
        .map(|st| {
            st.backend_mut()
                .snapshot(id, SnapshotMode::Incremental)
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = pending
        .into_iter()
        .map(|p| p.write(storage.as_ref()).unwrap().unwrap())
        .collect();
    drop(subtasks);

    for q in [3u32, 6] {
        let mut seen = BTreeSet::new();
        for i in 0..q {
            let mut b = create(&f, i, q, &clock);
            let mine = handles_for_range(&handles, b.key_group_range());
            b.restore(&mine, storage.as_ref()).unwrap();
            let mut st = KeyedState::new(b, clock.clone());
            let value = st
                .value_state(&ValueStateDescriptor::<u64>::new("v"))
                .unwrap();
            let list = st
                .list_state(&ListStateDescriptor::<u32>::new("l"))
                .unwrap();
            let map = st
                .map_state(&MapStateDescriptor::<u8, u32>::new("m"))
                .unwrap();
            let held = keys_of(st.backend(), value.state_id());
            for &k in &held {
                assert_eq!(owner(k, q), i, "p={q}: key {k} at subtask {i}");
                assert!(seen.insert(k), "p={q}: key {k} twice");
                st.set_current_key(&k).unwrap();
                assert_eq!(value.value(&mut st).unwrap(), Some(u64::from(k) * 3));
                assert_eq!(list.get(&mut st).unwrap(), vec![k, k + 1]);
                let mut entries = map.entries(&mut st).unwrap();
                entries.sort();
                assert_eq!(entries, vec![(1, k), (2, k * 2)]);
            }
            let mut list_keys = keys_of(st.backend(), list.state_id());
            let mut map_keys = keys_of(st.backend(), map.state_id());
            list_keys.sort();
            map_keys.sort();
            let mut held_sorted = held.clone();
            held_sorted.sort();
            assert_eq!(list_keys, held_sorted, "p={q} subtask {i}");
            assert_eq!(map_keys, held_sorted, "p={q} subtask {i}");
        }
        assert_eq!(seen, keys.iter().copied().collect::<BTreeSet<_>>(), "p={q}");
    }
}

fn count_entries(b: &RocksBackend, state: StateId) -> usize {
    let mut n = 0;
    b.keys(state, &mut |_| {
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    n
}

#[test]
fn ttl_entries_are_never_returned_after_expiry_and_gone_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("local"), false);
    let clock = Arc::new(ManualClock::new(1_000));
    let ttl = TtlConfig::new(Duration::from_millis(100)).unwrap();
    let mut st = KeyedState::new(create(&f, 0, 1, &clock), clock.clone());
    let value = st
        .value_state(&ValueStateDescriptor::<u32>::new("v").with_ttl(ttl))
        .unwrap();
    let list = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(ttl))
        .unwrap();
    let map = st
        .map_state(&MapStateDescriptor::<u32, u32>::new("m").with_ttl(ttl))
        .unwrap();
    let write = |st: &mut KeyedState<RocksBackend>, range: std::ops::Range<u32>| {
        for k in range {
            st.set_current_key(&k).unwrap();
            value.update(st, &k).unwrap();
            list.add(st, &k).unwrap();
            list.add(st, &(k + 1)).unwrap();
            map.put(st, &k, &k).unwrap();
        }
    };
    write(&mut st, 0..200);
    clock.set(1_060);
    write(&mut st, 200..250); // expire at 1_160
    st.backend_mut().compact_all().unwrap();
    clock.set(1_120);
    for k in 0..250u32 {
        st.set_current_key(&k).unwrap();
        let alive = k >= 200;
        assert_eq!(value.value(&mut st).unwrap().is_some(), alive, "value {k}");
        assert_eq!(list.get(&mut st).unwrap().is_empty(), !alive, "list {k}");
        assert_eq!(map.get(&mut st, &k).unwrap().is_some(), alive, "map {k}");
    }
    // Appends are merged by the first compaction and filtered by the next.
    st.backend_mut().compact_all().unwrap();
    st.backend_mut().compact_all().unwrap();
    for s in [value.state_id(), list.state_id(), map.state_id()] {
        assert_eq!(count_entries(st.backend(), s), 50, "state {s:?}");
    }
    for k in 200..250u32 {
        st.set_current_key(&k).unwrap();
        assert_eq!(value.value(&mut st).unwrap(), Some(k));
        assert_eq!(list.get(&mut st).unwrap(), vec![k, k + 1]);
    }
    clock.set(1_200);
    st.backend_mut().compact_all().unwrap();
    st.backend_mut().compact_all().unwrap();
    for s in [value.state_id(), list.state_id(), map.state_id()] {
        assert_eq!(count_entries(st.backend(), s), 0, "state {s:?}");
    }
}
