//! Tests of state-core's timers on the model backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a test failure

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use state_core::backend_support::{EVENT_TIME_TIMERS, PROCESSING_TIME_TIMERS};
use state_core::typed::KeyedState;
use state_core::{EntryKey, KeyedStateBackend, ManualClock, Timer, TimerService};
use state_testkit::{ModelBackend, test_context};

fn state() -> KeyedState<ModelBackend> {
    let clock = Arc::new(ManualClock::new(0));
    let ctx = test_context(0, 1, 128, clock.clone()).unwrap();
    KeyedState::new(ModelBackend::new(&ctx).unwrap(), clock)
}

fn key_of(t: &Timer) -> (u64, u32, String) {
    (
        t.timestamp,
        postcard::from_bytes(&t.key).unwrap(),
        if t.namespace.is_empty() {
            String::new()
        } else {
            postcard::from_bytes(&t.namespace).unwrap()
        },
    )
}

#[test]
fn event_timers_fire_in_order_once_and_dedupe() {
    let mut st = state();
    let mut timers = TimerService::new(&mut st).unwrap();
    st.set_current_key(&1u32).unwrap();
    timers.register_event_time_timer(&mut st, 30).unwrap();
    timers.register_event_time_timer(&mut st, 10).unwrap();
    timers.register_event_time_timer(&mut st, 10).unwrap();
    st.set_namespace("w").unwrap();
    timers.register_event_time_timer(&mut st, 20).unwrap();
    st.set_current_key(&2u32).unwrap();
    st.reset_namespace();
    timers.register_event_time_timer(&mut st, 15).unwrap();
    timers.register_event_time_timer(&mut st, 40).unwrap();
    timers.delete_event_time_timer(&mut st, 40).unwrap();
    timers.delete_event_time_timer(&mut st, 41).unwrap();
    assert_eq!(timers.counts(), (4, 0));
    assert_eq!(timers.next_event_time(), Some(10));

    let fired = timers.advance_watermark(&mut st, 20).unwrap();
    let fired: Vec<_> = fired.iter().map(key_of).collect();
    assert_eq!(
        fired,
        vec![
            (10, 1, String::new()),
            (15, 2, String::new()),
            (20, 1, "w".to_string())
        ]
    );
    assert_eq!(timers.current_watermark(), Some(20));
    // A lower watermark is ignored.
    assert!(timers.advance_watermark(&mut st, 5).unwrap().is_empty());
    assert_eq!(timers.current_watermark(), Some(20));
    let fired = timers.advance_watermark(&mut st, 100).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(key_of(&fired[0]), (30, 1, String::new()));
    assert!(timers.is_empty());
    // Fired timers are gone from the backend too.
    let id = st.state_id(EVENT_TIME_TIMERS).unwrap();
    let mut left = 0;
    st.backend()
        .keys(id, &mut |_| {
            left += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn processing_timers_and_rebuild_from_backend() {
    let mut st = state();
    let mut timers = TimerService::new(&mut st).unwrap();
    st.set_current_key("a").unwrap();
    timers.register_processing_time_timer(&mut st, 500).unwrap();
    timers.register_processing_time_timer(&mut st, 100).unwrap();
    timers.register_event_time_timer(&mut st, 7).unwrap();
    st.set_current_key("b").unwrap();
    timers.register_processing_time_timer(&mut st, 300).unwrap();
    timers.delete_processing_time_timer(&mut st, 300).unwrap();
    assert_eq!(timers.next_processing_time(), Some(100));

    // A new service over the same backend sees the same timers.
    let mut again = TimerService::new(&mut st).unwrap();
    assert_eq!(again.counts(), (1, 2));
    let fired = again.fire_processing_timers(&mut st, 499).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].timestamp, 100);
    st.set_current_key_bytes(&fired[0].key).unwrap();
    assert_eq!(st.current_key_bytes(), Some(&fired[0].key[..]));
    timers.rebuild(&mut st).unwrap();
    assert_eq!(timers.counts(), (1, 1));
    assert_eq!(timers.next_processing_time(), Some(500));
}

#[test]
fn timers_need_a_current_key_and_reject_bad_stored_timestamps() {
    let mut st = state();
    let mut timers = TimerService::new(&mut st).unwrap();
    let err = timers.register_event_time_timer(&mut st, 1).unwrap_err();
    assert_eq!(err.kind(), state_core::ErrorKind::InvalidArgument);

    st.set_current_key(&1u8).unwrap();
    let id = st.state_id(PROCESSING_TIME_TIMERS).unwrap();
    let key = st.current_key_bytes().unwrap().to_vec();
    let entry = EntryKey {
        key_group: st.current_key_group().unwrap(),
        key: &key,
        namespace: &[],
    };
    st.backend_mut()
        .map_put(id, &entry, b"bad", Bytes::new())
        .unwrap();
    let err = TimerService::new(&mut st).unwrap_err();
    assert_eq!(err.kind(), state_core::ErrorKind::Corrupted);
    assert!(err.to_string().contains(PROCESSING_TIME_TIMERS), "{err}");
}
