//! The real `cairn` binary on real checkpoints written by `cairn example`:
//! listing, inspecting and verifying them, damaged files, incomplete
//! checkpoints, and paths that are not checkpoints at all.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{assert_code, cairn, json, p, stderr, stdout};

/// Exit 2 and exactly one `error: ...` line on stderr that names `path`.
fn assert_bad_input(out: &std::process::Output, path: &Path) {
    support::assert_bad_input(out, p(path));
}

/// Runs `cairn example` (3 checkpoints, 2 retained) under a fresh base
/// directory; returns the base directory and the job directory.
fn example() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let out = cairn(&["example", "--dir", p(base.path())]);
    assert_code(&out, 0);
    let job = base.path().join("example");
    (base, job)
}

/// The path of the first keyed-state file of checkpoint `chk` (from inspect --json).
fn keyed_file(job: &Path, chk: u64) -> PathBuf {
    let out = cairn(&[
        "checkpoints",
        "inspect",
        p(&job.join(format!("chk-{chk}"))),
        "--json",
    ]);
    assert_code(&out, 0);
    let v = json(&out);
    let op = v["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["uid"] == "wordcount")
        .unwrap();
    let rel = op["subtasks"][0]["keyed"][0]["files"][0]["path"]
        .as_str()
        .unwrap();
    job.join(rel)
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn example_writes_checkpoints_that_list_inspect_and_verify() {
    let base = tempfile::tempdir().unwrap();
    let out = cairn(&["example", "--dir", p(base.path()), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    let job = base.path().join("example");
    assert_eq!(v["job_dir"], p(&job));
    let ids: Vec<u64> = v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(v["checkpoints"][2]["subsumed"], serde_json::json!([1]));
    assert_eq!(v["retained"], serde_json::json!([2, 3]));
    assert_eq!(v["restored"]["checkpoint_id"], 3);
    assert_eq!(v["restored"]["counts_match"], true);
    assert_eq!(v["restored"]["source_offset"], v["lines"]);
    assert_eq!(v["top_words"][0]["word"], "the");
    assert!(v["commands"][1].as_str().unwrap().ends_with("chk-3"));
    assert!(
        !job.join("chk-1").exists(),
        "subsumed checkpoint is deleted"
    );

    // list
    let out = cairn(&["checkpoints", "list", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("ID"), "{text}");
    let rows: Vec<&str> = text.lines().skip(1).take(2).collect();
    assert!(
        rows[0].trim_start().starts_with("2 ") && rows[0].ends_with("complete"),
        "{text}"
    );
    assert!(
        rows[1].trim_start().starts_with("3 ") && rows[1].contains(" full "),
        "{text}"
    );
    let out = cairn(&["checkpoints", "list", p(&job), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    let rows = v["checkpoints"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, id) in rows.iter().zip([2, 3]) {
        assert_eq!(row["id"], id);
        assert_eq!(row["status"], "complete");
        assert_eq!(row["detail"], Value::Null);
        assert_eq!(row["kind"], "full");
        assert!(row["state_size"].as_u64().unwrap() > 0);
        assert_eq!(row["checkpointed_size"], row["state_size"]);
        assert!(row["timestamp_millis"].as_u64().unwrap() > 1_600_000_000_000);
        let time = row["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }

    // inspect (directory and _metadata file)
    let out = cairn(&["checkpoints", "inspect", p(&job.join("chk-3"))]);
    assert_code(&out, 0);
    let text = stdout(&out);
    for needle in [
        "checkpoint 3 of job example",
        "operator wordcount  parallelism 2  max parallelism 128",
        "operator source",
        "backend heap  key groups 0..=63",
        "key groups 64..=127",
        "chk-3/wordcount-0-keyed",
        "chk-3/wordcount-1-keyed",
        "state offsets  mode split  1 elements",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    let out = cairn(&[
        "checkpoints",
        "inspect",
        p(&job.join("chk-2").join("_metadata")),
        "--json",
    ]);
    assert_code(&out, 0);
    let v = json(&out);
    assert_eq!(v["checkpoint_id"], 2);
    assert_eq!(v["job_id"], "example");
    assert_eq!(v["kind"], "full");
    let uids: Vec<&str> = v["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, ["source", "wordcount"]);
    let wc = &v["operators"][1];
    assert_eq!(wc["parallelism"], 2);
    assert_eq!(wc["max_parallelism"], 128);
    let mut total = v["operators"][0]["subtasks"][0]["operator_state"]["file"]["size"]
        .as_u64()
        .unwrap();
    for (i, st) in wc["subtasks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(st["subtask"], i);
        let keyed = &st["keyed"][0];
        assert_eq!(keyed["format"], "key_groups");
        assert_eq!(keyed["backend"], "heap");
        assert_eq!(keyed["key_group_start"], 64 * i);
        assert_eq!(keyed["key_group_end"], 64 * i + 63);
        let file = &keyed["files"][0];
        let path = file["path"].as_str().unwrap();
        assert_eq!(path, format!("chk-2/wordcount-{i}-keyed"));
        let size = file["size"].as_u64().unwrap();
        assert_eq!(std::fs::metadata(job.join(path)).unwrap().len(), size);
        assert_eq!(file["crc32"].as_str().unwrap().len(), 8);
        assert_eq!(file["origin"], "new");
        assert_eq!(file["uploaded_by"], 2);
        total += size;
    }
    assert_eq!(v["state_size"], total);

    // verify (job directory and one checkpoint)
    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("OK       chk-3/wordcount-1-keyed"), "{text}");
    assert_eq!(
        text.lines().last().unwrap(),
        "2 checkpoints, 8 files verified, 0 corrupt"
    );
    let out = cairn(&["checkpoints", "verify", p(&job.join("chk-3")), "--json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["checkpoints_verified"], 1);
    assert_eq!(v["files_verified"], 4);
    assert_eq!(v["corrupt_files"], 0);
    assert_eq!(v["checkpoints"][0]["status"], "ok");
    assert_eq!(v["checkpoints"][0]["files"][0]["path"], "chk-3/_metadata");
}

#[test]
fn example_refuses_existing_checkpoints_unless_forced() {
    let (base, job) = example();
    let out = cairn(&["example", "--dir", p(base.path())]);
    assert_bad_input(&out, &job);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(
        job.join("chk-3").exists(),
        "nothing deleted without --force"
    );

    let out = cairn(&[
        "example",
        "--dir",
        p(base.path()),
        "--force",
        "--checkpoints",
        "5",
        "--retained",
        "1",
    ]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("retained: chk-5"), "{text}");
    assert!(text.contains("cairn checkpoints verify"), "{text}");
    assert!(!job.join("chk-4").exists());

    for bad in [["--checkpoints", "0"], ["--retained", "0"]] {
        let out = cairn(&[
            "example",
            "--dir",
            p(base.path()),
            "--force",
            bad[0],
            bad[1],
        ]);
        assert_code(&out, 2);
        assert!(stderr(&out).contains(bad[0]), "{}", stderr(&out));
    }
    assert!(job.join("chk-5").exists(), "bad options delete nothing");
}

#[test]
fn flipped_byte_in_keyed_state_fails_verify_and_names_the_file() {
    let (_base, job) = example();
    let file = keyed_file(&job, 3);
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    flip_byte(&file, len / 2);
    let rel = file
        .strip_prefix(&job)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("CORRUPT")).unwrap();
    assert!(line.contains(&rel) && line.contains("checksum"), "{line}");
    assert_eq!(
        text.lines().last().unwrap(),
        "2 checkpoints, 8 files verified, 1 corrupt"
    );
    let out = cairn(&["checkpoints", "verify", p(&job.join("chk-3")), "--json"]);
    assert_code(&out, 1);
    let v = json(&out);
    assert_eq!(v["ok"], false);
    let bad: Vec<&Value> = v["checkpoints"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["path"], rel.as_str());
    assert!(bad[0]["error"].as_str().unwrap().contains(&rel));
    // The older checkpoint is intact.
    assert_code(&cairn(&["checkpoints", "verify", p(&job.join("chk-2"))]), 0);
    // The metadata is fine, so list and inspect still work.
    assert_code(
        &cairn(&["checkpoints", "inspect", p(&job.join("chk-3"))]),
        0,
    );
}

#[test]
fn truncated_file_fails_verify_and_names_the_file() {
    let (_base, job) = example();
    let file = keyed_file(&job, 2);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let out = cairn(&[
        "checkpoints",
        "verify",
        p(&job.join("chk-2").join("_metadata")),
    ]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("CORRUPT")).unwrap();
    assert!(line.contains("chk-2/wordcount-0-keyed"), "{line}");
    assert!(line.contains(&format!("expected {len} bytes")), "{line}");
}

#[test]
fn damaged_metadata_is_corrupt_in_list_and_verify_and_refused_by_inspect() {
    let (_base, job) = example();
    let meta = job.join("chk-2").join("_metadata");
    let len = std::fs::metadata(&meta).unwrap().len() as usize;
    flip_byte(&meta, len / 2);

    let out = cairn(&["checkpoints", "list", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap();
    assert!(
        row.contains("corrupt: ") && row.contains("chk-2/_metadata"),
        "{row}"
    );
    let v = json(&cairn(&["checkpoints", "list", p(&job), "--json"]));
    assert_eq!(v["checkpoints"][0]["status"], "corrupt");
    assert!(
        v["checkpoints"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("chk-2/_metadata")
    );
    assert_eq!(v["checkpoints"][1]["status"], "complete");

    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("CORRUPT")).unwrap();
    assert!(line.contains("chk-2/_metadata"), "{line}");

    let out = cairn(&["checkpoints", "inspect", p(&job.join("chk-2"))]);
    assert_bad_input(&out, &meta);

    // A damaged magic number is corruption for verify too, not bad input.
    flip_byte(&meta, 0);
    let out = cairn(&["checkpoints", "verify", p(&meta)]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains("CORRUPT"), "{}", stdout(&out));
    let out = cairn(&["checkpoints", "inspect", p(&meta)]);
    assert_bad_input(&out, &meta);
}

#[test]
fn paths_that_are_not_checkpoints_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"hello, not a checkpoint\n").unwrap();
    let missing = dir.path().join("missing");
    let foreign = dir.path().join("chk-4");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("_metadata"), b"PK\x03\x04 a zip file").unwrap();
    for path in [&empty, &file, &missing] {
        for cmd in ["list", "inspect", "verify"] {
            let out = cairn(&["checkpoints", cmd, p(path)]);
            assert_bad_input(&out, path);
        }
    }
    let out = cairn(&["checkpoints", "inspect", p(&foreign)]);
    assert_bad_input(&out, &foreign);
    assert!(
        stderr(&out).contains("wrong magic bytes"),
        "{}",
        stderr(&out)
    );

    // A base directory holding job directories.
    let (base, job) = example();
    std::fs::create_dir_all(base.path().join("other-job").join("shared")).unwrap();
    for cmd in ["list", "verify"] {
        let out = cairn(&["checkpoints", cmd, p(base.path())]);
        assert_bad_input(&out, base.path());
        assert!(
            stderr(&out).contains("holds job directories: example, other-job; pass one of them"),
            "{}",
            stderr(&out)
        );
    }
    let out = cairn(&["checkpoints", "inspect", p(base.path())]);
    assert_bad_input(&out, base.path());
    // A job directory given to inspect.
    let out = cairn(&["checkpoints", "inspect", p(&job)]);
    assert_bad_input(&out, &job);
    assert!(
        stderr(&out).contains("is a job directory"),
        "{}",
        stderr(&out)
    );
    // Usage errors are exit 2 too.
    assert_code(&cairn(&["checkpoints", "list"]), 2);
    assert_code(&cairn(&["checkpoints", "frobnicate", p(&job)]), 2);
}

#[test]
fn incomplete_checkpoint_is_listed_and_does_not_fail_verify() {
    let (_base, job) = example();
    std::fs::create_dir(job.join("chk-99")).unwrap();

    let out = cairn(&["checkpoints", "list", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("99 "))
        .unwrap();
    assert!(row.ends_with("incomplete (no _metadata)"), "{row}");
    let v = json(&cairn(&["checkpoints", "list", p(&job), "--json"]));
    assert_eq!(v["checkpoints"][2]["id"], 99);
    assert_eq!(v["checkpoints"][2]["status"], "incomplete");
    assert_eq!(v["checkpoints"][2]["time"], Value::Null);

    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("checkpoint 99: incomplete (no _metadata)"),
        "{text}"
    );
    assert_eq!(
        text.lines().last().unwrap(),
        "2 checkpoints, 8 files verified, 0 corrupt"
    );
    let v = json(&cairn(&["checkpoints", "verify", p(&job), "--json"]));
    assert_eq!(v["incomplete"], serde_json::json!([99]));
    assert_eq!(v["ok"], true);

    // Named explicitly, it is not a checkpoint.
    let out = cairn(&["checkpoints", "inspect", p(&job.join("chk-99"))]);
    assert_bad_input(&out, &job.join("chk-99"));
}

#[test]
fn empty_job_dir_has_no_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job-1");
    std::fs::create_dir_all(job.join("shared")).unwrap();
    let out = cairn(&["checkpoints", "list", p(&job)]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        format!("no checkpoints in {}", job.display())
    );
    let v = json(&cairn(&["checkpoints", "list", p(&job), "--json"]));
    assert_eq!(v["checkpoints"], serde_json::json!([]));
    let out = cairn(&["checkpoints", "verify", p(&job)]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        "0 checkpoints, 0 files verified, 0 corrupt"
    );
}

#[test]
fn help_documents_the_json_fields() {
    for (cmd, field) in [
        (vec!["checkpoints", "list", "--help"], "checkpointed_size"),
        (vec!["checkpoints", "inspect", "--help"], "key_group_start"),
        (vec!["checkpoints", "verify", "--help"], "files_verified"),
        (vec!["example", "--help"], "counts_match"),
    ] {
        let out = cairn(&cmd);
        assert_code(&out, 0);
        assert!(stdout(&out).contains(field), "{cmd:?}: {}", stdout(&out));
    }
}
