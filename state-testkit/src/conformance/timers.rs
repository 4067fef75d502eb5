//! Conformance: timers survive snapshot and restore.

use super::fixture::{clock, create_subtask, restore_subtask};
use crate::Setup;
use state_core::{BackendFactory, CheckpointId, Checkpointable, Timer, TimerService};

fn key(t: &Timer) -> u32 {
    postcard::from_bytes(&t.key).unwrap()
}

/// Event-time and processing-time timers registered before a snapshot's
/// synchronous part fire after restore at the right watermark and time, in
/// order; timers fired or registered around the snapshot are not duplicated.
pub fn timers_survive_snapshot_and_restore<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let mut timers = TimerService::new(&mut st).unwrap();
    for k in 0..10u32 {
        st.set_current_key(&k).unwrap();
        st.set_namespace("w").unwrap();
        timers
            .register_event_time_timer(&mut st, 100 + u64::from(k) * 10)
            .unwrap();
        timers
            .register_event_time_timer(&mut st, 100 + u64::from(k) * 10)
            .unwrap();
        timers
            .register_processing_time_timer(&mut st, 5_000 + u64::from(k))
            .unwrap();
    }
    st.set_current_key(&9u32).unwrap();
    st.set_namespace("w").unwrap();
    timers.delete_event_time_timer(&mut st, 190).unwrap();
    let fired = timers.advance_watermark(&mut st, 120).unwrap();
    assert_eq!(fired.iter().map(key).collect::<Vec<_>>(), vec![0, 1, 2]);

    let id = CheckpointId(4);
    setup.storage.initialize_checkpoint(id).unwrap();
    let pending = st.backend_mut().snapshot(id, setup.mode).unwrap();
    st.set_current_key(&20u32).unwrap();
    timers.register_event_time_timer(&mut st, 150).unwrap();
    let handles: Vec<_> = pending
        .write(setup.storage.as_ref())
        .unwrap()
        .into_iter()
        .collect();

    let mut back = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let mut timers = TimerService::new(&mut back).unwrap();
    assert_eq!(timers.counts(), (6, 10));
    assert_eq!(timers.next_event_time(), Some(130));
    let fired = timers.advance_watermark(&mut back, 145).unwrap();
    assert_eq!(fired.iter().map(key).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(fired[0].timestamp, 130);
    assert_eq!(
        postcard::from_bytes::<String>(&fired[0].namespace).unwrap(),
        "w"
    );
    let fired = timers.advance_watermark(&mut back, u64::MAX).unwrap();
    assert_eq!(fired.iter().map(key).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    let fired = timers.fire_processing_timers(&mut back, 5_004).unwrap();
    assert_eq!(
        fired.iter().map(key).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(timers.next_processing_time(), Some(5_005));

    // Fired timers are gone from the backend: rebuilding from the backend agrees.
    timers.rebuild(&mut back).unwrap();
    assert_eq!(timers.counts(), (0, 5));
}
