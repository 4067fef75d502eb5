//! Key groups: the unit of state redistribution, assigned as Flink assigns them.
//!
//! Every key hashes to one of `max_parallelism` key groups
//! (`kg = murmur3_32(key bytes) % max_parallelism`). Subtask `i` of `p` owns the
//! contiguous range `[ceil(i * maxP / p), ((i + 1) * maxP - 1) / p]`, and key
//! group `kg` belongs to subtask `kg * p / maxP`. Because a snapshot is organised
//! by key group, a checkpoint taken at parallelism `p` restores at any `q <= maxP`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Result, StateError};

/// The largest max parallelism (number of key groups) supported, as in Flink.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The default max parallelism when a job sets none and runs at parallelism 1..=85.
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;

/// One key group, `0 .. max_parallelism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyGroup(pub u16);

impl KeyGroup {
    /// The key group as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The key group as a number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The number of key groups of a job; fixed for the life of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaxParallelism(u32);

impl MaxParallelism {
    /// A max parallelism in `1..=32768`.
    pub fn new(n: u32) -> Result<Self> {
        if (1..=UPPER_BOUND_MAX_PARALLELISM).contains(&n) {
            Ok(MaxParallelism(n))
        } else {
            Err(StateError::invalid(format!(
                "max parallelism {n} must be between 1 and {UPPER_BOUND_MAX_PARALLELISM}"
            )))
        }
    }

    /// Flink's default for an operator of parallelism `p`:
    /// `p + p/2` rounded up to a power of two, at least 128 and at most 32768.
    pub fn default_for(parallelism: u32) -> Self {
        let p = parallelism.max(1);
        let wanted = p.saturating_add(p / 2).next_power_of_two();
        MaxParallelism(wanted.clamp(
            DEFAULT_LOWER_BOUND_MAX_PARALLELISM,
            UPPER_BOUND_MAX_PARALLELISM,
        ))
    }

    /// The number of key groups.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The key group of a key, given the key's serialized bytes.
    #[inline]
    pub fn key_group_of(self, key: &[u8]) -> KeyGroup {
        let hash = murmur3_32(key, 0);
        // The same number as `%` (the hash is unsigned) without a division
        // for the power-of-two max parallelisms every default is.
        let kg = if self.0.is_power_of_two() {
            hash & (self.0 - 1)
        } else {
            hash % self.0
        };
        // kg < max parallelism <= 2^15, so it fits in u16.
        KeyGroup(kg as u16)
    }

    /// The key-group range owned by subtask `index` of `parallelism`.
    pub fn range_for_subtask(self, parallelism: u32, index: u32) -> Result<KeyGroupRange> {
        if parallelism == 0 || parallelism > self.0 {
            return Err(StateError::invalid(format!(
                "parallelism {parallelism} must be between 1 and the max parallelism {}",
                self.0
            )));
        }
        if index >= parallelism {
            return Err(StateError::invalid(format!(
                "subtask index {index} is out of range for parallelism {parallelism}"
            )));
        }
        let max = u64::from(self.0);
        let (p, i) = (u64::from(parallelism), u64::from(index));
        let start = (i * max).div_ceil(p);
        let end = ((i + 1) * max - 1) / p;
        // Both are < max parallelism <= 2^15.
        Ok(KeyGroupRange::new(
            KeyGroup(start as u16),
            KeyGroup(end as u16),
        ))
    }

    /// The subtask (of `parallelism`) that owns `kg`.
    pub fn subtask_for_key_group(self, parallelism: u32, kg: KeyGroup) -> u32 {
        // kg < maxP, so the result is < parallelism.
        (u64::from(kg.get()) * u64::from(parallelism) / u64::from(self.0)) as u32
    }
}

impl fmt::Display for MaxParallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A contiguous, inclusive range of key groups; may be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    start: u16,
    /// Exclusive end, so that the empty range is representable.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The range `start..=end` (empty when `end < start`).
    pub fn new(start: KeyGroup, end: KeyGroup) -> Self {
        KeyGroupRange {
            start: start.0,
            end_exclusive: (u32::from(end.0) + 1).max(u32::from(start.0)),
        }
    }

    /// The range holding every key group of `max`.
    pub fn all(max: MaxParallelism) -> Self {
        KeyGroupRange {
            start: 0,
            end_exclusive: max.get(),
        }
    }

    /// The empty range.
    pub fn empty() -> Self {
        KeyGroupRange {
            start: 0,
            end_exclusive: 0,
        }
    }

    /// The first key group.
    pub fn start(&self) -> KeyGroup {
        KeyGroup(self.start)
    }

    /// The last key group, or `None` when empty.
    pub fn end(&self) -> Option<KeyGroup> {
        if self.is_empty() {
            None
        } else {
            Some(KeyGroup((self.end_exclusive - 1) as u16))
        }
    }

    /// How many key groups the range holds.
    pub fn len(&self) -> usize {
        self.end_exclusive.saturating_sub(u32::from(self.start)) as usize
    }

    /// Whether the range is one [`KeyGroupRange::new`] can make and lies
    /// inside `0..max`: what a range read from a checkpoint must be.
    pub fn is_valid_for(&self, max: u32) -> bool {
        self.end_exclusive >= u32::from(self.start) && self.end_exclusive <= max
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.end_exclusive <= u32::from(self.start)
    }

    /// Whether `kg` is in the range.
    pub fn contains(&self, kg: KeyGroup) -> bool {
        u32::from(kg.0) < self.end_exclusive && kg.0 >= self.start
    }

    /// The position of `kg` in the range (`kg - start`), if it is in it.
    pub fn offset_of(&self, kg: KeyGroup) -> Option<usize> {
        self.contains(kg).then(|| usize::from(kg.0 - self.start))
    }

    /// The key groups in both ranges.
    pub fn intersect(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if end_exclusive <= u32::from(start) {
            KeyGroupRange::empty()
        } else {
            KeyGroupRange {
                start,
                end_exclusive,
            }
        }
    }

    /// Every key group in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> + use<> {
        (u32::from(self.start)..self.end_exclusive).map(|k| KeyGroup(k as u16))
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(f, "[{}..={}]", self.start, end.0),
            None => f.write_str("[]"),
        }
    }
}

/// MurmurHash3 x86 32-bit of `data`. Stable across platforms and releases:
/// key-group assignment, and so every checkpoint, depends on it.
#[inline]
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_group_is_the_hash_modulo_the_max_parallelism_at_any_max_parallelism() {
        for n in [1, 2, 3, 100, 128, 1000, 4096, UPPER_BOUND_MAX_PARALLELISM] {
            let max = MaxParallelism::new(n).unwrap();
            for i in 0..2_000u32 {
                let key = i.to_le_bytes();
                assert_eq!(
                    max.key_group_of(&key).get(),
                    murmur3_32(&key, 0) % n,
                    "max parallelism {n}, key {i}"
                );
            }
        }
    }

    #[test]
    fn murmur3_matches_reference_vectors() {
        // Reference values of MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }

    #[test]
    fn ranges_partition_all_key_groups_like_flink() {
        let max = MaxParallelism::new(128).unwrap();
        for p in 1..=128 {
            let mut next = 0u32;
            for i in 0..p {
                let r = max.range_for_subtask(p, i).unwrap();
                assert_eq!(r.start().get(), next, "p={p} i={i}");
                for kg in r.iter() {
                    assert_eq!(max.subtask_for_key_group(p, kg), i);
                }
                next = u32::from(r.start().0) + r.len() as u32;
            }
            assert_eq!(next, 128);
        }
        // Flink: maxP 128, p 3 -> [0..=42], [43..=85], [86..=127].
        assert_eq!(
            max.range_for_subtask(3, 1).unwrap().to_string(),
            "[43..=85]"
        );
    }

    #[test]
    fn default_max_parallelism_follows_flink() {
        assert_eq!(MaxParallelism::default_for(1).get(), 128);
        assert_eq!(MaxParallelism::default_for(100).get(), 256);
        assert_eq!(MaxParallelism::default_for(30000).get(), 32768);
    }

    #[test]
    fn bad_parallelism_is_an_error() {
        let max = MaxParallelism::new(4).unwrap();
        assert!(max.range_for_subtask(5, 0).is_err());
        assert!(max.range_for_subtask(2, 2).is_err());
        assert!(MaxParallelism::new(0).is_err());
        assert!(MaxParallelism::new(40000).is_err());
    }

    #[test]
    fn intersect_and_contains() {
        let a = KeyGroupRange::new(KeyGroup(0), KeyGroup(9));
        let b = KeyGroupRange::new(KeyGroup(5), KeyGroup(20));
        let i = a.intersect(&b);
        assert_eq!((i.start().0, i.len()), (5, 5));
        assert!(
            a.intersect(&KeyGroupRange::new(KeyGroup(10), KeyGroup(11)))
                .is_empty()
        );
        assert!(!KeyGroupRange::empty().contains(KeyGroup(0)));
    }
}
