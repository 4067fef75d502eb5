//! End-to-end exactly-once into SQLite: the fault matrix of
//! `fault_matrix` in insert mode (every `(key, n)` row once: a duplicate
//! or a loss shows) and in upsert mode (one row per key with its final
//! count). After every run the table holds exactly the fault-free output and
//! the progress table one row per subtask.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_matrix;
mod job_support;

use std::path::Path;
use std::time::Duration;

use executor::sink::sql::{SqlColumn, SqlTable, SqlType, SqlValue, WriteMode};
use executor::sink::sqlite::{PROGRESS_TABLE, SqliteOptions, SqliteSink};
use fault_matrix::{
    Fault, Flaky, assert_exact, assert_ran, expected_inserts, expected_upserts, no_retry, run,
    splitmix,
};

fn check(db: &Path, name: &str, mode: WriteMode, fault: Fault) {
    let upserting = mode != WriteMode::Insert;
    let table = SqlTable::new(
        name,
        vec![
            SqlColumn::new("key", SqlType::BigInt),
            SqlColumn::new("n", SqlType::BigInt),
        ],
        mode,
    );
    let options = SqliteOptions::new(db, table, format!("cairn-test-{name}"));
    let sink = SqliteSink::new(options, |r: &(u64, u64)| {
        vec![SqlValue::Int(r.0 as i64), SqlValue::Int(r.1 as i64)]
    })
    .unwrap();
    let run = run(
        fault,
        Flaky::new(sink, fault, None),
        no_retry(),
        3,
        Duration::ZERO,
    );
    assert_ran(fault, &run);
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn
        .prepare(&format!("SELECT key, n FROM {name} ORDER BY key, n"))
        .unwrap();
    let rows: Vec<(u64, u64)> = q
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let expected = if upserting {
        expected_upserts()
    } else {
        expected_inserts()
    };
    assert_exact(&format!("{name} {fault:?}"), &rows, &expected);
    let progress: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {PROGRESS_TABLE} WHERE sink = ?1"),
            [format!("cairn-test-{name}")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        progress, 3,
        "{name} {fault:?}: one progress row per subtask"
    );
}

#[test]
fn fault_free_output_is_every_count_once() {
    let tmp = tempfile::tempdir().unwrap();
    check(
        &tmp.path().join("out.db"),
        "clean",
        WriteMode::Insert,
        Fault::None,
    );
}

#[test]
fn every_fault_of_the_matrix_loses_and_duplicates_no_row() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("out.db");
    for (i, fault) in Fault::matrix().into_iter().enumerate() {
        check(&db, &format!("matrix{i}"), WriteMode::Insert, fault);
    }
}

#[test]
fn upserts_hold_each_final_count_once_through_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("out.db");
    let upsert = || WriteMode::Upsert {
        key: vec!["key".into()],
    };
    check(&db, "up_clean", upsert(), Fault::None);
    check(
        &db,
        "up_source",
        upsert(),
        Fault::Source(splitmix(10) % fault_matrix::RECORDS),
    );
    check(
        &db,
        "up_in_commit",
        upsert(),
        Fault::InCommit(2 + splitmix(11) % 5),
    );
}
