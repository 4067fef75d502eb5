//! The in-memory tables of one state: a hash map per key group, shared
//! copy-on-write with snapshots.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::Equivalent;
use state_core::backend_support::SmallBytes;
use state_core::{StateLayout, TtlConfig};

/// The hash map used everywhere in the heap backend.
pub(crate) type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A (key, namespace) pair stored as one byte string, inline when short.
#[derive(Clone)]
pub(crate) struct OwnedKey {
    bytes: SmallBytes,
    key_len: usize,
}

impl PartialEq for OwnedKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for OwnedKey {}

impl OwnedKey {
    pub(crate) fn new(key: &[u8], namespace: &[u8]) -> Self {
        let bytes = if namespace.is_empty() {
            SmallBytes::from_slice(key)
        } else {
            let mut joined = Vec::with_capacity(key.len() + namespace.len());
            joined.extend_from_slice(key);
            joined.extend_from_slice(namespace);
            SmallBytes::from_bytes(Bytes::from(joined))
        };
        OwnedKey {
            bytes,
            key_len: key.len(),
        }
    }

    fn parts(&self) -> (&[u8], &[u8]) {
        // key_len <= bytes.len() by construction; the fallback is never taken.
        self.bytes
            .split_at_checked(self.key_len)
            .unwrap_or((&self.bytes, &[]))
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.parts().0
    }

    pub(crate) fn namespace(&self) -> &[u8] {
        self.parts().1
    }
}

fn hash_parts<H: Hasher>(key: &[u8], namespace: &[u8], state: &mut H) {
    state.write_usize(key.len());
    state.write(key);
    state.write(namespace);
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (key, namespace) = self.parts();
        hash_parts(key, namespace, state);
    }
}

/// A borrowed (key, namespace) for lookups without allocating; hashes like
/// the [`OwnedKey`] it equals.
pub(crate) struct Lookup<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.key, self.namespace, state);
    }
}

impl From<&Lookup<'_>> for OwnedKey {
    fn from(l: &Lookup<'_>) -> Self {
        OwnedKey::new(l.key, l.namespace)
    }
}

impl Equivalent<OwnedKey> for Lookup<'_> {
    fn equivalent(&self, owned: &OwnedKey) -> bool {
        owned.parts() == (self.key, self.namespace)
    }
}

/// One key group's entries of a value-layout state.
pub(crate) type ValueMap = FastMap<OwnedKey, SmallBytes>;
/// One key group's entries of a list-layout state.
pub(crate) type ListMap = FastMap<OwnedKey, Vec<Bytes>>;
/// One key group's entries of a map-layout state.
pub(crate) type MapMap = FastMap<OwnedKey, FastMap<Bytes, Bytes>>;

/// All key groups of one state, indexed by offset in the backend's range.
/// Cloning shares every key group's map; writers copy a shared map first
/// (`Arc::make_mut`), so a clone is a snapshot.
#[derive(Clone)]
pub(crate) enum Table {
    Value(Vec<Arc<ValueMap>>),
    List(Vec<Arc<ListMap>>),
    Map(Vec<Arc<MapMap>>),
}

fn empty_maps<T: Default>(key_groups: usize) -> Vec<Arc<T>> {
    (0..key_groups).map(|_| Arc::default()).collect()
}

impl Table {
    pub(crate) fn new(layout: StateLayout, key_groups: usize) -> Self {
        match layout {
            StateLayout::Value => Table::Value(empty_maps(key_groups)),
            StateLayout::List => Table::List(empty_maps(key_groups)),
            StateLayout::Map => Table::Map(empty_maps(key_groups)),
        }
    }

    pub(crate) fn layout(&self) -> StateLayout {
        match self {
            Table::Value(_) => StateLayout::Value,
            Table::List(_) => StateLayout::List,
            Table::Map(_) => StateLayout::Map,
        }
    }

    /// Whether no key group holds an entry.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Table::Value(v) => v.iter().all(|m| m.is_empty()),
            Table::List(v) => v.iter().all(|m| m.is_empty()),
            Table::Map(v) => v.iter().all(|m| m.is_empty()),
        }
    }

    /// Makes room for `additional` more entries in the map of key group
    /// offset `off`, so a restore does not grow it by rehashing.
    pub(crate) fn reserve(&mut self, off: usize, additional: usize) {
        match self {
            Table::Value(v) => {
                if let Some(m) = v.get_mut(off) {
                    Arc::make_mut(m).reserve(additional);
                }
            }
            Table::List(v) => {
                if let Some(m) = v.get_mut(off) {
                    Arc::make_mut(m).reserve(additional);
                }
            }
            Table::Map(v) => {
                if let Some(m) = v.get_mut(off) {
                    Arc::make_mut(m).reserve(additional);
                }
            }
        }
    }

    /// Makes key group offset `to` share the map of offset `from` in
    /// `other`; false when the layouts differ or an offset is out of range.
    pub(crate) fn share_from(&mut self, to: usize, other: &Table, from: usize) -> bool {
        fn share<T>(to: Option<&mut Arc<T>>, from: Option<&Arc<T>>) -> bool {
            match (to, from) {
                (Some(to), Some(from)) => {
                    *to = Arc::clone(from);
                    true
                }
                _ => false,
            }
        }
        match (self, other) {
            (Table::Value(a), Table::Value(b)) => share(a.get_mut(to), b.get(from)),
            (Table::List(a), Table::List(b)) => share(a.get_mut(to), b.get(from)),
            (Table::Map(a), Table::Map(b)) => share(a.get_mut(to), b.get(from)),
            _ => false,
        }
    }

    /// Drops the entries a full snapshot at `now_millis` drops as expired
    /// (list elements and map entries one by one; keys left empty go),
    /// copying only the key-group maps that hold one.
    pub(crate) fn drop_expired(&mut self, cfg: &TtlConfig, now_millis: u64) {
        let expired = |v: &[u8]| cfg.is_expired(v, now_millis);
        match self {
            Table::Value(maps) => {
                for m in maps.iter_mut().filter(|m| m.values().any(|v| expired(v))) {
                    Arc::make_mut(m).retain(|_, v| !expired(v));
                }
            }
            Table::List(maps) => {
                for m in maps
                    .iter_mut()
                    .filter(|m| m.values().flatten().any(|e| expired(e)))
                {
                    Arc::make_mut(m).retain(|_, list| {
                        list.retain(|e| !expired(e));
                        !list.is_empty()
                    });
                }
            }
            Table::Map(maps) => {
                let any = |m: &MapMap| {
                    m.values()
                        .any(|entries| entries.values().any(|v| expired(v)))
                };
                for m in maps.iter_mut().filter(|m| any(m)) {
                    Arc::make_mut(m).retain(|_, entries| {
                        entries.retain(|_, v| !expired(v));
                        !entries.is_empty()
                    });
                }
            }
        }
    }

    /// Number of (key, namespace) entries in key-group offset `off`.
    pub(crate) fn len_at(&self, off: usize) -> usize {
        match self {
            Table::Value(v) => v.get(off).map_or(0, |m| m.len()),
            Table::List(v) => v.get(off).map_or(0, |m| m.len()),
            Table::Map(v) => v.get(off).map_or(0, |m| m.len()),
        }
    }

    /// Empties key-group offset `off` (a delta's reset).
    pub(crate) fn clear_at(&mut self, off: usize) {
        match self {
            Table::Value(v) => v.get_mut(off).map(|m| *m = Arc::default()),
            Table::List(v) => v.get_mut(off).map(|m| *m = Arc::default()),
            Table::Map(v) => v.get_mut(off).map(|m| *m = Arc::default()),
        };
    }

    /// Removes (key, namespace) from key-group offset `off` (a delta's removal).
    pub(crate) fn remove_at(&mut self, off: usize, key: &Lookup<'_>) {
        match self {
            Table::Value(v) => v
                .get_mut(off)
                .map(|m| Arc::make_mut(m).remove(key).is_some()),
            Table::List(v) => v
                .get_mut(off)
                .map(|m| Arc::make_mut(m).remove(key).is_some()),
            Table::Map(v) => v
                .get_mut(off)
                .map(|m| Arc::make_mut(m).remove(key).is_some()),
        };
    }

    /// Number of (key, namespace) entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Table::Value(v) => v.iter().map(|m| m.len()).sum(),
            Table::List(v) => v.iter().map(|m| m.len()).sum(),
            Table::Map(v) => v.iter().map(|m| m.len()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn lookup_hashes_and_compares_like_owned_key() {
        let s = foldhash::fast::RandomState::default();
        for (k, n) in [
            (&b"ab"[..], &b"c"[..]),
            (b"a", b"bc"),
            (b"", b""),
            (b"abc", b""),
        ] {
            let owned = OwnedKey::new(k, n);
            let lookup = Lookup {
                key: k,
                namespace: n,
            };
            assert_eq!(s.hash_one(&owned), s.hash_one(&lookup));
            assert!(lookup.equivalent(&owned));
            assert_eq!((owned.key(), owned.namespace()), (k, n));
        }
        let owned = OwnedKey::new(b"ab", b"c");
        assert!(
            !Lookup {
                key: b"a",
                namespace: b"bc"
            }
            .equivalent(&owned)
        );
    }
}
