//! The reference workloads' deterministic generator, shared by the criterion
//! benches and the `cairn-bench` harness: keys `key-%07d`, incompressible
//! values, the order in which benches visit keys, the key of each record of
//! the keyed-count job and the keys each update round touches. SplitMix64
//! drives every choice, so every backend and its baseline see the same
//! operations in the same order.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use state_core::{
    BackendContext, EntryKey, KeyedStateBackend, MaxParallelism, OperatorId, StateDescriptor,
    StateId, StateKind, SystemClock,
};

/// How many accesses a bench cycles through (a power of two).
pub const ORDER_LEN: usize = 1 << 20;

/// The keys, values and access order of a state-operation bench:
/// `CAIRN_BENCH_KEYS` keys (default 1,000,000), 64 distinct values of
/// `CAIRN_BENCH_VALUE_SIZE` bytes (default 100), max parallelism 128.
#[derive(Debug)]
pub struct Workload {
    /// The keys, `key-0000000`….
    pub keys: Vec<Vec<u8>>,
    /// Values to write, cycled.
    pub values: Vec<Bytes>,
    /// The order in which keys are visited.
    pub order: Vec<u64>,
    /// The job's number of key groups.
    pub max: MaxParallelism,
}

impl Workload {
    /// The workload the environment asks for.
    pub fn from_env() -> Self {
        let n: u64 = env_or("CAIRN_BENCH_KEYS", 1_000_000);
        let size: usize = env_or("CAIRN_BENCH_VALUE_SIZE", 100);
        Workload {
            keys: (0..n).map(key).collect(),
            values: (0..64).map(|i| Bytes::from(value(i, size))).collect(),
            order: access_order(ORDER_LEN, n, 0x5eed),
            max: MaxParallelism::default_for(1),
        }
    }

    /// The size of every value.
    pub fn value_size(&self) -> usize {
        self.values.first().map_or(0, Bytes::len)
    }

    /// The address of key `i` in the default namespace.
    pub fn entry(&self, i: u64) -> EntryKey<'_> {
        let key = self.keys.get(i as usize).map_or(&[][..], Vec::as_slice);
        EntryKey {
            key_group: self.max.key_group_of(key),
            key,
            namespace: &[],
        }
    }

    /// The context of the one subtask the benches run.
    pub fn context(&self) -> BackendContext {
        BackendContext {
            operator_id: OperatorId("bench".into()),
            subtask: 0,
            parallelism: 1,
            max_parallelism: self.max,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The states every state-operation bench registers.
#[derive(Debug, Clone, Copy)]
pub struct States {
    /// A value state.
    pub value: StateId,
    /// A list state.
    pub list: StateId,
    /// A map state.
    pub map: StateId,
}

impl States {
    /// Registers the value, list and map states in `backend`.
    pub fn register<B: KeyedStateBackend>(backend: &mut B) -> state_core::Result<Self> {
        Ok(States {
            value: backend.register_state(&StateDescriptor::new("value", StateKind::Value))?,
            list: backend.register_state(&StateDescriptor::new("list", StateKind::List))?,
            map: backend.register_state(&StateDescriptor::new("map", StateKind::Map))?,
        })
    }
}

/// The environment variable `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The reference workloads' key for index `i`: `key-0000042`.
pub fn key(i: u64) -> Vec<u8> {
    let (buf, len) = key_text(i);
    buf.get(..len).unwrap_or_default().to_vec()
}

/// SplitMix64 (Steele, Lea and Flood): the deterministic generator of all
/// bench choices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `size` incompressible bytes derived from `seed`.
pub fn value(seed: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    value_into(seed, size, &mut out);
    out
}

/// `size` incompressible bytes derived from `seed` (the bytes of
/// [`value`]), written into `out` (cleared first).
pub fn value_into(seed: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(size + 8);
    let mut s = seed;
    while out.len() < size {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(size);
}

/// The key index of record `i` of the keyed-count job over `keys` keys:
/// `splitmix64(i) mod keys`.
pub fn record_key(i: u64, keys: u64) -> u64 {
    splitmix64(i) % keys.max(1)
}

/// Longest key text: `key-` and the 20 digits of `u64::MAX`.
pub const KEY_CAP: usize = 24;

/// The text of key `index` (`key-0000042`, the bytes of [`key`]) in a stack
/// buffer, returning the buffer and the length used. No allocation: this
/// runs per record.
pub fn key_text(index: u64) -> ([u8; KEY_CAP], usize) {
    // Digits of `index`, at least 7 (zero-padded), two at a time from a
    // table and back to front: the same bytes as `format!("key-{index:07}")`
    // in a few dozen instructions instead of a division per digit.
    const PAIRS: &[u8; 200] = b"\
        0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [b'0'; KEY_CAP];
    // "key-" + up to 20 digits fits KEY_CAP; the digits end at `end`.
    let digits = if index < 10_000_000 {
        7
    } else {
        index.ilog10() as usize + 1
    };
    let end = 4 + digits;
    let mut pos = end;
    let mut n = index;
    while n >= 10 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        pos -= 2;
        if let (Some(dst), Some(src)) = (buf.get_mut(pos..pos + 2), PAIRS.get(pair..pair + 2)) {
            dst.copy_from_slice(src);
        }
    }
    if n > 0 {
        pos -= 1;
        if let Some(d) = buf.get_mut(pos) {
            *d = b'0' + n as u8;
        }
    }
    if let Some(prefix) = buf.get_mut(..4) {
        prefix.copy_from_slice(b"key-");
    }
    (buf, end)
}

/// The key of the keyed-count job: key index `k`, serialized exactly as the
/// string `key-%07d` (the state holds the same bytes as for a `String`
/// key), without building a `String` per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyName(pub u64);

impl Serialize for KeyName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (buf, len) = key_text(self.0);
        let text = buf.get(..len).unwrap_or_default();
        if serializer.is_human_readable() {
            serializer.serialize_str(std::str::from_utf8(text).unwrap_or("key-"))
        } else {
            // A compact format (postcard) writes a string and a byte string
            // alike (length, then the bytes): skip the UTF-8 check, which
            // costs more than the digits themselves on this per-record path.
            serializer.serialize_bytes(text)
        }
    }
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key like key-0000042")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                v.strip_prefix("key-")
                    .and_then(|digits| digits.parse().ok())
                    .map(KeyName)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a key like key-0000042")))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The seed of the value of key `index` after update round `round`
/// (0 = the initial load).
pub fn value_seed(seed: u64, index: u64, round: u32) -> u64 {
    splitmix64(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (u64::from(round) << 56))
}

/// The `n`-th key index updated in round `round`: a fixed pseudo-random
/// choice in `0..keys`; a key may be chosen more than once.
pub fn updated_key(seed: u64, round: u32, n: u64, keys: u64) -> u64 {
    splitmix64(seed.rotate_left(17) ^ (u64::from(round) << 48) ^ n) % keys.max(1)
}

/// The per-key counts of the first `records` records over `keys` keys: what
/// a fault-free keyed count ends with.
pub fn expected_counts(records: u64, keys: u64) -> Vec<u64> {
    let mut counts = vec![0u64; usize::try_from(keys).unwrap_or(0)];
    for i in 0..records {
        let k = record_key(i, keys);
        if let Some(c) = usize::try_from(k).ok().and_then(|k| counts.get_mut(k)) {
            *c += 1;
        }
    }
    counts
}

/// `n` pseudo-random indexes in `0..keys`, the order in which benches visit keys.
pub fn access_order(n: usize, keys: u64, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| splitmix64(seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d)) % keys.max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic() {
        assert_eq!(key(42), b"key-0000042".to_vec());
        assert_eq!(value(7, 100), value(7, 100));
        assert_ne!(value(7, 100), value(8, 100));
        assert_eq!(value(1, 13).len(), 13);
        let order = access_order(1000, 10, 3);
        assert!(order.iter().all(|&k| k < 10));
        assert_eq!(order, access_order(1000, 10, 3));
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0: its first output is splitmix64(0).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn key_names_serialize_like_strings() {
        let (buf, len) = key_text(42);
        assert_eq!(&buf[..len], b"key-0000042");
        for (i, text) in [
            (0, &b"key-0000000"[..]),
            (9_999_999, b"key-9999999"),
            (12_345_678, b"key-12345678"),
        ] {
            let (buf, len) = key_text(i);
            assert_eq!(&buf[..len], text);
            assert_eq!(key(i), format!("key-{i:07}").into_bytes());
        }
        for i in (0..100_000).chain((0..10_000).map(splitmix64)) {
            let (buf, len) = key_text(i);
            assert_eq!(&buf[..len], format!("key-{i:07}").as_bytes(), "index {i}");
        }
        assert_eq!(
            serde_json::to_string(&KeyName(7)).unwrap(),
            r#""key-0000007""#
        );
        let (buf, len) = key_text(u64::MAX);
        assert_eq!(&buf[..len], b"key-18446744073709551615");
        let as_key = postcard::to_stdvec(&KeyName(1234)).unwrap();
        let as_string = postcard::to_stdvec("key-0001234").unwrap();
        assert_eq!(as_key, as_string);
        let back: KeyName = postcard::from_bytes(&as_key).unwrap();
        assert_eq!(back, KeyName(1234));
        assert!(postcard::from_bytes::<KeyName>(&postcard::to_stdvec("nope").unwrap()).is_err());
    }

    #[test]
    fn values_are_deterministic_and_sized() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        value_into(7, 100, &mut a);
        value_into(7, 100, &mut b);
        assert_eq!(a, b);
        assert_eq!(a, value(7, 100));
        assert_eq!(a.len(), 100);
        value_into(8, 13, &mut b);
        assert_eq!(b.len(), 13);
        assert_ne!(a[..13], b[..]);
    }

    #[test]
    fn expected_counts_sum_to_the_records() {
        let counts = expected_counts(10_000, 100);
        assert_eq!(counts.len(), 100);
        assert_eq!(counts.iter().sum::<u64>(), 10_000);
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert!((0..1000).all(|n| updated_key(1, 2, n, 100) < 100));
    }
}
