//! [`SmallBytes`]: a byte string kept inline when short, else shared.
//!
//! Backends keep millions of short keys and values in hash tables (a keyed
//! count's key `key-0001234` is 12 bytes serialized, its value a varint).
//! Stored as [`Bytes`], each is a separate allocation: a lookup compares the
//! key through a pointer and an update drops the old value through another,
//! two cache misses per record, plus an allocation. `SmallBytes` keeps up
//! to [`SmallBytes::INLINE`] bytes inside itself (so inside the table slot)
//! and longer strings as shared `Bytes`, which snapshots and readers can
//! hold without copying.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

/// A byte string, inline up to [`SmallBytes::INLINE`] bytes.
#[derive(Clone)]
pub enum SmallBytes {
    /// Short bytes, stored in place.
    Inline {
        /// How many bytes of `buf` are used.
        len: u8,
        /// The bytes (the rest is zero).
        buf: [u8; SmallBytes::INLINE],
    },
    /// Longer bytes, shared.
    Shared(Bytes),
}

impl SmallBytes {
    /// The longest byte string kept inline (the enum stays 32 bytes).
    pub const INLINE: usize = 22;

    /// A copy of `b`.
    pub fn from_slice(b: &[u8]) -> Self {
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= Self::INLINE => {
                let mut buf = [0u8; Self::INLINE];
                if let Some(dst) = buf.get_mut(..b.len()) {
                    dst.copy_from_slice(b);
                }
                SmallBytes::Inline { len, buf }
            }
            _ => SmallBytes::Shared(Bytes::copy_from_slice(b)),
        }
    }

    /// `b`, copied inline when short, else kept shared.
    pub fn from_bytes(b: Bytes) -> Self {
        if b.len() <= Self::INLINE {
            Self::from_slice(&b)
        } else {
            SmallBytes::Shared(b)
        }
    }

    /// The bytes as `Bytes` (a copy when inline, a shared handle otherwise).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            SmallBytes::Inline { .. } => Bytes::copy_from_slice(self),
            SmallBytes::Shared(b) => b.clone(),
        }
    }

    /// The bytes as `Bytes`, without a copy when shared.
    pub fn into_bytes(self) -> Bytes {
        match self {
            SmallBytes::Inline { .. } => Bytes::copy_from_slice(&self),
            SmallBytes::Shared(b) => b,
        }
    }

    /// Bytes allocated outside the value itself (0 when inline).
    pub fn heap_bytes(&self) -> usize {
        match self {
            SmallBytes::Inline { .. } => 0,
            SmallBytes::Shared(b) => b.len(),
        }
    }
}

impl std::ops::Deref for SmallBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            SmallBytes::Shared(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for SmallBytes {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SmallBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SmallBytes {}

impl PartialOrd for SmallBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SmallBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

/// Hashes like the `[u8]` it holds, so maps keyed by it can be looked up
/// with a `&[u8]`.
impl Hash for SmallBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::fmt::Debug for SmallBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SmallBytes").field(&&**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_bytes_are_inline_and_long_ones_shared() {
        for len in [
            0usize,
            1,
            12,
            SmallBytes::INLINE,
            SmallBytes::INLINE + 1,
            100,
        ] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for s in [
                SmallBytes::from_slice(&data),
                SmallBytes::from_bytes(Bytes::from(data.clone())),
            ] {
                assert_eq!(&*s, &data[..]);
                assert_eq!(s.to_bytes(), data);
                assert_eq!(s.clone().into_bytes(), data);
                assert_eq!(
                    matches!(s, SmallBytes::Inline { .. }),
                    len <= SmallBytes::INLINE
                );
                assert_eq!(
                    s.heap_bytes(),
                    if len <= SmallBytes::INLINE { 0 } else { len }
                );
            }
        }
        assert_eq!(std::mem::size_of::<SmallBytes>(), 32);
        let (a, b) = (
            SmallBytes::from_slice(b"ab"),
            SmallBytes::from_slice(&[b'b'; 40]),
        );
        assert!(a < b);
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        assert_eq!(s.hash_one(&a), s.hash_one(&b"ab"[..]));
    }
}
