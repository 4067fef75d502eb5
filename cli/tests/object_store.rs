//! `cairn` with checkpoints on S3 (moto's server on loopback, reached
//! through the standard `AWS_*` environment): the WordCount failure and
//! recovery walk-through on RocksDB with incremental checkpoints in
//! `s3://…` (a poison record, three restarts from the newest checkpoint on
//! S3, FAILED), `cairn checkpoints list|inspect|verify|gc` on the URL, the
//! resume from it, and a second `cairn run` on the same job refused while
//! the first holds the lock object.
//!
//! `moto_server` comes from `scripts/setup.sh`; without it the test skips
//! outside CI and fails under `CI=true`.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "object-store", feature = "rocks"))]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use state_testkit::s3::S3Server;
use support::{assert_code, command, json, p, stderr, stdout};

const PATIENCE: Duration = Duration::from_secs(90);

fn with_env(mut cmd: Command, server: &S3Server) -> Command {
    cmd.envs(server.env());
    cmd
}

fn cairn_s3(server: &S3Server, args: &[&str]) -> Output {
    with_env(command(args), server)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn append(log: &Path, lines: &[&str]) {
    let mut child = command(&["log", "append", p(log), "word", "--quiet"])
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

/// The ids of the complete checkpoints `cairn checkpoints list` shows.
fn completed(server: &S3Server, job: &str) -> Vec<u64> {
    let out = cairn_s3(server, &["checkpoints", "list", job, "--json"]);
    if out.status.code() != Some(0) {
        return Vec::new();
    }
    json(&out)["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "complete")
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(server: &S3Server, args: &[&str]) -> Running {
        let mut child = with_env(command(args), server)
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

    fn next_lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.lines.recv_timeout(PATIENCE).expect("job output"))
            .collect()
    }
}

#[test]
fn wordcount_fails_over_on_s3_checkpoints_and_resumes_from_the_url() {
    let Some(server) = S3Server::moto_or_skip() else {
        return;
    };
    server.create_bucket("cairn-ck");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let local = dir.path().join("local");
    let base = "s3://cairn-ck/jobs";
    let job_url = "s3://cairn-ck/jobs/word-count";
    append(&log, &["a", "b", "a"]);
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "word",
            "--backend",
            "rocks",
            "--incremental",
            "--local-dir",
            p(&local),
            "--checkpoint-dir",
            base,
            "--job-id",
            "word-count",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let args = run(&[
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
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut job = Running::start(&server, &argv);
    assert_eq!(job.next_lines(3), ["(a,1)", "(b,1)", "(a,2)"]);

    // While it runs, a second run of the same job is refused by the lock object.
    let second = cairn_s3(&server, &argv);
    assert_code(&second, 2);
    assert!(
        stderr(&second).contains("is in use by"),
        "{}",
        stderr(&second)
    );

    // A checkpoint on S3 taken after the three words were counted.
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        let ids = completed(&server, job_url);
        if ids.len() >= 2 {
            break *ids.last().unwrap();
        }
        assert!(job.child.try_wait().unwrap().is_none(), "the job ended");
        assert!(Instant::now() < deadline, "no checkpoint on S3");
        std::thread::sleep(Duration::from_millis(50));
    };
    append(&log, &["a", "c", "ERROR"]);
    // Every attempt restores from S3 and replays: (a,3) (c,1), then fails.
    let rest: Vec<String> = job.lines.iter().collect();
    assert_eq!(rest, ["(a,3)", "(c,1)"].repeat(4));
    let out = job.child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary = stderr(&out).lines().last().unwrap_or_default().to_owned();
    assert!(
        summary.starts_with("job word-count FAILED: 3 restarts, "),
        "{summary}"
    );
    assert!(
        summary.contains(job_url) && summary.contains("(kept)"),
        "{summary}"
    );

    let ids = completed(&server, job_url);
    let newest = *ids.last().unwrap();
    assert!(newest >= first, "{ids:?}");
    let chk = format!("{job_url}/chk-{newest}");
    let inspect = cairn_s3(&server, &["checkpoints", "inspect", &chk, "--json"]);
    assert_code(&inspect, 0);
    assert_eq!(json(&inspect)["checkpoint_id"], newest);
    assert_eq!(json(&inspect)["kind"], "incremental");
    let verify = cairn_s3(&server, &["checkpoints", "verify", job_url]);
    assert_code(&verify, 0);
    assert!(
        stdout(&verify).contains(" 0 corrupt"),
        "{}",
        stdout(&verify)
    );
    let gc = cairn_s3(
        &server,
        &["checkpoints", "gc", job_url, "--delete", "--json"],
    );
    assert_code(&gc, 0);

    // Resume from the newest checkpoint on S3, the poison filtered out.
    let args = run(&["--bounded", "--filter-poison", "--resume"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cairn_s3(&server, &argv);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "(a,3)\n(c,1)\n");

    // --from a URL names what is wrong when it is not a checkpoint.
    let out = cairn_s3(
        &server,
        &[
            "run",
            "wordcount",
            "--input",
            p(&log),
            "--topic",
            "word",
            "--bounded",
            "--from",
            "s3://cairn-ck/jobs/word-count/chk-999999",
        ],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("chk-999999"), "{}", stderr(&out));
}
