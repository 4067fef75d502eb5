//! Conformance: TTL with a manual clock shared by the backend and the typed layer.

use std::time::Duration;

use super::fixture::{Avg, clock, create_subtask, restore_subtask, snapshot_all};
use crate::Setup;
use state_core::typed::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use state_core::{
    BackendFactory, CheckpointId, SnapshotMode, TtlConfig, TtlUpdateType, TtlVisibility,
};

const TTL_MS: u64 = 100;

fn ttl(update: TtlUpdateType, visibility: TtlVisibility) -> TtlConfig {
    TtlConfig::new(Duration::from_millis(TTL_MS))
        .unwrap()
        .with_update_type(update)
        .with_visibility(visibility)
}

const UPDATES: [TtlUpdateType; 2] = [
    TtlUpdateType::OnCreateAndWrite,
    TtlUpdateType::OnReadAndWrite,
];
const VISIBILITIES: [TtlVisibility; 2] = [
    TtlVisibility::NeverReturnExpired,
    TtlVisibility::ReturnExpiredIfNotCleanedUp,
];

/// Value state under each update type × visibility: writes refresh, reads
/// refresh only with OnReadAndWrite, expired values are absent (and removed)
/// or returned per visibility.
pub fn ttl_value_each_update_type_and_visibility<F: BackendFactory>(setup: Setup<F>) {
    for update in UPDATES {
        for visibility in VISIBILITIES {
            let case = format!("{update:?}/{visibility:?}");
            let clock = clock();
            let t0 = 1_000_000;
            let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
            let v = st
                .value_state(
                    &ValueStateDescriptor::<u32>::new("v").with_ttl(ttl(update, visibility)),
                )
                .unwrap();
            st.set_current_key("k").unwrap();
            v.update(&mut st, &1).unwrap();
            clock.set(t0 + 60);
            assert_eq!(v.value(&mut st).unwrap(), Some(1), "{case}");
            clock.set(t0 + 120);
            let got = v.value(&mut st).unwrap();
            let read_refreshed = update == TtlUpdateType::OnReadAndWrite;
            let visible =
                read_refreshed || visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp;
            assert_eq!(got, visible.then_some(1), "{case}");
            if !visible {
                assert!(
                    st.keys::<String, _>(&v, &()).unwrap().is_empty(),
                    "{case}: expired read removes"
                );
            }
            // t0+60 + 100 = t0+160: the read-refreshed value expires then.
            clock.set(t0 + 159);
            if read_refreshed {
                assert_eq!(v.value(&mut st).unwrap(), Some(1), "{case}");
            }
            v.update(&mut st, &2).unwrap();
            clock.set(t0 + 159 + TTL_MS - 1);
            assert_eq!(
                v.value(&mut st).unwrap(),
                Some(2),
                "{case}: write refreshes"
            );
            clock.set(t0 + 1_000_000);
            let late = v.value(&mut st).unwrap();
            let expect = (visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp).then_some(2);
            assert_eq!(late, expect, "{case}");
        }
    }
}

/// List elements and map entries expire one by one; reducing and
/// aggregating states treat an expired value as absent.
pub fn ttl_list_and_map_elements<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let t0 = 1_000_000;
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let never = ttl(
        TtlUpdateType::OnCreateAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(never))
        .unwrap();
    let m = st
        .map_state(&MapStateDescriptor::<u32, u32>::new("m").with_ttl(never))
        .unwrap();
    let r = st
        .reducing_state(
            &ReducingStateDescriptor::new("r", |a: &u32, b: &u32| a + b).with_ttl(never),
        )
        .unwrap();
    let a = st
        .aggregating_state(&AggregatingStateDescriptor::new("a", Avg).with_ttl(never))
        .unwrap();
    st.set_current_key("k").unwrap();
    l.add(&mut st, &1).unwrap();
    m.put(&mut st, &1, &10).unwrap();
    r.add(&mut st, 5).unwrap();
    a.add(&mut st, 8).unwrap();
    clock.set(t0 + 50);
    l.add(&mut st, &2).unwrap();
    m.put(&mut st, &2, &20).unwrap();
    clock.set(t0 + TTL_MS);
    assert_eq!(l.get(&mut st).unwrap(), vec![2]);
    assert_eq!(m.entries(&mut st).unwrap(), vec![(2, 20)]);
    assert_eq!(m.get(&mut st, &1).unwrap(), None);
    assert_eq!(r.get(&mut st).unwrap(), None);
    r.add(&mut st, 1).unwrap();
    assert_eq!(r.get(&mut st).unwrap(), Some(1));
    a.add(&mut st, 2).unwrap();
    assert_eq!(a.get(&mut st).unwrap(), Some(2.0));
    clock.set(t0 + 50 + TTL_MS);
    assert!(l.get(&mut st).unwrap().is_empty());
    assert!(m.is_empty(&mut st).unwrap());
    assert!(st.keys::<String, _>(&l, &()).unwrap().is_empty());
    assert!(st.keys::<String, _>(&m, &()).unwrap().is_empty());

    // Refresh on read, per element and per entry.
    let on_read = ttl(
        TtlUpdateType::OnReadAndWrite,
        TtlVisibility::NeverReturnExpired,
    );
    let l2 = st
        .list_state(&ListStateDescriptor::<u32>::new("l2").with_ttl(on_read))
        .unwrap();
    let m2 = st
        .map_state(&MapStateDescriptor::<u32, u32>::new("m2").with_ttl(on_read))
        .unwrap();
    let t1 = t0 + 1_000;
    clock.set(t1);
    l2.add(&mut st, &1).unwrap();
    m2.put(&mut st, &1, &1).unwrap();
    m2.put(&mut st, &2, &2).unwrap();
    clock.set(t1 + 90);
    assert_eq!(l2.get(&mut st).unwrap(), vec![1]);
    assert!(m2.contains(&mut st, &1).unwrap());
    clock.set(t1 + 150);
    assert_eq!(
        l2.get(&mut st).unwrap(),
        vec![1],
        "list element refreshed at t1+90"
    );
    assert_eq!(
        m2.entries(&mut st).unwrap(),
        vec![(1, 1)],
        "only entry 1 was read"
    );
}

/// Expired entries are absent after a full snapshot and restore, even with
/// ReturnExpiredIfNotCleanedUp (cleanup in full snapshots), element by
/// element for lists and entry by entry for maps; a state with that cleanup
/// turned off keeps them.
///
/// With [`SnapshotMode::Incremental`] snapshots copy the backend's files as
/// they are (as in Flink, cleanup in snapshots applies to full ones), so the
/// states use NeverReturnExpired instead and the test checks that entries
/// expired before the snapshot are never returned after restore, whatever
/// the files hold.
pub fn ttl_expired_entries_dropped_by_full_snapshot<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let t0 = 1_000_000;
    let full = setup.mode == SnapshotMode::Full;
    let visibility = if full {
        TtlVisibility::ReturnExpiredIfNotCleanedUp
    } else {
        TtlVisibility::NeverReturnExpired
    };
    let keep = ttl(TtlUpdateType::OnCreateAndWrite, visibility);
    let no_cleanup = keep.with_cleanup_in_full_snapshot(false);
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let v = st
        .value_state(&ValueStateDescriptor::<u32>::new("v").with_ttl(keep))
        .unwrap();
    let l = st
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(keep))
        .unwrap();
    let m = st
        .map_state(&MapStateDescriptor::<u32, u32>::new("m").with_ttl(keep))
        .unwrap();
    let r = st
        .reducing_state(&ReducingStateDescriptor::new("r", |a: &u32, b: &u32| a + b).with_ttl(keep))
        .unwrap();
    let a = st
        .aggregating_state(&AggregatingStateDescriptor::new("a", Avg).with_ttl(keep))
        .unwrap();
    let kept = st
        .value_state(&ValueStateDescriptor::<u32>::new("kept").with_ttl(no_cleanup))
        .unwrap();
    st.set_current_key(&1u32).unwrap();
    v.update(&mut st, &1).unwrap();
    l.add(&mut st, &1).unwrap();
    m.put(&mut st, &1, &1).unwrap();
    r.add(&mut st, 1).unwrap();
    a.add(&mut st, 1).unwrap();
    kept.update(&mut st, &1).unwrap();
    clock.set(t0 + 60);
    l.add(&mut st, &2).unwrap();
    m.put(&mut st, &2, &2).unwrap();
    st.set_current_key(&2u32).unwrap();
    v.update(&mut st, &2).unwrap();
    r.add(&mut st, 2).unwrap();
    a.add(&mut st, 2).unwrap();
    clock.set(t0 + 120);
    if full {
        // Expired but not cleaned up: still returned.
        st.set_current_key(&1u32).unwrap();
        assert_eq!(v.value(&mut st).unwrap(), Some(1));
        assert_eq!(r.get(&mut st).unwrap(), Some(1));
    }
    // (Incremental: no read before the snapshot, which would remove the
    // expired entries from the backend and so from its files.)

    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        setup.storage.as_ref(),
        CheckpointId(1),
        setup.mode,
    )
    .unwrap();
    let mut back = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let v = back
        .value_state(&ValueStateDescriptor::<u32>::new("v").with_ttl(keep))
        .unwrap();
    let l = back
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(keep))
        .unwrap();
    let m = back
        .map_state(&MapStateDescriptor::<u32, u32>::new("m").with_ttl(keep))
        .unwrap();
    let r = back
        .reducing_state(&ReducingStateDescriptor::new("r", |a: &u32, b: &u32| a + b).with_ttl(keep))
        .unwrap();
    let a = back
        .aggregating_state(&AggregatingStateDescriptor::new("a", Avg).with_ttl(keep))
        .unwrap();
    let kept = back
        .value_state(&ValueStateDescriptor::<u32>::new("kept").with_ttl(no_cleanup))
        .unwrap();
    back.set_current_key(&1u32).unwrap();
    assert_eq!(v.value(&mut back).unwrap(), None);
    assert_eq!(l.get(&mut back).unwrap(), vec![2]);
    assert_eq!(m.entries(&mut back).unwrap(), vec![(2, 2)]);
    assert_eq!(r.get(&mut back).unwrap(), None);
    assert_eq!(a.get(&mut back).unwrap(), None);
    assert_eq!(
        kept.value(&mut back).unwrap(),
        full.then_some(1),
        "cleanup off keeps expired entries (full), never returned (incremental)"
    );
    back.set_current_key(&2u32).unwrap();
    assert_eq!(v.value(&mut back).unwrap(), Some(2));
    assert_eq!(r.get(&mut back).unwrap(), Some(2));
    assert_eq!(a.get(&mut back).unwrap(), Some(2.0));
    let mut with_v: Vec<u32> = back.keys(&v, &()).unwrap();
    with_v.sort_unstable();
    assert_eq!(with_v, vec![2]);
}
