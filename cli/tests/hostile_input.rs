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

/// `cairn run wordcount` over a one-record topic with checkpoints (so the
/// default restart strategy restarts for ever), plus `extra`.
fn wordcount(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let log = dir.join("log");
    if !log.exists() {
        let out = cairn(&["log", "append", p(&log), "words", "a b", "--quiet"]);
        assert_code(&out, 0);
    }
    let ck = dir.join("ck");
    let mut args = vec![
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--checkpoint-dir",
        p(&ck),
        "--checkpoint-interval",
        "20ms",
    ];
    args.extend_from_slice(extra);
    cairn(&args)
}

#[test]
fn errors_no_restart_can_fix_end_the_job_at_once_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for (extra, names) in [
        (vec!["--output", p(&file)], "--output"),
        (vec!["--sink", "file:PLACEHOLDER"], "--sink file:"),
        (
            vec!["--local-dir", p(&file), "--backend", "rocks"],
            "--local-dir",
        ),
    ] {
        let spec = format!("file:{}", p(&file));
        let extra: Vec<&str> = extra
            .iter()
            .map(|a| {
                if *a == "file:PLACEHOLDER" {
                    spec.as_str()
                } else {
                    a
                }
            })
            .collect();
        let out = wordcount(dir.path(), &extra);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(names) && err.contains(p(&file)), "{err}");
    }
    let wal_dir = dir.path().join("wal-dir");
    std::fs::create_dir_all(&wal_dir).unwrap();
    let out = wordcount(dir.path(), &["--sink", &format!("wal:{}", p(&wal_dir))]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));

    // --from a checkpoint taken with another max parallelism: refused
    // before anything runs, under the default unbounded restart strategy.
    let out = wordcount(
        dir.path(),
        &[
            "--bounded",
            "--max-parallelism",
            "256",
            "--retain-on-cancel",
        ],
    );
    assert_code(&out, 0);
    let mut unbounded = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    let log = dir.path().join("log");
    let ck = dir.path().join("ck2");
    unbounded.args([
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--checkpoint-dir",
        p(&ck),
        "--job-id",
        "mp",
        "--checkpoint-interval",
        "10ms",
        "--max-parallelism",
        "256",
    ]);
    let mut child = unbounded
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let job_dir = ck.join("mp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while support::completed(&job_dir).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let chk = job_dir.join(format!("chk-{}", support::completed(&job_dir)[0]));
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--checkpoint-dir",
        p(&ck),
        "--job-id",
        "mp",
        "--checkpoint-interval",
        "10ms",
        "--from",
        p(&chk),
        "--max-parallelism",
        "128",
    ]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("max parallelism 256") && err.contains("cannot change"),
        "{err}"
    );
}
