//! [`ListState`]: a list of elements per key and namespace.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{Read, StateMeta, rewrap};
use super::value::handle_common;
use super::{KeyedState, StateHandle};
use crate::Result;
use crate::backend::KeyedStateBackend;
use crate::ids::StateId;

/// A list of `T` per key and namespace. Get it from [`KeyedState::list_state`].
///
/// With a TTL every element carries its own timestamp: elements expire one by one.
pub struct ListState<T> {
    meta: StateMeta,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            meta: self.meta.clone(),
            _t: PhantomData,
        }
    }
}
handle_common!(ListState<T>);

impl<T: Serialize + DeserializeOwned> ListState<T> {
    pub(super) fn new(meta: StateMeta) -> Self {
        ListState {
            meta,
            _t: PhantomData,
        }
    }

    /// The elements of the current key and namespace, oldest first (empty if none).
    pub fn get<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<T>> {
        let meta = &self.meta;
        let (now, backend, key) = st.access(meta)?;
        let stored = backend.get_list(meta.id, &key)?;
        if meta.ttl.is_none() {
            return stored
                .iter()
                .map(|e| meta.decode("list element", e))
                .collect();
        }
        let mut out = Vec::with_capacity(stored.len());
        let mut kept = Vec::with_capacity(stored.len());
        let mut changed = false;
        for element in &stored {
            match meta.check(element, now)? {
                Read::Expired => changed = true,
                Read::Visible { payload, refresh } => {
                    out.push(meta.decode("list element", payload)?);
                    if refresh {
                        changed = true;
                        kept.push(rewrap(now, payload));
                    } else {
                        kept.push(element.clone());
                    }
                }
            }
        }
        if changed {
            backend.put_list(meta.id, &key, kept)?;
        }
        Ok(out)
    }

    /// Appends one element without reading the list.
    pub fn add<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, value: &T) -> Result<()> {
        let (now, backend, key) = st.access(&self.meta)?;
        let bytes = self.meta.encode(now, value)?;
        backend.append(self.meta.id, &key, bytes)
    }

    /// Appends every element of `values`, in order, without reading the list.
    pub fn add_all<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        values: &[T],
    ) -> Result<()> {
        let (now, backend, key) = st.access(&self.meta)?;
        for value in values {
            let bytes = self.meta.encode(now, value)?;
            backend.append(self.meta.id, &key, bytes)?;
        }
        Ok(())
    }

    /// Replaces the list with `values` (an empty slice clears it).
    pub fn update<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, values: &[T]) -> Result<()> {
        let (now, backend, key) = st.access(&self.meta)?;
        let encoded = values
            .iter()
            .map(|v| self.meta.encode(now, v))
            .collect::<Result<Vec<Bytes>>>()?;
        backend.put_list(self.meta.id, &key, encoded)
    }

    /// Removes the whole list of the current key and namespace.
    pub fn clear<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        let (_, backend, key) = st.access(&self.meta)?;
        backend.clear(self.meta.id, &key)
    }
}
