//! Resume after kill -9 into the SQL sinks: `cairn run wordcount --resume
//! --sink postgres:…#<table>` (a private PostgreSQL cluster, see
//! `pg_support`) and `--sink sqlite:…#<table>`, each process SIGKILLed at a
//! seeded moment (after a random delay, or as soon as a new checkpoint
//! exists), then a last `--bounded --resume` run that must finish. The table
//! must then hold exactly the fault-free output: in upsert mode (the
//! default) every word once with its count; in insert mode every count 1, 2,
//! …, n of every word once. PostgreSQL must have no prepared transaction
//! left.
//!
//! `CAIRN_SQL_CRASH_KILLS` sets the kills per test (default 6),
//! `CAIRN_SQL_CRASH_SEED` the seed.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test
// failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../executor/tests/pg_support/mod.rs"]
mod pg_support;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pg_support::PgCluster;
use support::{Rng, WordLog, command, completed, env_u64, p};

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);
const WORDS: [&str; 12] = [
    "apple", "pear", "fig", "kiwi", "lime", "plum", "date", "lemon", "mango", "peach", "grape",
    "melon",
];

/// Which sink, and how its table is read back: `(word, count)` rows.
enum Target {
    Postgres(PgCluster),
    Sqlite(PathBuf),
}

impl Target {
    fn sink_arg(&self) -> String {
        match self {
            Target::Postgres(pg) => format!("postgres:{}#counts", pg.conninfo()),
            Target::Sqlite(db) => format!("sqlite:{}#counts", db.display()),
        }
    }

    fn rows(&self) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = match self {
            Target::Postgres(pg) => pg
                .psql("SELECT word, count FROM counts")
                .iter()
                .map(|l| {
                    let (w, n) = l.split_once('|').unwrap();
                    (w.to_owned(), n.parse().unwrap())
                })
                .collect(),
            Target::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db).unwrap();
                let mut q = conn.prepare("SELECT word, count FROM counts").unwrap();
                q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            }
        };
        rows.sort();
        rows
    }
}

struct Campaign {
    dir: tempfile::TempDir,
    words: WordLog,
    target: Target,
    mode: &'static str,
}

impl Campaign {
    fn job_dir(&self) -> PathBuf {
        self.dir.path().join("ck").join("wc")
    }

    fn log_path(&self, trial: u64) -> PathBuf {
        self.dir.path().join(format!("trial-{trial}.log"))
    }

    fn run(&self, bounded: bool, trial: u64) -> std::process::Command {
        let log = self.dir.path().join("log");
        let ck = self.dir.path().join("ck");
        let sink = self.target.sink_arg();
        let mut args = vec![
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
            "--backend",
            "fs",
            "--checkpoint-interval",
            "20ms",
            "--resume",
            "--sink",
            &sink,
            "--sink-mode",
            self.mode,
        ];
        if bounded {
            args.push("--bounded");
        }
        let mut cmd = command(&args);
        cmd.env("RUST_LOG", "info").stdin(Stdio::null());
        cmd.stderr(std::fs::File::create(self.log_path(trial)).unwrap());
        cmd
    }

    fn trial_log(&self, trial: u64) -> String {
        std::fs::read_to_string(self.log_path(trial)).unwrap()
    }

    /// Kills `kills` runs, finishes with a bounded one; returns the restores.
    fn go(&mut self, kills: u64, seed: u64) -> u64 {
        let mut rng = Rng(seed);
        let mut restores = 0;
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
            if rng.below(2) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(600)));
            } else {
                // Some commits ran: a checkpoint newer than the last trial's.
                while completed(&self.job_dir()).last().copied().unwrap_or(0) <= newest {
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint: {}",
                        self.trial_log(trial)
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "trial {trial}: the job ended by itself: {}",
                self.trial_log(trial)
            );
            child.kill().unwrap();
            child.wait().unwrap();
            let log = self.trial_log(trial);
            assert!(!log.contains("panicked"), "trial {trial}: {log}");
            restores += u64::from(log.contains("Resuming job wc from checkpoint"));
        }
        // One more of every word, so the final run writes every word's count.
        self.words.append_each_word();
        let out = self.run(true, kills).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "final run: {}",
            self.trial_log(kills)
        );
        restores
    }
}

fn campaign(target: Target, mode: &'static str, default_seed: u64) {
    let kills = env_u64("CAIRN_SQL_CRASH_KILLS", 6);
    let seed = env_u64("CAIRN_SQL_CRASH_SEED", default_seed);
    let dir = tempfile::tempdir().unwrap();
    let words = WordLog::create(&dir.path().join("log"), &WORDS);
    let mut c = Campaign {
        dir,
        words,
        target,
        mode,
    };
    let restores = c.go(kills, seed);
    assert!(restores > 0, "no run resumed from a checkpoint");
    let rows = c.target.rows();
    let expected: Vec<(String, u64)> = if mode == "upsert" {
        c.words
            .counts
            .iter()
            .map(|(w, &n)| (w.clone(), n))
            .collect()
    } else {
        c.words
            .counts
            .iter()
            .flat_map(|(w, &n)| (1..=n).map(move |i| (w.clone(), i)))
            .collect()
    };
    if rows != expected {
        let mut diff = BTreeMap::<&(String, u64), i64>::new();
        for r in &expected {
            *diff.entry(r).or_default() -= 1;
        }
        for r in &rows {
            *diff.entry(r).or_default() += 1;
        }
        let lost = diff.values().filter(|&&d| d < 0).count();
        let twice = diff.values().filter(|&&d| d > 0).count();
        panic!(
            "{mode} seed {seed}: {lost} rows lost, {twice} extra or twice ({} rows, {} expected)",
            rows.len(),
            expected.len()
        );
    }
    if let Target::Postgres(pg) = &c.target {
        assert_eq!(
            pg.prepared(),
            Vec::<String>::new(),
            "prepared transactions left"
        );
    }
}

#[test]
fn postgres_upserts_hold_exact_counts_after_kills_and_resumes() {
    campaign(Target::Postgres(PgCluster::start()), "upsert", 0x5eed_0101);
}

#[test]
fn postgres_inserts_hold_every_count_once_after_kills_and_resumes() {
    campaign(Target::Postgres(PgCluster::start()), "insert", 0x5eed_0102);
}

#[test]
fn sqlite_upserts_hold_exact_counts_after_kills_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    campaign(
        Target::Sqlite(tmp.path().join("out.db")),
        "upsert",
        0x5eed_0103,
    );
}

#[test]
fn sqlite_inserts_hold_every_count_once_after_kills_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    campaign(
        Target::Sqlite(tmp.path().join("out.db")),
        "insert",
        0x5eed_0104,
    );
}
