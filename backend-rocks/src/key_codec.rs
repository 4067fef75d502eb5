//! How keyed state is laid out in RocksDB keys and values.
//!
//! Every state has its own column family. A RocksDB key is
//!
//! ```text
//! [key group u16 BE][varint len][key][varint len][namespace]            value and list states
//! [key group u16 BE][varint len][key][varint len][namespace][user key]  map states
//! ```
//!
//! so the entries of one key group are one contiguous span (rescaling clips
//! with `delete_range`), and the entries of one (key, namespace) of a map
//! state share a prefix (map scans are prefix scans). The lengths make the
//! prefix unambiguous. A list value is its elements, each as varint length +
//! bytes; appending is a RocksDB merge whose operator concatenates.

use state_core::KeyGroup;

/// Length of the key-group prefix of every RocksDB key.
pub(crate) const KEY_GROUP_PREFIX_LEN: usize = 2;

pub(crate) use state_core::backend_support::{put_bytes, take_bytes};

/// The first bytes of every key of key group `kg`.
pub(crate) fn key_group_prefix(kg: KeyGroup) -> [u8; KEY_GROUP_PREFIX_LEN] {
    kg.0.to_be_bytes()
}

/// Writes the RocksDB key of (key group, key, namespace) into `out`
/// (cleared first); for map states the user key is appended after it.
pub(crate) fn encode_key(out: &mut Vec<u8>, kg: KeyGroup, key: &[u8], namespace: &[u8]) {
    out.clear();
    out.extend_from_slice(&key_group_prefix(kg));
    put_bytes(out, key);
    put_bytes(out, namespace);
}

/// A RocksDB key split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodedKey<'a> {
    pub(crate) key_group: KeyGroup,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    /// The user key of a map entry (empty for value and list states).
    pub(crate) user_key: &'a [u8],
    /// Length of the (key group, key, namespace) prefix.
    pub(crate) prefix_len: usize,
}

/// Splits a RocksDB key; `None` when it is not one this crate wrote.
pub(crate) fn decode_key(raw: &[u8]) -> Option<DecodedKey<'_>> {
    let (kg, rest) = raw.split_first_chunk::<KEY_GROUP_PREFIX_LEN>()?;
    let mut input = rest;
    let key = take_bytes(&mut input)?;
    let namespace = take_bytes(&mut input)?;
    Some(DecodedKey {
        key_group: KeyGroup(u16::from_be_bytes(*kg)),
        key,
        namespace,
        user_key: input,
        prefix_len: raw.len() - input.len(),
    })
}

/// The elements of a list value, oldest first; `None` when it does not decode.
pub(crate) fn decode_list(value: &[u8]) -> Option<Vec<&[u8]>> {
    let mut input = value;
    let mut out = Vec::new();
    while !input.is_empty() {
        out.push(take_bytes(&mut input)?);
    }
    Some(out)
}

/// Encodes list elements as a list value.
pub(crate) fn encode_list<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        put_bytes(&mut out, e);
    }
    out
}

/// The merge operator of list states: concatenation of encoded elements.
pub(crate) fn concat_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (the prefix is all `0xff`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::backend_support::{put_varint, take_varint};

    #[test]
    fn keys_round_trip_and_sort_by_key_group() {
        let mut a = Vec::new();
        encode_key(&mut a, KeyGroup(3), b"key", b"ns");
        a.extend_from_slice(b"uk");
        let d = decode_key(&a).unwrap();
        assert_eq!(d.key_group, KeyGroup(3));
        assert_eq!(
            (d.key, d.namespace, d.user_key),
            (&b"key"[..], &b"ns"[..], &b"uk"[..])
        );
        assert_eq!(d.prefix_len, a.len() - 2);
        let mut b = Vec::new();
        encode_key(&mut b, KeyGroup(256), b"", b"");
        assert!(a < b, "key group 3 sorts before 256");
        assert!(decode_key(b"\x00").is_none());
        assert!(decode_key(b"\x00\x01\x05ab").is_none());
    }

    #[test]
    fn lists_and_successors() {
        let v = encode_list([&b"a"[..], b"", b"ccc"]);
        assert_eq!(decode_list(&v).unwrap(), vec![&b"a"[..], b"", b"ccc"]);
        assert!(decode_list(b"\x05ab").is_none());
        assert_eq!(prefix_successor(b"ab").unwrap(), b"ac");
        assert_eq!(prefix_successor(b"a\xff").unwrap(), b"b");
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        let mut big = Vec::new();
        put_varint(&mut big, u64::MAX);
        assert_eq!(take_varint(&mut &big[..]), Some(u64::MAX));
    }
}
