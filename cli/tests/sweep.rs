//! Orphans through the real binary: `cairn checkpoints verify` lists them
//! without failing, `cairn checkpoints gc` removes them (dry run unless
//! `--delete`, refused while a job holds the directory), and `cairn run`
//! sweeps the job directory and what a SIGKILLed run's rocks backend left
//! in `--local-dir` when it starts.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use backend_fs::{JobLock, LockOwner};
use support::{assert_bad_input, assert_code, cairn, json, p, stdout};

/// `cairn example`'s job directory (3 checkpoints, 2 retained) with two
/// orphans: an upload in `shared/` that nothing references (9 bytes) and a
/// torn checkpoint directory (4 bytes).
fn job_with_orphans() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    assert_code(&cairn(&["example", "--dir", p(base.path())]), 0);
    let job = base.path().join("example");
    std::fs::write(job.join("shared").join("stray.sst"), b"012345678").unwrap();
    std::fs::create_dir_all(job.join("chk-9")).unwrap();
    std::fs::write(job.join("chk-9").join("torn"), b"0123").unwrap();
    (base, job)
}

fn orphan_paths(v: &serde_json::Value) -> Vec<String> {
    v["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn verify_lists_orphans_without_failing() {
    let (_base, job) = job_with_orphans();
    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("  ORPHAN   shared/stray.sst  (9 bytes)"),
        "{text}"
    );
    assert!(text.contains("  ORPHAN   chk-9/torn  (4 bytes)"), "{text}");
    assert!(text.contains("  ORPHAN   chk-9/  (0 bytes)"), "{text}");
    assert!(
        text.contains("\n3 orphans (13 bytes) not referenced by any checkpoint"),
        "{text}"
    );
    assert_eq!(
        text.lines().last().unwrap(),
        "2 checkpoints, 8 files verified, 0 corrupt"
    );
    assert!(!text.contains("a job is running"), "{text}");

    let out = cairn(&["checkpoints", "verify", p(&job), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["corrupt_files"], 0);
    assert_eq!(v["incomplete"], serde_json::json!([9]));
    assert_eq!(
        v["orphans"],
        serde_json::json!([
            {"path": "chk-9/torn", "kind": "file", "bytes": 4},
            {"path": "chk-9/", "kind": "dir", "bytes": 0},
            {"path": "shared/stray.sst", "kind": "file", "bytes": 9},
        ])
    );
    assert_eq!(v["orphans_held_back"], serde_json::Value::Null);
    assert_eq!(v["running_job"], serde_json::Value::Null);

    // One checkpoint: no orphan search.
    let out = cairn(&["checkpoints", "verify", p(&job.join("chk-3")), "--json"]);
    assert_code(&out, 0);
    assert_eq!(json(&out)["orphans"], serde_json::json!([]));
}

#[test]
fn gc_is_a_dry_run_until_delete_and_then_verify_finds_no_orphan() {
    let (_base, job) = job_with_orphans();
    let out = cairn(&["checkpoints", "gc", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("  ORPHAN   shared/stray.sst  (9 bytes)"),
        "{text}"
    );
    assert!(
        text.contains("3 orphans (13 B) in") && text.contains("dry run: pass --delete to remove"),
        "{text}"
    );
    assert!(job.join("shared").join("stray.sst").is_file());
    assert!(job.join("chk-9").is_dir());

    let out = cairn(&["checkpoints", "gc", p(&job), "--delete", "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert_eq!(v["deleted"], true);
    assert_eq!(v["bytes"], 13);
    assert_eq!(
        orphan_paths(&v),
        ["chk-9/torn", "chk-9/", "shared/stray.sst"]
    );
    assert!(!job.join("shared").join("stray.sst").exists());
    assert!(!job.join("chk-9").exists());

    let out = cairn(&["checkpoints", "verify", p(&job), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert_eq!(v["orphans"], serde_json::json!([]));
    assert_eq!(v["checkpoints_verified"], 2);
    let out = cairn(&["checkpoints", "gc", p(&job)]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("no orphans in"), "{}", stdout(&out));
}

#[test]
fn gc_delete_is_refused_while_a_job_holds_the_directory() {
    let (_base, job) = job_with_orphans();
    // This test process plays the running job.
    let owner = LockOwner::this_process(1_000);
    let lock = JobLock::acquire(&job, &owner).unwrap();

    let out = cairn(&["checkpoints", "gc", p(&job), "--delete"]);
    assert_bad_input(&out, &format!("is in use by pid {}", owner.pid));
    assert!(job.join("shared").join("stray.sst").is_file());

    // Reports name the running job: its in-progress files may look orphaned.
    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!(
            "note: a job is running in this directory (pid {}",
            owner.pid
        )),
        "{}",
        stdout(&out)
    );
    let out = cairn(&["checkpoints", "gc", p(&job), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert!(
        v["running_job"]
            .as_str()
            .unwrap()
            .starts_with(&format!("pid {}", owner.pid)),
        "{v}"
    );
    drop(lock);
    let out = cairn(&["checkpoints", "gc", p(&job), "--delete"]);
    assert_code(&out, 0);
    assert!(!job.join("shared").join("stray.sst").exists());
}

#[test]
fn gc_of_a_path_that_is_not_a_job_directory_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert_bad_input(&cairn(&["checkpoints", "gc", p(&missing)]), p(&missing));
}

/// The instance directories under a job's local directory.
#[cfg(feature = "rocks")]
fn instances(job_local: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(job_local) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs
}

/// The entries of `dir`, sorted.
#[cfg(feature = "rocks")]
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Needs the rocks backend.
#[cfg(feature = "rocks")]
#[test]
fn a_run_after_a_sigkilled_one_removes_its_orphans_and_dead_rocks_instance() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let append = cairn(&["log", "append", p(&log), "words", "a", "b", "a", "--quiet"]);
    assert_code(&append, 0);
    let (ck, local) = (dir.path().join("ck"), dir.path().join("local"));
    let args = [
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--backend",
        "rocks",
        "--incremental",
        "--local-recovery",
        "--checkpoint-dir",
        p(&ck),
        "--local-dir",
        p(&local),
        "--job-id",
        "wc",
        "--checkpoint-interval",
        "20ms",
    ];
    let job_dir = ck.join("wc");
    let job_local = local.join("wc");
    let mut killed = support::command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while support::completed(&job_dir).len() < 2 {
        assert!(killed.try_wait().unwrap().is_none(), "the job ended");
        assert!(Instant::now() < deadline, "no checkpoints");
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.kill().unwrap(); // SIGKILL: nothing is cleaned up
    killed.wait().unwrap();
    let retained = support::completed(&job_dir);
    let dead = instances(&job_local);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead = dead[0].clone();
    let left = names(&dead);
    assert!(left.iter().any(|n| n.starts_with("db-")), "{left:?}");
    // Orphans as a crash leaves them: an upload nothing references, a torn checkpoint.
    std::fs::write(job_dir.join("shared").join("stray.sst"), b"x").unwrap();
    std::fs::create_dir_all(job_dir.join("chk-1000")).unwrap();
    std::fs::write(job_dir.join("chk-1000").join("torn"), b"x").unwrap();

    // The next run sweeps both at its start, keeping the dead instance's
    // copies of the checkpoints the job directory retains.
    let mut bounded = args.to_vec();
    bounded.extend(["--bounded", "--resume"]);
    let out = support::command(&bounded)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let log = support::stderr(&out);
    assert!(!job_dir.join("shared").join("stray.sst").exists());
    assert!(!job_dir.join("chk-1000").exists());
    assert!(log.contains("removed orphan"), "{log}");
    assert!(log.contains("shared/stray.sst"), "{log}");
    assert!(
        log.contains("removed what dead rocks backend instances left"),
        "{log}"
    );
    // The sweep kept exactly the copies of the retained checkpoints (the
    // resumed run then adopted them and deletes each as it is subsumed),
    // and removed the dead instance's working database.
    let mut expected: Vec<String> = retained.iter().map(|id| format!("chk-{id}")).collect();
    expected.sort();
    let listed = log
        .split("kept=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no kept list in the sweep's log: {log}"));
    let mut kept: Vec<String> = listed
        .split(", ")
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    kept.sort();
    assert_eq!(kept, expected, "before: {left:?}\n{log}");
    // (The resumed run may have deleted the adopted directory whole.)
    if dead.exists() {
        assert!(
            !names(&dead).iter().any(|n| n.starts_with("db-")),
            "{:?}",
            names(&dead)
        );
    }

    // Once the job directory retains none of those checkpoints (deleted
    // here as retention would delete them), nothing needs the copies: the
    // next run removes the dead instance whole, and what the finished run
    // left, with the unreferenced uploads.
    for id in support::completed(&job_dir) {
        std::fs::remove_dir_all(job_dir.join(format!("chk-{id}"))).unwrap();
    }
    let before = instances(&job_local);
    let out = support::command(&bounded)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(!dead.exists(), "{:?}", names(&dead));
    for old in &before {
        assert!(!old.exists(), "{old:?} was not swept");
    }
    assert_eq!(names(&job_dir.join("shared")), Vec::<String>::new());
}
