//! Ctrl-C cancels `cairn run wordcount` (Flink's `flink cancel`): the job ends
//! CANCELED and its retained checkpoints are kept with `--retain-on-cancel`
//! and deleted without it, so a cancelled job can be resumed with `--from`.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

fn cairn() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_remove("RUST_LOG");
    c
}

fn completed_checkpoints(job_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("_metadata").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs an unbounded word count until it completed a checkpoint, sends it
/// SIGINT, and returns (exit code, stderr, checkpoints left).
fn run_and_interrupt(retain: bool) -> (Option<i32>, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let ckpt = dir.path().join("ckpt");
    let append = cairn()
        .args(["log", "append"])
        .arg(&log)
        .args(["words", "a", "b", "a", "--quiet"])
        .output()
        .unwrap();
    assert!(append.status.success());
    let mut args: Vec<String> = [
        "run",
        "wordcount",
        "--topic",
        "words",
        "--backend",
        "fs",
        "--job-id",
        "wc",
        "--checkpoint-interval",
        "20ms",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--input".into(), log.display().to_string()]);
    args.extend(["--checkpoint-dir".into(), ckpt.display().to_string()]);
    if retain {
        args.push("--retain-on-cancel".into());
    }
    let child = cairn()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job_dir = ckpt.join("wc");
    let deadline = Instant::now() + PATIENCE;
    while completed_checkpoints(&job_dir).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), stderr, completed_checkpoints(&job_dir))
}

#[test]
fn ctrl_c_cancels_and_retain_on_cancel_keeps_checkpoints() {
    let (code, stderr, left) = run_and_interrupt(true);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("CANCELED"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !left.is_empty(),
        "retained checkpoints were deleted: {stderr}"
    );
}

#[test]
fn ctrl_c_without_retain_on_cancel_deletes_checkpoints() {
    let (code, stderr, left) = run_and_interrupt(false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("CANCELED"), "{stderr}");
    assert!(
        left.is_empty(),
        "checkpoints left after cancel: {left:?}\n{stderr}"
    );
}
