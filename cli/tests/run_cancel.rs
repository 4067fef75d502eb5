//! Ctrl-C cancels `cairn run wordcount` (Flink's `flink cancel`): the job ends
//! CANCELED and its retained checkpoints are kept with `--retain-on-cancel`
//! and deleted without it, so a cancelled job can be resumed with `--from`.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs an unbounded word count until it completed `min_checkpoints`
/// checkpoints, sends it SIGINT, and returns (exit code, stderr, checkpoints
/// left). `extra` are more job options.
fn run_and_interrupt_in(
    dir: &Path,
    retain: bool,
    min_checkpoints: usize,
    extra: &[String],
) -> (Option<i32>, String, Vec<u64>) {
    let log = dir.join("log");
    let ckpt = dir.join("ckpt");
    let append = support::command(&[])
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
    args.extend(extra.iter().cloned());
    let mut child = support::command(&[])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job_dir = ckpt.join("wc");
    let deadline = Instant::now() + PATIENCE;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < min_checkpoints {
        seen.extend(support::completed(&job_dir));
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the job exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {} checkpoints completed",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), stderr, support::completed(&job_dir))
}

fn run_and_interrupt(retain: bool) -> (Option<i32>, String, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let fs = ["--backend", "fs"].map(String::from);
    run_and_interrupt_in(dir.path(), retain, 1, &fs)
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

/// Needs the rocks backend, and its sweep of the local directory.
#[cfg(feature = "rocks")]
#[test]
fn rocks_local_copies_rotate_with_the_retained_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let extra: Vec<String> = [
        "--backend",
        "rocks",
        "--incremental",
        "--local-recovery",
        "--retained",
        "2",
        "--local-dir",
    ]
    .map(String::from)
    .into_iter()
    .chain([local.display().to_string()])
    .collect();
    let (code, stderr, left) = run_and_interrupt_in(dir.path(), true, 6, &extra);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(left.len(), 2, "retained: {left:?}\n{stderr}");
    // The job works in its own directory under --local-dir, with one
    // backend instance, which kept a local copy of each retained checkpoint.
    let job_local = local.join("wc");
    let instances: Vec<_> = std::fs::read_dir(&job_local)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    let copies = |instance: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(instance)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("chk-"))
            .collect();
        names.sort_by_key(|n| n[4..].parse::<u64>().unwrap());
        names
    };
    let retained: Vec<String> = left.iter().map(|id| format!("chk-{id}")).collect();
    let before = copies(&instances[0]);
    for name in &retained {
        assert!(before.contains(name), "no local copy of {name}: {before:?}");
    }
    // A copy whose checkpoint was in flight at the cancel, or subsumed
    // without the task hearing of it, goes at the next start's sweep (which
    // keeps the retained ones): then the copies are exactly the retained.
    let ids: Vec<state_core::CheckpointId> = left
        .iter()
        .map(|&id| state_core::CheckpointId(id))
        .collect();
    let swept = backend_rocks::sweep_local_dir(&job_local, &ids).unwrap();
    assert_eq!(
        copies(&instances[0]),
        retained,
        "before the sweep: {before:?}"
    );
    assert_eq!(
        swept.kept,
        retained
            .iter()
            .map(|n| instances[0].join(n))
            .collect::<Vec<_>>()
    );
    assert!(swept.live.is_empty(), "{swept:?}");
}
