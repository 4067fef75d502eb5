//! Shared helpers of the conformance tests: subtasks, snapshots, a fixture
//! of every state kind.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Setup;
use state_core::typed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedState, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, Clock,
    KeyGroupRange, KeyedStateBackend, KeyedStateHandle, ManualClock, MaxParallelism, OperatorId,
    Result, SnapshotMode, TtlConfig, handles_for_range,
};

/// The max parallelism the conformance tests use.
pub const MAX_PARALLELISM: u32 = 128;

/// The operator id of the conformance tests' backends.
pub(crate) const OPERATOR: &str = "conformance-op";

/// A backend for subtask `subtask` of `parallelism`, wrapped in typed state
/// with `clock` (the same clock reaches the backend through its context).
pub fn create_subtask<F: BackendFactory>(
    setup: &Setup<F>,
    subtask: u32,
    parallelism: u32,
    clock: &Arc<ManualClock>,
) -> Result<KeyedState<F::Backend>> {
    let clock: Arc<dyn Clock> = clock.clone();
    let ctx = BackendContext {
        operator_id: OperatorId(OPERATOR.to_string()),
        subtask,
        parallelism,
        max_parallelism: MaxParallelism::new(MAX_PARALLELISM)?,
        clock: Arc::clone(&clock),
    };
    Ok(KeyedState::new(setup.factory.create(&ctx)?, clock))
}

/// A new subtask restored from the handles of a snapshot (at any parallelism).
pub fn restore_subtask<F: BackendFactory>(
    setup: &Setup<F>,
    handles: &[KeyedStateHandle],
    subtask: u32,
    parallelism: u32,
    clock: &Arc<ManualClock>,
) -> Result<KeyedState<F::Backend>> {
    let mut st = create_subtask(setup, subtask, parallelism, clock)?;
    let mine = handles_for_range(handles, st.backend().key_group_range());
    st.backend_mut().restore(&mine, setup.storage.as_ref())?;
    Ok(st)
}

/// Snapshots every subtask as checkpoint `id` in `mode`: all synchronous
/// parts, then all asynchronous parts. Returns the non-empty handles.
pub fn snapshot_all<B: Checkpointable>(
    subtasks: &mut [KeyedState<B>],
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
    mode: SnapshotMode,
) -> Result<Vec<KeyedStateHandle>> {
    storage.initialize_checkpoint(id)?;
    let mut pending = Vec::new();
    for st in subtasks.iter_mut() {
        pending.push(st.backend_mut().snapshot(id, mode)?);
    }
    let mut handles = Vec::new();
    for p in pending {
        handles.extend(p.write(storage)?);
    }
    Ok(handles)
}

/// The first `n` keys (`u32`, postcard-encoded) whose key group is in `range`.
pub fn keys_in_range(range: KeyGroupRange, n: usize) -> Vec<u32> {
    let max = MaxParallelism::new(MAX_PARALLELISM).expect("valid max parallelism");
    (0u32..)
        .filter(|k| range.contains(max.key_group_of(&postcard::to_stdvec(k).expect("encodes"))))
        .take(n)
        .collect()
}

/// An average, for the aggregating state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avg;

impl AggregateFunction for Avg {
    type In = u32;
    type Acc = AvgAcc;
    type Out = f64;
    fn create_accumulator(&self) -> AvgAcc {
        AvgAcc { sum: 0, count: 0 }
    }
    fn add(&self, value: u32, acc: AvgAcc) -> AvgAcc {
        AvgAcc {
            sum: acc.sum + u64::from(value),
            count: acc.count + 1,
        }
    }
    fn get_result(&self, acc: &AvgAcc) -> f64 {
        acc.sum as f64 / acc.count.max(1) as f64
    }
}

/// The accumulator of [`Avg`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct AvgAcc {
    sum: u64,
    count: u64,
}

/// One state of every kind (plus a TTL state), registered on a subtask.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    pub(crate) value: ValueState<String>,
    pub(crate) list: ListState<u32>,
    pub(crate) map: MapState<String, u64>,
    pub(crate) sum: ReducingState<i64>,
    pub(crate) avg: AggregatingState<Avg>,
    pub(crate) ttl_value: ValueState<u32>,
}

/// The TTL of the fixture's TTL state: long enough never to expire in tests
/// that do not move the clock.
pub(crate) fn fixture_ttl() -> TtlConfig {
    TtlConfig::new(Duration::from_secs(3_600)).expect("valid ttl")
}

impl Fixture {
    pub(crate) fn register<B: KeyedStateBackend>(st: &mut KeyedState<B>) -> Fixture {
        Fixture {
            value: st.value_state(&ValueStateDescriptor::new("value")).unwrap(),
            list: st.list_state(&ListStateDescriptor::new("list")).unwrap(),
            map: st.map_state(&MapStateDescriptor::new("map")).unwrap(),
            sum: st
                .reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| {
                    a + b
                }))
                .unwrap(),
            avg: st
                .aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))
                .unwrap(),
            ttl_value: st
                .value_state(&ValueStateDescriptor::new("ttl-value").with_ttl(fixture_ttl()))
                .unwrap(),
        }
    }

    /// The names of the fixture's states.
    pub(crate) fn names() -> [&'static str; 6] {
        ["value", "list", "map", "sum", "avg", "ttl-value"]
    }

    /// Writes every state of `key`, in the default namespace and in namespace "ns".
    pub(crate) fn populate<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, key: u32) {
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
        self.sum.add(st, 10).unwrap();
        self.avg.add(st, key).unwrap();
        self.avg.add(st, key + 2).unwrap();
        self.ttl_value.update(st, &key).unwrap();
        st.set_namespace("ns").unwrap();
        self.value.update(st, &format!("ns{key}")).unwrap();
        self.list.add(st, &(key * 3)).unwrap();
        st.reset_namespace();
    }

    /// Checks that `key` holds exactly what [`Fixture::populate`] wrote.
    pub(crate) fn verify<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, key: u32) {
        st.set_current_key(&key).unwrap();
        st.reset_namespace();
        assert_eq!(
            self.value.value(st).unwrap(),
            Some(format!("v{key}")),
            "key {key}"
        );
        assert_eq!(self.list.get(st).unwrap(), vec![key, key + 1], "key {key}");
        let mut entries = self.map.entries(st).unwrap();
        entries.sort();
        assert_eq!(
            entries,
            vec![
                ("a".to_string(), u64::from(key)),
                ("b".to_string(), u64::from(key) * 2)
            ],
            "key {key}"
        );
        assert_eq!(
            self.sum.get(st).unwrap(),
            Some(i64::from(key) + 10),
            "key {key}"
        );
        assert_eq!(
            self.avg.get(st).unwrap(),
            Some(f64::from(key) + 1.0),
            "key {key}"
        );
        assert_eq!(self.ttl_value.value(st).unwrap(), Some(key), "key {key}");
        st.set_namespace("ns").unwrap();
        assert_eq!(
            self.value.value(st).unwrap(),
            Some(format!("ns{key}")),
            "key {key}"
        );
        assert_eq!(self.list.get(st).unwrap(), vec![key * 3], "key {key}");
        assert_eq!(self.map.entries(st).unwrap(), vec![], "key {key}");
        st.reset_namespace();
    }

    /// Checks that `key` holds nothing in any state.
    pub(crate) fn verify_absent<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, key: u32) {
        st.set_current_key(&key).unwrap();
        for ns in [None, Some("ns")] {
            match ns {
                Some(n) => st.set_namespace(n).unwrap(),
                None => st.reset_namespace(),
            }
            assert_eq!(self.value.value(st).unwrap(), None, "key {key} ns {ns:?}");
            assert!(self.list.get(st).unwrap().is_empty(), "key {key} ns {ns:?}");
            assert!(self.map.is_empty(st).unwrap(), "key {key} ns {ns:?}");
            assert_eq!(self.sum.get(st).unwrap(), None, "key {key} ns {ns:?}");
            assert_eq!(self.avg.get(st).unwrap(), None, "key {key} ns {ns:?}");
            assert_eq!(
                self.ttl_value.value(st).unwrap(),
                None,
                "key {key} ns {ns:?}"
            );
        }
        st.reset_namespace();
    }
}

/// How many (key, namespace) entries every registered state of `st` holds in total.
pub(crate) fn total_entries<B: KeyedStateBackend>(st: &KeyedState<B>) -> usize {
    let mut n = 0;
    for i in 0..st.backend().states().len() {
        let id = state_core::StateId(u32::try_from(i).unwrap());
        st.backend()
            .keys(id, &mut |_| {
                n += 1;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
    }
    n
}

/// A manual clock at a fixed start time.
pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_000_000))
}
