//! Tests of the key-group snapshot format.

use std::io::{self, Write};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::backend::{StateDescriptor, StateKind};
use crate::handle::{StreamHandle, StreamLocation};
use crate::key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::metadata::KeyGroupsHandle;
use crate::storage::CheckpointOutput;
use crate::ttl::wrap_ttl;
use crate::{ErrorKind, Result, TtlConfig};

/// An output collecting into a vector.
struct VecOutput(Vec<u8>);

impl Write for VecOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for VecOutput {
    fn position(&self) -> u64 {
        self.0.len() as u64
    }
    fn close(self: Box<Self>) -> Result<StreamHandle> {
        Ok(StreamHandle {
            size: self.0.len() as u64,
            crc32: crc32fast::hash(&self.0),
            location: StreamLocation::Inline(self.0.into()),
        })
    }
}

fn inline_bytes(handle: &KeyGroupsHandle) -> Bytes {
    match &handle.stream.location {
        StreamLocation::Inline(v) => v.clone(),
        StreamLocation::File(_) => unreachable!(),
    }
}

fn states() -> Vec<StateDescriptor> {
    vec![
        StateDescriptor::new("count", StateKind::Value),
        StateDescriptor::new("events", StateKind::List),
        StateDescriptor::new("attrs", StateKind::Map),
    ]
}

fn max() -> MaxParallelism {
    MaxParallelism::new(16).unwrap()
}

fn range() -> KeyGroupRange {
    KeyGroupRange::new(KeyGroup(2), KeyGroup(9))
}

fn writer(states: &[StateDescriptor], now: u64) -> KeyGroupStreamWriter {
    KeyGroupStreamWriter::new(
        Box::new(VecOutput(Vec::new())),
        "test-stream",
        "test",
        max(),
        range(),
        states,
        now,
    )
    .unwrap()
}

/// Writes a small stream with entries in key groups 3, 4 and 7.
fn sample() -> KeyGroupsHandle {
    let mut w = writer(&states(), 0);
    w.begin_key_group(KeyGroup(3)).unwrap();
    w.write_value(0, b"alice", b"", b"1").unwrap();
    w.write_list(1, b"alice", b"w1", [&b"a"[..], b"bb"])
        .unwrap();
    w.begin_key_group(KeyGroup(4)).unwrap();
    w.write_map(2, b"bob", b"", [(&b"k"[..], &b"v"[..]), (b"k2", b"")])
        .unwrap();
    w.begin_key_group(KeyGroup(7)).unwrap();
    w.write_value(0, b"carol", b"ns", b"").unwrap();
    w.finish().unwrap()
}

type Owned = (u16, u32, Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

fn collect(reader: &KeyGroupStreamReader, wanted: KeyGroupRange) -> Result<Vec<Owned>> {
    let mut out = Vec::new();
    reader.read(wanted, &mut |r| {
        let values = match r.entry {
            RecordEntry::Value(v) => vec![v.to_vec()],
            RecordEntry::List(l) => l.iter().map(|e| e.to_vec()).collect(),
            RecordEntry::Map(m) => m
                .iter()
                .flat_map(|(k, v)| [k.to_vec(), v.to_vec()])
                .collect(),
        };
        out.push((
            r.key_group.0,
            r.state,
            r.key.to_vec(),
            r.namespace.to_vec(),
            values,
        ));
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn round_trip_and_partial_read() {
    let handle = sample();
    assert_eq!(handle.key_group_offsets.len(), 8);
    let reader = KeyGroupStreamReader::open(inline_bytes(&handle), &handle).unwrap();
    assert_eq!(reader.states(), &states()[..]);
    assert_eq!(reader.max_parallelism(), max());
    let all = collect(&reader, KeyGroupRange::all(max())).unwrap();
    assert_eq!(
        all,
        vec![
            (3, 0, b"alice".to_vec(), vec![], vec![b"1".to_vec()]),
            (
                3,
                1,
                b"alice".to_vec(),
                b"w1".to_vec(),
                vec![b"a".to_vec(), b"bb".to_vec()]
            ),
            (
                4,
                2,
                b"bob".to_vec(),
                vec![],
                vec![b"k".to_vec(), b"v".to_vec(), b"k2".to_vec(), vec![]]
            ),
            (7, 0, b"carol".to_vec(), b"ns".to_vec(), vec![vec![]]),
        ]
    );
    let part = collect(&reader, KeyGroupRange::new(KeyGroup(4), KeyGroup(12))).unwrap();
    assert_eq!(part.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4, 7]);
    assert!(
        collect(&reader, KeyGroupRange::new(KeyGroup(10), KeyGroup(15)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn partial_read_touches_only_its_blocks() {
    let handle = sample();
    let mut bytes = inline_bytes(&handle).to_vec();
    // Corrupt the block of key group 3; key groups 4.. still read.
    let off = handle.key_group_offsets[1] as usize;
    bytes[off + BLOCK_HEADER_LEN] ^= 0xff;
    let reader = KeyGroupStreamReader::open(Bytes::from(bytes), &handle).unwrap();
    let part = collect(&reader, KeyGroupRange::new(KeyGroup(4), KeyGroup(9))).unwrap();
    assert_eq!(part.len(), 2);
    let err = collect(&reader, range()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("key group 3"), "{err}");
    assert!(err.to_string().contains("inline state"), "{err}");
}

#[test]
fn ttl_cleanup_drops_expired_entries_and_empty_keys() {
    let ttl = TtlConfig::new(Duration::from_millis(100)).unwrap();
    let mut sts = states();
    for s in &mut sts {
        s.ttl = Some(ttl);
    }
    sts.push(StateDescriptor {
        name: "kept".into(),
        kind: StateKind::Value,
        ttl: Some(ttl.with_cleanup_in_full_snapshot(false)),
        ..StateDescriptor::new("kept", StateKind::Value)
    });
    let (old, fresh) = (wrap_ttl(0, b"old"), wrap_ttl(950, b"new"));
    let mut w = writer(&sts, 1_000);
    w.begin_key_group(KeyGroup(2)).unwrap();
    assert!(!w.write_value(0, b"a", b"", &old).unwrap());
    assert!(w.write_value(0, b"b", b"", &fresh).unwrap());
    assert!(!w.write_list(1, b"a", b"", [&old[..], &old[..]]).unwrap());
    assert!(w.write_list(1, b"b", b"", [&old[..], &fresh[..]]).unwrap());
    assert!(!w.write_map(2, b"a", b"", [(&b"x"[..], &old[..])]).unwrap());
    assert!(
        w.write_map(2, b"b", b"", [(&b"x"[..], &old[..]), (b"y", &fresh[..])])
            .unwrap()
    );
    assert!(w.write_value(3, b"a", b"", &old).unwrap());
    assert_eq!(w.expired(), 6);
    let handle = w.finish().unwrap();
    let reader = KeyGroupStreamReader::open(inline_bytes(&handle), &handle).unwrap();
    let all = collect(&reader, range()).unwrap();
    let expected: Vec<Owned> = vec![
        (2, 0, b"b".to_vec(), vec![], vec![fresh.clone()]),
        (2, 1, b"b".to_vec(), vec![], vec![fresh.clone()]),
        (
            2,
            2,
            b"b".to_vec(),
            vec![],
            vec![b"y".to_vec(), fresh.clone()],
        ),
        (2, 3, b"a".to_vec(), vec![], vec![old.clone()]),
    ];
    assert_eq!(all, expected);
}

#[test]
fn every_flipped_byte_and_truncation_is_an_error_never_a_panic() {
    let handle = sample();
    let bytes = inline_bytes(&handle).to_vec();
    let read_all = |b: Vec<u8>, h: &KeyGroupsHandle| {
        KeyGroupStreamReader::open(Bytes::from(b), h)
            .and_then(|r| collect(&r, KeyGroupRange::all(max())))
    };
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let err = read_all(b, &handle).unwrap_err();
            assert!(
                err.to_string().contains("inline state"),
                "flip at {i}: {err}"
            );
        }
    }
    for len in 0..bytes.len() {
        // Truncated bytes with the original handle, and with a handle
        // whose size matches (as a lying storage would give).
        assert!(
            read_all(bytes[..len].to_vec(), &handle).is_err(),
            "len {len}"
        );
        let mut h = handle.clone();
        h.stream.size = len as u64;
        assert!(read_all(bytes[..len].to_vec(), &h).is_err(), "len {len}");
    }
    // Lying handles: offsets past the end, wrong counts, wrong ranges.
    let mut h = handle.clone();
    h.key_group_offsets[2] = u64::MAX;
    assert!(read_all(bytes.clone(), &h).is_err());
    h.key_group_offsets[2] = handle.key_group_offsets[3];
    assert!(read_all(bytes.clone(), &h).is_err());
    h.key_group_offsets.pop();
    assert!(read_all(bytes.clone(), &h).is_err());
    let mut h = handle.clone();
    h.range = KeyGroupRange::new(KeyGroup(3), KeyGroup(10));
    assert!(read_all(bytes.clone(), &h).is_err());
}

#[test]
fn foreign_stream_is_incompatible() {
    let handle = sample();
    let mut bytes = inline_bytes(&handle).to_vec();
    bytes[0] = b'X';
    let err = KeyGroupStreamReader::open(Bytes::from(bytes), &handle).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleFormat);
    let mut bytes = inline_bytes(&handle).to_vec();
    bytes[8] = 9;
    let err = KeyGroupStreamReader::open(Bytes::from(bytes), &handle).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleFormat);
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[test]
fn misuse_of_the_writer_is_an_error() {
    let mut w = writer(&states(), 0);
    assert!(
        w.write_value(0, b"k", b"", b"v").is_err(),
        "no key group begun"
    );
    assert!(w.begin_key_group(KeyGroup(1)).is_err(), "outside range");
    w.begin_key_group(KeyGroup(5)).unwrap();
    assert!(w.begin_key_group(KeyGroup(5)).is_err(), "not ascending");
    assert!(w.write_value(1, b"k", b"", b"v").is_err(), "wrong layout");
    assert!(w.write_value(9, b"k", b"", b"v").is_err(), "unknown state");
    let empty: [&[u8]; 0] = [];
    assert!(
        !w.write_list(1, b"k", b"", empty).unwrap(),
        "empty list not written"
    );
    let handle = w.finish().unwrap();
    let reader = KeyGroupStreamReader::open(inline_bytes(&handle), &handle).unwrap();
    assert!(collect(&reader, range()).unwrap().is_empty());
}

#[test]
fn varints_round_trip_and_reject_overlong() {
    for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
        let mut buf = Vec::new();
        put_varint(&mut buf, v);
        let mut input = &buf[..];
        assert_eq!(take_varint(&mut input), Some(v));
        assert!(input.is_empty());
    }
    let mut input: &[u8] = &[0xff; 11];
    assert_eq!(take_varint(&mut input), None);
    let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(take_varint(&mut input), None);
    let mut input: &[u8] = &[0x80];
    assert_eq!(take_varint(&mut input), None);
}

/// `sample()` rewritten as format version 1 (descriptors without type
/// names), with the handle's offsets and size moved to match.
fn sample_as_v1(typed: &[StateDescriptor]) -> (Bytes, KeyGroupsHandle) {
    let mut w = writer(typed, 0);
    w.begin_key_group(KeyGroup(3)).unwrap();
    w.write_value(0, b"alice", b"", b"1").unwrap();
    let mut handle = w.finish().unwrap();
    let v2 = inline_bytes(&handle);
    let desc_len = u32::from_le_bytes(v2[20..24].try_into().unwrap()) as usize;
    let old: Vec<(String, StateKind, Option<TtlConfig>)> = typed
        .iter()
        .map(|d| (d.name.clone(), d.kind, d.ttl))
        .collect();
    let old = postcard::to_stdvec(&old).unwrap();
    let mut v1 = v2[..FIXED_HEADER_LEN].to_vec();
    v1[8..10].copy_from_slice(&SNAPSHOT_FORMAT_VERSION_V1.to_le_bytes());
    v1[20..24].copy_from_slice(&(old.len() as u32).to_le_bytes());
    v1.extend_from_slice(&old);
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let blocks = FIXED_HEADER_LEN + desc_len + 4;
    v1.extend_from_slice(&v2[blocks..]);
    let shift = blocks as i64 - (FIXED_HEADER_LEN + old.len() + 4) as i64;
    for o in &mut handle.key_group_offsets {
        *o = (*o as i64 - shift) as u64;
    }
    handle.stream.size = v1.len() as u64;
    (Bytes::from(v1), handle)
}

#[test]
fn version_1_streams_read_with_no_type_names() {
    let typed: Vec<StateDescriptor> = states()
        .into_iter()
        .map(|d| d.with_type_name("u64"))
        .collect();
    let (bytes, handle) = sample_as_v1(&typed);
    let reader = KeyGroupStreamReader::open(bytes, &handle).unwrap();
    assert_eq!(reader.states(), &states()[..]);
    let records = collect(&reader, range()).unwrap();
    assert_eq!(
        records,
        vec![(3, 0, b"alice".to_vec(), vec![], vec![b"1".to_vec()])]
    );
}

#[test]
fn type_names_round_trip_in_version_2() {
    let typed: Vec<StateDescriptor> = states()
        .into_iter()
        .map(|d| d.with_type_name("alloc::string::String"))
        .collect();
    let handle = writer(&typed, 0).finish().unwrap();
    let bytes = inline_bytes(&handle);
    assert_eq!(&bytes[8..10], &SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    let reader = KeyGroupStreamReader::open(bytes, &handle).unwrap();
    assert_eq!(reader.states(), &typed[..]);
}
