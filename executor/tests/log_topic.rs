//! The partitioned log: append, read, tail, partitioning, torn tails and corruption.

// Test helpers unwrap: a panic there is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use executor::log::{LogRecord, PartitionReader, Topic, TopicWriter};
use state_core::ManualClock;
use state_core::backend_support::murmur3_32;

fn read_all(reader: &mut PartitionReader) -> Vec<LogRecord> {
    let mut out = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        out.push(r);
    }
    out
}

fn values(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.value_str().into_owned()).collect()
}

#[test]
fn append_read_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "word", 1).unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut w = TopicWriter::open(&topic, clock.clone()).unwrap();
    for (i, word) in ["a", "b", "a"].iter().enumerate() {
        clock.advance(1);
        assert_eq!(
            w.append(None, word.as_bytes(), None).unwrap(),
            (0, i as u64)
        );
    }
    w.sync().unwrap();

    let mut reader = topic.reader(0, 0).unwrap();
    let first = read_all(&mut reader);
    assert_eq!(values(&first), ["a", "b", "a"]);
    assert_eq!(first[2].offset, 2);
    assert_eq!(first[2].partition, 0);
    assert_eq!(first[0].timestamp_millis, 1_001);
    assert_eq!(first[0].key, None);
    assert!(reader.next().unwrap().is_none(), "None at the end, again");

    // Tailing: records appended later are seen by the same reader.
    w.append(Some(b"k"), b"c", None).unwrap();
    w.append(None, "ERROR".as_bytes(), None).unwrap();
    let more = read_all(&mut reader);
    assert_eq!(values(&more), ["c", "ERROR"]);
    assert_eq!(more[0].offset, 3);
    assert_eq!(more[0].key_str().as_deref(), Some("k"));

    // Opening at an offset, and the end offset.
    assert_eq!(topic.end_offset(0).unwrap(), 5);
    assert_eq!(w.end_offset(0).unwrap(), 5);
    let from3 = read_all(&mut topic.reader(0, 3).unwrap());
    assert_eq!(from3.iter().map(|r| r.offset).collect::<Vec<_>>(), [3, 4]);
    assert!(read_all(&mut topic.reader(0, 5).unwrap()).is_empty());
    let err = topic.reader(0, 6).unwrap_err().to_string();
    assert!(err.contains("offset 6 is beyond the end offset 5"), "{err}");

    // A reopened topic and a second writer continue the offsets.
    let again = Topic::open(dir.path(), "word").unwrap();
    assert_eq!(again.partitions(), 1);
    let mut w2 = again.writer().unwrap();
    assert_eq!(w2.append(None, b"d", None).unwrap(), (0, 5));
}

#[test]
fn buffered_writer_batches_until_flush() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "bulk", 2).unwrap();
    let mut w = topic.writer().unwrap().buffered(1 << 20);
    for i in 0..1000u32 {
        assert_eq!(
            w.append(None, &i.to_le_bytes(), None).unwrap(),
            (i % 2, u64::from(i / 2))
        );
    }
    assert_eq!(
        topic.end_offset(0).unwrap(),
        0,
        "nothing written before flush"
    );
    assert_eq!(w.end_offset(1).unwrap(), 500);
    w.flush().unwrap();
    assert_eq!(topic.end_offset(0).unwrap(), 500);
    w.append(None, b"last", Some(1)).unwrap();
    drop(w);
    let got = read_all(&mut topic.reader(1, 499).unwrap());
    assert_eq!(values(&got)[1], "last");
    assert_eq!(got[0].value[..], 999u32.to_le_bytes());
}

#[test]
fn large_records_span_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "big", 1).unwrap();
    let mut w = topic.writer().unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    for _ in 0..3 {
        w.append(None, &big, None).unwrap();
    }
    let got = read_all(&mut topic.reader(0, 1).unwrap());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.value[..] == big[..]));
}

#[test]
fn partitioning_by_key_is_stable_and_round_robin_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "keyed", 4).unwrap();
    let mut w = topic.writer().unwrap();
    for key in ["user-1", "user-2", "user-3", "a", ""] {
        let expected = murmur3_32(key.as_bytes(), 0) % 4;
        for _ in 0..3 {
            let (p, _) = w.append(Some(key.as_bytes()), b"v", None).unwrap();
            assert_eq!(p, expected, "key {key:?}");
        }
    }
    // Fixed values: partitioning must not change between releases.
    assert_eq!(
        w.append(Some(b"user-1"), b"v", None).unwrap().0,
        murmur3_32(b"user-1", 0) % 4
    );
    assert_eq!(murmur3_32(b"hello", 0) % 4, 0x248b_fa47 % 4);
    let rr: Vec<u32> = (0..6)
        .map(|_| w.append(None, b"v", None).unwrap().0)
        .collect();
    assert_eq!(rr, [0, 1, 2, 3, 0, 1]);
    assert_eq!(w.append(None, b"v", Some(3)).unwrap().0, 3);
    let err = w.append(None, b"v", Some(4)).unwrap_err().to_string();
    assert!(err.contains("partition 4 does not exist"), "{err}");
    // Every record is in the partition append reported.
    let total: u64 = (0..4).map(|p| topic.end_offset(p).unwrap()).sum();
    assert_eq!(total, 5 * 3 + 1 + 6 + 1);
}

#[test]
fn torn_last_record_is_the_end_and_is_truncated_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "torn", 1).unwrap();
    let mut w = topic.writer().unwrap();
    for v in ["one", "two", "three"] {
        w.append(None, v.as_bytes(), None).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    let path = topic.partition_path(0).unwrap();
    let full = std::fs::read(&path).unwrap();

    // Cut anywhere inside the last record: two records, then the end.
    let last_len = 8 + 12 + "three".len();
    for cut in 1..last_len {
        std::fs::write(&path, &full[..full.len() - cut]).unwrap();
        let got = read_all(&mut topic.reader(0, 0).unwrap());
        assert_eq!(values(&got), ["one", "two"], "cut {cut}");
        assert_eq!(topic.end_offset(0).unwrap(), 2);
    }
    // A whole-length last record with a bad checksum is torn too.
    let mut flipped = full.clone();
    *flipped.last_mut().unwrap() ^= 0xff;
    std::fs::write(&path, &flipped).unwrap();
    assert_eq!(
        values(&read_all(&mut topic.reader(0, 0).unwrap())),
        ["one", "two"]
    );

    // A reader waiting at the torn record sees what the next writer appends there.
    let mut tailing = topic.reader(0, 2).unwrap();
    assert!(tailing.next().unwrap().is_none());
    let mut w = topic.writer().unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        (full.len() - last_len) as u64
    );
    assert_eq!(w.append(None, b"THREE", None).unwrap(), (0, 2));
    w.append(None, b"four", None).unwrap();
    assert_eq!(values(&read_all(&mut tailing)), ["THREE", "four"]);
    assert_eq!(
        values(&read_all(&mut topic.reader(0, 0).unwrap())),
        ["one", "two", "THREE", "four"]
    );
}

#[test]
fn corrupt_byte_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "bad", 1).unwrap();
    let mut w = topic.writer().unwrap();
    for v in ["first", "second", "third"] {
        w.append(None, v.as_bytes(), None).unwrap();
    }
    drop(w);
    let path = topic.partition_path(0).unwrap();
    let record_len = 8 + 12 + "first".len();
    // Flip a value byte of record 1 ("second").
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[record_len + 8 + 12 + 2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let mut reader = topic.reader(0, 0).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().value_str(), "first");
    let err = reader.next().unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("at byte {record_len} (offset 1)")),
        "{err}"
    );
    assert!(err.contains("checksum"), "{err}");
    // Neither a writer nor the end offset skips over it.
    assert!(topic.writer().unwrap_err().to_string().contains("offset 1"));
    assert!(topic.end_offset(0).is_err());

    // A length field far out of range is corruption, not a torn record.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[record_len + 8 + 12 + 2] ^= 0x20;
    bytes[3] = 0x7f;
    std::fs::write(&path, &bytes).unwrap();
    let err = topic.reader(0, 0).unwrap().next().unwrap_err().to_string();
    assert!(
        err.contains("at byte 0 (offset 0)") && err.contains("length"),
        "{err}"
    );
}

#[test]
fn topic_names_and_descriptors_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
        let err = Topic::create(dir.path(), bad, 1).unwrap_err().to_string();
        assert!(err.contains("topic name"), "{bad:?}: {err}");
        assert!(Topic::open(dir.path(), bad).is_err());
    }
    assert!(Topic::create(dir.path(), "zero", 0).is_err());
    let err = Topic::open(dir.path(), "missing").unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    Topic::create(dir.path(), "t.1-x_y", 2).unwrap();
    assert!(
        Topic::create(dir.path(), "t.1-x_y", 2)
            .unwrap_err()
            .to_string()
            .contains("already exists")
    );
    assert_eq!(
        Topic::open_or_create(dir.path(), "t.1-x_y", 2)
            .unwrap()
            .partitions(),
        2
    );
    assert!(Topic::open_or_create(dir.path(), "t.1-x_y", 3).is_err());
    // A damaged descriptor names its file.
    let meta = dir.path().join("t.1-x_y").join("topic.meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&meta, &bytes).unwrap();
    let err = Topic::open(dir.path(), "t.1-x_y").unwrap_err().to_string();
    assert!(err.contains("topic.meta"), "{err}");
}
