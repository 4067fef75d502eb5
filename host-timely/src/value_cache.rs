//! Typed values of one value state kept in memory between checkpoints, for
//! [`crate::StateStream::keyed_value`]: a write-back cache in front of the
//! backend.
//!
//! A record whose key is cached costs one hash lookup on the typed key and
//! nothing else: no key encoding, no key group, no value decoding or
//! encoding. The backend sees a key's value when the cache writes it back:
//! before every checkpoint's synchronous part ([`ValueCache::write_back`]),
//! so a checkpoint holds every update of the epochs it covers, and when the
//! cache is full. Flink's heap backend keeps its values as objects and
//! serializes them only in a snapshot; this gives any cairn backend (heap or
//! RocksDB) the same per-record cost, and writes each changed key once per
//! checkpoint instead of once per record.
//!
//! The cache owns its state: the operator reads and writes the state only
//! through it, in the default namespace.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::KeyedStateBackend;
use state_core::typed::{KeyedState, ValueState};

/// A cached value and whether the backend has it.
struct Cached<V> {
    value: Option<V>,
    dirty: bool,
}

/// The typed write-back cache of one value state on one worker.
pub(crate) struct ValueCache<K, V> {
    state: ValueState<V>,
    entries: HashMap<K, Cached<V>, foldhash::fast::RandomState>,
    capacity: usize,
}

impl<K, V> ValueCache<K, V>
where
    K: Serialize + Hash + Eq + Clone,
    V: Serialize + DeserializeOwned,
{
    /// An empty cache of `state` holding at most `capacity` keys (at least 1).
    pub(crate) fn new(state: ValueState<V>, capacity: usize) -> Self {
        ValueCache {
            state,
            entries: HashMap::default(),
            capacity: capacity.max(1),
        }
    }

    /// Calls `f` with `key`'s value (`None` if it has none) for it to read
    /// or change, reading the value from the backend first if the key is
    /// not cached. The value counts as changed: the next write-back writes
    /// it (leaving `None` removes the key's value).
    #[inline]
    pub(crate) fn update_with<B: KeyedStateBackend, R>(
        &mut self,
        st: &mut KeyedState<B>,
        key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> state_core::Result<R> {
        if let Some(cached) = self.entries.get_mut(key) {
            cached.dirty = true;
            return Ok(f(&mut cached.value));
        }
        self.load(st, key).map(f)
    }

    /// Reads `key`'s value from the backend into the cache, first making
    /// room if the cache is full.
    #[cold]
    fn load<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
        key: &K,
    ) -> state_core::Result<&mut Option<V>> {
        if self.entries.len() >= self.capacity {
            self.evict(st)?;
        }
        st.set_current_key(key)?;
        let value = self.state.value(st)?;
        let cached = self
            .entries
            .entry(key.clone())
            .or_insert(Cached { value, dirty: true });
        Ok(&mut cached.value)
    }

    /// Writes back every changed value, then forgets about half of the
    /// keys, so a key space larger than the cache still hits on the rest.
    fn evict<B: KeyedStateBackend>(&mut self, st: &mut KeyedState<B>) -> state_core::Result<()> {
        self.write_back(st)?;
        let keep = self.capacity / 2;
        let mut kept = 0;
        self.entries.retain(|_, _| {
            kept += 1;
            kept <= keep
        });
        Ok(())
    }

    /// Writes every value changed since the last write-back to the backend
    /// and returns how many. The values stay cached. On an error, values not
    /// yet written stay marked as changed.
    pub(crate) fn write_back<B: KeyedStateBackend>(
        &mut self,
        st: &mut KeyedState<B>,
    ) -> state_core::Result<usize> {
        let mut written = 0;
        for (key, cached) in self.entries.iter_mut().filter(|(_, c)| c.dirty) {
            st.set_current_key(key)?;
            match &cached.value {
                Some(value) => self.state.update(st, value)?,
                None => self.state.clear(st)?,
            }
            cached.dirty = false;
            written += 1;
        }
        Ok(written)
    }

    /// How many keys are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use backend_heap::{HeapBackend, HeapBackendOptions};
    use state_core::typed::ValueStateDescriptor;
    use state_core::{BackendContext, MaxParallelism, OperatorId, SystemClock};

    use super::*;

    fn keyed() -> KeyedState<HeapBackend> {
        let context = BackendContext {
            operator_id: OperatorId("count".into()),
            subtask: 0,
            parallelism: 1,
            max_parallelism: MaxParallelism::new(128).unwrap(),
            clock: Arc::new(SystemClock),
        };
        let backend = HeapBackend::new(&context, HeapBackendOptions::default()).unwrap();
        KeyedState::new(backend, Arc::new(SystemClock))
    }

    fn backend_value(
        st: &mut KeyedState<HeapBackend>,
        state: &ValueState<u64>,
        key: u64,
    ) -> Option<u64> {
        st.set_current_key(&key).unwrap();
        state.value(st).unwrap()
    }

    #[test]
    fn the_backend_sees_a_change_at_the_write_back_and_not_before() {
        let mut st = keyed();
        let state = st
            .value_state(&ValueStateDescriptor::<u64>::new("n"))
            .unwrap();
        st.set_current_key(&7u64).unwrap();
        state.update(&mut st, &40).unwrap();
        let mut cache = ValueCache::<u64, u64>::new(state.clone(), 16);

        let seen = cache
            .update_with(&mut st, &7, |n| {
                *n = Some(n.unwrap_or(0) + 1);
                *n
            })
            .unwrap();
        assert_eq!(seen, Some(41), "the backend's value was read on the miss");
        cache
            .update_with(&mut st, &7, |n| *n = n.map(|n| n + 1))
            .unwrap();
        cache.update_with(&mut st, &8, |n| *n = Some(1)).unwrap();
        assert_eq!(backend_value(&mut st, &state, 7), Some(40));
        assert_eq!(backend_value(&mut st, &state, 8), None);

        assert_eq!(cache.write_back(&mut st).unwrap(), 2);
        assert_eq!(backend_value(&mut st, &state, 7), Some(42));
        assert_eq!(backend_value(&mut st, &state, 8), Some(1));
        assert_eq!(
            cache.write_back(&mut st).unwrap(),
            0,
            "nothing changed since"
        );

        cache.update_with(&mut st, &7, |n| *n = None).unwrap();
        assert_eq!(cache.write_back(&mut st).unwrap(), 1);
        assert_eq!(
            backend_value(&mut st, &state, 7),
            None,
            "None removes the value"
        );
    }

    #[test]
    fn a_full_cache_writes_back_before_it_forgets_keys() {
        let mut st = keyed();
        let state = st
            .value_state(&ValueStateDescriptor::<u64>::new("n"))
            .unwrap();
        let mut cache = ValueCache::<u64, u64>::new(state.clone(), 8);
        for round in 1..=3u64 {
            for key in 0..100u64 {
                cache
                    .update_with(&mut st, &key, |n| *n = Some(n.unwrap_or(0) + key))
                    .unwrap();
                assert!(cache.len() <= 8, "the cache holds at most its capacity");
            }
            cache.write_back(&mut st).unwrap();
            for key in 0..100u64 {
                assert_eq!(
                    backend_value(&mut st, &state, key),
                    Some(round * key),
                    "key {key}"
                );
            }
        }
    }
}
