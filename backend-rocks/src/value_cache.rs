//! A bounded write-back cache of value-layout entries (value, reducing and
//! aggregating states) in front of RocksDB.
//!
//! A keyed aggregation reads its key's value and writes it back for every
//! record. On RocksDB each read is a memtable skip-list search, bloom
//! filter probes and a block lookup, and each write a memtable insert; the
//! read alone costs more than the rest of the record's processing. The cache
//! answers repeated reads of a key from a hash map and absorbs repeated
//! writes: a write to a cached entry marks it dirty (a write to a key not
//! cached goes straight to RocksDB, so bulk loads bypass the cache), and dirty entries reach RocksDB in
//! one write batch when their number passes a bound, when the cache evicts,
//! and in the synchronous part of every snapshot (before the native
//! checkpoint), so a checkpoint holds every write made before it. A read
//! that misses is cached too, including "absent", so a key's first record
//! costs one RocksDB read and its later ones none while it stays cached.
//!
//! Eviction is a bulk second-chance sweep: when the cache holds more than
//! its byte budget, or the caches of all backends of the factory together
//! hold more than their shared [`ValuePool`], dirty entries are written back,
//! entries not read or written since the last sweep are dropped, and if that
//! is not enough arbitrary clean entries go until a quarter of the cache's
//! bytes (or of its budget) is free.
//!
//! Flink's RocksDB backend has no such cache (every `ValueState.value()` is
//! a RocksDB get); ForSt in Flink 2 caches files, not values.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashMap;
use state_core::ValueUpdate;
use state_core::backend_support::SmallBytes;

use bytes::Bytes;

/// Bytes counted per entry besides what its key and value allocate outside
/// it: the table slot (key and value inline up to 22 bytes each, flags) at
/// hashbrown's load factor.
const ENTRY_OVERHEAD: usize = 96;

/// One cached entry.
struct Slot {
    /// The value, or `None` for a key known to be absent (read as absent,
    /// or cleared and not yet written back).
    value: Option<SmallBytes>,
    /// Written since it was last written back.
    dirty: bool,
    /// Read or written since the last eviction sweep.
    referenced: bool,
}

/// A cache holding less than this never evicts for the shared pool (only
/// for its own budget), so caches of a few entries do not sweep on every
/// write while a large one brings the pool back under its limit. The pool
/// can so be exceeded by at most this much per backend.
const MIN_POOL_SHARE: usize = 64 << 10;

/// The bytes the value caches of one factory's backends share: each cache
/// adds what it holds, and a cache evicts when the sum passes the limit.
#[derive(Debug)]
pub(crate) struct ValuePool {
    used: AtomicUsize,
    limit: usize,
}

impl ValuePool {
    /// A pool of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        ValuePool {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes all caches hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }
}

/// A dirty entry to write back: (state index, RocksDB key, value or delete).
pub(crate) type WriteBack<'a> = (u32, &'a [u8], Option<&'a [u8]>);

/// The cache; keys are the state's index (4 bytes, little endian) followed
/// by the entry's RocksDB key.
pub(crate) struct ValueCache {
    map: HashMap<SmallBytes, Slot, foldhash::fast::FixedState>,
    /// The keys of the dirty entries, each once.
    dirty_keys: Vec<SmallBytes>,
    /// Reused buffer for building lookup keys.
    lookup: Vec<u8>,
    budget: usize,
    bytes: usize,
    dirty_limit: usize,
    pool: Arc<ValuePool>,
    /// The part of `pool.used` that is this cache's.
    published: usize,
}

fn entry_bytes(key: &SmallBytes, value: Option<&SmallBytes>) -> usize {
    key.heap_bytes() + value.map_or(0, SmallBytes::heap_bytes) + ENTRY_OVERHEAD
}

impl ValueCache {
    /// A cache of at most the pool's bytes (a pool of 0 disables it),
    /// writing back once `dirty_limit` entries are dirty and evicting when
    /// the caches sharing `pool` hold more than it.
    pub(crate) fn new(pool: Arc<ValuePool>, dirty_limit: usize) -> Self {
        ValueCache {
            map: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            dirty_keys: Vec::new(),
            lookup: Vec::new(),
            budget: pool.limit,
            bytes: 0,
            dirty_limit: dirty_limit.max(1),
            pool,
            published: 0,
        }
    }

    /// Adds what this cache's bytes changed by since the last call to the
    /// shared pool (one atomic operation, only when they changed).
    fn publish(&mut self) {
        if self.bytes > self.published {
            self.pool
                .used
                .fetch_add(self.bytes - self.published, Ordering::Relaxed);
        } else if self.bytes < self.published {
            self.pool
                .used
                .fetch_sub(self.published - self.bytes, Ordering::Relaxed);
        }
        self.published = self.bytes;
    }

    pub(crate) fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Bytes the cached entries account for.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn key(&mut self, state: u32, rocks_key: &[u8]) {
        self.lookup.clear();
        self.lookup.extend_from_slice(&state.to_le_bytes());
        self.lookup.extend_from_slice(rocks_key);
    }

    /// The cached value of the entry: `Some(None)` if it is known absent,
    /// `None` if it is not cached.
    pub(crate) fn get(&mut self, state: u32, rocks_key: &[u8]) -> Option<Option<Bytes>> {
        self.key(state, rocks_key);
        let slot = self.map.get_mut(self.lookup.as_slice())?;
        slot.referenced = true;
        Some(slot.value.as_ref().map(SmallBytes::to_bytes))
    }

    /// Replaces a cached entry's value with what `f` makes of the current
    /// one (`None`: absent; returning `None` deletes), marking it dirty, and
    /// returns true; returns false, calling nothing, if it is not cached.
    /// If `f` fails the entry is unchanged.
    pub(crate) fn modify(
        &mut self,
        state: u32,
        rocks_key: &[u8],
        f: &mut ValueUpdate<'_>,
    ) -> state_core::Result<bool> {
        self.key(state, rocks_key);
        let Some((key, slot)) = self.map.get_key_value_mut(self.lookup.as_slice()) else {
            return Ok(false);
        };
        let next = f(slot.value.as_deref())?;
        let removed = entry_bytes(key, slot.value.as_ref());
        let added = entry_bytes(key, next.as_ref());
        self.bytes = (self.bytes + added).saturating_sub(removed);
        if !slot.dirty {
            self.dirty_keys.push(key.clone());
        }
        slot.value = next;
        slot.dirty = true;
        slot.referenced = true;
        Ok(true)
    }

    /// Records a blind write (`None`: delete) and returns true if the entry
    /// is cached or `cache_absent` says to cache it anyway (while RocksDB
    /// takes no writes, a native checkpoint being taken); otherwise returns
    /// false and records nothing: a blind write of an uncached key goes
    /// straight to RocksDB, so bulk loads do not churn the cache.
    pub(crate) fn write_blind(
        &mut self,
        state: u32,
        rocks_key: &[u8],
        value: Option<Bytes>,
        cache_absent: bool,
    ) -> bool {
        if cache_absent {
            self.insert_clean(state, rocks_key, None);
        }
        let mut value = Some(value);
        // The function cannot fail, so the result is Ok.
        matches!(
            self.modify(state, rocks_key, &mut |_| Ok(value
                .take()
                .flatten()
                .map(SmallBytes::from_bytes))),
            Ok(true)
        )
    }

    /// Caches what RocksDB holds for the entry (after a miss; an entry
    /// already cached is newer and stays).
    pub(crate) fn insert_clean(&mut self, state: u32, rocks_key: &[u8], value: Option<Bytes>) {
        self.key(state, rocks_key);
        if self.map.contains_key(self.lookup.as_slice()) {
            return;
        }
        let key = SmallBytes::from_slice(&self.lookup);
        let value = value.map(SmallBytes::from_bytes);
        self.bytes += entry_bytes(&key, value.as_ref());
        let slot = Slot {
            value,
            dirty: false,
            referenced: true,
        };
        self.map.insert(key, slot);
    }

    /// Whether the dirty entries should be written back now.
    pub(crate) fn wants_write_back(&mut self) -> bool {
        self.dirty_keys.len() >= self.dirty_limit || self.over_budget()
    }

    /// Whether the cache, or the caches sharing its pool together, are over
    /// their budget (write back, then [`Self::evict`]).
    pub(crate) fn over_budget(&mut self) -> bool {
        if self.bytes != self.published {
            self.publish();
        }
        self.bytes > self.budget || (self.bytes >= MIN_POOL_SHARE && self.pool.over())
    }

    /// Passes every dirty entry to `write` (state index, RocksDB key, value
    /// or `None` to delete), in key order so RocksDB inserts them into its
    /// memtable next to each other, and, if it succeeds, marks them clean.
    pub(crate) fn write_back<E>(
        &mut self,
        write: impl FnOnce(&mut dyn Iterator<Item = WriteBack<'_>>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.dirty_keys.is_empty() {
            return Ok(());
        }
        self.dirty_keys.sort_unstable();
        // One lookup per entry: mark it clean while collecting its value,
        // and mark it dirty again if the write fails.
        let mut entries = Vec::with_capacity(self.dirty_keys.len());
        for k in &self.dirty_keys {
            if let Some(slot) = self.map.get_mut(k.as_ref()) {
                slot.dirty = false;
                entries.push((k, slot.value.clone()));
            }
        }
        let mut dirty = entries.iter().filter_map(|(k, value)| {
            let (state, rocks_key) = k.split_first_chunk::<4>()?;
            Some((u32::from_le_bytes(*state), rocks_key, value.as_deref()))
        });
        if let Err(e) = write(&mut dirty) {
            drop(entries);
            for k in &self.dirty_keys {
                if let Some(slot) = self.map.get_mut(k.as_ref()) {
                    slot.dirty = true;
                }
            }
            return Err(e);
        }
        drop(entries);
        self.dirty_keys.clear();
        Ok(())
    }

    /// Drops clean entries until a quarter of the budget is free (of this
    /// cache's bytes when the shared pool is what is over): first those not
    /// referenced since the last sweep, then any. Dirty entries stay (write
    /// them back first).
    pub(crate) fn evict(&mut self) {
        let target = if self.bytes > self.budget {
            self.budget - self.budget / 4
        } else {
            self.bytes - self.bytes / 4
        };
        let mut bytes = self.bytes;
        // Second chance: a referenced entry survives this sweep with its
        // mark cleared; an unreferenced one goes while over the target.
        self.map.retain(|k, slot| {
            let referenced = std::mem::take(&mut slot.referenced);
            if slot.dirty || referenced || bytes <= target {
                return true;
            }
            bytes = bytes.saturating_sub(entry_bytes(k, slot.value.as_ref()));
            false
        });
        if bytes > target {
            self.map.retain(|k, slot| {
                if slot.dirty || bytes <= target {
                    return true;
                }
                bytes = bytes.saturating_sub(entry_bytes(k, slot.value.as_ref()));
                false
            });
        }
        self.bytes = bytes;
        self.publish();
    }

    /// Forgets every entry, dirty ones included (the state was replaced).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.dirty_keys.clear();
        self.bytes = 0;
        self.publish();
    }
}

impl Drop for ValueCache {
    /// A dropped backend's entries leave the shared pool.
    fn drop(&mut self) {
        self.bytes = 0;
        self.publish();
    }
}
