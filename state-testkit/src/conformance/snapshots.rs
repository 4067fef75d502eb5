//! Conformance: snapshot isolation, restore, corrupt snapshots, rescaling.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::fixture::{
    Fixture, MAX_PARALLELISM, clock, create_subtask, fixture_ttl, restore_subtask, snapshot_all,
    total_entries,
};
use crate::{Intercept, InterceptStorage, Setup};
use state_core::typed::{KeyedState, StateHandle};
use state_core::{
    BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, ErrorKind, KeyedStateBackend,
    KeyedStateHandle, MaxParallelism, Result, StateKind, StreamHandle, TimerService,
};

/// The synchronous part captures the state as of its call: writes made
/// while the asynchronous part runs on another thread are not in the snapshot.
pub fn snapshot_isolation<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let fx = Fixture::register(&mut st);
    for k in 0..50 {
        fx.populate(&mut st, k);
    }
    let id = CheckpointId(1);
    setup.storage.initialize_checkpoint(id).unwrap();
    let pending = st.backend_mut().snapshot(id, setup.mode).unwrap();
    let storage = setup.storage.as_ref();
    let handle = std::thread::scope(|s| {
        let writer = s.spawn(move || pending.write(storage));
        for k in 0..50u32 {
            st.set_current_key(&k).unwrap();
            st.reset_namespace();
            fx.value.update(&mut st, &"changed".to_string()).unwrap();
            fx.list.add(&mut st, &999).unwrap();
            fx.map.remove(&mut st, &"a".to_string()).unwrap();
            fx.map.put(&mut st, &"c".to_string(), &3).unwrap();
            fx.sum.clear(&mut st).unwrap();
            st.set_namespace("ns").unwrap();
            fx.list.update(&mut st, &[]).unwrap();
        }
        for k in 50..80 {
            fx.populate(&mut st, k);
        }
        writer.join().expect("async snapshot thread panicked")
    })
    .unwrap();
    let handles: Vec<KeyedStateHandle> = handle.into_iter().collect();
    assert_eq!(handles.len(), 1);

    // The live backend has the new writes.
    st.set_current_key(&3u32).unwrap();
    assert_eq!(fx.value.value(&mut st).unwrap().as_deref(), Some("changed"));

    let mut restored = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let fx = Fixture::register(&mut restored);
    for k in 0..50 {
        fx.verify(&mut restored, k);
    }
    for k in 50..80 {
        fx.verify_absent(&mut restored, k);
    }
}

/// Every state kind, namespaces, a TTL state and timers come back from a
/// snapshot into a fresh backend, which knows the restored states.
pub fn restore_round_trip_all_kinds<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let fx = Fixture::register(&mut st);
    let mut timers = TimerService::new(&mut st).unwrap();
    for k in 0..100u32 {
        fx.populate(&mut st, k);
        st.set_current_key(&k).unwrap();
        st.set_namespace("w").unwrap();
        timers
            .register_event_time_timer(&mut st, u64::from(k) * 10)
            .unwrap();
        timers.register_processing_time_timer(&mut st, 7).unwrap();
    }
    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        setup.storage.as_ref(),
        CheckpointId(7),
        setup.mode,
    )
    .unwrap();

    let mut restored = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let states = restored.backend().states();
    for name in Fixture::names() {
        assert!(
            states.iter().any(|d| d.name == name),
            "state '{name}' not restored: {states:?}"
        );
    }
    let ttl_state = states.iter().find(|d| d.name == "ttl-value").unwrap();
    assert_eq!(ttl_state.ttl, Some(fixture_ttl()));
    assert_eq!(
        states.iter().find(|d| d.name == "avg").unwrap().kind,
        StateKind::Aggregating
    );

    let fx = Fixture::register(&mut restored);
    for k in 0..100 {
        fx.verify(&mut restored, k);
    }
    fx.verify_absent(&mut restored, 100);
    let mut timers = TimerService::new(&mut restored).unwrap();
    assert_eq!(timers.counts(), (100, 100));
    let fired = timers.advance_watermark(&mut restored, 495).unwrap();
    let stamps: Vec<u64> = fired.iter().map(|t| t.timestamp).collect();
    assert_eq!(stamps, (0..50).map(|k| k * 10).collect::<Vec<_>>());
    for t in &fired {
        let key: u32 = postcard::from_bytes(&t.key).unwrap();
        assert_eq!(u64::from(key) * 10, t.timestamp);
        assert_eq!(postcard::from_bytes::<String>(&t.namespace).unwrap(), "w");
    }
    assert_eq!(
        timers
            .fire_processing_timers(&mut restored, 7)
            .unwrap()
            .len(),
        100
    );
}

/// Restoring replaces whatever the backend held before.
pub fn restore_replaces_existing_state<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut source = create_subtask(&setup, 0, 1, &clock).unwrap();
    let fx = Fixture::register(&mut source);
    for k in 0..20 {
        fx.populate(&mut source, k);
    }
    let handles = snapshot_all(
        std::slice::from_mut(&mut source),
        setup.storage.as_ref(),
        CheckpointId(1),
        setup.mode,
    )
    .unwrap();

    let mut target = create_subtask(&setup, 0, 1, &clock).unwrap();
    let other = Fixture::register(&mut target);
    for k in 100..120 {
        other.populate(&mut target, k);
    }
    other.populate(&mut target, 5);
    target.set_current_key(&5u32).unwrap();
    other
        .value
        .update(&mut target, &"stale".to_string())
        .unwrap();
    other.list.add(&mut target, &12345).unwrap();
    let extra = target
        .value_state(&state_core::typed::ValueStateDescriptor::<u8>::new(
            "not-in-snapshot",
        ))
        .unwrap();
    extra.update(&mut target, &1).unwrap();

    target
        .backend_mut()
        .restore(&handles, setup.storage.as_ref())
        .unwrap();
    let fx = Fixture::register(&mut target);
    for k in 0..20 {
        fx.verify(&mut target, k);
    }
    for k in 100..120 {
        fx.verify_absent(&mut target, k);
    }
    let extra = target
        .value_state(&state_core::typed::ValueStateDescriptor::<u8>::new(
            "not-in-snapshot",
        ))
        .unwrap();
    target.set_current_key(&5u32).unwrap();
    assert_eq!(extra.value(&mut target).unwrap(), None);
    assert!(target.keys::<u32, _>(&extra, &()).unwrap().is_empty());
}

/// A snapshot of an empty backend restores to an empty backend, and
/// restoring no handles empties a backend.
pub fn empty_backend_snapshot_restores_empty<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let _fx = Fixture::register(&mut st);
    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        setup.storage.as_ref(),
        CheckpointId(1),
        setup.mode,
    )
    .unwrap();
    let mut restored = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    assert_eq!(total_entries(&restored), 0);
    let fx = Fixture::register(&mut restored);
    fx.verify_absent(&mut restored, 1);

    for k in 0..10 {
        fx.populate(&mut restored, k);
    }
    assert!(total_entries(&restored) > 0);
    restored
        .backend_mut()
        .restore(&[], setup.storage.as_ref())
        .unwrap();
    assert_eq!(total_entries(&restored), 0);
}

/// Given the read's index, the stream read and its stored bytes, the bytes
/// to return instead.
type Mutation = dyn Fn(usize, &StreamHandle, &[u8]) -> Option<Vec<u8>> + Send + Sync;

/// Changes the bytes `read` returns.
struct Tamper {
    reads: AtomicUsize,
    mutate: Box<Mutation>,
}

impl Intercept for Tamper {
    fn read(&self, inner: &dyn CheckpointStorage, handle: &StreamHandle) -> Result<Bytes> {
        let bytes = inner.read(handle)?;
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(match (self.mutate)(n, handle, &bytes) {
            Some(changed) => Bytes::from(changed),
            None => bytes,
        })
    }
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if let Some(b) = v.get_mut(at) {
        *b ^= 0x5a;
    }
    v
}

/// Restoring a stream whose bytes were changed fails as Corrupted and
/// leaves the backend empty — also when another handle restored fine first.
/// With [`Setup::local_copies`], the backends' intact local copies are used
/// instead and the restore gives back the snapshot.
pub fn corrupt_stream_restore_fails_and_leaves_empty<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut subtasks: Vec<_> = (0..2)
        .map(|i| create_subtask(&setup, i, 2, &clock).unwrap())
        .collect();
    let max = MaxParallelism::new(MAX_PARALLELISM).unwrap();
    let fxs: Vec<Fixture> = subtasks.iter_mut().map(Fixture::register).collect();
    for k in 0..60u32 {
        let kg = max.key_group_of(&postcard::to_stdvec(&k).unwrap());
        let i = max.subtask_for_key_group(2, kg) as usize;
        fxs[i].populate(&mut subtasks[i], k);
    }
    let handles = snapshot_all(
        &mut subtasks,
        setup.storage.as_ref(),
        CheckpointId(3),
        setup.mode,
    )
    .unwrap();
    assert_eq!(handles.len(), 2);

    for corrupt_from in [0usize, 1] {
        let tamper = InterceptStorage::new(
            Arc::clone(&setup.storage),
            Tamper {
                reads: AtomicUsize::new(0),
                mutate: Box::new(move |n, _, bytes| {
                    (n >= corrupt_from).then(|| flip(bytes, bytes.len() / 2))
                }),
            },
        );
        let mut target = create_subtask(&setup, 0, 1, &clock).unwrap();
        let fx = Fixture::register(&mut target);
        for k in 1000..1010 {
            fx.populate(&mut target, k);
        }
        if setup.local_copies {
            // The local copies of what these backends wrote are intact: the
            // damaged storage copy is never read.
            target.backend_mut().restore(&handles, &tamper).unwrap();
            let fx = Fixture::register(&mut target);
            for k in 0..60 {
                fx.verify(&mut target, k);
            }
            for k in 1000..1010 {
                fx.verify_absent(&mut target, k);
            }
            continue;
        }
        let err = target.backend_mut().restore(&handles, &tamper).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert_eq!(total_entries(&target), 0, "half-restored after: {err}");
        let fx = Fixture::register(&mut target);
        for k in (0..60).chain(1000..1010) {
            fx.verify_absent(&mut target, k);
        }
        // The backend still works and restores the intact snapshot.
        target
            .backend_mut()
            .restore(&handles, setup.storage.as_ref())
            .unwrap();
        let fx = Fixture::register(&mut target);
        for k in 0..60 {
            fx.verify(&mut target, k);
        }
    }
}

/// Changing bytes of a snapshot stream never panics and never half-restores.
///
/// A full key-group handle: any byte of its stream is changed, with a
/// checksum that matches the changed bytes; the restore either fails,
/// leaving the backend empty, or succeeds, and some change is detected.
/// Any other handle (incremental files): a byte of each of its streams is
/// changed with the checksum left as it was, and the restore must fail as
/// Corrupted and leave the backend empty (so a backend under test must
/// restore from the storage it is given, not from a local copy); then bytes
/// are changed with a matching checksum, as for a full handle.
pub fn corrupt_bytes_never_panic_or_half_restore<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let fx = Fixture::register(&mut st);
    let mut timers = TimerService::new(&mut st).unwrap();
    for k in 0..3 {
        fx.populate(&mut st, k);
        st.set_current_key(&k).unwrap();
        timers.register_event_time_timer(&mut st, 5).unwrap();
    }
    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        setup.storage.as_ref(),
        CheckpointId(1),
        setup.mode,
    )
    .unwrap();
    let [handle] = handles.as_slice() else {
        panic!("expected one handle, got {handles:?}");
    };
    let streams: Vec<StreamHandle> = handle.streams().into_iter().cloned().collect();
    let full = matches!(handle, KeyedStateHandle::KeyGroups(_));
    // Restores `patched`, reading `changed` instead of stream `index`; the
    // error if it failed, after checking that it left the backend empty.
    let restore_changed = |index: usize, changed: Vec<u8>, patched: KeyedStateHandle| {
        let target_location = streams[index].location.clone();
        let tamper = InterceptStorage::new(
            Arc::clone(&setup.storage),
            Tamper {
                reads: AtomicUsize::new(0),
                mutate: Box::new(move |_, read, _| {
                    (read.location == target_location).then(|| changed.clone())
                }),
            },
        );
        let mut target = create_subtask(&setup, 0, 1, &clock).unwrap();
        let other = Fixture::register(&mut target);
        other.populate(&mut target, 77);
        let result = target.backend_mut().restore(&[patched], &tamper);
        if let Err(e) = &result {
            assert_eq!(
                total_entries(&target),
                0,
                "stream {index}: half-restored after: {e}"
            );
        }
        result.err()
    };

    if !full {
        for (index, stream) in streams.iter().enumerate() {
            let original = setup.storage.read(stream).unwrap();
            if original.is_empty() {
                continue; // no byte to change (an empty write-ahead log)
            }
            let changed = flip(&original, original.len() / 2);
            let err = restore_changed(index, changed, handle.clone())
                .unwrap_or_else(|| panic!("stream {index} changed, restore succeeded"));
            assert_eq!(err.kind(), ErrorKind::Corrupted, "stream {index}: {err}");
        }
    }

    // With matching checksums: every ~400th byte of a single stream, a few
    // bytes of each stream of a multi-file handle.
    let mut failures = 0;
    let mut total = 0;
    for (index, stream) in streams.iter().enumerate() {
        let original = setup.storage.read(stream).unwrap();
        let len = original.len();
        total += len;
        let step = if full { len / 400 } else { len / 4 }.max(1);
        for at in (0..len).step_by(step) {
            let changed = flip(&original, at);
            let patched = with_crc32(handle, index, crc32fast::hash(&changed));
            if restore_changed(index, changed, patched).is_some() {
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "no corruption of {total} bytes was detected");
}

/// `handle` with the CRC-32 of its `index`th stream (in
/// [`KeyedStateHandle::streams`] order) set to `crc32`.
fn with_crc32(handle: &KeyedStateHandle, index: usize, crc32: u32) -> KeyedStateHandle {
    let mut patched = handle.clone();
    let stream = match &mut patched {
        KeyedStateHandle::KeyGroups(h) => Some(&mut h.stream),
        KeyedStateHandle::Incremental(h) => {
            let shared = h.shared.len();
            let private = h.private.len();
            if index < shared {
                h.shared.get_mut(index).map(|f| &mut f.handle)
            } else if index < shared + private {
                h.private.get_mut(index - shared).map(|f| &mut f.handle)
            } else {
                Some(&mut h.meta)
            }
        }
    };
    stream.unwrap().crc32 = crc32;
    patched
}

/// Snapshots of 4 subtasks at max parallelism 128 restored at 3 and at 5:
/// every key (and timer) is present exactly once, at the subtask owning its key group.
pub fn rescale_4_to_3_and_5<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let max = MaxParallelism::new(MAX_PARALLELISM).unwrap();
    let owner = |k: u32, p: u32| {
        max.subtask_for_key_group(p, max.key_group_of(&postcard::to_stdvec(&k).unwrap()))
    };
    let mut subtasks: Vec<_> = (0..4)
        .map(|i| create_subtask(&setup, i, 4, &clock).unwrap())
        .collect();
    let fxs: Vec<Fixture> = subtasks.iter_mut().map(Fixture::register).collect();
    let mut timers: Vec<TimerService> = subtasks
        .iter_mut()
        .map(|st| TimerService::new(st).unwrap())
        .collect();
    let keys: Vec<u32> = (0..400).collect();
    for &k in &keys {
        let i = owner(k, 4) as usize;
        fxs[i].populate(&mut subtasks[i], k);
        timers[i]
            .register_event_time_timer(&mut subtasks[i], u64::from(k))
            .unwrap();
    }
    let handles = snapshot_all(
        &mut subtasks,
        setup.storage.as_ref(),
        CheckpointId(9),
        setup.mode,
    )
    .unwrap();
    assert_eq!(handles.len(), 4);

    for q in [3u32, 5] {
        let mut seen_values = BTreeSet::new();
        let mut seen_timers = BTreeSet::new();
        for i in 0..q {
            let mut st: KeyedState<F::Backend> =
                restore_subtask(&setup, &handles, i, q, &clock).unwrap();
            let fx = Fixture::register(&mut st);
            let held: Vec<u32> = st.keys(&fx.value, &()).unwrap();
            for &k in &held {
                assert_eq!(owner(k, q), i, "p={q}: key {k} restored at subtask {i}");
                assert!(seen_values.insert(k), "p={q}: key {k} restored twice");
                fx.verify(&mut st, k);
            }
            for state in [
                fx.list.state_id(),
                fx.map.state_id(),
                fx.sum.state_id(),
                fx.avg.state_id(),
            ] {
                for (_, key) in st.keys_bytes(state, &[]).unwrap() {
                    let k: u32 = postcard::from_bytes(&key).unwrap();
                    assert_eq!(owner(k, q), i, "p={q}: key {k} restored at subtask {i}");
                }
            }
            let mut t = TimerService::new(&mut st).unwrap();
            for timer in t.advance_watermark(&mut st, u64::MAX).unwrap() {
                let k: u32 = postcard::from_bytes(&timer.key).unwrap();
                assert_eq!(owner(k, q), i, "p={q}: timer of key {k} at subtask {i}");
                assert_eq!(u64::from(k), timer.timestamp);
                assert!(
                    seen_timers.insert(k),
                    "p={q}: timer of key {k} restored twice"
                );
            }
        }
        let all: BTreeSet<u32> = keys.iter().copied().collect();
        assert_eq!(seen_values, all, "p={q}");
        assert_eq!(seen_timers, all, "p={q}");
    }
}
