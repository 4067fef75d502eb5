//! Conformance: the operations of every state kind, namespaces, key groups
//! and registration.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::fixture::{Avg, Fixture, clock, create_subtask, keys_in_range};
use crate::Setup;
use state_core::typed::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateHandle, ValueStateDescriptor,
};
use state_core::{
    BackendFactory, EntryKey, ErrorKind, KeyGroup, KeyedStateBackend, StateDescriptor, StateKind,
};

/// Value state: update, read, overwrite, clear, per key.
pub fn value_state_operations<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let v = st
        .value_state(&ValueStateDescriptor::<String>::new("v"))
        .unwrap();
    st.set_current_key("alice").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.update(&mut st, &"1".to_string()).unwrap();
    v.update(&mut st, &"2".to_string()).unwrap();
    st.set_current_key("bob").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.update(&mut st, &"b".to_string()).unwrap();
    st.set_current_key("alice").unwrap();
    assert_eq!(v.value(&mut st).unwrap().as_deref(), Some("2"));
    v.clear(&mut st).unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    v.clear(&mut st).unwrap();
    st.set_current_key("bob").unwrap();
    assert_eq!(v.value(&mut st).unwrap().as_deref(), Some("b"));
}

/// Read-modify-write in one call: `ValueState::update_with` sees the
/// current value (or none) and stores what it returns;
/// `KeyedStateBackend::update_value` removes the value when its function
/// returns `None` and leaves it as it was when the function fails.
pub fn value_update_in_place<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let v = st
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    for key in ["alice", "bob", "alice", "alice"] {
        st.set_current_key(key).unwrap();
        let before = v.value(&mut st).unwrap();
        let after = v
            .update_with(&mut st, |current| {
                assert_eq!(current, before, "update_with saw another value");
                current.unwrap_or(0) + 1
            })
            .unwrap();
        assert_eq!(v.value(&mut st).unwrap(), Some(after));
    }
    st.set_current_key("alice").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), Some(3));

    // Byte level: a failing function changes nothing; None removes.
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: b"",
    };
    let id = v.state_id();
    let before = st.backend().get(id, &entry).unwrap();
    let err = st
        .backend_mut()
        .update_value(id, &entry, &mut |_| {
            Err(state_core::StateError::invalid("refused"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(st.backend().get(id, &entry).unwrap(), before);
    st.backend_mut()
        .update_value(id, &entry, &mut |current| {
            assert_eq!(
                current.map(<[u8]>::to_vec),
                before.as_deref().map(<[u8]>::to_vec)
            );
            Ok(None)
        })
        .unwrap();
    assert_eq!(st.backend().get(id, &entry).unwrap(), None);
    assert_eq!(v.value(&mut st).unwrap(), None);
    st.backend_mut()
        .update_value(id, &entry, &mut |current| {
            assert!(current.is_none());
            Ok(None)
        })
        .unwrap();
    assert_eq!(v.value(&mut st).unwrap(), None);
    st.set_current_key("bob").unwrap();
    assert_eq!(v.value(&mut st).unwrap(), Some(1));
}

/// List state: add, add_all, get order, update, update with nothing, clear.
pub fn list_state_operations<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let l = st
        .list_state(&ListStateDescriptor::<u64>::new("l"))
        .unwrap();
    st.set_current_key(&1u32).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    l.add(&mut st, &5).unwrap();
    l.add_all(&mut st, &[6, 7]).unwrap();
    l.add(&mut st, &5).unwrap();
    assert_eq!(l.get(&mut st).unwrap(), vec![5, 6, 7, 5]);
    st.set_current_key(&2u32).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    l.update(&mut st, &[1, 2]).unwrap();
    st.set_current_key(&1u32).unwrap();
    l.update(&mut st, &[9]).unwrap();
    assert_eq!(l.get(&mut st).unwrap(), vec![9]);
    l.update(&mut st, &[]).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    l.add(&mut st, &3).unwrap();
    l.clear(&mut st).unwrap();
    assert!(l.get(&mut st).unwrap().is_empty());
    st.set_current_key(&2u32).unwrap();
    assert_eq!(l.get(&mut st).unwrap(), vec![1, 2]);
}

/// Map state: put, overwrite, get, contains, remove, entries, keys, values,
/// is_empty, clear.
pub fn map_state_operations<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let m = st
        .map_state(&MapStateDescriptor::<u32, String>::new("m"))
        .unwrap();
    st.set_current_key("k").unwrap();
    assert!(m.is_empty(&mut st).unwrap());
    for i in 0..20u32 {
        m.put(&mut st, &i, &format!("x{i}")).unwrap();
    }
    m.put(&mut st, &3, &"three".to_string()).unwrap();
    assert_eq!(m.get(&mut st, &3).unwrap().as_deref(), Some("three"));
    assert_eq!(m.get(&mut st, &99).unwrap(), None);
    assert!(m.contains(&mut st, &19).unwrap());
    m.remove(&mut st, &19).unwrap();
    m.remove(&mut st, &19).unwrap();
    assert!(!m.contains(&mut st, &19).unwrap());
    let mut keys = m.keys(&mut st).unwrap();
    keys.sort_unstable();
    assert_eq!(keys, (0..19).collect::<Vec<_>>());
    let values: BTreeSet<String> = m.values(&mut st).unwrap().into_iter().collect();
    assert!(values.contains("three") && values.contains("x18") && !values.contains("x3"));
    assert_eq!(m.entries(&mut st).unwrap().len(), 19);
    st.set_current_key("other").unwrap();
    assert!(m.is_empty(&mut st).unwrap());
    st.set_current_key("k").unwrap();
    assert!(!m.is_empty(&mut st).unwrap());
    m.clear(&mut st).unwrap();
    assert!(m.is_empty(&mut st).unwrap());
    assert!(m.entries(&mut st).unwrap().is_empty());
    // Removing every entry one by one also empties the map.
    m.put(&mut st, &1, &"a".to_string()).unwrap();
    m.remove(&mut st, &1).unwrap();
    assert!(m.is_empty(&mut st).unwrap());
}

/// Reducing state: add folds with the reduce function; clear.
pub fn reducing_state_operations<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let r = st
        .reducing_state(&ReducingStateDescriptor::new(
            "concat",
            |a: &String, b: &String| format!("{a}{b}"),
        ))
        .unwrap();
    st.set_current_key(&1u8).unwrap();
    assert_eq!(r.get(&mut st).unwrap(), None);
    for s in ["a", "b", "c"] {
        r.add(&mut st, s.to_string()).unwrap();
    }
    assert_eq!(r.get(&mut st).unwrap().as_deref(), Some("abc"));
    st.set_current_key(&2u8).unwrap();
    r.add(&mut st, "z".to_string()).unwrap();
    assert_eq!(r.get(&mut st).unwrap().as_deref(), Some("z"));
    st.set_current_key(&1u8).unwrap();
    r.clear(&mut st).unwrap();
    assert_eq!(r.get(&mut st).unwrap(), None);
    r.add(&mut st, "d".to_string()).unwrap();
    assert_eq!(r.get(&mut st).unwrap().as_deref(), Some("d"));
}

/// Aggregating state: add folds into the accumulator, get derives the result; clear.
pub fn aggregating_state_operations<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let a = st
        .aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))
        .unwrap();
    st.set_current_key(&1u8).unwrap();
    assert_eq!(a.get(&mut st).unwrap(), None);
    for x in [2u32, 4, 9] {
        a.add(&mut st, x).unwrap();
    }
    assert_eq!(a.get(&mut st).unwrap(), Some(5.0));
    st.set_current_key(&2u8).unwrap();
    assert_eq!(a.get(&mut st).unwrap(), None);
    st.set_current_key(&1u8).unwrap();
    a.clear(&mut st).unwrap();
    assert_eq!(a.get(&mut st).unwrap(), None);
    a.add(&mut st, 1).unwrap();
    assert_eq!(a.get(&mut st).unwrap(), Some(1.0));
}

/// The same key in different namespaces holds independent state of every kind.
pub fn namespaces_are_isolated<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let fx = Fixture::register(&mut st);
    fx.populate(&mut st, 7);
    st.set_current_key(&7u32).unwrap();
    st.set_namespace(&(100u64, 200u64)).unwrap();
    assert_eq!(fx.value.value(&mut st).unwrap(), None);
    assert!(fx.list.get(&mut st).unwrap().is_empty());
    fx.map.put(&mut st, &"w".to_string(), &1).unwrap();
    fx.sum.add(&mut st, 1).unwrap();
    st.set_namespace(&(100u64, 300u64)).unwrap();
    assert!(fx.map.is_empty(&mut st).unwrap());
    assert_eq!(fx.sum.get(&mut st).unwrap(), None);
    // Clearing one namespace leaves the others.
    st.set_namespace("ns").unwrap();
    fx.value.clear(&mut st).unwrap();
    st.reset_namespace();
    assert_eq!(fx.value.value(&mut st).unwrap().as_deref(), Some("v7"));
    st.set_namespace(&(100u64, 200u64)).unwrap();
    assert_eq!(fx.map.get(&mut st, &"w".to_string()).unwrap(), Some(1));
    assert_eq!(fx.sum.get(&mut st).unwrap(), Some(1));
}

/// A subtask owning part of the key groups holds keys of every one of its
/// key groups, each in the key group its bytes hash to.
pub fn keys_in_many_key_groups<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 2, 4, &clock()).unwrap();
    let range = st.backend().key_group_range();
    assert_eq!(range.len(), 32);
    let keys = keys_in_range(range, 300);
    let fx = Fixture::register(&mut st);
    let mut groups = BTreeSet::new();
    for &k in &keys {
        fx.populate(&mut st, k);
        groups.insert(st.current_key_group().unwrap());
    }
    assert_eq!(groups.len(), range.len(), "300 keys cover every key group");
    for &k in &keys {
        fx.verify(&mut st, k);
    }
    let max = st.backend().max_parallelism();
    let found = st.keys_bytes(fx.value.state_id(), &[]).unwrap();
    assert_eq!(found.len(), keys.len());
    for (kg, key) in &found {
        assert_eq!(max.key_group_of(key), *kg);
        assert!(range.contains(*kg));
    }
}

/// A key whose key group another subtask owns is InvalidArgument, through
/// the typed layer and through the backend trait.
pub fn key_outside_range_is_invalid<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 1, 3, &clock()).unwrap();
    let range = st.backend().key_group_range();
    let other = create_subtask(&setup, 0, 3, &clock()).unwrap();
    let foreign = keys_in_range(other.backend().key_group_range(), 1)[0];
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v"))
        .unwrap();
    let err = st.set_current_key(&foreign).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        v.update(&mut st, &1).is_err(),
        "no current key after a rejected key"
    );

    let key = postcard::to_stdvec(&foreign).unwrap();
    let kg = st.backend().max_parallelism().key_group_of(&key);
    assert!(!range.contains(kg));
    let entry = EntryKey {
        key_group: kg,
        key: &key,
        namespace: &[],
    };
    let id = v.state_id();
    let b = st.backend_mut();
    assert_eq!(
        b.put(id, &entry, Bytes::from_static(b"x"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        b.get(id, &entry).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let beyond = EntryKey {
        key_group: KeyGroup(u16::MAX),
        key: &key,
        namespace: &[],
    };
    assert_eq!(
        b.get(id, &beyond).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

/// Every typed operation with no current key set is InvalidArgument.
pub fn operations_without_current_key_are_invalid<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let fx = Fixture::register(&mut st);
    let errors = [
        fx.value.value(&mut st).unwrap_err(),
        fx.value.update(&mut st, &String::new()).unwrap_err(),
        fx.list.add(&mut st, &1).unwrap_err(),
        fx.list.get(&mut st).unwrap_err(),
        fx.map.put(&mut st, &String::new(), &1).unwrap_err(),
        fx.map.entries(&mut st).unwrap_err(),
        fx.sum.add(&mut st, 1).unwrap_err(),
        fx.avg.get(&mut st).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
}

/// Registering a name again with another kind is an error (even another
/// kind of the same layout); the same kind returns the same state.
pub fn register_same_name_other_kind_fails<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("s"))
        .unwrap();
    assert_eq!(
        st.value_state(&ValueStateDescriptor::<u32>::new("s"))
            .unwrap()
            .state_id(),
        v.state_id()
    );
    assert!(
        st.list_state(&ListStateDescriptor::<u32>::new("s"))
            .is_err()
    );
    assert!(
        st.map_state(&MapStateDescriptor::<u32, u32>::new("s"))
            .is_err()
    );
    assert!(
        st.reducing_state(&ReducingStateDescriptor::new("s", |a: &u32, b: &u32| a + b))
            .is_err()
    );
    let b = st.backend_mut();
    assert!(
        b.register_state(&StateDescriptor::new("s", StateKind::Aggregating))
            .is_err()
    );
    let m = b
        .register_state(&StateDescriptor::new("m", StateKind::Map))
        .unwrap();
    assert_ne!(m, v.state_id());
    assert!(
        b.register_state(&StateDescriptor::new("m", StateKind::List))
            .is_err()
    );
    let names: Vec<String> = b.states().into_iter().map(|d| d.name).collect();
    assert!(names.contains(&"s".to_string()) && names.contains(&"m".to_string()));
    assert_eq!(b.states()[v.state_id().index()].kind, StateKind::Value);
}

/// `keys` lists each key holding state in a namespace once; cleared keys
/// disappear; each state is listed separately.
pub fn keys_iteration<F: BackendFactory>(setup: Setup<F>) {
    let mut st = create_subtask(&setup, 0, 1, &clock()).unwrap();
    let fx = Fixture::register(&mut st);
    for k in 0..40u32 {
        fx.populate(&mut st, k);
    }
    for k in (0..40u32).step_by(4) {
        st.set_current_key(&k).unwrap();
        fx.value.clear(&mut st).unwrap();
        fx.list.update(&mut st, &[]).unwrap();
        fx.map.remove(&mut st, &"a".to_string()).unwrap();
        fx.map.remove(&mut st, &"b".to_string()).unwrap();
    }
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    let all: Vec<u32> = (0..40).collect();
    let kept: Vec<u32> = (0..40).filter(|k| k % 4 != 0).collect();
    assert_eq!(sorted(st.keys(&fx.value, &()).unwrap()), kept);
    assert_eq!(sorted(st.keys(&fx.list, &()).unwrap()), kept);
    assert_eq!(sorted(st.keys(&fx.map, &()).unwrap()), kept);
    assert_eq!(sorted(st.keys(&fx.sum, &()).unwrap()), all);
    assert_eq!(sorted(st.keys(&fx.value, "ns").unwrap()), all);
    assert_eq!(sorted(st.keys(&fx.list, "ns").unwrap()), all);
    assert!(st.keys::<u32, _>(&fx.map, "ns").unwrap().is_empty());
    assert!(st.keys::<u32, _>(&fx.value, "nope").unwrap().is_empty());
}
