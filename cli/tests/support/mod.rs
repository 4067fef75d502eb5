//! What every test of the `cairn` binary needs: running it, reading what it
//! printed, and the assertions on exit codes and one-line errors that the
//! command's contract promises (0 ok, 1 corruption or a FAILED/CANCELED job,
//! 2 bad input with exactly one `error: ...` line naming what is wrong).

// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The `cairn` binary with `args`, logging at its default level.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.args(args).env_remove("RUST_LOG");
    command
}

/// Runs `cairn args` with an empty stdin and returns what it printed.
pub(crate) fn cairn(args: &[&str]) -> Output {
    command(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs `cairn args` with `stdin` written to its standard input.
pub(crate) fn cairn_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A path as a command-line argument.
pub(crate) fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Standard output as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Standard error as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Standard output parsed as one JSON document.
pub(crate) fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The exit code is `code`, and nothing panicked.
pub(crate) fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

/// Exit 0, and nothing panicked.
pub(crate) fn assert_ok(out: &Output) {
    assert_code(out, 0);
}

/// Exit 2 and exactly one `error: ...` line on stderr that contains `what`.
pub(crate) fn assert_bad_input(out: &Output, what: &str) {
    assert_code(out, 2);
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(what), "does not name {what}: {err}");
}

/// The ids of the completed checkpoints (`chk-<n>/_metadata`) of a job
/// directory, ascending; none when the directory does not exist.
pub(crate) fn completed(job_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("_metadata").is_file())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// SplitMix64: the seeded choices of the kill campaigns.
pub(crate) struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The number in environment variable `name`, or `default` when unset.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// A log topic `words` (2 partitions) of random lines of words, with how
/// often each word was appended: what a fault-free word count must give.
pub(crate) struct WordLog {
    writer: executor::log::TopicWriter,
    words: &'static [&'static str],
    /// How often each word was appended so far.
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl WordLog {
    /// Creates the topic in `log_dir`; lines are drawn from `words`.
    pub(crate) fn create(log_dir: &Path, words: &'static [&'static str]) -> Self {
        let topic = executor::log::Topic::create(log_dir, "words", 2).unwrap();
        let clock = std::sync::Arc::new(state_core::SystemClock);
        WordLog {
            writer: executor::log::TopicWriter::open(&topic, clock).unwrap(),
            words,
            counts: std::collections::BTreeMap::new(),
        }
    }

    /// Appends `lines` lines of 1 to 4 words picked by `rng`.
    pub(crate) fn append_random(&mut self, rng: &mut Rng, lines: u64) {
        for _ in 0..lines {
            let line: Vec<&str> = (0..1 + rng.below(4))
                .map(|_| self.words[rng.below(self.words.len() as u64) as usize])
                .collect();
            self.append_line(&line);
        }
    }

    /// Appends one line of each word: the end of a campaign's input, after
    /// which a final run writes every word's count.
    pub(crate) fn append_each_word(&mut self) {
        for w in self.words {
            self.append_line(&[w]);
        }
    }

    fn append_line(&mut self, words: &[&str]) {
        for w in words {
            *self.counts.entry((*w).to_owned()).or_default() += 1;
        }
        self.writer
            .append(None, words.join(" ").as_bytes(), None)
            .unwrap();
    }
}

/// Every count each word went through in the committed part files of the
/// exactly-once file sink in `dirs` (`(word,count)` lines). Panics on an
/// uncommitted (dot) file: a finished job leaves none.
pub(crate) fn committed_counts(dirs: &[&Path]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut seen: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(!name.starts_with('.'), "uncommitted file {name} left");
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let (word, count) = line
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split_once(',')
                    .unwrap();
                seen.entry(word.to_owned())
                    .or_default()
                    .push(count.parse().unwrap());
            }
        }
    }
    seen
}

/// Against a fault-free run's output (for every word the counts `1..=n`
/// once each, `n` from `expected`): how many outputs `seen` lacks and how
/// many it has that are extra (twice, or beyond `n`, or of unknown words).
pub(crate) fn lost_and_duplicated(
    expected: &std::collections::BTreeMap<String, u64>,
    mut seen: std::collections::BTreeMap<String, Vec<u64>>,
) -> (u64, u64) {
    let (mut lost, mut duplicated) = (0, 0);
    for (word, &n) in expected {
        let mut counts = seen.remove(word).unwrap_or_default();
        counts.sort_unstable();
        let mut distinct = counts.clone();
        distinct.dedup();
        duplicated += (counts.len() - distinct.len()) as u64;
        lost += (1..=n)
            .filter(|c| distinct.binary_search(c).is_err())
            .count() as u64;
        duplicated += distinct.iter().filter(|&&c| c > n).count() as u64;
    }
    duplicated += seen.values().map(|c| c.len() as u64).sum::<u64>();
    (lost, duplicated)
}

/// The last count printed per word by `cairn run wordcount` (lines
/// `(w,c)`, prefixed `n> ` at a parallelism above 1).
pub(crate) fn last_counts(out: &str) -> std::collections::BTreeMap<String, u64> {
    out.lines()
        .map(|l| {
            let l = l.split_once("> ").map_or(l, |(_, rest)| rest);
            let (w, c) = l
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split_once(',')
                .unwrap();
            (w.to_owned(), c.parse().unwrap())
        })
        .collect()
}
