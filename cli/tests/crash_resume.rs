//! Resume after kill -9: a campaign of `cairn run wordcount --resume`
//! processes, each SIGKILLed at a seeded random moment, on RocksDB with
//! incremental checkpoints and on the fs backend (full and incremental
//! checkpoints), writing to the
//! exactly-once file sink. After the input ends, a last `--bounded --resume`
//! run must finish, and the committed part files must hold exactly the
//! output of a fault-free run: for every word, the counts 1, 2, …, n once
//! each, where n is how often the input holds it: nothing lost, nothing
//! counted or written twice.
//!
//! Each trial appends a batch of lines, starts the job and kills it at one of
//! three kinds of moment, picked by the seed:
//! - after a random delay (anywhere: starting, restoring, counting);
//! - as soon as a checkpoint directory appears without its `_metadata`
//!   (during the checkpoint's upload);
//! - as soon as a new `_metadata` appears (after the checkpoint exists,
//!   before or while the older ones are subsumed).
//!
//! `CAIRN_CRASH_KILLS` sets the number of kills per backend (default 16: 48
//! per `.ci/run`), `CAIRN_CRASH_SEED` the seed; `scripts/crash-campaign.sh`
//! runs 1,000. Each campaign prints one `crash campaign:` line of figures.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test
// failure; the campaign's figures line goes to stderr (shown with --no-capture).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    Rng, WordLog, command, committed_counts, completed, env_u64, lost_and_duplicated, p,
};

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);
const WORDS: [&str; 24] = [
    "apple",
    "pear",
    "fig",
    "kiwi",
    "lime",
    "plum",
    "date",
    "lemon",
    "mango",
    "peach",
    "grape",
    "melon",
    "cherry",
    "guava",
    "papaya",
    "quince",
    "olive",
    "apricot",
    "banana",
    "orange",
    "lychee",
    "sloe",
    "yuzu",
    "nectarine",
];

/// What a campaign did and found.
#[derive(Debug, Default)]
struct Figures {
    kills: u64,
    killed_in_upload: u64,
    killed_after_metadata: u64,
    restores: u64,
    fallbacks: u64,
    started_empty: u64,
    orphans_swept: u64,
    lost: u64,
    duplicated: u64,
}

struct Campaign {
    dir: tempfile::TempDir,
    words: WordLog,
    backend: Vec<&'static str>,
}

impl Campaign {
    fn new(backend: &[&'static str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let words = WordLog::create(&dir.path().join("log"), &WORDS);
        Campaign {
            dir,
            words,
            backend: backend.to_vec(),
        }
    }

    fn job_dir(&self) -> PathBuf {
        self.dir.path().join("ck").join("wc")
    }

    /// `cairn run wordcount --resume` with the campaign's options.
    fn run(&self, bounded: bool, trial: u64) -> std::process::Command {
        let log = self.dir.path().join("log");
        let ck = self.dir.path().join("ck");
        let local = self.dir.path().join("local");
        let sink = format!("file:{}", self.dir.path().join("out").display());
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
            "wc",
            "--local-dir",
            p(&local),
            "--checkpoint-interval",
            "15ms",
            "--retained",
            "2",
            "--resume",
            "--sink",
            &sink,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.backend.iter().map(|s| (*s).to_owned()));
        if bounded {
            args.push("--bounded".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = command(&args);
        cmd.env("RUST_LOG", "info").stdin(Stdio::null());
        let log_file = self.dir.path().join(format!("trial-{trial}.log"));
        cmd.stderr(std::fs::File::create(log_file).unwrap());
        cmd
    }

    fn trial_log(&self, trial: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("trial-{trial}.log"))).unwrap()
    }

    /// Runs `kills` trials, then the final bounded run; returns the figures.
    fn go(&mut self, kills: u64, seed: u64) -> Figures {
        let mut rng = Rng(seed);
        let mut figures = Figures::default();
        for trial in 0..kills {
            let lines = 20 + rng.below(200);
            self.words.append_random(&mut rng, lines);
            let newest = completed(&self.job_dir()).last().copied().unwrap_or(0);
            let mut child = self
                .run(false, trial)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + PATIENCE;
            match rng.below(3) {
                0 => std::thread::sleep(Duration::from_millis(rng.below(400))),
                1 => {
                    while !self.checkpoint_in_upload(newest) {
                        assert!(
                            Instant::now() < deadline,
                            "no upload seen: {}",
                            self.trial_log(trial)
                        );
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    figures.killed_in_upload += 1;
                }
                _ => {
                    while completed(&self.job_dir()).last().copied().unwrap_or(0) <= newest {
                        assert!(
                            Instant::now() < deadline,
                            "no checkpoint: {}",
                            self.trial_log(trial)
                        );
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    figures.killed_after_metadata += 1;
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "trial {trial}: the job ended by itself: {}",
                self.trial_log(trial)
            );
            child.kill().unwrap();
            child.wait().unwrap();
            figures.kills += 1;
            let log = self.trial_log(trial);
            assert!(!log.contains("panicked"), "trial {trial}: {log}");
            figures.restores += u64::from(log.contains("Resuming job wc from checkpoint"));
            figures.started_empty += u64::from(log.contains("starting with empty state"));
            figures.fallbacks += log.matches("is damaged and is passed over").count() as u64;
            figures.orphans_swept += log.matches("removed orphan").count() as u64;
        }
        // The end of the input: one more of every word, so the final run
        // prints every word's count from its state.
        self.words.append_each_word();
        let out = self.run(true, kills).output().unwrap();
        let log = self.trial_log(kills);
        assert_eq!(out.status.code(), Some(0), "final run: {log}");
        figures.orphans_swept += log.matches("removed orphan").count() as u64;
        // Every count each word went through, from the committed files.
        let seen = committed_counts(&[&self.dir.path().join("out")]);
        (figures.lost, figures.duplicated) = lost_and_duplicated(&self.words.counts, seen);
        eprintln!(
            "crash campaign: backend {:?}, seed {seed}: {} kills ({} during an upload, {} right after \
             a _metadata), {} restores, {} fallbacks past a damaged checkpoint, {} empty starts, \
             {} orphans swept, {} outputs lost, {} written twice",
            self.backend.join(" "),
            figures.kills,
            figures.killed_in_upload,
            figures.killed_after_metadata,
            figures.restores,
            figures.fallbacks,
            figures.started_empty,
            figures.orphans_swept,
            figures.lost,
            figures.duplicated
        );
        figures
    }

    /// Whether some `chk-<n>` with `n > newest` exists without `_metadata`.
    fn checkpoint_in_upload(&self, newest: u64) -> bool {
        let Ok(entries) = std::fs::read_dir(self.job_dir()) else {
            return false;
        };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok());
            id.is_some_and(|id| id > newest) && !e.path().join("_metadata").exists()
        })
    }
}

/// Files (not directories) under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

fn campaign(backend: &[&'static str], default_seed: u64) {
    let kills = env_u64("CAIRN_CRASH_KILLS", 16);
    let seed = env_u64("CAIRN_CRASH_SEED", default_seed);
    let mut campaign = Campaign::new(backend);
    let figures = campaign.go(kills, seed);
    assert_eq!(figures.kills, kills);
    assert_eq!((figures.lost, figures.duplicated), (0, 0));
    assert!(figures.restores > 0, "{figures:?}");
    // The finished job deleted its checkpoints; nothing a killed run left
    // behind survives it: the job directory holds only its lock file.
    assert_eq!(files_under(&campaign.job_dir()), ["_lock"]);
}

#[test]
fn rocks_incremental_resumes_after_kills_with_exact_counts() {
    campaign(&["--backend", "rocks", "--incremental"], 0x5eed_0001);
}

#[test]
fn fs_resumes_after_kills_with_exact_counts() {
    campaign(&["--backend", "fs"], 0x5eed_0002);
}

/// Heap state with incremental checkpoints: kills land while bases and
/// deltas are written and while a new base subsumes an old chain.
#[test]
fn fs_incremental_resumes_after_kills_with_exact_counts() {
    campaign(&["--backend", "fs", "--incremental"], 0x5eed_0003);
}
