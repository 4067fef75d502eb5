//! Input a hostile or careless user gives `cairn`: every refusal names the
//! option or the file, exits 2, and returns at once.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{assert_code, cairn, p, stderr};

#[test]
fn negative_numbers_and_durations_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let run = |option: &str, value: &str| {
        cairn(&[
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "t",
            option,
            value,
        ])
    };
    for (option, value) in [
        ("--parallelism", "-1"),
        ("--max-parallelism", "-128"),
        ("--checkpoint-interval", "-1s"),
        ("--checkpoint-timeout", "-5m"),
        ("--retained", "-2"),
        ("--restart-attempts", "-3"),
        ("--restart-delay", "-10ms"),
        ("--backoff-multiplier", "-2.0"),
    ] {
        let out = run(option, value);
        assert_code(&out, 2);
        let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
        assert!(first.starts_with("error: "), "{option} {value}: {first}");
        assert!(first.contains(option), "{option} {value}: {first}");
        assert!(
            !first.contains("unexpected argument"),
            "{option} {value}: {first}"
        );
    }
    let out = cairn(&["log", "append", p(&log), "t", "--partitions", "0", "a"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--partitions 0"), "{}", stderr(&out));
    let out = cairn(&["log", "append", p(&log), "t", "--partitions", "-1", "a"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--partitions"), "{}", stderr(&out));
}
