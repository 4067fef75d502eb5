//! `cairn run wordcount` through the real binary: a bounded run on the fs
//! backend with checkpoints, the WordCount failure-and-recovery walk-through
//! (poison record, three restarts, FAILED,
//! resumed from its retained checkpoint), `--from` a chosen older retained
//! checkpoint, and bad input.
//!
//! A finished job deletes its checkpoints, its final one included (Flink's
//! behaviour, see `CompletedCheckpointStore::shutdown`), so the runs that
//! leave checkpoints behind are unbounded ones that fail or are killed.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use support::{
    assert_bad_input, assert_code, cairn, cairn_with_stdin, command, completed, p, stderr, stdout,
};

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// Appends one record per line through `cairn log append`.
fn append(log: &Path, topic: &str, lines: &[&str]) {
    let mut child = command(&["log", "append", p(log), topic, "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// `cairn run wordcount` over topic `words` of `log` on the fs backend,
/// checkpointing job `wc` into `ck` every `interval`.
fn fs_wordcount<'a>(log: &'a Path, ck: &'a Path, interval: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "wordcount",
        "--input",
        p(log),
        "--topic",
        "words",
        "--backend",
        "fs",
        "--checkpoint-dir",
        p(ck),
        "--job-id",
        "wc",
        "--checkpoint-interval",
        interval,
    ]
}

/// The summary line: the last line of stderr.
fn summary(out: &Output) -> String {
    stderr(out).lines().last().unwrap_or_default().to_owned()
}

/// `(word,count)` lines, without the `N> ` subtask prefix.
fn counts(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|line| {
            let line = line.split_once("> ").map_or(line, |(_, rest)| rest);
            let inner = line.strip_prefix('(').unwrap().strip_suffix(')').unwrap();
            let (word, n) = inner.rsplit_once(',').unwrap();
            (word.to_owned(), n.parse().unwrap())
        })
        .collect()
}

/// Waits for a checkpoint triggered after everything read so far was
/// processed: with at most one checkpoint in flight, any id two above the
/// newest completed one was triggered after this call. Returns its id.
fn checkpoint_after_now(job_dir: &Path, job: &mut Child) -> u64 {
    let newest = completed(job_dir).last().copied().unwrap_or(0);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(&id) = completed(job_dir).iter().find(|&&id| id >= newest + 2) {
            return id;
        }
        assert!(job.try_wait().unwrap().is_none(), "the job ended");
        assert!(Instant::now() < deadline, "no checkpoint after {newest}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `cairn run` whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next `n` lines of output.
    fn next_lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.lines.recv_timeout(PATIENCE).expect("job output"))
            .collect()
    }
}

#[test]
fn bounded_wordcount_on_fs_with_checkpoints_counts_every_word_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let words = ["apple", "pear", "fig", "kiwi", "lime", "plum", "date"];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let lines: Vec<String> = (0..3000u64)
        .map(|i| {
            let a = words[(i * 7 % 11 % 7) as usize];
            let b = words[(i % 7) as usize];
            *expected.entry(a.to_owned()).or_default() += 1;
            *expected.entry(b.to_owned()).or_default() += 1;
            format!("{a} {b}")
        })
        .collect();
    let out = cairn_with_stdin(
        &[
            "log",
            "append",
            p(&log),
            "words",
            "--partitions",
            "3",
            "--quiet",
        ],
        &lines.join("\n"),
    );
    assert_code(&out, 0);

    let ck = dir.path().join("ck");
    let out_dir = dir.path().join("out");
    for output in [None, Some(&out_dir)] {
        let mut args = vec![
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "words",
            "--bounded",
            "--backend",
            "fs",
            "--checkpoint-dir",
            p(&ck),
            "--checkpoint-interval",
            "10ms",
            "--retained",
            "2",
            "--parallelism",
            "2",
        ];
        if let Some(o) = output {
            args.extend(["--output", p(o)]);
        }
        let out = cairn(&args);
        assert_code(&out, 0);
        let line = summary(&out);
        assert!(
            line.starts_with("job cairn-job FINISHED: 0 restarts, "),
            "{line}"
        );
        let text = match output {
            None => stdout(&out),
            Some(o) => {
                assert_eq!(stdout(&out), "");
                let mut text = String::new();
                for part in std::fs::read_dir(o).unwrap() {
                    text.push_str(&std::fs::read_to_string(part.unwrap().path()).unwrap());
                }
                text
            }
        };
        // Exactly once: every word counted 1, 2, ..., n, each value once.
        let mut per_word: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (word, n) in counts(&text) {
            per_word.entry(word).or_default().push(n);
        }
        assert_eq!(
            per_word.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (word, mut seen) in per_word {
            seen.sort_unstable();
            assert_eq!(seen, (1..=expected[&word]).collect::<Vec<_>>(), "{word}");
        }
        // A finished job deletes its checkpoints.
        assert_eq!(completed(&ck.join("cairn-job")), Vec::<u64>::new());
    }
}

#[test]
fn wordcount_fails_after_three_restarts_and_resumes_from_its_retained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let ck = dir.path().join("ck");
    let job_dir = ck.join("word-count");
    append(&log, "word", &["a", "b", "a"]);
    let mut job = Running::start(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "word",
        "--backend",
        "fs",
        "--checkpoint-dir",
        p(&ck),
        "--job-id",
        "word-count",
        "--checkpoint-interval",
        "100ms",
        "--retained",
        "1000",
        "--restart-strategy",
        "fixed-delay",
        "--restart-attempts",
        "3",
        "--restart-delay",
        "10ms",
    ]);
    assert_eq!(job.next_lines(3), ["(a,1)", "(b,1)", "(a,2)"]);
    let checkpoint = checkpoint_after_now(&job_dir, &mut job.child);
    append(&log, "word", &["a", "c", "ERROR"]);
    // Every attempt replays from the checkpoint: (a,3) (c,1), then fails.
    let rest: Vec<String> = job.lines.iter().collect();
    assert_eq!(rest, ["(a,3)", "(c,1)"].repeat(4));
    let out = job.child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = summary(&out);
    assert!(
        line.starts_with("job word-count FAILED: 3 restarts, "),
        "{line}"
    );
    assert!(line.contains("custom error flag"), "{line}");
    // The failed job keeps its checkpoints; the newest holds a=2, b=1 at offset 3.
    let newest = *completed(&job_dir).last().unwrap();
    assert!(newest >= checkpoint);

    // Resume with the poison record filtered out: the counts continue.
    let chk = job_dir.join(format!("chk-{newest}"));
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "word",
        "--bounded",
        "--filter-poison",
        "--from",
        p(&chk),
    ]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "(a,3)\n(c,1)\n");
    assert!(
        summary(&out).starts_with("job word-count FINISHED: 0 restarts"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn from_a_chosen_older_retained_checkpoint_restores_its_state_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let ck = dir.path().join("ck");
    let job_dir = ck.join("wc");
    append(&log, "words", &["a", "b", "a"]);
    let mut run1 = fs_wordcount(&log, &ck, "50ms");
    run1.extend(["--retained", "1000"]);
    let mut job = Running::start(&run1);
    assert_eq!(job.next_lines(3), ["(a,1)", "(b,1)", "(a,2)"]);
    // Checkpoint A: a=2, b=1, offset 3.
    let a = checkpoint_after_now(&job_dir, &mut job.child);
    append(&log, "words", &["a", "c"]);
    assert_eq!(job.next_lines(2), ["(a,3)", "(c,1)"]);
    // Checkpoint B: a=3, b=1, c=1, offset 5.
    let b = checkpoint_after_now(&job_dir, &mut job.child);
    assert!(b > a);
    // Killed like a crashed process: its checkpoints stay.
    job.child.kill().unwrap();
    job.child.wait().unwrap();
    let before = completed(&job_dir);
    assert!(before.contains(&a) && before.contains(&b), "{before:?}");
    // A checkpoint the killed run was writing, without _metadata.
    let newest = *before.last().unwrap();
    let torn = job_dir.join(format!("chk-{}", newest + 1));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("op-0-keyed"), b"half a snapshot").unwrap();

    // From the older checkpoint A, in the same job directory: only the
    // records after A are read and the counts continue from A's state.
    let from = job_dir.join(format!("chk-{a}"));
    let mut run2 = fs_wordcount(&log, &ck, "50ms");
    run2.extend(["--bounded", "--from", p(&from)]);
    let out = cairn(&run2);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "(a,3)\n(c,1)\n");
    // The torn directory was removed, no completed checkpoint was touched.
    assert!(!torn.exists());
    assert_eq!(completed(&job_dir), before);

    // Claiming it from another job directory is refused, and creates nothing.
    let other = dir.path().join("other");
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--bounded",
        "--checkpoint-dir",
        p(&other),
        "--from",
        p(&job_dir.join(format!("chk-{a}"))),
        "--restore-mode",
        "claim",
    ]);
    assert_bad_input(
        &out,
        "claim takes over only a checkpoint of the job's own directory",
    );
    assert!(!other.exists());

    // From B's _metadata, continuing in B's job directory (the default
    // without --checkpoint-dir), after one more record.
    append(&log, "words", &["a"]);
    let metadata = job_dir.join(format!("chk-{b}")).join("_metadata");
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "words",
        "--bounded",
        "--from",
        p(&metadata),
    ]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "(a,4)\n");
    assert!(
        summary(&out).starts_with("job wc FINISHED"),
        "{}",
        stderr(&out)
    );
    assert_eq!(completed(&job_dir), before);
}

#[test]
fn a_failing_job_without_checkpoints_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    append(&log, "word", &["a b", "ERROR", "c"]);
    let out = cairn(&[
        "run",
        "wordcount",
        "--input",
        p(&log),
        "--topic",
        "word",
        "--bounded",
    ]);
    assert_code(&out, 1);
    assert_eq!(stdout(&out), "(a,1)\n(b,1)\n");
    let line = summary(&out);
    assert!(
        line.starts_with("job cairn-job FAILED: 0 restarts, 0 checkpoints completed"),
        "{line}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    append(&log, "words", &["a"]);
    let base = |extra: &[&str]| -> Output {
        let mut args = vec!["run", "wordcount", "--input", p(&log), "--bounded"];
        args.extend_from_slice(extra);
        cairn(&args)
    };
    // Not a checkpoint: the log directory, and a file.
    assert_bad_input(&base(&["--topic", "words", "--from", p(&log)]), p(&log));
    let file = log.join("words").join("topic.meta");
    assert_bad_input(&base(&["--topic", "words", "--from", p(&file)]), p(&file));
    let missing = dir.path().join("nowhere").join("chk-3");
    assert_bad_input(
        &base(&["--topic", "words", "--from", p(&missing)]),
        p(&missing),
    );
    // A missing topic.
    assert_bad_input(&base(&["--topic", "nope"]), "\"nope\"");
    // The fs backend needs a checkpoint directory.
    assert_bad_input(
        &base(&["--topic", "words", "--backend", "fs"]),
        "--checkpoint-dir",
    );
    // A checkpoint option without checkpointing.
    assert_bad_input(
        &base(&["--topic", "words", "--retained", "2"]),
        "--retained",
    );
}

#[test]
fn from_a_checkpoint_of_other_operators_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&cairn(&["example", "--dir", p(dir.path())]), 0);
    let log = dir.path().join("log");
    append(&log, "words", &["a", "b", "a"]);
    // `cairn example`'s job has operators "source" and "wordcount";
    // `cairn run wordcount` has neither.
    let chk = dir.path().join("example").join("chk-3");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "words",
            "--bounded",
            "--from",
            p(&chk),
        ];
        args.extend_from_slice(extra);
        cairn(&args)
    };

    let out = run(&[]);
    assert_bad_input(&out, "\"wordcount\"");
    assert!(
        stderr(&out).contains("--allow-non-restored-state"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--allow-non-restored-state"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("Skipping the state of operator uid \"wordcount\""));
    // Nothing was restored: every word counted from the start of the log.
    assert_eq!(
        counts(&stdout(&out)),
        vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]
    );
    // The checkpoint it started from is untouched.
    assert_code(&cairn(&["checkpoints", "verify", p(&chk)]), 0);
}

#[test]
fn one_process_per_job_directory_and_a_killed_ones_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    append(&log, "words", &["a", "b", "a"]);
    let ck = dir.path().join("ck");
    let args = fs_wordcount(&log, &ck, "20ms");
    let mut first = Running::start(&args);
    let pid = first.child.id();
    // The lock is taken before the job starts: once it checkpoints, it holds it.
    checkpoint_after_now(&ck.join("wc"), &mut first.child);

    let second = cairn(&args);
    assert_bad_input(&second, &format!("is in use by pid {pid} on host"));
    assert_eq!(
        first.child.try_wait().unwrap(),
        None,
        "the refused run disturbed the first"
    );

    // Killed, the first run cannot release the lock; the kernel does, and
    // the next run takes the stale lock file over.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut bounded = args.clone();
    bounded.extend(["--bounded", "--resume"]);
    let third = cairn(&bounded);
    assert_code(&third, 0);
    assert!(
        stderr(&third).contains(&format!("taking over the stale lock of pid {pid}")),
        "{}",
        stderr(&third)
    );
    // Released cleanly at the end: empty, so the next run sees no stale owner.
    assert_eq!(
        std::fs::read_to_string(ck.join("wc").join("_lock")).unwrap(),
        ""
    );
}
