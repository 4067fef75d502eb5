//! Value-layout states: [`ValueState`], [`ReducingState`], [`AggregatingState`].

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{Read, StateMeta, rewrap};
use super::descriptor::{AggregateFunction, ReduceFn};
use super::{KeyedState, StateHandle};
use crate::backend::KeyedStateBackend;
use crate::ids::StateId;
use crate::{Result, StateError};

/// Reads the value of the current key and namespace, applying TTL: an
/// expired invisible value is removed, a refresh-on-read rewrites the stamp.
fn read_value<B: KeyedStateBackend, T: DeserializeOwned>(
    meta: &StateMeta,
    st: &mut KeyedState<B>,
) -> Result<Option<T>> {
    let (now, backend, key) = st.access(meta)?;
    let Some(stored) = backend.get(meta.id, &key)? else {
        return Ok(None);
    };
    match meta.check(&stored, now)? {
        Read::Expired => {
            backend.clear(meta.id, &key)?;
            Ok(None)
        }
        Read::Visible { payload, refresh } => {
            let value = meta.decode("value", payload)?;
            if refresh {
                let fresh = rewrap(now, payload);
                backend.put(meta.id, &key, fresh)?;
            }
            Ok(Some(value))
        }
    }
}

/// Reads the current value for an update that rewrites it anyway and
/// writes what `next` makes of it, finding the entry once where the backend
/// can ([`KeyedStateBackend::update_value`]). Returns the written value.
fn modify_value<B, T, F>(meta: &StateMeta, st: &mut KeyedState<B>, next: F) -> Result<T>
where
    B: KeyedStateBackend,
    T: Serialize + DeserializeOwned,
    F: FnOnce(Option<T>) -> T,
{
    let (now, backend, key) = st.access(meta)?;
    let mut next = Some(next);
    let mut written = None;
    backend.update_value(meta.id, &key, &mut |stored| {
        let current = match stored {
            Some(stored) => match meta.check_for_update(stored, now)? {
                Some(payload) => Some(meta.decode("value", payload)?),
                None => None,
            },
            None => None,
        };
        let next = next
            .take()
            .ok_or_else(|| StateError::invalid("update_value called its function twice"))?;
        let value = next(current);
        let bytes = meta.encode_small(now, &value)?;
        written = Some(value);
        Ok(Some(bytes))
    })?;
    written.ok_or_else(|| StateError::invalid("update_value did not call its function"))
}

fn write_value<B: KeyedStateBackend, T: Serialize + ?Sized>(
    meta: &StateMeta,
    st: &mut KeyedState<B>,
    value: &T,
) -> Result<()> {
    let (now, backend, key) = st.access(meta)?;
    let bytes = meta.encode(now, value)?;
    backend.put(meta.id, &key, bytes)
}

fn clear<B: KeyedStateBackend>(meta: &StateMeta, st: &mut KeyedState<B>) -> Result<()> {
    let (_, backend, key) = st.access(meta)?;
    backend.clear(meta.id, &key)
}

macro_rules! handle_common {
    ($ty:ident < $($p:ident),* >) => {
        impl<$($p),*> StateHandle for $ty<$($p),*> {
            fn state_id(&self) -> StateId {
                self.meta.id
            }
            fn state_name(&self) -> &str {
                &self.meta.name
            }
        }

        impl<$($p),*> ::std::fmt::Debug for $ty<$($p),*> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.meta.name)
                    .field("id", &self.meta.id)
                    .field("ttl", &self.meta.ttl)
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(super) use handle_common;

/// One `T` per key and namespace. Get it from [`KeyedState::value_state`].
pub struct ValueState<T> {
    meta: StateMeta,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            meta: self.meta.clone(),
            _t: PhantomData,
        }
    }
}
handle_common!(ValueState<T>);

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    pub(super) fn new(meta: StateMeta) -> Self {
        ValueState {
            meta,
            _t: PhantomData,
        }
    }

    /// The value of the current key and namespace, if any.
    pub fn value<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<T>> {
        read_value(&self.meta, st)
    }

    /// Sets the value of the current key and namespace.
    pub fn update<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, value: &T) -> Result<()> {
        write_value(&self.meta, st, value)
    }

    /// Sets the value of the current key and namespace to what `f` makes
    /// of the current one (`None` if absent or expired) and returns it: a
    /// `value` then `update` that finds the entry once where the backend
    /// can. With TTL, the read does not refresh the timestamp; the write does.
    pub fn update_with<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        f: impl FnOnce(Option<T>) -> T,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
    {
        modify_value(&self.meta, st, f)
    }

    /// Removes the value of the current key and namespace.
    pub fn clear<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        clear(&self.meta, st)
    }
}

/// One `T` per key and namespace folded from added values with a reduce
/// function. Get it from [`KeyedState::reducing_state`].
pub struct ReducingState<T> {
    meta: StateMeta,
    reduce: ReduceFn<T>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            meta: self.meta.clone(),
            reduce: Arc::clone(&self.reduce),
        }
    }
}
handle_common!(ReducingState<T>);

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    pub(super) fn new(meta: StateMeta, reduce: ReduceFn<T>) -> Self {
        ReducingState { meta, reduce }
    }

    /// The reduced value of the current key and namespace, if anything was added.
    pub fn get<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<T>> {
        read_value(&self.meta, st)
    }

    /// Folds `value` into the current value (or makes it the value).
    pub fn add<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, value: T) -> Result<()> {
        let reduce = &self.reduce;
        modify_value(&self.meta, st, |current: Option<T>| match current {
            Some(current) => reduce(&current, &value),
            None => value,
        })
        .map(drop)
    }

    /// Removes the value of the current key and namespace.
    pub fn clear<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        clear(&self.meta, st)
    }
}

/// One accumulator per key and namespace, folded from added values with an
/// [`AggregateFunction`]. Get it from [`KeyedState::aggregating_state`].
pub struct AggregatingState<A> {
    meta: StateMeta,
    function: Arc<A>,
}

impl<A> Clone for AggregatingState<A> {
    fn clone(&self) -> Self {
        AggregatingState {
            meta: self.meta.clone(),
            function: Arc::clone(&self.function),
        }
    }
}
handle_common!(AggregatingState<A>);

impl<A: AggregateFunction> AggregatingState<A> {
    pub(super) fn new(meta: StateMeta, function: Arc<A>) -> Self {
        AggregatingState { meta, function }
    }

    /// The result for the current key and namespace, if anything was added.
    pub fn get<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<A::Out>> {
        let acc: Option<A::Acc> = read_value(&self.meta, st)?;
        Ok(acc.map(|acc| self.function.get_result(&acc)))
    }

    /// Adds `value` to the accumulator of the current key and namespace.
    pub fn add<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, value: A::In) -> Result<()> {
        let function = &self.function;
        modify_value(&self.meta, st, |acc: Option<A::Acc>| {
            let acc = acc.unwrap_or_else(|| function.create_accumulator());
            function.add(value, acc)
        })
        .map(drop)
    }

    /// Removes the accumulator of the current key and namespace.
    pub fn clear<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        clear(&self.meta, st)
    }
}
