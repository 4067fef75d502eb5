//! Keyed operators: the subtask that drives a [`KeyedProcessFunction`]
//! (current key, state snapshots, timers), and the built-in `reduce` / `sum`.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::typed::{KeyedState, ValueState, ValueStateDescriptor};
use state_core::{
    BackendContext, BackendFactory, Checkpointable, Clock, KeyedStateBackend, SnapshotMode,
    handles_for_range,
};
use state_core::{Timer, TimerService};

use super::chain::{ChainEvent, OpInfo, OperatorPart, Output};
use super::graph::RestoreState;
use super::savepoint::SavepointTargets;
use crate::error::{Result, UserError};
use crate::process::{KeyedContext, KeyedProcessFunction, TimeDomain};

/// Extracts the key of a record.
pub(crate) type KeyFn<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// A keyed operator subtask running a [`KeyedProcessFunction`].
pub(crate) struct KeyedOp<B: Checkpointable, P: KeyedProcessFunction<B>> {
    pub func: P,
    pub key_fn: KeyFn<P::In, P::Key>,
    pub state: KeyedState<B>,
    pub timers: TimerService,
    pub out: Vec<P::Out>,
    pub info: OpInfo,
    pub clock: Arc<dyn Clock>,
    pub mode: SnapshotMode,
    /// Which checkpoints are savepoints (snapshot in their mode instead).
    pub savepoints: SavepointTargets,
    pub next: Box<dyn Output<P::Out>>,
}

/// Everything needed to create a keyed operator subtask.
pub(crate) struct KeyedOpSetup<'a, F: BackendFactory> {
    pub factory: &'a F,
    pub info: OpInfo,
    pub clock: Arc<dyn Clock>,
    pub restore: Option<&'a RestoreState>,
    pub mode: SnapshotMode,
    pub savepoints: SavepointTargets,
}

impl<B: Checkpointable, P: KeyedProcessFunction<B>> KeyedOp<B, P> {
    /// Creates the backend, restores it, loads timers and opens the function.
    pub(crate) fn create<F: BackendFactory<Backend = B>>(
        setup: KeyedOpSetup<'_, F>,
        mut func: P,
        key_fn: KeyFn<P::In, P::Key>,
        next: Box<dyn Output<P::Out>>,
    ) -> Result<Self> {
        let info = setup.info;
        let context = BackendContext {
            operator_id: info.uid.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
            clock: setup.clock.clone(),
        };
        let mut backend = setup.factory.create(&context)?;
        if let Some(restore) = setup.restore {
            let handles = restore.keyed_handles(&info.uid, info.max_parallelism)?;
            let mine = handles_for_range(&handles, context.key_group_range()?);
            if !mine.is_empty() {
                backend.restore(&mine, restore.storage.as_ref())?;
                if !restore.owned {
                    backend.forget_restored_files()?;
                }
            }
        }
        let mut state = KeyedState::new(backend, setup.clock.clone());
        let timers = TimerService::new(&mut state)?;
        func.open(&mut state).map_err(|e| info.user_error(e))?;
        Ok(KeyedOp {
            func,
            key_fn,
            state,
            timers,
            out: Vec::new(),
            info,
            clock: setup.clock,
            mode: setup.mode,
            savepoints: setup.savepoints,
            next,
        })
    }

    fn emit(&mut self) -> Result<()> {
        self.info.counters.inc_out(self.out.len() as u64);
        for record in self.out.drain(..) {
            self.next.push(record)?;
        }
        Ok(())
    }

    fn fire(&mut self, fired: Vec<Timer>, domain: TimeDomain) -> Result<()> {
        for timer in fired {
            let key: P::Key = postcard::from_bytes(&timer.key)
                .map_err(|e| self.info.failed(format!("timer key does not decode: {e}")))?;
            self.state.set_current_key_bytes(&timer.key)?;
            self.state.set_namespace_bytes(&timer.namespace);
            let mut ctx = KeyedContext {
                state: &mut self.state,
                timers: &mut self.timers,
                key: &key,
                clock: self.clock.as_ref(),
            };
            self.func
                .on_timer(timer.timestamp, domain, &mut ctx, &mut self.out)
                .map_err(|e| self.info.user_error(e))?;
            self.state.reset_namespace();
            self.emit()?;
        }
        Ok(())
    }
}

impl<B: Checkpointable, P: KeyedProcessFunction<B>> Output<P::In> for KeyedOp<B, P> {
    fn push(&mut self, record: P::In) -> Result<()> {
        self.info.counters.inc_in();
        let key = (self.key_fn)(&record);
        self.state.set_current_key(&key)?;
        let mut ctx = KeyedContext {
            state: &mut self.state,
            timers: &mut self.timers,
            key: &key,
            clock: self.clock.as_ref(),
        };
        self.func
            .process_element(record, &mut ctx, &mut self.out)
            .map_err(|e| self.info.user_error(e))?;
        self.emit()
    }

    fn event(&mut self, event: &ChainEvent, parts: &mut Vec<OperatorPart>) -> Result<()> {
        match event {
            ChainEvent::Barrier { id, .. } => {
                let mode = self.savepoints.mode(*id, self.mode);
                let snapshot = self.state.backend_mut().snapshot(*id, mode)?;
                parts.push(OperatorPart {
                    info: self.info.clone(),
                    keyed: Some(snapshot),
                    operator_state: None,
                });
            }
            // Nothing builds on a savepoint: the backend forgets it, as an
            // aborted checkpoint (see `SnapshotMode::is_savepoint`).
            ChainEvent::Complete(id) if self.savepoints.contains(*id) => {
                self.state.backend_mut().notify_checkpoint_aborted(*id)?
            }
            ChainEvent::Complete(id) => self.state.backend_mut().notify_checkpoint_complete(*id)?,
            ChainEvent::Aborted(id) => self.state.backend_mut().notify_checkpoint_aborted(*id)?,
            ChainEvent::Subsumed(id) => self.state.backend_mut().notify_checkpoint_subsumed(*id)?,
            ChainEvent::Tick { now_millis } => {
                if self
                    .timers
                    .next_processing_time()
                    .is_some_and(|t| t <= *now_millis)
                {
                    let fired = self
                        .timers
                        .fire_processing_timers(&mut self.state, *now_millis)?;
                    self.fire(fired, TimeDomain::ProcessingTime)?;
                }
            }
            ChainEvent::End => {
                let fired = self.timers.advance_watermark(&mut self.state, u64::MAX)?;
                self.fire(fired, TimeDomain::EventTime)?;
            }
            ChainEvent::Flush | ChainEvent::EndOfPartition => {}
        }
        self.next.event(event, parts)
    }
}

/// The reduce function of `reduce`.
pub(crate) type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// `reduce` / `sum`: keeps the running value per key and emits it per record.
pub(crate) struct Reduce<T, K> {
    pub f: ReduceFn<T>,
    pub state: Option<ValueState<T>>,
    pub _key: PhantomData<fn() -> K>,
}

impl<T, K> Clone for Reduce<T, K> {
    fn clone(&self) -> Self {
        Reduce {
            f: self.f.clone(),
            state: self.state.clone(),
            _key: PhantomData,
        }
    }
}

impl<B, T, K> KeyedProcessFunction<B> for Reduce<T, K>
where
    B: KeyedStateBackend,
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
{
    type Key = K;
    type In = T;
    type Out = T;

    fn open(&mut self, state: &mut KeyedState<B>) -> Result<(), UserError> {
        self.state = Some(state.value_state(&ValueStateDescriptor::new("reduce"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: T,
        ctx: &mut KeyedContext<'_, B, K>,
        out: &mut Vec<T>,
    ) -> Result<(), UserError> {
        let state = self.state.as_ref().ok_or("reduce state is not open")?;
        let f = &self.f;
        let next = state.update_with(ctx.state(), |current| match current {
            Some(current) => f(&current, &value),
            None => value,
        })?;
        out.push(next);
        Ok(())
    }
}
