//! Full snapshots move between backends: the heap and RocksDB backends share
//! cairn's key-group stream format, so a full snapshot written by one
//! restores into the other, at the same or another parallelism. State of
//! every kind (value, list, map, reducing, aggregating, a TTL state) and
//! timers are written through the typed layer, snapshotted
//! ([`SnapshotMode::Full`]) to filesystem storage, restored into the other
//! backend and checked through the typed layer.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use state_core::typed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedState, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use state_core::{
    BackendFactory, CheckpointId, CheckpointStorage, JobId, KeyedStateBackend, KeyedStateHandle,
    ManualClock, MaxParallelism, SnapshotMode, TimerService, TtlConfig, TtlUpdateType,
    TtlVisibility,
};
use state_testkit::Setup;
use state_testkit::conformance::{MAX_PARALLELISM, create_subtask, restore_subtask, snapshot_all};
use tempfile::TempDir;

/// The clock's start.
const T0: u64 = 1_000_000;
/// The TTL of the TTL state: keys written at `T0` expire before the
/// snapshot at `T0 + 120`, keys written at `T0 + 60` do not.
const TTL_MS: u64 = 100;
/// The keys written.
const KEYS: u32 = 200;

/// A running mean, for the aggregating state.
#[derive(Debug, Clone, Copy)]
struct Mean;

impl AggregateFunction for Mean {
    type In = u32;
    /// (sum, count).
    type Acc = (u64, u64);
    type Out = u64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u32, (sum, count): (u64, u64)) -> (u64, u64) {
        (sum + u64::from(value), count + 1)
    }
    fn get_result(&self, &(sum, count): &(u64, u64)) -> u64 {
        sum / count.max(1)
    }
}

/// One state of every kind on one subtask.
struct States {
    value: ValueState<String>,
    list: ListState<u32>,
    map: MapState<String, u64>,
    sum: ReducingState<i64>,
    mean: AggregatingState<Mean>,
    ttl: ValueState<u32>,
}

impl States {
    fn register<B: KeyedStateBackend>(st: &mut KeyedState<B>) -> States {
        let ttl = TtlConfig::new(Duration::from_millis(TTL_MS))
            .unwrap()
            .with_update_type(TtlUpdateType::OnCreateAndWrite)
            .with_visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
        States {
            value: st.value_state(&ValueStateDescriptor::new("value")).unwrap(),
            list: st.list_state(&ListStateDescriptor::new("list")).unwrap(),
            map: st.map_state(&MapStateDescriptor::new("map")).unwrap(),
            sum: st
                .reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| {
                    a + b
                }))
                .unwrap(),
            mean: st
                .aggregating_state(&AggregatingStateDescriptor::new("mean", Mean))
                .unwrap(),
            ttl: st
                .value_state(&ValueStateDescriptor::new("ttl").with_ttl(ttl))
                .unwrap(),
        }
    }

    /// Writes every state of `key` (two namespaces) and two timers.
    fn populate<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        timers: &mut TimerService,
        key: u32,
    ) {
        st.set_current_key(&key).unwrap();
        st.reset_namespace();
        self.value.update(st, &format!("v{key}")).unwrap();
        self.list.add(st, &key).unwrap();
        self.list.add(st, &(key + 1)).unwrap();
        self.map.put(st, &"a".to_string(), &u64::from(key)).unwrap();
        self.map
            .put(st, &"b".to_string(), &(u64::from(key) * 2))
            .unwrap();
        self.sum.add(st, i64::from(key)).unwrap();
        self.sum.add(st, -3).unwrap();
        self.mean.add(st, key).unwrap();
        self.mean.add(st, key + 4).unwrap();
        self.ttl.update(st, &key).unwrap();
        st.set_namespace("window").unwrap();
        self.value.update(st, &format!("w{key}")).unwrap();
        self.list.add(st, &(key * 7)).unwrap();
        timers
            .register_event_time_timer(st, 10 * u64::from(key))
            .unwrap();
        timers
            .register_processing_time_timer(st, T0 + 500 + u64::from(key))
            .unwrap();
        st.reset_namespace();
    }

    /// Checks what [`States::populate`] wrote for `key`; `expired`: whether
    /// its TTL entry expired before the snapshot.
    fn verify<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, key: u32, expired: bool) {
        st.set_current_key(&key).unwrap();
        st.reset_namespace();
        assert_eq!(
            self.value.value(st).unwrap(),
            Some(format!("v{key}")),
            "{key}"
        );
        assert_eq!(self.list.get(st).unwrap(), vec![key, key + 1], "{key}");
        let mut entries = self.map.entries(st).unwrap();
        entries.sort();
        assert_eq!(
            entries,
            vec![
                ("a".to_string(), u64::from(key)),
                ("b".to_string(), u64::from(key) * 2)
            ],
            "{key}"
        );
        assert_eq!(self.sum.get(st).unwrap(), Some(i64::from(key) - 3), "{key}");
        assert_eq!(
            self.mean.get(st).unwrap(),
            Some(u64::from(key) + 2),
            "{key}"
        );
        // ReturnExpiredIfNotCleanedUp: only the snapshot's cleanup hides
        // an expired entry.
        assert_eq!(
            self.ttl.value(st).unwrap(),
            (!expired).then_some(key),
            "{key}: expired entries are dropped by the full snapshot"
        );
        st.set_namespace("window").unwrap();
        assert_eq!(
            self.value.value(st).unwrap(),
            Some(format!("w{key}")),
            "{key}"
        );
        assert_eq!(self.list.get(st).unwrap(), vec![key * 7], "{key}");
        assert!(self.map.is_empty(st).unwrap(), "{key}");
        st.reset_namespace();
    }
}

/// Keys written at `T0` (their TTL entry expires before the snapshot).
fn written_early(key: u32) -> bool {
    key.is_multiple_of(2)
}

fn owner(key: u32, parallelism: u32) -> u32 {
    let max = MaxParallelism::new(MAX_PARALLELISM).unwrap();
    max.subtask_for_key_group(
        parallelism,
        max.key_group_of(&postcard::to_stdvec(&key).unwrap()),
    )
}

/// A temporary directory with filesystem checkpoint storage in it.
fn storage(dir: &TempDir) -> Arc<dyn CheckpointStorage> {
    let job = JobId::new("cross-backend").unwrap();
    Arc::new(FsCheckpointStorage::open(dir.path().join("storage"), job).unwrap())
}

fn heap(storage: &Arc<dyn CheckpointStorage>) -> Setup<HeapBackendFactory> {
    Setup::new(
        HeapBackendFactory::new(HeapBackendOptions::default()),
        Arc::clone(storage),
    )
}

fn rocks(dir: &TempDir, storage: &Arc<dyn CheckpointStorage>) -> Setup<RocksBackendFactory> {
    let options = RocksBackendOptions::new(dir.path().join("rocks"))
        .with_write_buffer_size(1 << 20)
        .with_memory_budget(64 << 20)
        .with_value_cache(16 << 20);
    Setup::new(
        RocksBackendFactory::new(options).unwrap(),
        Arc::clone(storage),
    )
}

/// Writes state on `p` subtasks of `from`, snapshots it in full, restores
/// it on `q` subtasks of `to` and checks every key and timer is back
/// exactly once, at the subtask owning it.
fn move_state<F: BackendFactory, G: BackendFactory>(
    from: &Setup<F>,
    to: &Setup<G>,
    p: u32,
    q: u32,
) {
    let clock = Arc::new(ManualClock::new(T0));
    let mut subtasks: Vec<_> = (0..p)
        .map(|i| create_subtask(from, i, p, &clock).unwrap())
        .collect();
    let states: Vec<States> = subtasks.iter_mut().map(States::register).collect();
    let mut timers: Vec<TimerService> = subtasks
        .iter_mut()
        .map(|st| TimerService::new(st).unwrap())
        .collect();
    for early in [true, false] {
        if !early {
            clock.set(T0 + 60);
        }
        for key in (0..KEYS).filter(|&k| written_early(k) == early) {
            let i = owner(key, p) as usize;
            states[i].populate(&mut subtasks[i], &mut timers[i], key);
        }
    }
    clock.set(T0 + 120);
    let handles = snapshot_all(
        &mut subtasks,
        from.storage.as_ref(),
        CheckpointId(1),
        SnapshotMode::Full,
    )
    .unwrap();
    assert_eq!(handles.len(), p as usize);
    for h in &handles {
        let KeyedStateHandle::KeyGroups(h) = h else {
            panic!("a full snapshot writes key-group streams, got {h:?}");
        };
        assert_eq!(h.backend, from.factory.name());
    }
    drop(subtasks);

    let mut seen_keys = BTreeSet::new();
    let mut seen_event = BTreeSet::new();
    let mut seen_processing = BTreeSet::new();
    for i in 0..q {
        let mut st = restore_subtask(to, &handles, i, q, &clock).unwrap();
        let states = States::register(&mut st);
        let held: Vec<u32> = st.keys(&states.value, &()).unwrap();
        for &key in &held {
            assert_eq!(owner(key, q), i, "key {key} restored at subtask {i} of {q}");
            assert!(seen_keys.insert(key), "key {key} restored twice");
            states.verify(&mut st, key, written_early(key));
        }
        let mut timers = TimerService::new(&mut st).unwrap();
        assert_eq!(timers.counts(), (held.len(), held.len()), "subtask {i}");
        for t in timers.advance_watermark(&mut st, u64::MAX).unwrap() {
            let key: u32 = postcard::from_bytes(&t.key).unwrap();
            assert_eq!(owner(key, q), i, "event timer of {key} at subtask {i}");
            assert_eq!(t.timestamp, 10 * u64::from(key));
            assert_eq!(
                postcard::from_bytes::<String>(&t.namespace).unwrap(),
                "window"
            );
            assert!(seen_event.insert(key), "event timer of {key} twice");
        }
        for t in timers.fire_processing_timers(&mut st, u64::MAX).unwrap() {
            let key: u32 = postcard::from_bytes(&t.key).unwrap();
            assert_eq!(owner(key, q), i, "processing timer of {key} at subtask {i}");
            assert_eq!(t.timestamp, T0 + 500 + u64::from(key));
            assert!(
                seen_processing.insert(key),
                "processing timer of {key} twice"
            );
        }
    }
    let all: BTreeSet<u32> = (0..KEYS).collect();
    assert_eq!(seen_keys, all);
    assert_eq!(seen_event, all);
    assert_eq!(seen_processing, all);
}

#[test]
fn heap_full_snapshot_restores_into_rocks() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    move_state(&heap(&storage), &rocks(&dir, &storage), 1, 1);
}

#[test]
fn rocks_full_snapshot_restores_into_heap() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    move_state(&rocks(&dir, &storage), &heap(&storage), 1, 1);
}

#[test]
fn heap_at_2_restores_into_rocks_at_3() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    move_state(&heap(&storage), &rocks(&dir, &storage), 2, 3);
}

#[test]
fn rocks_at_2_restores_into_heap_at_3() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    move_state(&rocks(&dir, &storage), &heap(&storage), 2, 3);
}

#[test]
fn rocks_at_3_restores_into_heap_at_2() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    move_state(&rocks(&dir, &storage), &heap(&storage), 3, 2);
}

/// Writes a few keys on one subtask of `from` and takes an incremental
/// checkpoint of them.
fn incremental_handles<F: BackendFactory>(from: &Setup<F>) -> Vec<KeyedStateHandle> {
    let clock = Arc::new(ManualClock::new(T0));
    let mut st = create_subtask(from, 0, 1, &clock).unwrap();
    let value = st
        .value_state(&ValueStateDescriptor::<u32>::new("value"))
        .unwrap();
    for key in 0..KEYS {
        st.set_current_key(&key).unwrap();
        value.update(&mut st, &key).unwrap();
    }
    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        from.storage.as_ref(),
        CheckpointId(1),
        SnapshotMode::Incremental,
    )
    .unwrap();
    assert!(
        matches!(handles.as_slice(), [KeyedStateHandle::Incremental(h)] if h.backend == from.factory.name()),
        "{handles:?}"
    );
    handles
}

/// Incremental checkpoints are native: each backend refuses the other's,
/// naming the backend that wrote it and the way across (a canonical
/// savepoint), and is left empty, never holding half of it.
#[test]
fn incremental_checkpoints_restore_only_into_the_backend_that_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir);
    let clock = Arc::new(ManualClock::new(T0));
    let heap = heap(&storage);
    let rocks = rocks(&dir, &storage);
    let from_heap = incremental_handles(&heap);
    let err = restore_subtask(&rocks, &from_heap, 0, 1, &clock).unwrap_err();
    assert!(
        err.to_string().contains("backend \"heap\"") && err.to_string().contains("savepoint"),
        "{err}"
    );
    let from_rocks = incremental_handles(&rocks);
    let err = restore_subtask(&heap, &from_rocks, 0, 1, &clock).unwrap_err();
    assert!(
        err.to_string().contains("backend \"rocks\"") && err.to_string().contains("savepoint"),
        "{err}"
    );
    // Each restores its own.
    let mut st = restore_subtask(&heap, &from_heap, 0, 1, &clock).unwrap();
    let value = st
        .value_state(&ValueStateDescriptor::<u32>::new("value"))
        .unwrap();
    st.set_current_key(&7u32).unwrap();
    assert_eq!(value.value(&mut st).unwrap(), Some(7), "heap");
    let mut st = restore_subtask(&rocks, &from_rocks, 0, 1, &clock).unwrap();
    let value = st
        .value_state(&ValueStateDescriptor::<u32>::new("value"))
        .unwrap();
    st.set_current_key(&7u32).unwrap();
    assert_eq!(value.value(&mut st).unwrap(), Some(7), "rocks");
}
