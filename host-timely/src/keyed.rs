//! The keyed stateful operator: state in a cairn backend for the key groups
//! the worker owns, snapshotted when the input frontier passes an epoch.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::{Arc, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::typed::{KeyedState, ValueStateDescriptor, with_key_bytes};
use state_core::{
    BackendContext, BackendFactory, CheckpointId, Checkpointable, KeyGroup, KeyedStateHandle,
    OperatorId, handles_for_range,
};
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::context::Cairn;
use crate::error::fail_stop;
use crate::protocol::{PendingPart, Slot, SlotRef};
use crate::value_cache::ValueCache;

/// Keyed, checkpointed state on timely streams whose timestamp is the epoch.
pub trait StateStream<'s, D> {
    /// Processes each record with the state of its key.
    ///
    /// Records are exchanged by key group (`murmur3(postcard(key)) % maxP`,
    /// owner `kg·peers/maxP`), so a checkpoint taken with `n` workers
    /// restores with `m`. On each worker the state lives in a backend
    /// created by `factory` for the worker's key groups and restored from
    /// the job's restored checkpoint (operator `uid`); `init` registers the
    /// states (after the restore) and returns their handles; `logic` gets
    /// the state with the record's key set as the current key, and pushes
    /// outputs (at the record's epoch).
    ///
    /// Records of an epoch are applied only once the input frontier reached
    /// it; when the frontier passes epoch `n - 1`, the operator takes the
    /// synchronous part of checkpoint `n` and writes the asynchronous part
    /// on another thread. An error from the backend or `logic` stops the
    /// process (fail-stop; the supervisor restarts from the last checkpoint).
    #[allow(clippy::too_many_arguments)]
    fn keyed_process<F, K, KF, S, I, O, L>(
        self,
        cairn: &Cairn,
        uid: &str,
        factory: F,
        key: KF,
        init: I,
        logic: L,
    ) -> StreamVec<'s, u64, O>
    where
        F: BackendFactory,
        K: Serialize,
        KF: Fn(&D) -> K + 'static,
        I: FnOnce(&mut KeyedState<F::Backend>) -> state_core::Result<S>,
        S: 'static,
        O: Clone + 'static,
        L: FnMut(&mut KeyedState<F::Backend>, &mut S, D, &mut Vec<O>) -> state_core::Result<()>
            + 'static;

    /// Folds each record into one value per key, kept typed in memory
    /// between checkpoints: the keyed count, sum or last-seen of a job, at
    /// the cost of a hash lookup per record.
    ///
    /// Records are exchanged and checkpointed as by
    /// [`keyed_process`](StateStream::keyed_process); the state is the
    /// value state `descriptor` in a backend created by `factory`. `logic`
    /// gets the record's key, its value (`None` for a new key; leave `None`
    /// to remove it) and the record, and pushes outputs. Each worker keeps
    /// up to [`CheckpointConfig::value_cache_entries`](crate::CheckpointConfig::value_cache_entries)
    /// values as `V`, reading a value from the backend the first time its
    /// key comes; changed values are written to the backend once per
    /// checkpoint, before its synchronous part, and when the cache is full.
    /// So a checkpoint, a restore and `cairn checkpoints inspect` see the
    /// same state as with `keyed_process`, and the two operators read each
    /// other's checkpoints. A `descriptor` with a TTL is refused (cached
    /// values would not expire). `K`'s equality must agree with its
    /// serialized form (a derived `Eq` does): the cache tells keys apart by
    /// `Eq`, the backend by their bytes.
    ///
    /// ```no_run
    /// # use cairn_timely::{Cairn, StateStream};
    /// # use state_core::typed::ValueStateDescriptor;
    /// # fn demo<'s>(cairn: &Cairn, words: timely::dataflow::StreamVec<'s, u64, String>,
    /// #     factory: impl state_core::BackendFactory) {
    /// let counts = words.keyed_value(
    ///     cairn,
    ///     "count",
    ///     factory,
    ///     ValueStateDescriptor::<u64>::new("n"),
    ///     |word: &String| word.clone(),
    ///     |_word, n, word, out| {
    ///         let c = n.get_or_insert(0);
    ///         *c += 1;
    ///         out.push((word, *c));
    ///         Ok(())
    ///     },
    /// );
    /// # }
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn keyed_value<F, K, KF, V, O, L>(
        self,
        cairn: &Cairn,
        uid: &str,
        factory: F,
        descriptor: ValueStateDescriptor<V>,
        key: KF,
        logic: L,
    ) -> StreamVec<'s, u64, O>
    where
        F: BackendFactory,
        K: Serialize + Hash + Eq + Clone + 'static,
        KF: Fn(&D) -> K + 'static,
        V: Serialize + DeserializeOwned + 'static,
        O: Clone + 'static,
        L: FnMut(&K, &mut Option<V>, D, &mut Vec<O>) -> state_core::Result<()> + 'static;
}

impl<'s, D: ExchangeData + Clone> StateStream<'s, D> for StreamVec<'s, u64, D> {
    fn keyed_process<F, K, KF, S, I, O, L>(
        self,
        cairn: &Cairn,
        uid: &str,
        factory: F,
        key: KF,
        init: I,
        mut logic: L,
    ) -> StreamVec<'s, u64, O>
    where
        F: BackendFactory,
        K: Serialize,
        KF: Fn(&D) -> K + 'static,
        I: FnOnce(&mut KeyedState<F::Backend>) -> state_core::Result<S>,
        S: 'static,
        O: Clone + 'static,
        L: FnMut(&mut KeyedState<F::Backend>, &mut S, D, &mut Vec<O>) -> state_core::Result<()>
            + 'static,
    {
        let key = Rc::new(key);
        let apply_key = Rc::clone(&key);
        keyed_operator(
            self,
            cairn,
            uid,
            &factory,
            key,
            init,
            move |keyed, state, record, out| {
                keyed.set_current_key(&apply_key(&record))?;
                logic(keyed, state, record, out)
            },
            |_, _| Ok(()),
        )
    }

    fn keyed_value<F, K, KF, V, O, L>(
        self,
        cairn: &Cairn,
        uid: &str,
        factory: F,
        descriptor: ValueStateDescriptor<V>,
        key: KF,
        mut logic: L,
    ) -> StreamVec<'s, u64, O>
    where
        F: BackendFactory,
        K: Serialize + Hash + Eq + Clone + 'static,
        KF: Fn(&D) -> K + 'static,
        V: Serialize + DeserializeOwned + 'static,
        O: Clone + 'static,
        L: FnMut(&K, &mut Option<V>, D, &mut Vec<O>) -> state_core::Result<()> + 'static,
    {
        let capacity = cairn.config().value_cache_entries;
        let key = Rc::new(key);
        let apply_key = Rc::clone(&key);
        keyed_operator(
            self,
            cairn,
            uid,
            &factory,
            key,
            move |keyed| {
                if descriptor.ttl().is_some() {
                    return Err(state_core::StateError::invalid(format!(
                        "state '{}' has a TTL, which keyed_value cannot keep (its values stay in \
                         memory between checkpoints, where they would not expire); use \
                         keyed_process for a state with a TTL",
                        descriptor.name()
                    )));
                }
                Ok(ValueCache::new(keyed.value_state(&descriptor)?, capacity))
            },
            move |keyed, cache, record, out| {
                let k = apply_key(&record);
                cache.update_with(keyed, &k, |value| logic(&k, value, record, out))?
            },
            |keyed, cache| cache.write_back(keyed).map(drop),
        )
    }
}

/// The keyed operator both methods build: records exchanged by key group,
/// applied by `apply` once their epoch is open, and a checkpoint's
/// synchronous part taken (after `before_snapshot`) when the frontier
/// passes an epoch.
#[allow(clippy::too_many_arguments)]
fn keyed_operator<'s, D, F, K, KF, S, I, O, A, P>(
    stream: StreamVec<'s, u64, D>,
    cairn: &Cairn,
    uid: &str,
    factory: &F,
    key: Rc<KF>,
    init: I,
    mut apply: A,
    mut before_snapshot: P,
) -> StreamVec<'s, u64, O>
where
    D: ExchangeData + Clone,
    F: BackendFactory,
    K: Serialize,
    KF: Fn(&D) -> K + 'static,
    I: FnOnce(&mut KeyedState<F::Backend>) -> state_core::Result<S>,
    S: 'static,
    O: Clone + 'static,
    A: FnMut(&mut KeyedState<F::Backend>, &mut S, D, &mut Vec<O>) -> state_core::Result<()>
        + 'static,
    P: FnMut(&mut KeyedState<F::Backend>, &mut S) -> state_core::Result<()> + 'static,
{
    // Each key group's worker, looked up per record instead of computed
    // (`Cairn::owner_of`: a multiplication and a division).
    let max_parallelism = cairn.config().max_parallelism;
    let owners: Vec<u64> = (0..max_parallelism.get())
        .map(|kg| u64::from(cairn.owner_of(KeyGroup(kg as u16))))
        .collect();
    let exchange = Exchange::new(move |d: &D| {
        // A key that cannot be encoded goes to worker 0 and is refused
        // there, with the operator named, where it is applied.
        with_key_bytes(&key(d), |bytes| {
            owners
                .get(max_parallelism.key_group_of(bytes).index())
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
    });
    let (mut keyed, mut state, slot) = match open_state(cairn, uid, factory, init) {
        Ok(opened) => opened,
        Err(err) => fail_stop(&format!("operator {uid}: opening its state"), &err),
    };
    let storage = Arc::clone(&cairn.config().storage);
    let mode = cairn.config().snapshot_mode;
    let mut epoch = cairn.start_epoch();
    let name = format!("cairn-keyed-{uid}");
    let uid = uid.to_owned();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(
        exchange,
        &name,
        move |_capability, _info| {
            // Records of epochs after the open one, until the frontier
            // reaches them; the open epoch's batches are taken from the
            // input as they are (no copy) and applied at once.
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
            let mut ready: Vec<(Capability<u64>, Vec<D>)> = Vec::new();
            let mut out: Vec<O> = Vec::new();
            move |(input, frontier), output| {
                notify_backend(&slot, &mut keyed, &uid);
                let reached = frontier.frontier().iter().min().copied();
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else {
                        return;
                    };
                    if t <= epoch || reached.is_none() {
                        ready.push((cap.delayed(&t, 0), std::mem::take(data)));
                    } else {
                        let entry = stash
                            .entry(t)
                            .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                        entry.1.append(data);
                    }
                });
                loop {
                    while let Some(entry) = stash.first_entry() {
                        if reached.is_some() && *entry.key() > epoch {
                            break;
                        }
                        ready.push(entry.remove());
                    }
                    // One place applies records, so the key's handling and
                    // the state access inline into one loop.
                    for (cap, mut records) in ready.drain(..) {
                        for record in records.drain(..) {
                            if let Err(err) = apply(&mut keyed, &mut state, record, &mut out) {
                                fail_stop(&format!("operator {uid}"), &err);
                            }
                        }
                        if !out.is_empty() {
                            output.session(&cap).give_container(&mut out);
                            // Whatever buffer timely handed back holds
                            // nothing to send again.
                            out.clear();
                        }
                    }
                    match reached {
                        Some(f) if epoch < f => {
                            epoch += 1;
                            // What the operator holds outside the backend
                            // goes into it before the snapshot, or the
                            // process stops: a checkpoint without it would
                            // lose updates.
                            if let Err(err) = before_snapshot(&mut keyed, &mut state) {
                                fail_stop(&format!("operator {uid}: checkpoint {epoch}"), &err);
                            }
                            snapshot(&slot, &mut keyed, &storage, mode, epoch, &uid);
                        }
                        _ => break,
                    }
                }
            }
        },
    )
}

type Opened<B, S> = (KeyedState<B>, S, SlotRef);

/// Creates the worker's backend, restores it and registers its participant.
fn open_state<F: BackendFactory, S>(
    cairn: &Cairn,
    uid: &str,
    factory: &F,
    init: impl FnOnce(&mut KeyedState<F::Backend>) -> state_core::Result<S>,
) -> Result<Opened<F::Backend, S>, crate::TimelyError> {
    let config = cairn.config();
    let operator_id = OperatorId(uid.to_owned());
    let context = BackendContext {
        operator_id: operator_id.clone(),
        subtask: cairn.worker_index(),
        parallelism: cairn.peers(),
        max_parallelism: config.max_parallelism,
        clock: Arc::clone(&config.clock),
    };
    let range = context.key_group_range()?;
    let mut backend = factory.create(&context)?;
    if let Some(op) = cairn.restored_operator(&operator_id) {
        if op.max_parallelism != config.max_parallelism.get() {
            return Err(crate::TimelyError::Config(format!(
                "operator {uid}: checkpoint {} was taken with max parallelism {}, the job has {}; \
                 the number of key groups cannot change",
                cairn.restored_checkpoint().map_or(0, CheckpointId::get),
                op.max_parallelism,
                config.max_parallelism
            )));
        }
        let all: Vec<&KeyedStateHandle> = op.subtasks.iter().flat_map(|s| &s.keyed).collect();
        let handles = handles_for_range(all, range);
        backend.restore(&handles, config.storage.as_ref())?;
        tracing::info!(
            operator = uid,
            worker = cairn.worker_index(),
            handles = handles.len(),
            key_groups = %range,
            "restored keyed state"
        );
    }
    let mut keyed = KeyedState::new(backend, Arc::clone(&config.clock));
    let state = init(&mut keyed)?;
    let slot = Slot::new(
        operator_id,
        cairn.worker_index(),
        cairn.peers(),
        config.max_parallelism.get(),
        cairn.start_epoch(),
    );
    cairn.register(Rc::clone(&slot))?;
    Ok((keyed, state, slot))
}

/// Tells the backend which checkpoints completed, were aborted or were
/// subsumed.
fn notify_backend<B: Checkpointable>(slot: &SlotRef, keyed: &mut KeyedState<B>, uid: &str) {
    let (completed, aborted, subsumed) = {
        let mut s = slot.borrow_mut();
        if s.completed.is_empty() && s.aborted.is_empty() && s.subsumed.is_empty() {
            return;
        }
        (
            std::mem::take(&mut s.completed),
            std::mem::take(&mut s.aborted),
            std::mem::take(&mut s.subsumed),
        )
    };
    for id in completed {
        if let Err(err) = keyed.backend_mut().notify_checkpoint_complete(id) {
            tracing::warn!(operator = uid, checkpoint_id = id.get(), error = %err, "notify_checkpoint_complete failed");
        }
    }
    for id in aborted {
        if let Err(err) = keyed.backend_mut().notify_checkpoint_aborted(id) {
            tracing::warn!(operator = uid, checkpoint_id = id.get(), error = %err, "notify_checkpoint_aborted failed");
        }
    }
    for id in subsumed {
        if let Err(err) = keyed.backend_mut().notify_checkpoint_subsumed(id) {
            tracing::warn!(operator = uid, checkpoint_id = id.get(), error = %err, "notify_checkpoint_subsumed failed");
        }
    }
}

/// The synchronous part of checkpoint `n` on the worker thread; the
/// asynchronous part on a thread of its own. A part that cannot be taken
/// or written is acknowledged as failed (the checkpoint aborts); only a
/// thread that cannot be started stops the process.
fn snapshot<B: Checkpointable>(
    slot: &SlotRef,
    keyed: &mut KeyedState<B>,
    storage: &Arc<dyn state_core::CheckpointStorage>,
    mode: state_core::SnapshotMode,
    n: u64,
    uid: &str,
) {
    let id = CheckpointId(n);
    let (tx, rx) = mpsc::channel();
    let part = storage
        .initialize_checkpoint(id)
        .and_then(|()| keyed.backend_mut().snapshot(id, mode));
    let thread = match part {
        Ok(part) => {
            let storage = Arc::clone(storage);
            let spawned = std::thread::Builder::new()
                .name(format!("cairn-snapshot-{n}"))
                .spawn(move || {
                    let _ = tx.send(part.write(storage.as_ref()));
                });
            match spawned {
                Ok(thread) => Some(thread),
                Err(err) => fail_stop(&format!("operator {uid}: checkpoint {n}"), &err),
            }
        }
        Err(err) => {
            // Failed in the synchronous part: queued behind the parts still
            // being written, so acknowledgements stay in checkpoint order.
            let _ = tx.send(Err(err));
            None
        }
    };
    slot.borrow_mut().pending.push_back(PendingPart {
        checkpoint: n,
        done: rx,
        thread,
    });
}
