//! `cairn log append|tail` through the real binary: arguments and stdin,
//! keyed and round-robin partitioning, offsets, JSON, and clear errors for a
//! missing topic, a bad partition and a corrupt log file.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use state_core::backend_support::murmur3_32;
use support::{assert_bad_input, assert_ok, cairn, cairn_with_stdin, p, stderr, stdout};

#[test]
fn append_from_arguments_and_stdin_then_tail_prints_partition_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let out = cairn(&["log", "append", d, "words", "a", "b", "a"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "partition 0 offset 0\npartition 0 offset 1\npartition 0 offset 2\n"
    );
    // One record per line of stdin, CRLF and empty lines kept as records.
    let out = cairn_with_stdin(&["log", "append", d, "words"], "a c\r\n\nERROR\n");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "partition 0 offset 3\npartition 0 offset 4\npartition 0 offset 5\n"
    );

    let out = cairn(&["log", "tail", d, "words"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "0:0  a\n0:1  b\n0:2  a\n0:3  a c\n0:4  \n0:5  ERROR\n"
    );

    let out = cairn(&[
        "log",
        "tail",
        d,
        "words",
        "--partition",
        "0",
        "--from-offset",
        "5",
        "--json",
    ]);
    assert_ok(&out);
    let record: serde_json::Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(record["partition"], 0);
    assert_eq!(record["offset"], 5);
    assert_eq!(record["value"], "ERROR");
    assert_eq!(record["key"], serde_json::Value::Null);
    assert!(record["timestamp_millis"].as_u64().unwrap() > 0);

    // --follow ends when stdin is closed, after printing what is there.
    let out = cairn(&[
        "log",
        "tail",
        d,
        "words",
        "--partition",
        "0",
        "--from-offset",
        "4",
        "--follow",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "0:4  \n0:5  ERROR\n");
}

#[test]
fn keys_pick_partitions_by_hash_and_records_without_go_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let out = cairn(&[
        "log",
        "append",
        d,
        "t",
        "--partitions",
        "4",
        "r0",
        "r1",
        "r2",
        "r3",
        "r4",
    ]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "partition 0 offset 0\npartition 1 offset 0\npartition 2 offset 0\n\
         partition 3 offset 0\npartition 0 offset 1\n"
    );

    for key in ["user-1", "user-2", "user-3"] {
        let expected = murmur3_32(key.as_bytes(), 0) % 4;
        let out = cairn_with_stdin(&["log", "append", d, "t", "--key", key], "x\ny\n");
        assert_ok(&out);
        let partitions: Vec<u32> = stdout(&out)
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(partitions, vec![expected; 2], "key {key}");
        // The key is stored with the record.
        let out = cairn(&[
            "log",
            "tail",
            d,
            "t",
            "--partition",
            &expected.to_string(),
            "--json",
        ]);
        assert_ok(&out);
        let keyed = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["key"] == key)
            .count();
        assert_eq!(keyed, 2, "key {key}");
    }

    // --partition wins over round-robin; --quiet prints one summary line.
    let out = cairn(&[
        "log",
        "append",
        d,
        "t",
        "--partition",
        "2",
        "--quiet",
        "p",
        "q",
    ]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "appended 2 records to topic t (per partition: 2: 2)\n"
    );
    let tail = stdout(&cairn(&["log", "tail", d, "t", "--partition", "2"]));
    let last_two: Vec<&str> = tail.lines().rev().take(2).collect();
    assert!(last_two[1].ends_with("  p"), "{tail}");
    assert!(last_two[0].ends_with("  q"), "{tail}");

    // Every partition, in partition order.
    let out = cairn(&["log", "tail", d, "t"]);
    assert_ok(&out);
    let all = stdout(&out);
    assert_eq!(all.lines().count(), 5 + 6 + 2);
    let partitions: Vec<u32> = all
        .lines()
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(partitions.is_sorted(), "{all}");
}

#[test]
fn errors_name_the_topic_the_partition_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    assert_bad_input(&cairn(&["log", "tail", d, "missing"]), "\"missing\"");

    assert_ok(&cairn(&[
        "log",
        "append",
        d,
        "t",
        "--partitions",
        "2",
        "a",
        "b",
    ]));
    assert_bad_input(
        &cairn(&["log", "tail", d, "t", "--partition", "7"]),
        "partition 7",
    );
    assert_bad_input(
        &cairn(&["log", "append", d, "t", "--partition", "2", "x"]),
        "partition 2",
    );
    assert_bad_input(
        &cairn(&["log", "append", d, "t", "--partitions", "3", "x"]),
        "has 2 partitions",
    );
    assert_bad_input(
        &cairn(&[
            "log",
            "tail",
            d,
            "t",
            "--partition",
            "0",
            "--from-offset",
            "9",
        ]),
        "offset 9",
    );
    assert_bad_input(&cairn(&["log", "append", d, "../up", "x"]), "\"../up\"");
    // --from-offset without --partition is a usage error (exit 2).
    let out = cairn(&["log", "tail", d, "t", "--from-offset", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Damage the first record of partition 0 while another follows it.
    assert_ok(&cairn(&["log", "append", d, "t", "--partition", "0", "c"]));
    let file = dir.path().join("t").join("partition-0.log");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() / 2 - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    assert_bad_input(&cairn(&["log", "tail", d, "t"]), p(&file));
    assert_bad_input(&cairn(&["log", "append", d, "t", "x"]), p(&file));
}

#[test]
fn follow_prints_records_appended_later_and_stops_when_stdin_closes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    assert_ok(&cairn(&["log", "append", d, "t", "first"]));
    let mut child = support::command(&["log", "tail", d, "t", "--follow"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let patience = Duration::from_secs(60);
    assert_eq!(lines.recv_timeout(patience).unwrap(), "0:0  first");
    assert_ok(&cairn(&["log", "append", d, "t", "second"]));
    assert_eq!(lines.recv_timeout(patience).unwrap(), "0:1  second");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
