//! [`KeyedStateBackend`] for [`RocksBackend`]: byte-level reads and writes
//! on the state's column family (see [`crate::key_codec`] for the layout).

use std::ops::ControlFlow;

use bytes::Bytes;
use rocksdb::{ReadOptions, WriteBatch};
use state_core::{
    EntryKey, KeyGroupRange, KeyVisitor, KeyedStateBackend, MapVisitor, MaxParallelism, Result,
    StateDescriptor, StateError, StateId, StateLayout, ValueUpdate,
};

use crate::backend::RocksBackend;
use crate::db::{State, cf_of};
use crate::key_codec::{self, decode_key, encode_key, put_bytes};
use crate::rocks_error;

impl KeyedStateBackend for RocksBackend {
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.max_parallelism
    }

    fn register_state(&mut self, descriptor: &StateDescriptor) -> Result<StateId> {
        let (id, new) = Self::register_in(&mut self.states, descriptor)?;
        if new {
            let created = match self.states.get(id.index()) {
                Some(s) => {
                    let (opts, name) = (self.state_cf_options(s), s.cf_name.clone());
                    match self.db_mut() {
                        Ok(db) if db.cf_handle(&name).is_none() => db
                            .create_cf(&name, opts)
                            .map_err(|e| rocks_error(&self.instance_dir, e)),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                None => Err(StateError::invalid(format!(
                    "state {:?} is lost",
                    descriptor.name
                ))),
            };
            if let Err(e) = created {
                self.states.unregister_last();
                return Err(e);
            }
        }
        Ok(id)
    }

    fn states(&self) -> Vec<StateDescriptor> {
        self.states.descriptors()
    }

    fn get(&self, state: StateId, key: &EntryKey<'_>) -> Result<Option<Bytes>> {
        let (db, cf) = self.target(state, key, StateLayout::Value)?;
        let read = |k: &[u8]| {
            db.get_pinned_cf(cf, k)
                .map(|v| v.map(|v| Bytes::copy_from_slice(&v)))
                .map_err(|e| self.err(e))
        };
        let mut cache = self.borrow_cache()?;
        if !cache.enabled() {
            return self.with_key(key, &[], read);
        }
        let value = self.with_key(key, &[], |k| {
            if let Some(cached) = cache.get(state.0, k) {
                return Ok(cached);
            }
            let value = read(k)?;
            cache.insert_clean(state.0, k, value.clone());
            Ok::<_, state_core::StateError>(value)
        })?;
        self.maintain_cache(&mut cache)?;
        Ok(value)
    }

    /// Into the value cache when the entry is cached, or while a native
    /// checkpoint is being taken; straight into RocksDB otherwise.
    fn put(&mut self, state: StateId, key: &EntryKey<'_>, value: Bytes) -> Result<()> {
        let (db, cf) = self.target(state, key, StateLayout::Value)?;
        let mut cache = self.borrow_cache()?;
        let cached = cache.enabled()
            && self.with_key(key, &[], |k| {
                cache.write_blind(state.0, k, Some(value.clone()), self.gate.is_closed())
            });
        if cached {
            return self.maintain_cache(&mut cache);
        }
        self.gate.wait();
        self.with_key(key, &[], |k| {
            db.put_cf_opt(cf, k, &value, &self.write_options)
        })
        .map_err(|e| self.err(e))
    }

    /// Through the value cache: one cache lookup, RocksDB read only on a miss.
    fn update_value(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        f: &mut ValueUpdate<'_>,
    ) -> Result<()> {
        let (db, cf) = self.target(state, key, StateLayout::Value)?;
        let mut cache = self.borrow_cache()?;
        if !cache.enabled() {
            drop(cache);
            return state_core::backend_support::update_value_by_get_and_put(self, state, key, f);
        }
        self.with_key(key, &[], |k| {
            if cache.modify(state.0, k, f)? {
                return Ok(());
            }
            let stored = db
                .get_pinned_cf(cf, k)
                .map_err(|e| self.err(e))?
                .map(|v| Bytes::copy_from_slice(&v));
            cache.insert_clean(state.0, k, stored);
            if cache.modify(state.0, k, f)? {
                Ok(())
            } else {
                Err(StateError::invalid(
                    "value cache lost an entry it just cached",
                ))
            }
        })?;
        self.maintain_cache(&mut cache)
    }

    fn get_list(&self, state: StateId, key: &EntryKey<'_>) -> Result<Vec<Bytes>> {
        let (db, cf) = self.target(state, key, StateLayout::List)?;
        let v = self
            .with_key(key, &[], |k| db.get_pinned_cf(cf, k))
            .map_err(|e| self.err(e))?;
        let Some(v) = v else {
            return Ok(Vec::new());
        };
        let elements = key_codec::decode_list(&v).ok_or_else(|| {
            StateError::corrupted(
                format!("list state in {}", self.instance_dir.display()),
                format!(
                    "value of key group {} does not decode as a list",
                    key.key_group
                ),
            )
        })?;
        Ok(elements.into_iter().map(Bytes::copy_from_slice).collect())
    }

    fn append(&mut self, state: StateId, key: &EntryKey<'_>, element: Bytes) -> Result<()> {
        let mut operand = std::mem::take(&mut self.operand);
        operand.clear();
        put_bytes(&mut operand, &element);
        let result = self
            .target_for_write(state, key, StateLayout::List)
            .and_then(|(db, cf)| {
                self.with_key(key, &[], |k| {
                    db.merge_cf_opt(cf, k, &operand, &self.write_options)
                })
                .map_err(|e| self.err(e))
            });
        self.operand = operand;
        result
    }

    fn put_list(&mut self, state: StateId, key: &EntryKey<'_>, elements: Vec<Bytes>) -> Result<()> {
        let (db, cf) = self.target_for_write(state, key, StateLayout::List)?;
        let result = if elements.is_empty() {
            self.with_key(key, &[], |k| db.delete_cf_opt(cf, k, &self.write_options))
        } else {
            let value = key_codec::encode_list(elements.iter().map(|e| &e[..]));
            self.with_key(key, &[], |k| {
                db.put_cf_opt(cf, k, &value, &self.write_options)
            })
        };
        result.map_err(|e| self.err(e))
    }

    fn map_get(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
    ) -> Result<Option<Bytes>> {
        let (db, cf) = self.target(state, key, StateLayout::Map)?;
        let v = self.with_key(key, user_key, |k| db.get_pinned_cf(cf, k));
        Ok(v.map_err(|e| self.err(e))?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn map_put(
        &mut self,
        state: StateId,
        key: &EntryKey<'_>,
        user_key: &[u8],
        value: Bytes,
    ) -> Result<()> {
        let (db, cf) = self.target_for_write(state, key, StateLayout::Map)?;
        self.with_key(key, user_key, |k| {
            db.put_cf_opt(cf, k, &value, &self.write_options)
        })
        .map_err(|e| self.err(e))
    }

    fn map_remove(&mut self, state: StateId, key: &EntryKey<'_>, user_key: &[u8]) -> Result<()> {
        let (db, cf) = self.target_for_write(state, key, StateLayout::Map)?;
        self.with_key(key, user_key, |k| {
            db.delete_cf_opt(cf, k, &self.write_options)
        })
        .map_err(|e| self.err(e))
    }

    fn map_scan(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        visit: &mut MapVisitor<'_>,
    ) -> Result<()> {
        let (db, cf) = self.target(state, key, StateLayout::Map)?;
        let mut prefix = Vec::new();
        encode_key(&mut prefix, key.key_group, key.key, key.namespace);
        let mut ro = ReadOptions::default();
        if let Some(upper) = key_codec::prefix_successor(&prefix) {
            ro.set_iterate_upper_bound(upper);
        }
        let mut it = db.raw_iterator_cf_opt(cf, ro);
        it.seek(&prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let Some(user_key) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if visit(user_key, v).is_break() {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))
    }

    fn clear(&mut self, state: StateId, key: &EntryKey<'_>) -> Result<()> {
        self.check_key(key)?;
        let layout = self
            .states
            .get(state.index())
            .map(State::layout)
            .ok_or_else(|| {
                StateError::invalid(format!("state id {} is not registered", state.0))
            })?;
        let (db, cf) = self.target(state, key, layout)?;
        if layout == StateLayout::Value {
            let mut cache = self.borrow_cache()?;
            if cache.enabled()
                && self.with_key(key, &[], |k| {
                    cache.write_blind(state.0, k, None, self.gate.is_closed())
                })
            {
                return self.maintain_cache(&mut cache);
            }
        }
        self.gate.wait();
        if layout != StateLayout::Map {
            return self
                .with_key(key, &[], |k| db.delete_cf_opt(cf, k, &self.write_options))
                .map_err(|e| self.err(e));
        }
        let mut prefix = Vec::new();
        encode_key(&mut prefix, key.key_group, key.key, key.namespace);
        let mut ro = ReadOptions::default();
        if let Some(upper) = key_codec::prefix_successor(&prefix) {
            ro.set_iterate_upper_bound(upper);
        }
        let mut batch = WriteBatch::default();
        let mut it = db.raw_iterator_cf_opt(cf, ro);
        it.seek(&prefix);
        while let Some(k) = it.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            batch.delete_cf(cf, k);
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        drop(it);
        db.write_opt(batch, &self.write_options)
            .map_err(|e| self.err(e))
    }

    fn keys(&self, state: StateId, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let s = self.states.get(state.index()).ok_or_else(|| {
            StateError::invalid(format!("state id {} is not registered", state.0))
        })?;
        if s.layout() == StateLayout::Value {
            self.write_back_cache()?;
        }
        let db = self.db()?;
        let mut it = db.raw_iterator_cf(cf_of(db, s)?);
        it.seek_to_first();
        let mut last_prefix: Vec<u8> = Vec::new();
        while let Some(raw) = it.key() {
            let d = decode_key(raw).ok_or_else(|| {
                StateError::corrupted(
                    format!(
                        "state {:?} in {}",
                        s.descriptor.name,
                        self.instance_dir.display()
                    ),
                    "a RocksDB key does not decode",
                )
            })?;
            let prefix = raw.get(..d.prefix_len).unwrap_or(raw);
            if prefix != last_prefix.as_slice() {
                last_prefix.clear();
                last_prefix.extend_from_slice(prefix);
                let entry = EntryKey {
                    key_group: d.key_group,
                    key: d.key,
                    namespace: d.namespace,
                };
                if let ControlFlow::Break(()) = visit(&entry) {
                    return Ok(());
                }
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))
    }
}
