//! [`MapState`]: a map from user key to value per key and namespace.

use std::marker::PhantomData;
use std::ops::ControlFlow;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{Read, StateMeta, rewrap};
use super::value::handle_common;
use super::{KeyedState, StateHandle};
use crate::Result;
use crate::backend::KeyedStateBackend;
use crate::ids::StateId;

/// A map from `K` to `V` per key and namespace. Get it from
/// [`KeyedState::map_state`]. Iteration order is unspecified.
///
/// With a TTL every entry carries its own timestamp (in its stored value):
/// entries expire one by one.
pub struct MapState<K, V> {
    meta: StateMeta,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        MapState {
            meta: self.meta.clone(),
            _t: PhantomData,
        }
    }
}
handle_common!(MapState<K, V>);

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub(super) fn new(meta: StateMeta) -> Self {
        MapState {
            meta,
            _t: PhantomData,
        }
    }

    /// Reads the stored value of `user_key` with TTL applied; returns the
    /// payload of a visible entry to `f`.
    fn lookup<B: KeyedStateBackend, R>(
        &self,
        st: &mut KeyedState<B>,
        user_key: &K,
        f: impl FnOnce(&StateMeta, &[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        let meta = &self.meta;
        let (now, backend, key, uk) = st.access_user_key(meta, user_key)?;
        let Some(stored) = backend.map_get(meta.id, &key, uk)? else {
            return Ok(None);
        };
        match meta.check(&stored, now)? {
            Read::Expired => {
                backend.map_remove(meta.id, &key, uk)?;
                Ok(None)
            }
            Read::Visible { payload, refresh } => {
                let out = f(meta, payload)?;
                if refresh {
                    let fresh = rewrap(now, payload);
                    backend.map_put(meta.id, &key, uk, fresh)?;
                }
                Ok(Some(out))
            }
        }
    }

    /// The value of `user_key` for the current key and namespace.
    pub fn get<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        user_key: &K,
    ) -> Result<Option<V>> {
        self.lookup(st, user_key, |meta, payload| {
            meta.decode("map value", payload)
        })
    }

    /// Whether `user_key` has a (visible) value.
    pub fn contains<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        user_key: &K,
    ) -> Result<bool> {
        Ok(self.lookup(st, user_key, |_, _| Ok(()))?.is_some())
    }

    /// Sets `user_key` to `value`.
    pub fn put<B: KeyedStateBackend>(
        &self,
        st: &mut KeyedState<B>,
        user_key: &K,
        value: &V,
    ) -> Result<()> {
        let meta = &self.meta;
        let (now, backend, key, uk) = st.access_user_key(meta, user_key)?;
        let bytes = meta.encode(now, value)?;
        backend.map_put(meta.id, &key, uk, bytes)
    }

    /// Removes `user_key`.
    pub fn remove<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>, user_key: &K) -> Result<()> {
        let meta = &self.meta;
        let (_, backend, key, uk) = st.access_user_key(meta, user_key)?;
        backend.map_remove(meta.id, &key, uk)
    }

    /// Every visible (user key, value) entry.
    pub fn entries<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<(K, V)>> {
        self.scan(st, |meta, uk, payload| {
            Ok((
                meta.decode("map key", uk)?,
                meta.decode("map value", payload)?,
            ))
        })
    }

    /// Every visible user key.
    pub fn keys<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<K>> {
        self.scan(st, |meta, uk, _| meta.decode("map key", uk))
    }

    /// Every visible value.
    pub fn values<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<V>> {
        self.scan(st, |meta, _, payload| meta.decode("map value", payload))
    }

    /// Whether the map of the current key and namespace has no visible entry.
    pub fn is_empty<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<bool> {
        if self.meta.ttl.is_some() {
            return Ok(self.scan(st, |_, _, _| Ok(()))?.is_empty());
        }
        let (_, backend, key) = st.access(&self.meta)?;
        let mut empty = true;
        backend.map_scan(self.meta.id, &key, &mut |_, _| {
            empty = false;
            ControlFlow::Break(())
        })?;
        Ok(empty)
    }

    /// Removes the whole map of the current key and namespace.
    pub fn clear<B: KeyedStateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        let (_, backend, key) = st.access(&self.meta)?;
        backend.clear(self.meta.id, &key)
    }

    /// Visits every entry with TTL applied, collecting `f` of the visible
    /// ones; then removes expired entries and rewrites refreshed ones.
    fn scan<B: KeyedStateBackend, R>(
        &self,
        st: &mut KeyedState<B>,
        mut f: impl FnMut(&StateMeta, &[u8], &[u8]) -> Result<R>,
    ) -> Result<Vec<R>> {
        let meta = &self.meta;
        let (now, backend, key) = st.access(meta)?;
        let mut out = Vec::new();
        let mut expired: Vec<Vec<u8>> = Vec::new();
        let mut refreshed: Vec<(Vec<u8>, Bytes)> = Vec::new();
        let mut failure = None;
        backend.map_scan(meta.id, &key, &mut |uk, stored| {
            let step = match meta.check(stored, now) {
                Ok(Read::Expired) => {
                    expired.push(uk.to_vec());
                    Ok(())
                }
                Ok(Read::Visible { payload, refresh }) => f(meta, uk, payload).map(|r| {
                    out.push(r);
                    if refresh {
                        refreshed.push((uk.to_vec(), rewrap(now, payload)));
                    }
                }),
                Err(e) => Err(e),
            };
            match step {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        for uk in expired {
            backend.map_remove(meta.id, &key, &uk)?;
        }
        for (uk, fresh) in refreshed {
            backend.map_put(meta.id, &key, &uk, fresh)?;
        }
        Ok(out)
    }
}
