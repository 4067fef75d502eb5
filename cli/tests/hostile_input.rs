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
    let log = dir.path().join("log");
    let ck = dir.path().join("ck2");
    let mp = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
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
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(mp(&["--max-parallelism", "256"]))
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
    let args = mp(&["--from", p(&chk), "--max-parallelism", "128"]);
    let out = cairn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("max parallelism 256") && err.contains("cannot change"),
        "{err}"
    );
}

/// A job directory written by `cairn example` (checkpoints 2 and 3 of job
/// `example`), and an outside directory beside it.
fn example_job(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = cairn(&["example", "--dir", p(dir)]);
    assert_code(&out, 0);
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    (dir.join("example"), outside)
}

/// Runs `cairn args`, failing the test if it does not return within a
/// minute (a read of a FIFO would block for ever).
fn cairn_bounded(args: &[&str]) -> std::process::Output {
    let mut child = support::command(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("cairn {args:?} did not return: it blocked on a file");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_file_link_out_of_the_job_directory_is_never_followed_by_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let (job, outside) = example_job(dir.path());
    // chk-3's keyed file moved outside, a link left in its place: the
    // metadata (and its CRC) is untouched.
    let file = job.join("chk-3").join("wordcount-0-keyed");
    let moved = outside.join("wordcount-0-keyed");
    std::fs::rename(&file, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &file).unwrap();
    let bytes = std::fs::read(&moved).unwrap();

    let out = cairn_bounded(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 1);
    let text = support::stdout(&out) + &stderr(&out);
    assert!(
        text.contains("chk-3/wordcount-0-keyed") && text.contains("symbolic link"),
        "{text}"
    );
    let out = cairn_bounded(&["checkpoints", "inspect", p(&job.join("chk-3"))]);
    assert_code(&out, 0);
    let log = dir.path().join("log");
    let out = cairn(&["log", "append", p(&log), "words", "a", "--quiet"]);
    assert_code(&out, 0);
    let out = cairn_bounded(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--from",
        p(&job.join("chk-3")),
        "--allow-non-restored-state",
    ]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    let out = cairn_bounded(&["checkpoints", "gc", p(&job), "--delete"]);
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        bytes,
        "the outside file changed"
    );
}

#[test]
fn fifos_in_place_of_checkpoint_files_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = example_job(dir.path());
    let keyed = job.join("chk-3").join("wordcount-1-keyed");
    std::fs::remove_file(&keyed).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&keyed)
        .status()
        .unwrap();
    assert!(made.success());
    let out = cairn_bounded(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 1);
    let text = support::stdout(&out) + &stderr(&out);
    assert!(
        text.contains("wordcount-1-keyed") && text.contains("not a regular file"),
        "{text}"
    );

    let meta = job.join("chk-2").join("_metadata");
    std::fs::remove_file(&meta).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&meta)
        .status()
        .unwrap();
    assert!(made.success());
    for args in [
        vec!["checkpoints", "list", p(&job)],
        vec!["checkpoints", "verify", p(&job)],
        vec!["checkpoints", "inspect", p(&job.join("chk-2"))],
    ] {
        let out = cairn_bounded(&args);
        let text = support::stdout(&out) + &stderr(&out);
        assert!(
            out.status.code().is_some_and(|c| c != 0) || text.contains("corrupt"),
            "{args:?}: {text}"
        );
        assert!(text.contains("not a regular file"), "{args:?}: {text}");
    }
}

#[test]
fn a_job_directory_checkpoints_cannot_be_written_to_is_refused_before_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A finished run leaves the job directory (lock, shared/, taskowned/).
    let out = wordcount(dir.path(), &["--job-id", "wc", "--bounded"]);
    assert_code(&out, 0);
    let job_dir = dir.path().join("ck").join("wc");
    // Immutable: not even root may create a checkpoint in it (file
    // permissions would not stop root, as the tests run).
    let set = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&job_dir)
        .status()
        .unwrap();
    assert!(set.success(), "chattr +i {} failed", job_dir.display());
    let (log, ck) = (dir.path().join("log"), dir.path().join("ck"));
    let out = cairn_bounded(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--checkpoint-dir",
        p(&ck),
        "--job-id",
        "wc",
        "--checkpoint-interval",
        "20ms",
    ]);
    let unset = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&job_dir)
        .status()
        .unwrap();
    assert!(unset.success());
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("checkpoints cannot be written here") && err.contains(p(&job_dir)),
        "{err}"
    );
}
