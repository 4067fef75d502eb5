//! The keyed process API: a [`KeyedProcessFunction`] runs over a keyed
//! stream ([`crate::KeyedStream::process`]) with keyed state and timers,
//! through the [`KeyedContext`] of the current key (Flink's
//! `KeyedProcessFunction` and its `Context`).
//!
//! The runtime drives it from the keyed operator of each subtask: it sets the
//! current key before every record and every fired timer, snapshots the
//! state at each checkpoint barrier, and restores it on failover.

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::TimerService;
use state_core::typed::KeyedState;
use state_core::{Clock, KeyedStateBackend};

use crate::error::UserError;

/// Which clock a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Event time, driven by watermarks (all event-time timers fire at the
    /// end of a bounded input).
    EventTime,
    /// Processing time, driven by the job's [`Clock`].
    ProcessingTime,
}

/// A function over a keyed stream with keyed state and timers (Flink's
/// `KeyedProcessFunction`). One clone runs per subtask and attempt:
/// register states in [`KeyedProcessFunction::open`] and keep their handles.
///
/// ```
/// use executor::UserError;
/// use executor::process::{KeyedContext, KeyedProcessFunction};
/// use state_core::KeyedStateBackend;
/// use state_core::typed::{KeyedState, ValueState, ValueStateDescriptor};
///
/// /// Counts records per key and emits (key, count).
/// #[derive(Clone, Default)]
/// struct Count(Option<ValueState<u64>>);
///
/// impl<B: KeyedStateBackend> KeyedProcessFunction<B> for Count {
///     type Key = String;
///     type In = String;
///     type Out = (String, u64);
///     fn open(&mut self, state: &mut KeyedState<B>) -> Result<(), UserError> {
///         self.0 = Some(state.value_state(&ValueStateDescriptor::new("count"))?);
///         Ok(())
///     }
///     fn process_element(
///         &mut self,
///         word: String,
///         ctx: &mut KeyedContext<'_, B, String>,
///         out: &mut Vec<(String, u64)>,
///     ) -> Result<(), UserError> {
///         let count = self.0.as_ref().ok_or("not opened")?;
///         let n = count.value(ctx.state())?.unwrap_or(0) + 1;
///         count.update(ctx.state(), &n)?;
///         out.push((word, n));
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction<B: KeyedStateBackend>: Clone + Send + Sync + 'static {
    /// The key type (what `key_by` returns).
    type Key: Serialize + DeserializeOwned + Send + 'static;
    /// The input records.
    type In: Send + 'static;
    /// The output records.
    type Out: Send + 'static;

    /// Registers states (restored ones come back with their values).
    fn open(&mut self, state: &mut KeyedState<B>) -> Result<(), UserError>;

    /// Processes one record of the current key; pushes outputs to `out`.
    fn process_element(
        &mut self,
        value: Self::In,
        ctx: &mut KeyedContext<'_, B, Self::Key>,
        out: &mut Vec<Self::Out>,
    ) -> Result<(), UserError>;

    /// A timer of the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: u64,
        _domain: TimeDomain,
        _ctx: &mut KeyedContext<'_, B, Self::Key>,
        _out: &mut Vec<Self::Out>,
    ) -> Result<(), UserError> {
        Ok(())
    }
}

/// What a [`KeyedProcessFunction`] sees of its subtask: keyed state scoped to
/// the current key, the key, and timers.
#[derive(Debug)]
pub struct KeyedContext<'a, B: KeyedStateBackend, K> {
    pub(crate) state: &'a mut KeyedState<B>,
    pub(crate) timers: &'a mut TimerService,
    pub(crate) key: &'a K,
    pub(crate) clock: &'a dyn Clock,
}

impl<'a, B: KeyedStateBackend, K> KeyedContext<'a, B, K> {
    /// Keyed state, with the current key set.
    pub fn state(&mut self) -> &mut KeyedState<B> {
        self.state
    }

    /// The current key.
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// The current processing time (the job's clock), in milliseconds.
    pub fn current_processing_time(&self) -> u64 {
        self.clock.now_millis()
    }

    /// The current watermark, if one arrived.
    pub fn current_watermark(&self) -> Option<u64> {
        self.timers.current_watermark()
    }

    /// Timers of the current key and namespace.
    pub fn timer_service(&mut self) -> TimerServiceRef<'_, B> {
        TimerServiceRef {
            state: self.state,
            timers: self.timers,
        }
    }
}

/// Registers and deletes timers of the current key (see [`KeyedContext::timer_service`]).
#[derive(Debug)]
pub struct TimerServiceRef<'a, B: KeyedStateBackend> {
    state: &'a mut KeyedState<B>,
    timers: &'a mut TimerService,
}

impl<B: KeyedStateBackend> TimerServiceRef<'_, B> {
    /// Fires [`KeyedProcessFunction::on_timer`] when the watermark passes `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: u64) -> state_core::Result<()> {
        self.timers.register_event_time_timer(self.state, timestamp)
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, timestamp: u64) -> state_core::Result<()> {
        self.timers.delete_event_time_timer(self.state, timestamp)
    }

    /// Fires [`KeyedProcessFunction::on_timer`] when the clock passes `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: u64) -> state_core::Result<()> {
        self.timers
            .register_processing_time_timer(self.state, timestamp)
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, timestamp: u64) -> state_core::Result<()> {
        self.timers
            .delete_processing_time_timer(self.state, timestamp)
    }
}
