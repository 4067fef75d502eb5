//! `cairn run --from … --restore-mode no-claim|claim` on RocksDB incremental
//! checkpoints, as a user runs it: a killed job leaves checkpoints; a run
//! restored from one of them and finished leaves that checkpoint restorable
//! (no-claim), or deletes it as its own (claim); bad combinations of the
//! options are refused naming them.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    assert_bad_input, assert_code, cairn, command, completed, last_counts, p, stderr, stdout,
};

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

struct Dirs {
    _tmp: tempfile::TempDir,
    log: PathBuf,
    ck: PathBuf,
    local: PathBuf,
    counts: BTreeMap<String, u64>,
}

impl Dirs {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Dirs {
            log: tmp.path().join("log"),
            ck: tmp.path().join("ck"),
            local: tmp.path().join("local"),
            _tmp: tmp,
            counts: BTreeMap::new(),
        }
    }

    fn job_dir(&self) -> PathBuf {
        self.ck.join("wc")
    }

    fn append(&mut self, lines: &[&str]) {
        let mut child = command(&["log", "append", p(&self.log), "words", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
            for w in line.split_whitespace() {
                *self.counts.entry(w.to_owned()).or_default() += 1;
            }
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }

    /// `cairn run wordcount` on RocksDB incremental into `ck`, plus `extra`.
    fn args<'a>(&'a self, ck: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "wordcount",
            "--input",
            p(&self.log),
            "--topic",
            "words",
            "--backend",
            "rocks",
            "--incremental",
            "--local-dir",
            p(&self.local),
            "--checkpoint-dir",
            p(ck),
            "--job-id",
            "wc",
            "--checkpoint-interval",
            "20ms",
            "--retained",
            "3",
        ];
        args.extend_from_slice(extra);
        args
    }

    /// Runs the job unbounded until it completed three checkpoints after
    /// two batches of records, then kills it; returns the checkpoints.
    fn killed_run(&mut self) -> Vec<u64> {
        self.append(&["a b a", "c a b"]);
        let mut child = command(&self.args(&self.ck, &[]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while completed(&self.job_dir()).len() < 2 {
            assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none());
            std::thread::sleep(Duration::from_millis(5));
        }
        self.append(&["d e", "a e"]);
        let seen = completed(&self.job_dir()).last().copied().unwrap();
        while completed(&self.job_dir()).last().copied().unwrap() < seen + 2 {
            assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none());
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        completed(&self.job_dir())
    }

    /// Verifies every checkpoint of the job directory: exit 0.
    fn verify(&self) {
        let out = cairn(&["checkpoints", "verify", p(&self.job_dir())]);
        assert_code(&out, 0);
    }
}

#[test]
fn no_claim_leaves_the_restored_checkpoint_restorable_after_the_run_finished() {
    let mut dirs = Dirs::new();
    let before = dirs.killed_run();
    let from = dirs
        .job_dir()
        .join(format!("chk-{}", before[before.len() - 2]));
    dirs.append(&["f a"]);
    // Twice from the same checkpoint: both finish with the full counts, and
    // every checkpoint of the killed run still verifies after each.
    for _ in 0..2 {
        let out = cairn(&dirs.args(&dirs.ck, &["--bounded", "--from", p(&from)]));
        assert_code(&out, 0);
        assert_eq!(last_counts(&stdout(&out)).get("a"), dirs.counts.get("a"));
        assert!(stderr(&out).contains("FINISHED"), "{}", stderr(&out));
        assert_eq!(completed(&dirs.job_dir()), before);
        dirs.verify();
    }
    // Into another checkpoint directory, which no-claim allows.
    let other = dirs.ck.parent().unwrap().join("other");
    let out = cairn(&dirs.args(
        &other,
        &[
            "--bounded",
            "--from",
            p(&from),
            "--restore-mode",
            "no-claim",
        ],
    ));
    assert_code(&out, 0);
    assert_eq!(completed(&dirs.job_dir()), before);
    dirs.verify();
}

#[test]
fn claim_deletes_the_restored_checkpoint_with_the_runs_own() {
    let mut dirs = Dirs::new();
    let before = dirs.killed_run();
    let claimed = before[before.len() - 2];
    let from = dirs.job_dir().join(format!("chk-{claimed}"));
    dirs.append(&["f a"]);
    let out = cairn(&dirs.args(
        &dirs.ck,
        &["--bounded", "--from", p(&from), "--restore-mode", "claim"],
    ));
    assert_code(&out, 0);
    assert_eq!(last_counts(&stdout(&out)).get("a"), dirs.counts.get("a"));
    // The finished job deleted what it owned, the claimed checkpoint with
    // it; the other checkpoints of the killed run are intact.
    let left: Vec<u64> = before.iter().copied().filter(|&id| id != claimed).collect();
    assert_eq!(completed(&dirs.job_dir()), left);
    dirs.verify();
}

#[test]
fn restore_options_that_do_not_fit_are_refused_naming_them() {
    let dirs = Dirs::new();
    let out = cairn(&dirs.args(&dirs.ck, &["--restore-mode", "claim"]));
    assert_bad_input(&out, "--restore-mode claim needs --from");
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&dirs.log),
        "--topic",
        "words",
        "--resume",
    ]);
    assert_bad_input(&out, "--resume needs --checkpoint-dir");
    let out = cairn(&dirs.args(&dirs.ck, &["--resume", "--from", p(&dirs.ck)]));
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
}

#[test]
fn a_start_over_kept_checkpoints_without_resume_is_refused_and_resume_continues() {
    let mut dirs = Dirs::new();
    let before = dirs.killed_run();
    let out = cairn(&dirs.args(&dirs.ck, &["--bounded"]));
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("already holds completed checkpoints of job wc"),
        "{}",
        stderr(&out)
    );
    assert_eq!(completed(&dirs.job_dir()), before);
    dirs.append(&["g a"]);
    let out = cairn(&dirs.args(&dirs.ck, &["--bounded", "--resume"]));
    assert_code(&out, 0);
    assert_eq!(last_counts(&stdout(&out)).get("a"), dirs.counts.get("a"));
}

/// Flips one byte in the middle of the largest file `chk-<id>` references
/// in its own directory; returns the file's name.
fn damage(job_dir: &Path, id: u64) -> String {
    let chk = job_dir.join(format!("chk-{id}"));
    let victim = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "_metadata")
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    victim.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn resume_passes_over_a_damaged_newest_checkpoint_and_refuses_when_none_is_intact() {
    let mut dirs = Dirs::new();
    let before = dirs.killed_run();
    let newest = *before.last().unwrap();
    let file = damage(&dirs.job_dir(), newest);
    dirs.append(&["h a"]);
    let out = command(&dirs.args(&dirs.ck, &["--bounded", "--resume"]))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "Checkpoint {newest} is damaged and is passed over"
        )),
        "{log}"
    );
    assert!(log.contains(&file), "the warning names {file}: {log}");
    assert_eq!(last_counts(&stdout(&out)).get("a"), dirs.counts.get("a"));
    // A resumed job owns every checkpoint of its directory: finished, it
    // deleted them all, the damaged one with them.
    assert_eq!(completed(&dirs.job_dir()), Vec::<u64>::new());

    // With every checkpoint damaged the job does not start.
    let mut dirs = Dirs::new();
    for id in dirs.killed_run() {
        damage(&dirs.job_dir(), id);
    }
    let out = cairn(&dirs.args(&dirs.ck, &["--bounded", "--resume"]));
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("no intact checkpoint left to restore from"),
        "{}",
        stderr(&out)
    );
}
