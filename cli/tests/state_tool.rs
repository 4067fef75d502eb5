//! The offline state tool through the `cairn` binary: `state dump` of the
//! same word counts checkpointed by heap, fs and RocksDB (full and
//! incremental) prints the same bytes; a bootstrapped savepoint restores
//! into `cairn run wordcount` and dumps back with the job's counts added;
//! an offline rescale 2 -> 5 -> 3 restores with exact counts; bad input is
//! one line naming what is wrong, exit 2.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    assert_bad_input, assert_code, assert_ok, cairn, command, completed, json, last_counts, p,
    stderr, stdout,
};

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(90);

const WORDS: &[&str] = &["tea", "coffee", "water", "juice", "milk", "soda", "wine"];

/// A one-partition log of `words` lines (so every run sees the records of
/// a word in the same order), and how often each word occurs.
fn log_of(dir: &Path, lines: &[String]) -> (PathBuf, BTreeMap<String, u64>) {
    let log = dir.join("log");
    let mut counts = BTreeMap::new();
    for line in lines {
        for w in line.split_whitespace() {
            *counts.entry(w.to_owned()).or_default() += 1;
        }
    }
    append(&log, lines);
    (log, counts)
}

fn append(log: &Path, lines: &[String]) {
    let out = support::cairn_with_stdin(
        &[
            "log",
            "append",
            p(log),
            "words",
            "--partitions",
            "1",
            "--quiet",
        ],
        &lines.join("\n"),
    );
    assert_code(&out, 0);
}

fn lines(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let a = WORDS[(i * 5 % 7) as usize];
            let b = WORDS[(i * 3 % 11 % 7) as usize];
            format!("{a} {b}")
        })
        .collect()
}

/// Runs `cairn run wordcount` (unbounded) on `log` into `ck/wc` with
/// `extra` options until it printed `outputs` lines and completed two more
/// checkpoints, then kills it; returns the newest checkpoint's directory.
fn checkpointed_run(log: &Path, ck: &Path, outputs: u64, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "run",
        "wordcount",
        "--input",
        p(log),
        "--topic",
        "words",
        "--checkpoint-dir",
        p(ck),
        "--job-id",
        "wc",
        "--checkpoint-interval",
        "20ms",
        "--retained",
        "1",
    ];
    args.extend_from_slice(extra);
    let mut child = command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..outputs {
        rx.recv_timeout(PATIENCE).expect("job output");
    }
    let job_dir = ck.join("wc");
    let seen = completed(&job_dir).last().copied().unwrap_or(0);
    while completed(&job_dir).last().copied().unwrap_or(0) < seen + 2 {
        assert!(Instant::now() < deadline, "no checkpoint after the output");
        assert!(child.try_wait().unwrap().is_none(), "the job ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let newest = completed(&job_dir).last().copied().unwrap();
    job_dir.join(format!("chk-{newest}"))
}

/// `cairn run wordcount --bounded` on `log` from checkpoint `from`, its own
/// checkpoints in `ck`, plus `extra`.
fn bounded_run(log: &Path, from: &Path, ck: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "wordcount",
        "--input",
        p(log),
        "--topic",
        "words",
        "--bounded",
        "--from",
        p(from),
        "--checkpoint-dir",
        p(ck),
    ];
    args.extend_from_slice(extra);
    cairn(&args)
}

/// The counts a `state dump --json` of wordcount's `Sum`/`reduce` shows.
fn dumped_counts(dump: &serde_json::Value) -> BTreeMap<String, u64> {
    dump.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = e["key"].as_str().unwrap().to_owned();
            assert_eq!(e["value"]["word"].as_str(), Some(key.as_str()), "{e}");
            (key, e["value"]["count"].as_u64().unwrap())
        })
        .collect()
}

/// `cairn state dump path --operator op --state state`, plus `extra`.
fn dump_of(path: &Path, operator: &str, state: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "state",
        "dump",
        p(path),
        "--operator",
        operator,
        "--state",
        state,
    ];
    args.extend_from_slice(extra);
    cairn(&args)
}

fn dump(path: &Path, format: &[&str]) -> String {
    let out = dump_of(path, "Sum", "reduce", format);
    assert_ok(&out);
    stdout(&out)
}

#[test]
fn dump_is_the_same_whichever_backend_wrote_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = lines(300);
    let (log, expected) = log_of(dir.path(), &input);
    let outputs = expected.values().sum();
    let local = dir.path().join("local");
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("heap", vec!["--backend", "heap"]),
        ("fs", vec!["--backend", "fs"]),
        (
            "rocks-full",
            vec!["--backend", "rocks", "--local-dir", p(&local)],
        ),
        (
            "rocks-incremental",
            vec![
                "--backend",
                "rocks",
                "--incremental",
                "--local-dir",
                p(&local),
            ],
        ),
    ];
    let mut dumps: Vec<(&str, [String; 3])> = Vec::new();
    for (name, extra) in &runs {
        let chk = checkpointed_run(&log, &dir.path().join(name), outputs, extra);
        let out = [
            dump(&chk, &["--json"]),
            dump(&chk, &["--csv"]),
            dump(&chk, &[]),
        ];
        let parsed: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(dumped_counts(&parsed), expected, "{name}");
        dumps.push((name, out));
    }
    let (first, reference) = &dumps[0];
    for (name, out) in &dumps[1..] {
        assert_eq!(out, reference, "{name} against {first}");
    }
    // The text form names each word once, the CSV has a header and a row per word.
    assert_eq!(reference[2].lines().count(), expected.len());
    assert!(reference[1].starts_with("key_group,key,namespace,value\n"));
    assert_eq!(reference[1].lines().count(), expected.len() + 1);

    // One key, by --key; and list shows the operators, the type and the entries.
    let incremental = checkpointed_dir(&dir.path().join("rocks-incremental"));
    let one = dump(&incremental, &["--key", "tea", "--json"]);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(
        dumped_counts(&one),
        BTreeMap::from([("tea".to_owned(), expected["tea"])])
    );
    let out = cairn(&["state", "list", p(&incremental), "--json"]);
    assert_ok(&out);
    let listing = json(&out);
    assert!(listing["native_handles_converted"].as_u64().unwrap() >= 1);
    let sum = listing["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["uid"] == "Sum")
        .unwrap();
    let reduce = sum["keyed_states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "reduce")
        .unwrap();
    assert_eq!(reduce["name"], "reduce");
    assert_eq!(reduce["kind"], "value");
    assert_eq!(reduce["type"], "cairn::wordcount::WordCount");
    assert_eq!(reduce["entries"].as_u64(), Some(expected.len() as u64));
    let source = listing["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["uid"] == "KafkaSource")
        .unwrap();
    assert_eq!(source["operator_states"][0]["name"], "partition-offsets");
    let text = cairn(&["state", "list", p(&incremental)]);
    assert_ok(&text);
    assert!(
        stdout(&text).contains("keyed state reduce: value, type cairn::wordcount::WordCount"),
        "{}",
        stdout(&text)
    );
}

/// The newest checkpoint directory of `ck/wc`.
fn checkpointed_dir(ck: &Path) -> PathBuf {
    let job = ck.join("wc");
    job.join(format!("chk-{}", completed(&job).last().unwrap()))
}

#[test]
fn bootstrap_then_run_then_dump_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("counts.jsonl");
    std::fs::write(
        &input,
        "{\"key\": \"tea\", \"value\": {\"word\": \"tea\", \"count\": 40, \"partition\": 0, \"offset\": 0}}\n\
         \n\
         {\"key\": \"gin\", \"value\": [\"gin\", 7, 0, 0]}\n",
    )
    .unwrap();
    let sp = dir.path().join("sp").join("boot-1");
    let out = cairn(&[
        "state",
        "bootstrap",
        "--operator",
        "Sum",
        "--state",
        "reduce",
        "--type",
        "cairn::wordcount::WordCount",
        "--input",
        p(&input),
        "--out",
        p(&sp),
        "--parallelism",
        "2",
    ]);
    assert_ok(&out);
    assert!(stdout(&out).contains("2 keys"), "{}", stdout(&out));
    let before: serde_json::Value = serde_json::from_str(&dump(&sp, &["--json"])).unwrap();
    assert_eq!(
        dumped_counts(&before),
        BTreeMap::from([("gin".to_owned(), 7), ("tea".to_owned(), 40)])
    );

    let words: Vec<String> = vec!["tea coffee".into(), "tea".into()];
    let (log, _) = log_of(dir.path(), &words);
    let chk = checkpointed_run(
        &log,
        &dir.path().join("ck"),
        3,
        &[
            "--from",
            p(&sp.join("chk-1")),
            "--backend",
            "rocks",
            "--local-dir",
            p(&dir.path().join("local")),
        ],
    );
    let after: serde_json::Value = serde_json::from_str(&dump(&chk, &["--json"])).unwrap();
    assert_eq!(
        dumped_counts(&after),
        BTreeMap::from([
            ("coffee".to_owned(), 1),
            ("gin".to_owned(), 7),
            ("tea".to_owned(), 42)
        ])
    );
}

#[test]
fn offline_rescale_two_five_three_restores_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let first = lines(200);
    let (log, mut expected) = log_of(dir.path(), &first);
    let outputs = expected.values().sum();
    let chk = checkpointed_run(
        &log,
        &dir.path().join("ck"),
        outputs,
        &[
            "--parallelism",
            "2",
            "--backend",
            "rocks",
            "--incremental",
            "--local-dir",
            p(&dir.path().join("local")),
        ],
    );
    let sp5 = dir.path().join("sp").join("p5");
    let out = cairn(&[
        "checkpoints",
        "rescale",
        p(&chk),
        "--parallelism",
        "5",
        "--format",
        "canonical",
        "--out",
        p(&sp5),
    ]);
    assert_ok(&out);
    let sp3 = dir.path().join("sp").join("p3");
    // A savepoint directory is read like a job directory: its one checkpoint.
    let out = cairn(&[
        "checkpoints",
        "rescale",
        p(&sp5),
        "--parallelism",
        "3",
        "--out",
        p(&sp3),
    ]);
    assert_ok(&out);
    let listing = cairn(&["state", "list", p(&sp3), "--json"]);
    assert_ok(&listing);
    let listing = json(&listing);
    for op in listing["operators"].as_array().unwrap() {
        assert_eq!(op["parallelism"], 3, "{op}");
    }
    let counts: serde_json::Value = serde_json::from_str(&dump(&sp3, &["--json"])).unwrap();
    assert_eq!(dumped_counts(&counts), expected);

    // Restored at 3 (heap this time), with more input: every word counted once.
    let more = lines(50);
    append(&log, &more);
    for line in &more {
        for w in line.split_whitespace() {
            *expected.get_mut(w).unwrap() += 1;
        }
    }
    let sp3_chk = sp3.join(format!("chk-{}", listing["checkpoint_id"]));
    let out = bounded_run(
        &log,
        &sp3_chk,
        &dir.path().join("ck3"),
        &["--parallelism", "3"],
    );
    assert_ok(&out);
    let printed = last_counts(&stdout(&out));
    let seen: u64 = printed.len() as u64;
    assert_eq!(seen, expected.len() as u64, "{}", stdout(&out));
    assert_eq!(printed, expected);
    // The sources resumed after what the savepoint had read: the output
    // holds the new records only.
    let new_outputs: usize = more.iter().map(|l| l.split_whitespace().count()).sum();
    assert_eq!(stdout(&out).lines().count(), new_outputs);
}

#[test]
fn bad_input_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = cairn(&["state", "list", p(&empty)]);
    assert_bad_input(&out, p(&empty));
    let out = dump_of(&dir.path().join("missing"), "Sum", "reduce", &[]);
    assert_bad_input(&out, "missing");

    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\": \"tea\", \"value\": 3}\n{\"key\": \"tea\", \"value\": 4}\n",
    )
    .unwrap();
    let bootstrap = |out: &Path, type_name: &str| {
        cairn(&[
            "state",
            "bootstrap",
            "--operator",
            "Sum",
            "--state",
            "reduce",
            "--type",
            type_name,
            "--input",
            p(&input),
            "--out",
            p(out),
        ])
    };
    let out = bootstrap(&dir.path().join("dup"), "u64");
    assert_bad_input(&out, "lines 1 and 2 give the same key");
    std::fs::write(
        &input,
        "{\"key\": \"tea\", \"value\": 3}\n{\"key\": \"gin\", \"value\": -1}\n",
    )
    .unwrap();
    let out = bootstrap(&dir.path().join("neg"), "u64");
    assert_bad_input(&out, "line 2");
    let out = bootstrap(&dir.path().join("unknown"), "my::Session");
    assert_bad_input(&out, "--type my::Session");
    std::fs::write(&input, "{\"key\": \"tea\", \"value\": 3}\n").unwrap();
    let sp = dir.path().join("sp-u64");
    assert_ok(&bootstrap(&sp, "u64"));
    let out = bootstrap(&sp, "u64");
    assert_bad_input(&out, "not empty");

    // Unknown operator and state, named with what the checkpoint holds.
    let out = dump_of(&sp, "Nope", "reduce", &[]);
    assert_bad_input(&out, "no operator with uid \"Nope\"");
    let out = dump_of(&sp, "Sum", "total", &[]);
    assert_bad_input(&out, "no state \"total\"");

    // A type mismatch: wordcount registers reduce as WordCount, the savepoint
    // says u64. The job fails at once, not restarting (no restart can fix
    // it), with exit status 2, naming the state and both types.
    let log = dir.path().join("log");
    append(&log, &["tea".to_owned()]);
    let out = bounded_run(&log, &sp.join("chk-1"), &dir.path().join("ck"), &[]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("\"reduce\"")
            && err.contains("type u64")
            && err.contains("cairn::wordcount::WordCount"),
        "{err}"
    );

    // A truncated stream: the dump names the file.
    let chk = sp.join("chk-1");
    let keyed = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-keyed"))
        .unwrap();
    let bytes = std::fs::read(&keyed).unwrap();
    std::fs::write(&keyed, &bytes[..bytes.len() / 2]).unwrap();
    let name = keyed.file_name().unwrap().to_string_lossy().into_owned();
    let out = dump_of(&sp, "Sum", "reduce", &[]);
    assert_bad_input(&out, &name);
    let out = cairn(&["state", "list", p(&chk)]);
    assert_bad_input(&out, &name);
    let out = cairn(&[
        "checkpoints",
        "rescale",
        p(&chk),
        "--parallelism",
        "2",
        "--out",
        p(&dir.path().join("r")),
    ]);
    assert_bad_input(&out, &name);
    let out = cairn(&[
        "checkpoints",
        "rescale",
        p(&chk),
        "--out",
        p(&dir.path().join("r2")),
    ]);
    assert_bad_input(&out, "--parallelism");
}
