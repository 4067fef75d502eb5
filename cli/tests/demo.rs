//! `cairn demo` run as a subprocess prints the WordCount
//! failure-and-recovery walk-through's table and exits 0.

use std::process::Command;

fn normalized(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn demo_prints_the_walk_through_table_and_recovers() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["demo", "--restart-delay", "10ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<String> = stdout.lines().map(normalized).collect();

    // The walk-through's table: record id, record, output, note.
    let replay = [
        "4 a (a,3) restored checkpoint 2, seek to offset 28",
        "5 c (c,1) offset 29",
    ];
    let mut expected: Vec<String> = [
        "record data output note",
        "checkpoint 1 completed",
        "1 a (a,1) offset 25",
        "2 b (b,1) offset 26",
        "3 a (a,2) offset 27",
        "checkpoint 2 completed",
        "4 a (a,3) offset 28",
        "5 c (c,1) offset 29",
        "6 ERROR offset 30: job fails, restart 1 of 3",
    ]
    .map(String::from)
    .to_vec();
    for next in [
        "job fails, restart 2 of 3",
        "job fails, restart 3 of 3",
        "job fails, restart attempts exhausted: FAILED",
    ] {
        expected.extend(replay.map(String::from));
        expected.push(format!("6 ERROR offset 30: {next}"));
    }
    let start = lines
        .iter()
        .position(|l| l == "record data output note")
        .unwrap();
    let table: Vec<&String> = lines[start..start + expected.len()].iter().collect();
    for (got, want) in table.iter().zip(&expected) {
        assert!(
            got.starts_with(want.as_str()),
            "got {got:?}, want {want:?}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("job FAILED after 3 restarts: Check (1/1) failed: custom error flag"),
        "{stdout}"
    );

    // Recovery from the retained checkpoint, the poison record filtered out.
    let recovery = lines
        .iter()
        .position(|l| l.starts_with("recovery:"))
        .unwrap();
    assert!(
        lines[recovery].contains("retained checkpoint 2"),
        "{stdout}"
    );
    assert_eq!(
        &lines[recovery + 1..recovery + 5],
        [
            "record data output note",
            "4 a (a,3) restored checkpoint 2, seek to offset 28",
            "5 c (c,1) offset 29",
            "6 ERROR offset 30: filtered out",
        ]
    );
    assert!(
        stdout.contains("job FINISHED; counts (a,3) (b,1) (c,1)"),
        "{stdout}"
    );
}

#[test]
fn demo_with_a_dir_keeps_checkpoints_for_the_checkpoint_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["demo", "--restart-delay", "1ms", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = dir.path().join("checkpoints").join("word-count");
    let verify = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["checkpoints", "verify"])
        .arg(&job)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("0 corrupt"), "{text}");

    // A second demo into the same dir refuses rather than mixing logs.
    let again = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds a demo log"), "{err}");
}
