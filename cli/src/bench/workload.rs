//! The reference workloads' deterministic generator: keys `key-%07d`, the
//! key of each record of the keyed-count job, incompressible values, and the
//! keys each update round touches.
//!
//! The same definitions as `benches/src/lib.rs` (the cli cannot depend on the
//! benches crate): SplitMix64 drives every choice.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// SplitMix64 (Steele, Lea and Flood): the deterministic generator of all
/// bench choices.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key index of record `i` of the keyed-count job over `keys` keys:
/// `splitmix64(i) mod keys`.
pub(super) fn record_key(i: u64, keys: u64) -> u64 {
    splitmix64(i) % keys.max(1)
}

/// Longest key text: `key-` and the 20 digits of `u64::MAX`.
const KEY_CAP: usize = 24;

/// The text of key `index` (`key-0000042`) in a stack buffer, returning
/// the buffer and the length used. No allocation: this runs per record.
pub(super) fn key_text(index: u64) -> ([u8; KEY_CAP], usize) {
    // Digits of `index`, at least 7 (zero-padded), written back to front:
    // the same bytes as `format!("key-{index:07}")` without the formatter.
    let mut digits = [b'0'; 20];
    let mut n = index;
    let mut count = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
        count += 1;
        if n == 0 && count >= 7 {
            break;
        }
    }
    let mut buf = [0u8; KEY_CAP];
    let digits = digits.get(digits.len() - count..).unwrap_or_default();
    let len = 4 + digits.len();
    if let Some(out) = buf.get_mut(..len) {
        out[..4].copy_from_slice(b"key-");
        out[4..].copy_from_slice(digits);
    }
    (buf, len)
}

/// The key of the keyed-count job: key index `k`, serialized exactly as the
/// string `key-%07d` (the state holds the same bytes as for a `String`
/// key), without building a `String` per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyName(pub u64);

impl Serialize for KeyName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (buf, len) = key_text(self.0);
        let text = buf
            .get(..len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("key-");
        serializer.serialize_str(text)
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

/// `size` incompressible bytes derived from `seed`, written into `out`
/// (cleared first).
pub(super) fn value_into(seed: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(size + 8);
    let mut s = seed;
    while out.len() < size {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(size);
}

/// The seed of the value of key `index` after update round `round`
/// (0 = the initial load).
pub(super) fn value_seed(seed: u64, index: u64, round: u32) -> u64 {
    splitmix64(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (u64::from(round) << 56))
}

/// The `n`-th key index (of `count`) updated in round `round`: a fixed
/// pseudo-random choice in `0..keys`; a key may be chosen more than once.
pub(super) fn updated_key(seed: u64, round: u32, n: u64, keys: u64) -> u64 {
    splitmix64(seed.rotate_left(17) ^ (u64::from(round) << 48) ^ n) % keys.max(1)
}

/// The per-key counts of the first `records` records over `keys` keys: what
/// a fault-free keyed count ends with.
pub(super) fn expected_counts(records: u64, keys: u64) -> Vec<u64> {
    let mut counts = vec![0u64; usize::try_from(keys).unwrap_or(0)];
    for i in 0..records {
        let k = record_key(i, keys);
        if let Some(c) = usize::try_from(k).ok().and_then(|k| counts.get_mut(k)) {
            *c += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
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
