//! Savepoints through the `cairn` binary: `cairn savepoint` and `cairn stop`
//! against a running `cairn run`, and `--from <savepoint>` switching backend
//! and parallelism. A RocksDB incremental job at parallelism 2 is stopped
//! with a canonical savepoint; a heap (fs) job at parallelism 3 restores it,
//! takes a savepoint while running and is stopped with another; a RocksDB
//! job at parallelism 1 restores that one and finishes. The exactly-once
//! part files the three runs wrote into one directory hold exactly a
//! fault-free run's output: every stop committed its sink's last transaction, nothing was
//! counted twice or lost across three backends and parallelisms.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{
    Rng, WordLog, assert_bad_input, assert_code, assert_ok, cairn, command, committed_counts,
    lost_and_duplicated, p, stdout,
};

const WORDS: [&str; 8] = [
    "apple", "pear", "fig", "kiwi", "lime", "plum", "date", "lemon",
];
/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cairn run wordcount` on the log into `out`, checkpoints under `ck`.
    fn run(&self, ck: &str, out: &str, extra: &[&str]) -> std::process::Command {
        let log = self.path("log");
        let ck = self.path(ck);
        let sink = format!("file:{}", self.path(out).display());
        let local = self.path("local");
        let mut args = vec![
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "words",
            "--job-id",
            "wc",
            "--checkpoint-dir",
            p(&ck),
            "--local-dir",
            p(&local),
            "--checkpoint-interval",
            "100ms",
            "--sink",
            &sink,
        ];
        args.extend_from_slice(extra);
        let mut cmd = command(&args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    fn start(&self, ck: &str, out: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.path(&format!("{ck}.log"))).unwrap();
        self.run(ck, out, extra)
            .env("RUST_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log_of(&self, ck: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{ck}.log"))).unwrap_or_default()
    }

    /// Waits until the job's lock is held (it runs and answers requests).
    fn wait_running(&self, ck: &str, child: &mut Child) {
        let lock = self.path(ck).join("wc").join("_lock");
        let deadline = Instant::now() + PATIENCE;
        while !lock.exists() || support::completed(&self.path(ck).join("wc")).is_empty() {
            assert!(child.try_wait().unwrap().is_none(), "{}", self.log_of(ck));
            assert!(Instant::now() < deadline, "{}", self.log_of(ck));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The path printed by `cairn savepoint` / `cairn stop`.
fn savepoint_path(out: &std::process::Output) -> PathBuf {
    let text = stdout(out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no path in {text}"));
    PathBuf::from(line)
}

fn committed_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
            .sum()
    })
}

#[test]
fn rocks_to_canonical_savepoint_to_heap_at_another_parallelism_to_rocks_counts_exactly() {
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
    };
    let mut words = WordLog::create(&s.path("log"), &WORDS);
    let mut rng = Rng(20_261_201);
    let savepoints = s.path("savepoints");

    // 1. RocksDB, incremental checkpoints, parallelism 2.
    words.append_random(&mut rng, 300);
    let mut first = s.start(
        "ck1",
        "out",
        &["--backend", "rocks", "--incremental", "--parallelism", "2"],
    );
    s.wait_running("ck1", &mut first);
    words.append_random(&mut rng, 300);
    let stop = cairn(&[
        "stop",
        p(&s.path("ck1").join("wc")),
        "--savepoint-dir",
        p(&savepoints),
    ]);
    assert_ok(&stop);
    let first_savepoint = savepoint_path(&stop);
    assert!(stdout(&stop).contains("The job ended."));
    assert_eq!(first.wait().unwrap().code(), Some(0), "{}", s.log_of("ck1"));
    assert!(
        first_savepoint.starts_with(&savepoints)
            && first_savepoint
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("savepoint-wc-"),
        "{}",
        first_savepoint.display()
    );
    // The stop committed what the savepoint covers.
    assert!(committed_lines(&s.path("out")) > 0);

    // 2. Heap state on the filesystem (fs) at parallelism 3, from the savepoint moved elsewhere.
    let moved = s.path("moved-savepoint");
    std::fs::rename(&first_savepoint, &moved).unwrap();
    words.append_random(&mut rng, 200);
    let mut second = s.start(
        "ck2",
        "out",
        &["--backend", "fs", "--parallelism", "3", "--from", p(&moved)],
    );
    s.wait_running("ck2", &mut second);
    // A savepoint of the running job (native format: heap writes canonical).
    let taken = cairn(&[
        "savepoint",
        p(&s.path("ck2").join("wc")),
        "--dir",
        p(&savepoints),
        "--format",
        "native",
    ]);
    assert_ok(&taken);
    let running_savepoint = savepoint_path(&taken);
    assert_eq!(support::completed(&running_savepoint).len(), 1);
    words.append_random(&mut rng, 200);
    let stop = cairn(&[
        "stop",
        p(&s.path("ck2").join("wc")),
        "--savepoint-dir",
        p(&savepoints),
    ]);
    assert_ok(&stop);
    let second_savepoint = savepoint_path(&stop);
    assert_eq!(
        second.wait().unwrap().code(),
        Some(0),
        "{}",
        s.log_of("ck2")
    );
    assert!(
        s.log_of("ck2").contains("Restoring job wc from checkpoint"),
        "{}",
        s.log_of("ck2")
    );
    // Savepoints survive the end of the job that took them.
    assert!(running_savepoint.is_dir() && second_savepoint.is_dir());

    // 3. RocksDB at parallelism 1, bounded: finishes.
    words.append_random(&mut rng, 100);
    words.append_each_word();
    let last = s
        .run(
            "ck3",
            "out",
            &[
                "--backend",
                "rocks",
                "--bounded",
                "--from",
                p(&second_savepoint),
            ],
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_code(&last, 0);

    let seen = committed_counts(&[&s.path("out")]);
    assert_eq!(lost_and_duplicated(&words.counts, seen), (0, 0));
}

#[test]
fn savepoint_requests_without_a_running_job_or_with_bad_input_are_refused() {
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
    };
    let missing = s.path("nope");
    assert_bad_input(&cairn(&["savepoint", p(&missing)]), "nope");
    // A job directory whose job is not running.
    let job_dir = s.path("ck").join("wc");
    std::fs::create_dir_all(&job_dir).unwrap();
    assert_bad_input(
        &cairn(&["savepoint", p(&job_dir), "--dir", p(&s.path("sp"))]),
        "no job runs in",
    );
    let out = cairn(&["stop", p(&job_dir), "--format", "zip"]);
    assert_code(&out, 2);
    assert!(support::stderr(&out).contains("zip"));
    // --from a savepoint without --checkpoint-dir: the job would write into it.
    let mut words = WordLog::create(&s.path("log"), &WORDS);
    words.append_each_word();
    let savepoint = s.path("savepoint-wc-1-abcdef");
    std::fs::rename(job_with_one_checkpoint(&s), &savepoint).unwrap();
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&s.path("log")),
        "--topic",
        "words",
        "--from",
        p(&savepoint),
    ]);
    assert_bad_input(&out, "--checkpoint-dir");
}

/// The job directory a killed run left, holding its one retained checkpoint.
fn job_with_one_checkpoint(s: &Setup) -> PathBuf {
    let mut child = s.start("meta", "meta-out", &["--backend", "fs"]);
    s.wait_running("meta", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let job = s.path("meta").join("wc");
    assert_eq!(support::completed(&job).len(), 1);
    job
}
