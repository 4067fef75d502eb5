//! Typed keyed state over serde, written once for every backend.
//!
//! [`KeyedState`] wraps a byte-level [`KeyedStateBackend`] with the current
//! key and namespace, as Flink's keyed-state backend does for an operator.
//! States are created from descriptors ([`ValueStateDescriptor`] and friends)
//! and used through cheap, cloneable handles that take the [`KeyedState`] on
//! each call:
//!
//! ```
//! # use std::sync::Arc;
//! # use state_core::typed::{KeyedState, ValueStateDescriptor};
//! # fn demo<B: state_core::KeyedStateBackend>(backend: B) -> state_core::Result<()> {
//! let mut st = KeyedState::new(backend, Arc::new(state_core::SystemClock));
//! let count = st.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! st.set_current_key("user-42")?;
//! let n = count.value(&mut st)?.unwrap_or(0);
//! count.update(&mut st, &(n + 1))?;
//! # Ok(()) }
//! ```
//!
//! # Encoding (what every backend stores)
//! - Keys, namespaces, values, list elements, map user keys and map values
//!   are encoded with `postcard` (deterministic: equal values give equal
//!   bytes). The default namespace is the empty byte string, which is also
//!   what `()` encodes to.
//! - The key group of a key is `max_parallelism.key_group_of(encoded key)`.
//! - A state with a TTL stores each value — each value of a value, reducing
//!   or aggregating state, **each list element separately**, **each map value**
//!   (map user keys are never wrapped) — as the 8-byte little-endian
//!   last-access timestamp followed by the postcard payload, exactly
//!   [`crate::backend_support::wrap_ttl`]. So a backend applies
//!   [`crate::TtlConfig::is_expired`] to every stored value / element / map
//!   value of a TTL state to drop expired entries in a full snapshot.
//!
//! # TTL semantics
//! Time is the [`KeyedState`]'s clock. Writes always stamp the current time.
//! With [`crate::TtlUpdateType::OnReadAndWrite`] a read rewrites the stamp of
//! what it returns. With [`crate::TtlVisibility::NeverReturnExpired`] an
//! expired entry reads as absent and that read removes it from the backend;
//! with [`crate::TtlVisibility::ReturnExpiredIfNotCleanedUp`] it is returned
//! until a cleanup (a full snapshot) drops it. Reducing and aggregating states
//! treat an expired, invisible current value as absent when adding.
//!
//! # Restores
//! A backend's [`crate::StateId`]s are only valid until it is restored: obtain
//! handles (and [`crate::TimerService`]) after restoring.

mod codec;
mod descriptor;
mod key_bytes;
mod list;
mod map;
mod migrate;
mod value;

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{EntryKey, KeyedStateBackend, StateDescriptor};
use crate::clock::Clock;
use crate::ids::StateId;
use crate::key_group::KeyGroup;
use crate::timer_names::TIMER_STATE_PREFIX;
use crate::{Result, StateError};

pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MAP_TYPE_SEPARATOR,
    MapStateDescriptor, ReduceFn, ReducingStateDescriptor, ValueStateDescriptor,
};
pub use key_bytes::with_key_bytes;
pub use list::ListState;
pub use map::MapState;
pub use value::{AggregatingState, ReducingState, ValueState};

use codec::StateMeta;
use descriptor::Migration;

/// A handle to a registered state, for operations over all its keys.
pub trait StateHandle {
    /// The backend's id of the state.
    fn state_id(&self) -> StateId;
    /// The state's name.
    fn state_name(&self) -> &str;
}

/// Keyed state of one subtask: a backend plus the current key and namespace.
#[derive(Debug)]
pub struct KeyedState<B: KeyedStateBackend> {
    backend: B,
    clock: Arc<dyn Clock>,
    /// The encoded current key (valid when `key_group` is `Some`).
    key: Vec<u8>,
    key_group: Option<KeyGroup>,
    /// The encoded current namespace; empty is the default namespace.
    namespace: Vec<u8>,
    /// A reused buffer for encoding map user keys.
    scratch: Vec<u8>,
}

impl<B: KeyedStateBackend> KeyedState<B> {
    /// Typed state over `backend`, with time (for TTL) from `clock`. Use the
    /// same clock as the backend's [`crate::BackendContext`].
    pub fn new(backend: B, clock: Arc<dyn Clock>) -> Self {
        KeyedState {
            backend,
            clock,
            key: Vec::new(),
            key_group: None,
            namespace: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (to snapshot or restore it).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back.
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// The clock used for TTL.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sets the current key to `key` (encoded with postcard).
    pub fn set_current_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<()> {
        let mut buf = std::mem::take(&mut self.key);
        buf.clear();
        match postcard::to_extend(key, buf) {
            Ok(buf) => {
                self.key = buf;
                self.adopt_key()
            }
            Err(e) => {
                self.key_group = None;
                Err(StateError::invalid(format!(
                    "the current key cannot be serialized: {e}"
                )))
            }
        }
    }

    /// Sets the current key to already encoded bytes (for example a
    /// [`crate::Timer`]'s key).
    pub fn set_current_key_bytes(&mut self, key: &[u8]) -> Result<()> {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.adopt_key()
    }

    fn adopt_key(&mut self) -> Result<()> {
        let kg = self.backend.max_parallelism().key_group_of(&self.key);
        let range = self.backend.key_group_range();
        if range.contains(kg) {
            self.key_group = Some(kg);
            Ok(())
        } else {
            self.key_group = None;
            Err(StateError::invalid(format!(
                "key in key group {kg} is outside this backend's key groups {range}"
            )))
        }
    }

    /// The encoded current key, if one is set.
    pub fn current_key_bytes(&self) -> Option<&[u8]> {
        self.key_group.map(|_| self.key.as_slice())
    }

    /// The current key's key group, if a key is set.
    pub fn current_key_group(&self) -> Option<KeyGroup> {
        self.key_group
    }

    /// Sets the current namespace (for example a window), encoded with postcard.
    pub fn set_namespace<N: Serialize + ?Sized>(&mut self, namespace: &N) -> Result<()> {
        let mut buf = std::mem::take(&mut self.namespace);
        buf.clear();
        match postcard::to_extend(namespace, buf) {
            Ok(buf) => {
                self.namespace = buf;
                Ok(())
            }
            Err(e) => Err(StateError::invalid(format!(
                "the namespace cannot be serialized: {e}"
            ))),
        }
    }

    /// Sets the current namespace to already encoded bytes.
    pub fn set_namespace_bytes(&mut self, namespace: &[u8]) {
        self.namespace.clear();
        self.namespace.extend_from_slice(namespace);
    }

    /// Goes back to the default (empty) namespace.
    pub fn reset_namespace(&mut self) {
        self.namespace.clear();
    }

    /// The encoded current namespace (empty for the default namespace).
    pub fn namespace_bytes(&self) -> &[u8] {
        &self.namespace
    }

    /// The id of the registered state called `name`, if any.
    pub fn state_id(&self, name: &str) -> Option<StateId> {
        let states = self.backend.states();
        let index = states.iter().position(|d| d.name == name)?;
        u32::try_from(index).ok().map(StateId)
    }

    /// Registers a value state (or finds it, if already registered). A
    /// state restored with another recorded type name is refused naming
    /// both, unless `desc` migrates from it: then every value is rewritten
    /// first ([`ValueStateDescriptor::with_migration`]).
    pub fn value_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<T>> {
        let meta =
            self.register_migrating(desc.to_backend_descriptor(), desc.migration.as_ref())?;
        Ok(ValueState::new(meta))
    }

    /// Registers a list state (or finds it, if already registered); type
    /// names and migrations as in [`KeyedState::value_state`], element by element.
    pub fn list_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListState<T>> {
        let meta =
            self.register_migrating(desc.to_backend_descriptor(), desc.migration.as_ref())?;
        Ok(ListState::new(meta))
    }

    /// Registers `desc`, first rewriting the state's entries with
    /// `migration` when the restored state recorded its source type.
    fn register_migrating(
        &mut self,
        mut desc: StateDescriptor,
        migration: Option<&Migration>,
    ) -> Result<StateMeta> {
        let recorded = self
            .backend
            .states()
            .into_iter()
            .find(|d| d.name == desc.name)
            .and_then(|d| d.type_name);
        let migration = migration
            .filter(|m| recorded.as_deref() == Some(m.from.as_str()) && desc.type_name != recorded);
        if let Some(m) = migration {
            desc.migrate_from = Some(m.from.clone());
        }
        let meta = self.register(desc)?;
        if let Some(m) = migration {
            let rewritten = migrate::rewrite(&mut self.backend, &meta, m.convert.as_ref())?;
            tracing::info!(state = %meta.name, from = %m.from, entries = rewritten, "migrated keyed state");
        }
        Ok(meta)
    }

    /// Registers a map state (or finds it, if already registered).
    pub fn map_state<K, V>(&mut self, desc: &MapStateDescriptor<K, V>) -> Result<MapState<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(MapState::new(self.register(desc.to_backend_descriptor())?))
    }

    /// Registers a reducing state (or finds it, if already registered).
    pub fn reducing_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<T>> {
        let meta = self.register(desc.to_backend_descriptor())?;
        Ok(ReducingState::new(meta, Arc::clone(&desc.reduce)))
    }

    /// Registers an aggregating state (or finds it, if already registered).
    pub fn aggregating_state<A: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<A>,
    ) -> Result<AggregatingState<A>> {
        let meta = self.register(desc.to_backend_descriptor())?;
        Ok(AggregatingState::new(meta, Arc::clone(&desc.function)))
    }

    fn register(&mut self, desc: StateDescriptor) -> Result<StateMeta> {
        if desc.name.starts_with(TIMER_STATE_PREFIX) {
            return Err(StateError::invalid(format!(
                "state name '{}' is reserved: names starting with '{TIMER_STATE_PREFIX}' hold timers",
                desc.name
            )));
        }
        let id = self.backend.register_state(&desc)?;
        tracing::debug!(state = %desc.name, kind = ?desc.kind, ttl = ?desc.ttl, "registered keyed state");
        Ok(StateMeta {
            id,
            name: Arc::from(desc.name),
            ttl: desc.ttl,
        })
    }

    /// The keys that hold state in `state` under `namespace`, decoded
    /// (Flink's `getKeys(state, namespace)`). Expired entries that were not
    /// cleaned up yet still count.
    pub fn keys<K: DeserializeOwned, N: Serialize + ?Sized>(
        &self,
        state: &impl StateHandle,
        namespace: &N,
    ) -> Result<Vec<K>> {
        let ns = postcard::to_stdvec(namespace).map_err(|e| {
            StateError::invalid(format!(
                "state '{}': namespace cannot be serialized: {e}",
                state.state_name()
            ))
        })?;
        self.keys_bytes(state.state_id(), &ns)?
            .into_iter()
            .map(|(_, key)| {
                postcard::from_bytes(&key).map_err(|e| {
                    StateError::corrupted(
                        format!("state '{}'", state.state_name()),
                        format!("key of {} bytes does not decode: {e}", key.len()),
                    )
                })
            })
            .collect()
    }

    /// The (key group, encoded key) pairs that hold state in `state` under
    /// the encoded `namespace`, in unspecified order.
    pub fn keys_bytes(&self, state: StateId, namespace: &[u8]) -> Result<Vec<(KeyGroup, Vec<u8>)>> {
        let mut out = Vec::new();
        self.backend.keys(state, &mut |e: &EntryKey<'_>| {
            if e.namespace == namespace {
                out.push((e.key_group, e.key.to_vec()));
            }
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The current time if `meta` has a TTL, and the backend with the entry
    /// address of the current key and namespace.
    fn access(&mut self, meta: &StateMeta) -> Result<(Option<u64>, &mut B, EntryKey<'_>)> {
        let now = meta.now(self.clock.as_ref());
        let Some(key_group) = self.key_group else {
            return Err(no_current_key(meta));
        };
        Ok((
            now,
            &mut self.backend,
            EntryKey {
                key_group,
                key: &self.key,
                namespace: &self.namespace,
            },
        ))
    }

    /// Like [`KeyedState::access`], also encoding a map `user_key` into a
    /// reused buffer (no allocation per call once it has grown).
    fn access_user_key<U: Serialize + ?Sized>(
        &mut self,
        meta: &StateMeta,
        user_key: &U,
    ) -> Result<(Option<u64>, &mut B, EntryKey<'_>, &[u8])> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        self.scratch = meta.encode_plain_into("map key", user_key, buf)?;
        let now = meta.now(self.clock.as_ref());
        let Some(key_group) = self.key_group else {
            return Err(no_current_key(meta));
        };
        Ok((
            now,
            &mut self.backend,
            EntryKey {
                key_group,
                key: &self.key,
                namespace: &self.namespace,
            },
            &self.scratch,
        ))
    }
}

fn no_current_key(meta: &StateMeta) -> StateError {
    StateError::invalid(format!(
        "state '{}' accessed with no current key set (call set_current_key first)",
        meta.name
    ))
}
