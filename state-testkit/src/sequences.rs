//! The proptest model test: random sequences of state operations, snapshots,
//! restores and rescales run against a backend and against a `BTreeMap`
//! model, which must agree at every read.
//!
//! Runs through the typed layer ([`state_core::typed`]) so that it checks what a
//! job sees. Cases default to 64 and honour `PROPTEST_CASES`; the random
//! source is seeded, so a failure reproduces.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::Setup;
use state_core::typed::{
    KeyedState, ListState, ListStateDescriptor, MapState, MapStateDescriptor, ReducingState,
    ReducingStateDescriptor, StateHandle, ValueState, ValueStateDescriptor,
};
use state_core::{
    BackendContext, BackendFactory, CheckpointId, Checkpointable, Clock, EntryKey,
    KeyedStateBackend, KeyedStateHandle, ManualClock, MaxParallelism, OperatorId, StateError,
    StateId, handles_for_range,
};

/// The number of key groups of the model test.
pub const MODEL_MAX_PARALLELISM: u32 = 16;
/// The parallelism the model test starts at.
pub const MODEL_START_PARALLELISM: u32 = 2;

/// A (key, namespace) of the model test; namespace 0 is the default namespace.
type Slot = (u16, u8);

/// One step of a model test sequence.
#[derive(Debug, Clone)]
pub enum Op {
    /// Value state: update.
    ValuePut {
        /// Key.
        key: u16,
        /// Namespace (0 = default).
        ns: u8,
        /// New value.
        value: u32,
    },
    /// Value state: read and compare.
    ValueGet {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
    },
    /// Value state: clear.
    ValueClear {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
    },
    /// List state: append.
    ListAdd {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
        /// Element.
        value: u32,
    },
    /// List state: read and compare.
    ListGet {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
    },
    /// Map state: put.
    MapPut {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
        /// User key.
        user_key: u8,
        /// Value.
        value: u32,
    },
    /// Map state: remove.
    MapRemove {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
        /// User key.
        user_key: u8,
    },
    /// Map state: read one user key and compare.
    MapGet {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
        /// User key.
        user_key: u8,
    },
    /// Reducing (wrapping sum) state: add, the merge.
    ReduceAdd {
        /// Key.
        key: u16,
        /// Namespace.
        ns: u8,
        /// Added value.
        value: u32,
    },
    /// Snapshot every subtask (sync part), apply `writes_after_sync` value
    /// updates, then run the async parts: the snapshot must not hold them.
    Snapshot {
        /// (key, value) value-state updates made between the two parts.
        writes_after_sync: Vec<(u16, u32)>,
    },
    /// Restore every subtask from the last snapshot at the same parallelism.
    Restore,
    /// Restore the last snapshot at another parallelism.
    Rescale {
        /// The new parallelism.
        parallelism: u32,
    },
}

/// Generates one operation.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u16..40;
    let ns = 0u8..3;
    prop_oneof![
        6 => (key.clone(), ns.clone(), any::<u32>()).prop_map(|(key, ns, value)| Op::ValuePut { key, ns, value }),
        3 => (key.clone(), ns.clone()).prop_map(|(key, ns)| Op::ValueGet { key, ns }),
        1 => (key.clone(), ns.clone()).prop_map(|(key, ns)| Op::ValueClear { key, ns }),
        4 => (key.clone(), ns.clone(), any::<u32>()).prop_map(|(key, ns, value)| Op::ListAdd { key, ns, value }),
        2 => (key.clone(), ns.clone()).prop_map(|(key, ns)| Op::ListGet { key, ns }),
        4 => (key.clone(), ns.clone(), 0u8..6, any::<u32>())
            .prop_map(|(key, ns, user_key, value)| Op::MapPut { key, ns, user_key, value }),
        2 => (key.clone(), ns.clone(), 0u8..6).prop_map(|(key, ns, user_key)| Op::MapRemove { key, ns, user_key }),
        2 => (key.clone(), ns.clone(), 0u8..6).prop_map(|(key, ns, user_key)| Op::MapGet { key, ns, user_key }),
        4 => (key.clone(), ns, any::<u32>()).prop_map(|(key, ns, value)| Op::ReduceAdd { key, ns, value }),
        2 => prop::collection::vec((key, any::<u32>()), 0..4)
            .prop_map(|writes_after_sync| Op::Snapshot { writes_after_sync }),
        1 => Just(Op::Restore),
        1 => (1u32..=5).prop_map(|parallelism| Op::Rescale { parallelism }),
    ]
}

/// Generates a sequence of operations.
pub fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..80)
}

/// The proptest configuration: `PROPTEST_CASES` cases (default 64), no
/// failure-persistence files (the suite runs from other crates).
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs the model test: random sequences from [`ops_strategy`], each on a
/// fresh setup. Panics (fails the calling test) with the shrunk sequence on
/// a mismatch.
pub fn check_model<F: BackendFactory>(make_setup: impl Fn() -> Setup<F>) {
    let mut runner =
        TestRunner::new_with_rng(config(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let outcome = runner.run(&ops_strategy(), |ops| run_ops(&make_setup(), &ops));
    if let Err(e) = outcome {
        panic!("model test failed: {e}");
    }
}

/// The model: what every state should hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    values: BTreeMap<Slot, u32>,
    lists: BTreeMap<Slot, Vec<u32>>,
    maps: BTreeMap<Slot, BTreeMap<u8, u32>>,
    sums: BTreeMap<Slot, u32>,
}

/// One subtask: typed state over a backend, with the handles of the four states.
struct Subtask<B: KeyedStateBackend> {
    st: KeyedState<B>,
    value: ValueState<u32>,
    list: ListState<u32>,
    map: MapState<u8, u32>,
    sum: ReducingState<u32>,
}

fn fail(e: StateError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The subtasks of one operator, at some parallelism.
struct Cluster<'a, F: BackendFactory> {
    setup: &'a Setup<F>,
    max: MaxParallelism,
    subtasks: Vec<Subtask<F::Backend>>,
}

impl<'a, F: BackendFactory> Cluster<'a, F> {
    /// Creates `parallelism` subtasks and restores them from `handles`.
    fn start(
        setup: &'a Setup<F>,
        clock: Arc<ManualClock>,
        parallelism: u32,
        handles: &[KeyedStateHandle],
    ) -> Result<Self, TestCaseError> {
        let max = MaxParallelism::new(MODEL_MAX_PARALLELISM).map_err(fail)?;
        let mut subtasks = Vec::new();
        for subtask in 0..parallelism {
            let dyn_clock: Arc<dyn Clock> = clock.clone();
            let ctx = BackendContext {
                operator_id: OperatorId("model-op".to_string()),
                subtask,
                parallelism,
                max_parallelism: max,
                clock: Arc::clone(&dyn_clock),
            };
            let mut backend = setup.factory.create(&ctx).map_err(fail)?;
            let range = ctx.key_group_range().map_err(fail)?;
            let mine = handles_for_range(handles, range);
            backend
                .restore(&mine, setup.storage.as_ref())
                .map_err(fail)?;
            let mut st = KeyedState::new(backend, dyn_clock);
            let value = st
                .value_state(&ValueStateDescriptor::new("value"))
                .map_err(fail)?;
            let list = st
                .list_state(&ListStateDescriptor::new("list"))
                .map_err(fail)?;
            let map = st
                .map_state(&MapStateDescriptor::new("map"))
                .map_err(fail)?;
            let sum = st
                .reducing_state(&ReducingStateDescriptor::new("sum", |a: &u32, b: &u32| {
                    a.wrapping_add(*b)
                }))
                .map_err(fail)?;
            subtasks.push(Subtask {
                st,
                value,
                list,
                map,
                sum,
            });
        }
        Ok(Cluster {
            setup,
            max,
            subtasks,
        })
    }

    /// The subtask owning `key`, with its current key and namespace set.
    fn at(&mut self, (key, ns): Slot) -> Result<&mut Subtask<F::Backend>, TestCaseError> {
        let encoded = postcard::to_stdvec(&key).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let kg = self.max.key_group_of(&encoded);
        let p =
            u32::try_from(self.subtasks.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let index = self.max.subtask_for_key_group(p, kg) as usize;
        let Some(sub) = self.subtasks.get_mut(index) else {
            return Err(TestCaseError::fail(format!("no subtask {index}")));
        };
        sub.st.set_current_key(&key).map_err(fail)?;
        if ns == 0 {
            sub.st.reset_namespace();
        } else {
            sub.st.set_namespace(&ns).map_err(fail)?;
        }
        Ok(sub)
    }

    /// Snapshots every subtask: sync parts, then `between`, then async parts.
    fn snapshot(
        &mut self,
        id: CheckpointId,
        between: impl FnOnce(&mut Self) -> Result<(), TestCaseError>,
    ) -> Result<Vec<KeyedStateHandle>, TestCaseError> {
        self.setup.storage.initialize_checkpoint(id).map_err(fail)?;
        let mut pending = Vec::new();
        for sub in &mut self.subtasks {
            pending.push(
                sub.st
                    .backend_mut()
                    .snapshot(id, self.setup.mode)
                    .map_err(fail)?,
            );
        }
        between(self)?;
        let mut handles = Vec::new();
        for snapshot in pending {
            if let Some(h) = snapshot.write(self.setup.storage.as_ref()).map_err(fail)? {
                handles.push(h);
            }
        }
        // Every part is written: the checkpoint completes, and incremental
        // snapshots after it may build on it.
        for sub in &mut self.subtasks {
            sub.st
                .backend_mut()
                .notify_checkpoint_complete(id)
                .map_err(fail)?;
        }
        Ok(handles)
    }

    /// Checks that the backends hold exactly the model, each key at its owner.
    fn check_all(&mut self, model: &Model) -> Result<(), TestCaseError> {
        let expected: [(&str, BTreeSet<Slot>); 4] = [
            ("value", model.values.keys().copied().collect()),
            ("list", model.lists.keys().copied().collect()),
            ("map", model.maps.keys().copied().collect()),
            ("sum", model.sums.keys().copied().collect()),
        ];
        let p =
            u32::try_from(self.subtasks.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (state_index, (name, want)) in expected.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for (index, sub) in self.subtasks.iter().enumerate() {
                let id: StateId = match state_index {
                    0 => sub.value.state_id(),
                    1 => sub.list.state_id(),
                    2 => sub.map.state_id(),
                    _ => sub.sum.state_id(),
                };
                let range = sub.st.backend().key_group_range();
                let mut found: Vec<(Slot, bool)> = Vec::new();
                let mut bad = None;
                sub.st
                    .backend()
                    .keys(id, &mut |e: &EntryKey<'_>| {
                        let key: Option<u16> = postcard::from_bytes(e.key).ok();
                        let ns: Option<u8> = if e.namespace.is_empty() {
                            Some(0)
                        } else {
                            postcard::from_bytes(e.namespace).ok()
                        };
                        match (key, ns) {
                            (Some(k), Some(n)) => {
                                let owner_ok = range.contains(e.key_group)
                                    && self.max.key_group_of(e.key) == e.key_group
                                    && self.max.subtask_for_key_group(p, e.key_group) as usize
                                        == index;
                                found.push(((k, n), owner_ok));
                                ControlFlow::Continue(())
                            }
                            _ => {
                                bad = Some(format!(
                                    "undecodable key {:?} / ns {:?}",
                                    e.key, e.namespace
                                ));
                                ControlFlow::Break(())
                            }
                        }
                    })
                    .map_err(fail)?;
                if let Some(msg) = bad {
                    return Err(TestCaseError::fail(format!("state {name}: {msg}")));
                }
                for (slot, owner_ok) in found {
                    prop_assert!(
                        owner_ok,
                        "state {name}: {slot:?} is held by subtask {index} of {p}, which does not own it"
                    );
                    prop_assert!(seen.insert(slot), "state {name}: {slot:?} held twice");
                }
            }
            prop_assert_eq!(
                &seen,
                want,
                "state {} holds other keys than the model",
                name
            );
        }
        for (slot, v) in &model.values {
            let sub = self.at(*slot)?;
            prop_assert_eq!(sub.value.value(&mut sub.st).map_err(fail)?, Some(*v));
        }
        for (slot, l) in &model.lists {
            let sub = self.at(*slot)?;
            prop_assert_eq!(&sub.list.get(&mut sub.st).map_err(fail)?, l);
        }
        for (slot, m) in &model.maps {
            let sub = self.at(*slot)?;
            let got: BTreeMap<u8, u32> = sub
                .map
                .entries(&mut sub.st)
                .map_err(fail)?
                .into_iter()
                .collect();
            prop_assert_eq!(&got, m);
        }
        for (slot, s) in &model.sums {
            let sub = self.at(*slot)?;
            prop_assert_eq!(sub.sum.get(&mut sub.st).map_err(fail)?, Some(*s));
        }
        Ok(())
    }
}

/// Runs one sequence on `setup`; `Err` describes the first disagreement.
pub fn run_ops<F: BackendFactory>(setup: &Setup<F>, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(1_000));
    let mut cluster = Cluster::start(setup, Arc::clone(&clock), MODEL_START_PARALLELISM, &[])?;
    let mut model = Model::default();
    let mut last: Option<(Vec<KeyedStateHandle>, Model)> = None;
    let mut next_id = 1u64;
    for op in ops {
        clock.advance(1);
        match op {
            Op::ValuePut { key, ns, value } => {
                let sub = cluster.at((*key, *ns))?;
                sub.value.update(&mut sub.st, value).map_err(fail)?;
                model.values.insert((*key, *ns), *value);
            }
            Op::ValueGet { key, ns } => {
                let sub = cluster.at((*key, *ns))?;
                let got = sub.value.value(&mut sub.st).map_err(fail)?;
                prop_assert_eq!(got, model.values.get(&(*key, *ns)).copied());
            }
            Op::ValueClear { key, ns } => {
                let sub = cluster.at((*key, *ns))?;
                sub.value.clear(&mut sub.st).map_err(fail)?;
                model.values.remove(&(*key, *ns));
            }
            Op::ListAdd { key, ns, value } => {
                let sub = cluster.at((*key, *ns))?;
                sub.list.add(&mut sub.st, value).map_err(fail)?;
                model.lists.entry((*key, *ns)).or_default().push(*value);
            }
            Op::ListGet { key, ns } => {
                let sub = cluster.at((*key, *ns))?;
                let got = sub.list.get(&mut sub.st).map_err(fail)?;
                let want = model.lists.get(&(*key, *ns)).cloned().unwrap_or_default();
                prop_assert_eq!(got, want);
            }
            Op::MapPut {
                key,
                ns,
                user_key,
                value,
            } => {
                let sub = cluster.at((*key, *ns))?;
                sub.map.put(&mut sub.st, user_key, value).map_err(fail)?;
                model
                    .maps
                    .entry((*key, *ns))
                    .or_default()
                    .insert(*user_key, *value);
            }
            Op::MapRemove { key, ns, user_key } => {
                let sub = cluster.at((*key, *ns))?;
                sub.map.remove(&mut sub.st, user_key).map_err(fail)?;
                if let Some(m) = model.maps.get_mut(&(*key, *ns)) {
                    m.remove(user_key);
                    if m.is_empty() {
                        model.maps.remove(&(*key, *ns));
                    }
                }
            }
            Op::MapGet { key, ns, user_key } => {
                let sub = cluster.at((*key, *ns))?;
                let got = sub.map.get(&mut sub.st, user_key).map_err(fail)?;
                let want = model
                    .maps
                    .get(&(*key, *ns))
                    .and_then(|m| m.get(user_key))
                    .copied();
                prop_assert_eq!(got, want);
            }
            Op::ReduceAdd { key, ns, value } => {
                let sub = cluster.at((*key, *ns))?;
                sub.sum.add(&mut sub.st, *value).map_err(fail)?;
                let e = model.sums.entry((*key, *ns)).or_insert(0);
                *e = e.wrapping_add(*value);
            }
            Op::Snapshot { writes_after_sync } => {
                let id = CheckpointId(next_id);
                next_id += 1;
                let at_sync = model.clone();
                let handles = cluster.snapshot(id, |c| {
                    for (key, value) in writes_after_sync {
                        let sub = c.at((*key, 0))?;
                        sub.value.update(&mut sub.st, value).map_err(fail)?;
                        model.values.insert((*key, 0), *value);
                    }
                    Ok(())
                })?;
                last = Some((handles, at_sync));
            }
            Op::Restore | Op::Rescale { .. } => {
                let Some((handles, at_snapshot)) = &last else {
                    continue;
                };
                let parallelism = match op {
                    Op::Rescale { parallelism } => *parallelism,
                    _ => u32::try_from(cluster.subtasks.len())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                };
                drop(cluster);
                cluster = Cluster::start(setup, Arc::clone(&clock), parallelism, handles)?;
                model = at_snapshot.clone();
                cluster.check_all(&model)?;
            }
        }
    }
    cluster.check_all(&model)
}
