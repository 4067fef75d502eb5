//! Event-time and processing-time timers per key and namespace, kept in the
//! backend, as Flink's `InternalTimerService`.
//!
//! Timers are stored as two ordinary map-layout states,
//! [`EVENT_TIME_TIMERS`] and [`PROCESSING_TIME_TIMERS`], addressed by the
//! timer's (key group, key, namespace) with the timestamp as user key (`u64`
//! big-endian) and an empty value. So every backend snapshots, restores and
//! rescales them like any other state. An in-memory ordered queue decides what
//! fires; [`TimerService::new`] rebuilds it from the backend, which is how
//! timers come back after a restore.
//!
//! Fired timers are returned to the caller, which sets the timer's key
//! ([`KeyedState::set_current_key_bytes`]) and namespace to run its callback.
//! A timer registered for a time that already passed fires on the next
//! [`TimerService::advance_watermark`] / [`TimerService::fire_processing_timers`].

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use bytes::Bytes;

use crate::backend::{EntryKey, KeyedStateBackend, StateDescriptor, StateKind};
use crate::ids::StateId;
use crate::key_group::KeyGroup;
use crate::timer_names::{EVENT_TIME_TIMERS, PROCESSING_TIME_TIMERS};
use crate::typed::KeyedState;
use crate::{Result, StateError};

/// A timer: when it fires and the key and namespace it fires for.
///
/// Timers order by timestamp, then key group, key and namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// When the timer fires (event time or processing time, in milliseconds).
    pub timestamp: u64,
    /// The key group of `key`.
    pub key_group: KeyGroup,
    /// The encoded key.
    pub key: Bytes,
    /// The encoded namespace (empty for the default namespace).
    pub namespace: Bytes,
}

/// One time domain's timers: the backend state and the ordered queue.
#[derive(Debug)]
struct TimerQueue {
    name: &'static str,
    state: StateId,
    queue: BTreeSet<Timer>,
}

impl TimerQueue {
    fn open<B: KeyedStateBackend>(backend: &mut B, name: &'static str) -> Result<Self> {
        let state = backend.register_state(&StateDescriptor::new(name, StateKind::Map))?;
        let mut q = TimerQueue {
            name,
            state,
            queue: BTreeSet::new(),
        };
        q.rebuild(backend)?;
        Ok(q)
    }

    /// Reloads the queue from what the backend holds.
    fn rebuild<B: KeyedStateBackend>(&mut self, backend: &B) -> Result<()> {
        let mut addresses: Vec<(KeyGroup, Bytes, Bytes)> = Vec::new();
        backend.keys(self.state, &mut |e: &EntryKey<'_>| {
            addresses.push((
                e.key_group,
                Bytes::copy_from_slice(e.key),
                Bytes::copy_from_slice(e.namespace),
            ));
            ControlFlow::Continue(())
        })?;
        let mut queue = BTreeSet::new();
        for (key_group, key, namespace) in addresses {
            let entry = EntryKey {
                key_group,
                key: &key,
                namespace: &namespace,
            };
            let mut bad_len = None;
            let mut stamps = Vec::new();
            backend.map_scan(
                self.state,
                &entry,
                &mut |uk, _| match uk.first_chunk::<8>() {
                    Some(ts) if uk.len() == 8 => {
                        stamps.push(u64::from_be_bytes(*ts));
                        ControlFlow::Continue(())
                    }
                    _ => {
                        bad_len = Some(uk.len());
                        ControlFlow::Break(())
                    }
                },
            )?;
            if let Some(len) = bad_len {
                return Err(StateError::corrupted(
                    format!("state '{}'", self.name),
                    format!("timer timestamp of {len} bytes, expected 8"),
                ));
            }
            for timestamp in stamps {
                queue.insert(Timer {
                    timestamp,
                    key_group,
                    key: key.clone(),
                    namespace: namespace.clone(),
                });
            }
        }
        tracing::debug!(
            state = self.name,
            timers = queue.len(),
            "rebuilt timer queue"
        );
        self.queue = queue;
        Ok(())
    }

    fn current<B: KeyedStateBackend>(&self, st: &KeyedState<B>, timestamp: u64) -> Result<Timer> {
        let (Some(key), Some(key_group)) = (st.current_key_bytes(), st.current_key_group()) else {
            return Err(StateError::invalid(format!(
                "timer in '{}' registered or deleted with no current key set",
                self.name
            )));
        };
        Ok(Timer {
            timestamp,
            key_group,
            key: Bytes::copy_from_slice(key),
            namespace: Bytes::copy_from_slice(st.namespace_bytes()),
        })
    }

    fn register<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        let timer = self.current(st, timestamp)?;
        if self.queue.contains(&timer) {
            return Ok(());
        }
        let entry = EntryKey {
            key_group: timer.key_group,
            key: &timer.key,
            namespace: &timer.namespace,
        };
        st.backend_mut()
            .map_put(self.state, &entry, &timestamp.to_be_bytes(), Bytes::new())?;
        self.queue.insert(timer);
        Ok(())
    }

    fn delete<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        let timer = self.current(st, timestamp)?;
        if !self.queue.remove(&timer) {
            return Ok(());
        }
        let entry = EntryKey {
            key_group: timer.key_group,
            key: &timer.key,
            namespace: &timer.namespace,
        };
        st.backend_mut()
            .map_remove(self.state, &entry, &timestamp.to_be_bytes())
    }

    /// Removes and returns every timer with `timestamp <= until`, in order.
    fn fire<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        until: u64,
    ) -> Result<Vec<Timer>> {
        let mut fired = Vec::new();
        while self.queue.first().is_some_and(|t| t.timestamp <= until) {
            let Some(timer) = self.queue.pop_first() else {
                break;
            };
            let entry = EntryKey {
                key_group: timer.key_group,
                key: &timer.key,
                namespace: &timer.namespace,
            };
            if let Err(e) =
                st.backend_mut()
                    .map_remove(self.state, &entry, &timer.timestamp.to_be_bytes())
            {
                // Keep the queue consistent with the backend.
                self.queue.insert(timer);
                return Err(e);
            }
            fired.push(timer);
        }
        Ok(fired)
    }
}

/// Event-time and processing-time timers of one subtask.
#[derive(Debug)]
pub struct TimerService {
    event: TimerQueue,
    processing: TimerQueue,
    watermark: Option<u64>,
}

impl TimerService {
    /// Registers the timer states in `st`'s backend and loads every timer the
    /// backend holds (after a restore: the restored timers).
    pub fn new<B: KeyedStateBackend>(st: &mut KeyedState<B>) -> Result<Self> {
        let backend = st.backend_mut();
        Ok(TimerService {
            event: TimerQueue::open(backend, EVENT_TIME_TIMERS)?,
            processing: TimerQueue::open(backend, PROCESSING_TIME_TIMERS)?,
            watermark: None,
        })
    }

    /// Re-registers the timer states and reloads every timer from the
    /// backend, for when the backend was restored after this service was created.
    pub fn rebuild<B: KeyedStateBackend>(&mut self, st: &mut KeyedState<B>) -> Result<()> {
        let backend = st.backend_mut();
        self.event = TimerQueue::open(backend, EVENT_TIME_TIMERS)?;
        self.processing = TimerQueue::open(backend, PROCESSING_TIME_TIMERS)?;
        Ok(())
    }

    /// Registers an event-time timer at `timestamp` for the current key and
    /// namespace. Registering the same timer twice keeps one.
    pub fn register_event_time_timer<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        self.event.register(st, timestamp)
    }

    /// Deletes the event-time timer at `timestamp` of the current key and
    /// namespace, if there is one.
    pub fn delete_event_time_timer<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        self.event.delete(st, timestamp)
    }

    /// Registers a processing-time timer at `timestamp` for the current key
    /// and namespace. Registering the same timer twice keeps one.
    pub fn register_processing_time_timer<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        self.processing.register(st, timestamp)
    }

    /// Deletes the processing-time timer at `timestamp` of the current key and
    /// namespace, if there is one.
    pub fn delete_processing_time_timer<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        timestamp: u64,
    ) -> Result<()> {
        self.processing.delete(st, timestamp)
    }

    /// Advances event time to `watermark`: removes and returns every
    /// event-time timer with a timestamp `<= watermark`, in timestamp order.
    /// A watermark lower than the current one fires nothing and is ignored.
    pub fn advance_watermark<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        watermark: u64,
    ) -> Result<Vec<Timer>> {
        let wm = self.watermark.map_or(watermark, |w| w.max(watermark));
        self.watermark = Some(wm);
        self.event.fire(st, wm)
    }

    /// Removes and returns every processing-time timer with a timestamp
    /// `<= now`, in timestamp order.
    pub fn fire_processing_timers<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        now: u64,
    ) -> Result<Vec<Timer>> {
        self.processing.fire(st, now)
    }

    /// The timestamp of the next processing-time timer, if any.
    pub fn next_processing_time(&self) -> Option<u64> {
        self.processing.queue.first().map(|t| t.timestamp)
    }

    /// The timestamp of the next event-time timer, if any.
    pub fn next_event_time(&self) -> Option<u64> {
        self.event.queue.first().map(|t| t.timestamp)
    }

    /// The highest watermark seen, if any.
    pub fn current_watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// How many event-time and processing-time timers are registered.
    pub fn counts(&self) -> (usize, usize) {
        (self.event.queue.len(), self.processing.queue.len())
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.event.queue.is_empty() && self.processing.queue.is_empty()
    }
}
