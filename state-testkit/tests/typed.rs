//! Tests of state-core's typed layer on the model backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a test failure

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use state_core::typed::*;
use state_core::{
    EntryKey, ErrorKind, KeyGroupRange, KeyedStateBackend, ManualClock, StateKind, TtlConfig,
    TtlUpdateType, TtlVisibility,
};
use state_testkit::{ModelBackend, test_context};

fn state_at(subtask: u32, parallelism: u32) -> (KeyedState<ModelBackend>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000));
    let ctx = test_context(subtask, parallelism, 128, clock.clone()).unwrap();
    (
        KeyedState::new(ModelBackend::new(&ctx).unwrap(), clock.clone()),
        clock,
    )
}

fn state() -> (KeyedState<ModelBackend>, Arc<ManualClock>) {
    state_at(0, 1)
}

#[derive(Debug)]
struct Avg;

impl AggregateFunction for Avg {
    type In = u32;
    type Acc = (u64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u32, acc: (u64, u64)) -> (u64, u64) {
        (acc.0 + u64::from(value), acc.1 + 1)
    }
    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
}

#[test]
fn value_state_update_read_clear_per_key() {
    let (mut st, _) = state();
    let v = st
        .value_state(&ValueStateDescriptor::<String>::new("v"))
        .unwrap();
    st.set_current_key("a").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.update(&mut st, &"one".to_string()).unwrap();
    st.set_current_key("b").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.update(&mut st, &"two".to_string()).unwrap();
    st.set_current_key("a").unwrap();
    assert_eq!(v.value(&mut st).unwrap().as_deref(), Some("one"));
    v.clear(&mut st).unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    st.set_current_key("b").unwrap();
    assert_eq!(v.value(&mut st).unwrap().as_deref(), Some("two"));
}

#[test]
fn namespaces_are_isolated_and_default_is_empty() {
    let (mut st, _) = state();
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v"))
        .unwrap();
    st.set_current_key(&7u64).unwrap();
    v.update(&mut st, &1).unwrap();
    st.set_namespace(&(0u64, 10u64)).unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.update(&mut st, &2).unwrap();
    st.set_namespace(&()).unwrap();
    assert!(st.namespace_bytes().is_empty());
    assert_eq!(v.value(&mut st).unwrap(), Some(1));
    st.set_namespace_bytes(&postcard::to_stdvec(&(0u64, 10u64)).unwrap());
    assert_eq!(v.value(&mut st).unwrap(), Some(2));
    st.reset_namespace();
    assert_eq!(v.value(&mut st).unwrap(), Some(1));
}

#[test]
fn no_current_key_and_foreign_key_groups_are_invalid() {
    let (mut st, _) = state_at(1, 4);
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v"))
        .unwrap();
    let err = v.value(&mut st).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("'v'"), "{err}");
    let range = st.backend().key_group_range();
    let max = st.backend().max_parallelism();
    let mut inside = None;
    let mut outside = None;
    for k in 0u32..1000 {
        let kg = max.key_group_of(&postcard::to_stdvec(&k).unwrap());
        if range.contains(kg) {
            inside.get_or_insert(k);
        } else {
            outside.get_or_insert(k);
        }
    }
    st.set_current_key(&inside.unwrap()).unwrap();
    v.update(&mut st, &5).unwrap();
    let err = st.set_current_key(&outside.unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains(&range.to_string()), "{err}");
    // The failed call leaves no current key: writes cannot go to the old key.
    assert_eq!(st.current_key_bytes(), None);
    assert!(v.update(&mut st, &6).is_err());
    st.set_current_key(&inside.unwrap()).unwrap();
    assert_eq!(v.value(&mut st).unwrap(), Some(5));
}

#[test]
fn list_state_add_update_clear() {
    let (mut st, _) = state();
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l"))
        .unwrap();
    st.set_current_key(&1u8).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    l.add(&mut st, &1).unwrap();
    l.add_all(&mut st, &[2, 3]).unwrap();
    assert_eq!(l.get(&mut st).unwrap(), vec![1, 2, 3]);
    l.update(&mut st, &[9]).unwrap();
    assert_eq!(l.get(&mut st).unwrap(), vec![9]);
    l.update(&mut st, &[]).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    l.add(&mut st, &4).unwrap();
    l.clear(&mut st).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
}

#[test]
fn map_state_operations() {
    let (mut st, _) = state();
    let m = st
        .map_state(&MapStateDescriptor::<String, u64>::new("m"))
        .unwrap();
    st.set_current_key("k").unwrap();
    assert!(m.is_empty(&mut st).unwrap());
    m.put(&mut st, &"a".into(), &1).unwrap();
    m.put(&mut st, &"b".into(), &2).unwrap();
    m.put(&mut st, &"a".into(), &3).unwrap();
    assert_eq!(m.get(&mut st, &"a".into()).unwrap(), Some(3));
    assert!(m.contains(&mut st, &"b".into()).unwrap());
    assert!(!m.contains(&mut st, &"c".into()).unwrap());
    let mut entries = m.entries(&mut st).unwrap();
    entries.sort();
    assert_eq!(entries, vec![("a".into(), 3), ("b".into(), 2)]);
    let mut keys = m.keys(&mut st).unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    let mut values = m.values(&mut st).unwrap();
    values.sort();
    assert_eq!(values, vec![2, 3]);
    m.remove(&mut st, &"a".into()).unwrap();
    assert_eq!(m.get(&mut st, &"a".into()).unwrap(), None);
    assert!(!m.is_empty(&mut st).unwrap());
    m.clear(&mut st).unwrap();
    assert!(m.is_empty(&mut st).unwrap());
}

#[test]
fn reducing_and_aggregating_fold_added_values() {
    let (mut st, _) = state();
    let r = st
        .reducing_state(&ReducingStateDescriptor::new("max", |a: &i64, b: &i64| {
            *a.max(b)
        }))
        .unwrap();
    let a = st
        .aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))
        .unwrap();
    st.set_current_key("k").unwrap();
    assert_eq!(r.get(&mut st).unwrap(), None);
    assert_eq!(a.get(&mut st).unwrap(), None);
    for x in [3i64, -1, 7, 2] {
        r.add(&mut st, x).unwrap();
    }
    for x in [1u32, 2, 6] {
        a.add(&mut st, x).unwrap();
    }
    assert_eq!(r.get(&mut st).unwrap(), Some(7));
    assert_eq!(a.get(&mut st).unwrap(), Some(3.0));
    r.clear(&mut st).unwrap();
    a.clear(&mut st).unwrap();
    assert_eq!(r.get(&mut st).unwrap(), None);
    assert_eq!(a.get(&mut st).unwrap(), None);
}

#[test]
fn registration_rules() {
    let (mut st, _) = state();
    let v1 = st
        .value_state(&ValueStateDescriptor::<u32>::new("s"))
        .unwrap();
    let v2 = st
        .value_state(&ValueStateDescriptor::<u32>::new("s"))
        .unwrap();
    assert_eq!(v1.state_id(), v2.state_id());
    assert_eq!(st.state_id("s"), Some(v1.state_id()));
    assert_eq!(st.state_id("nope"), None);
    let err = st
        .list_state(&ListStateDescriptor::<u32>::new("s"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = st
        .reducing_state(&ReducingStateDescriptor::new("s", |a: &u32, b: &u32| a + b))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = st
        .map_state(&MapStateDescriptor::<u8, u8>::new("_timers/event"))
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(
        st.backend().states()[v1.state_id().index()].kind,
        StateKind::Value
    );
}

#[test]
fn keys_lists_every_key_of_a_namespace() {
    let (mut st, _) = state();
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v"))
        .unwrap();
    for k in 0u32..50 {
        st.set_current_key(&k).unwrap();
        if k % 2 == 0 {
            st.set_namespace("even").unwrap();
        } else {
            st.reset_namespace();
        }
        v.update(&mut st, &k).unwrap();
    }
    let mut even: Vec<u32> = st.keys(&v, "even").unwrap();
    even.sort_unstable();
    assert_eq!(even, (0..50).step_by(2).collect::<Vec<_>>());
    let mut odd: Vec<u32> = st.keys(&v, &()).unwrap();
    odd.sort_unstable();
    assert_eq!(odd, (1..50).step_by(2).collect::<Vec<_>>());
    let bytes = st.keys_bytes(v.state_id(), &[]).unwrap();
    assert_eq!(bytes.len(), 25);
    let max = st.backend().max_parallelism();
    assert!(bytes.iter().all(|(kg, k)| max.key_group_of(k) == *kg));
    // Keys of another type do not decode: Corrupted, naming the state.
    let err = st.keys::<String, _>(&v, &()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
}

#[test]
fn undecodable_value_is_corrupted_naming_the_state() {
    let (mut st, _) = state();
    let v = st
        .value_state(&ValueStateDescriptor::<String>::new("name"))
        .unwrap();
    st.set_current_key(&1u8).unwrap();
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    st.backend_mut()
        .put(
            v.state_id(),
            &entry,
            Bytes::from_static(&[0xff, 0xff, 0xff]),
        )
        .unwrap();
    let err = v.value(&mut st).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("state 'name'"), "{err}");
}

fn ttl(update: TtlUpdateType, visibility: TtlVisibility) -> TtlConfig {
    TtlConfig::new(Duration::from_millis(100))
        .unwrap()
        .with_update_type(update)
        .with_visibility(visibility)
}

/// The stored timestamp of the current key's value of `v`.
fn stored_ts<T>(st: &KeyedState<ModelBackend>, v: &ValueState<T>) -> Option<u64> {
    let key = st.current_key_bytes()?.to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group()?,
        key: &key,
        namespace: st.namespace_bytes(),
    };
    let raw = st.backend().get(v.state_id(), &entry).ok()??;
    state_core::backend_support::unwrap_ttl(&raw).map(|(ts, _)| ts)
}

#[test]
fn value_ttl_each_update_type_and_visibility() {
    use TtlUpdateType::*;
    use TtlVisibility::*;
    for update in [OnCreateAndWrite, OnReadAndWrite] {
        for visibility in [NeverReturnExpired, ReturnExpiredIfNotCleanedUp] {
            let (mut st, clock) = state();
            let v = st
                .value_state(
                    &ValueStateDescriptor::<u32>::new("v").with_ttl(ttl(update, visibility)),
                )
                .unwrap();
            st.set_current_key("k").unwrap();
            v.update(&mut st, &1).unwrap(); // t = 1000
            assert_eq!(stored_ts(&st, &v), Some(1_000));
            clock.set(1_060);
            assert_eq!(v.value(&mut st).unwrap(), Some(1));
            let refreshed = update == OnReadAndWrite;
            assert_eq!(
                stored_ts(&st, &v),
                Some(if refreshed { 1_060 } else { 1_000 })
            );
            clock.set(1_120);
            let got = v.value(&mut st).unwrap();
            let case = format!("{update:?}/{visibility:?}");
            if refreshed {
                assert_eq!(got, Some(1), "{case}: read at 1060 refreshed it");
            } else if visibility == NeverReturnExpired {
                assert_eq!(got, None, "{case}");
                assert_eq!(
                    stored_ts(&st, &v),
                    None,
                    "{case}: an expired read removes it"
                );
                assert!(st.keys::<String, _>(&v, &()).unwrap().is_empty(), "{case}");
            } else {
                assert_eq!(got, Some(1), "{case}: returned until cleaned up");
            }
            // A write refreshes in every mode.
            v.update(&mut st, &2).unwrap();
            clock.set(1_219);
            assert_eq!(v.value(&mut st).unwrap(), Some(2), "{case}");
        }
    }
}

#[test]
fn list_ttl_expires_elements_one_by_one() {
    let (mut st, clock) = state();
    let cfg = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(cfg))
        .unwrap();
    st.set_current_key("k").unwrap();
    l.add(&mut st, &1).unwrap();
    clock.set(1_050);
    l.add(&mut st, &2).unwrap();
    clock.set(1_100);
    assert_eq!(l.get(&mut st).unwrap(), vec![2]);
    // The expired element was removed from the backend by the read.
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    let stored = st.backend().get_list(l.state_id(), &entry).unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored.iter().all(|e| !cfg.is_expired(e, 1_100)));
    clock.set(1_150);
    assert!(l.get(&mut st).unwrap().is_empty());
    assert!(st.keys_bytes(l.state_id(), &[]).unwrap().is_empty());
}

#[test]
fn list_ttl_on_read_refreshes_and_return_expired_returns() {
    let (mut st, clock) = state();
    let cfg = ttl(
        TtlUpdateType::OnReadAndWrite,
        TtlVisibility::ReturnExpiredIfNotCleanedUp,
    );
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(cfg))
        .unwrap();
    st.set_current_key("k").unwrap();
    l.update(&mut st, &[1, 2]).unwrap();
    clock.set(5_000);
    assert_eq!(l.get(&mut st).unwrap(), vec![1, 2]);
    clock.set(5_099);
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    let stored = st.backend().get_list(l.state_id(), &entry).unwrap();
    assert!(
        stored.iter().all(|e| !cfg.is_expired(e, 5_099)),
        "refreshed at 5000"
    );
}

#[test]
fn map_ttl_expires_entries_one_by_one() {
    let (mut st, clock) = state();
    let cfg = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let m = st
        .map_state(&MapStateDescriptor::<u8, u8>::new("m").with_ttl(cfg))
        .unwrap();
    st.set_current_key("k").unwrap();
    m.put(&mut st, &1, &10).unwrap();
    clock.set(1_050);
    m.put(&mut st, &2, &20).unwrap();
    clock.set(1_100);
    assert_eq!(m.get(&mut st, &1).unwrap(), None);
    assert!(!m.contains(&mut st, &1).unwrap());
    assert_eq!(m.entries(&mut st).unwrap(), vec![(2, 20)]);
    clock.set(1_150);
    assert!(m.is_empty(&mut st).unwrap());
    assert!(st.keys_bytes(m.state_id(), &[]).unwrap().is_empty());

    // Return-expired with refresh on read.
    let cfg = ttl(
        TtlUpdateType::OnReadAndWrite,
        TtlVisibility::ReturnExpiredIfNotCleanedUp,
    );
    let m = st
        .map_state(&MapStateDescriptor::<u8, u8>::new("m2").with_ttl(cfg))
        .unwrap();
    m.put(&mut st, &1, &10).unwrap(); // 1150
    clock.set(2_000);
    assert_eq!(m.keys(&mut st).unwrap(), vec![1]); // expired, returned, refreshed
    clock.set(2_099);
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    let raw = st
        .backend()
        .map_get(m.state_id(), &entry, &postcard::to_stdvec(&1u8).unwrap())
        .unwrap()
        .unwrap();
    assert!(!cfg.is_expired(&raw, 2_099));
}

#[test]
fn reducing_ttl_treats_expired_value_as_absent() {
    let (mut st, clock) = state();
    let cfg = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let r = st
        .reducing_state(
            &ReducingStateDescriptor::new("sum", |a: &u32, b: &u32| a + b).with_ttl(cfg),
        )
        .unwrap();
    let keep = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::ReturnExpiredIfNotCleanedUp,
    );
    let a = st
        .aggregating_state(&AggregatingStateDescriptor::new("avg", Avg).with_ttl(keep))
        .unwrap();
    st.set_current_key("k").unwrap();
    r.add(&mut st, 5).unwrap();
    a.add(&mut st, 4).unwrap();
    clock.set(1_200);
    r.add(&mut st, 1).unwrap();
    a.add(&mut st, 2).unwrap();
    assert_eq!(r.get(&mut st).unwrap(), Some(1));
    assert_eq!(a.get(&mut st).unwrap(), Some(3.0));
}

#[test]
fn stored_bytes_of_every_kind_match_the_ttl_contract() {
    // What backends rely on to drop expired entries in snapshots.
    let (mut st, _) = state();
    let cfg = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v").with_ttl(cfg))
        .unwrap();
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(cfg))
        .unwrap();
    let m = st
        .map_state(&MapStateDescriptor::<u32, u32>::new("m").with_ttl(cfg))
        .unwrap();
    st.set_current_key("k").unwrap();
    v.update(&mut st, &300).unwrap();
    l.add_all(&mut st, &[1, 2]).unwrap();
    m.put(&mut st, &7, &8).unwrap();
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    let b = st.backend();
    let expect = |payload: Vec<u8>| state_core::backend_support::wrap_ttl(1_000, &payload);
    assert_eq!(
        b.get(v.state_id(), &entry).unwrap().unwrap().to_vec(),
        expect(postcard::to_stdvec(&300u32).unwrap())
    );
    let list: Vec<Vec<u8>> = b
        .get_list(l.state_id(), &entry)
        .unwrap()
        .iter()
        .map(|e| e.to_vec())
        .collect();
    assert_eq!(
        list,
        vec![
            expect(postcard::to_stdvec(&1u32).unwrap()),
            expect(postcard::to_stdvec(&2u32).unwrap())
        ]
    );
    let uk = postcard::to_stdvec(&7u32).unwrap();
    assert_eq!(
        b.map_get(m.state_id(), &entry, &uk)
            .unwrap()
            .unwrap()
            .to_vec(),
        expect(postcard::to_stdvec(&8u32).unwrap())
    );
    assert!(KeyGroupRange::all(b.max_parallelism()).contains(entry.key_group));
}
