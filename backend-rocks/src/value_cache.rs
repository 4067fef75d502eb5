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
//! its byte budget, dirty entries are written back, entries not read or
//! written since the last sweep are dropped, and if that is not enough
//! arbitrary clean entries go until a quarter of the budget is free.
//!
//! Flink's RocksDB backend has no such cache (every `ValueState.value()` is
//! a RocksDB get); ForSt in Flink 2 caches files, not values.

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
}

fn entry_bytes(key: &SmallBytes, value: Option<&SmallBytes>) -> usize {
    key.heap_bytes() + value.map_or(0, SmallBytes::heap_bytes) + ENTRY_OVERHEAD
}

impl ValueCache {
    /// A cache of at most `budget` bytes (0: disabled) writing back once
    /// `dirty_limit` entries are dirty.
    pub(crate) fn new(budget: usize, dirty_limit: usize) -> Self {
        ValueCache {
            map: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            dirty_keys: Vec::new(),
            lookup: Vec::new(),
            budget,
            bytes: 0,
            dirty_limit: dirty_limit.max(1),
        }
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

    /// Records a write if the entry is cached and returns true; false (and
    /// nothing recorded) if it is not: a blind write of an uncached key
    /// goes straight to RocksDB, so bulk loads do not churn the cache.
    pub(crate) fn write_if_cached(
        &mut self,
        state: u32,
        rocks_key: &[u8],
        value: Option<Bytes>,
    ) -> bool {
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
    pub(crate) fn wants_write_back(&self) -> bool {
        self.dirty_keys.len() >= self.dirty_limit || self.bytes > self.budget
    }

    /// Whether the cache is over its budget (write back, then [`Self::evict`]).
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget
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

    /// Drops clean entries until a quarter of the budget is free: first
    /// those not referenced since the last sweep, then any. Dirty entries
    /// stay (write them back first).
    pub(crate) fn evict(&mut self) {
        let target = self.budget - self.budget / 4;
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
    }

    /// Forgets every entry, dirty ones included (the state was replaced).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.dirty_keys.clear();
        self.bytes = 0;
    }
}
