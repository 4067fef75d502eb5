//! End-to-end exactly-once into a real PostgreSQL (a private cluster per
//! test, see `pg_support`): the fault matrix of `fault_matrix` in
//! insert mode (every `(key, n)` row once: a duplicate or a loss shows) and
//! in upsert mode (one row per key with its final count), and the server
//! stopped hard (`pg_ctl stop -m immediate`) at a commit and started again.
//! After every run the table holds exactly the fault-free output and
//! `pg_prepared_xacts` is empty.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_matrix;
mod job_support;
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use executor::sink::committing::CommitRetry;
use executor::sink::postgres::{PostgresOptions, PostgresSink};
use executor::sink::sql::{SqlColumn, SqlTable, SqlType, SqlValue, WriteMode};
use fault_matrix::{
    Fault, Flaky, Hook, assert_exact, assert_ran, expected_inserts, expected_upserts, no_retry,
    run, splitmix,
};
use pg_support::PgCluster;

fn table(name: &str, mode: WriteMode) -> SqlTable {
    SqlTable::new(
        name,
        vec![
            SqlColumn::new("key", SqlType::BigInt),
            SqlColumn::new("n", SqlType::BigInt),
        ],
        mode,
    )
}

fn row(r: &(u64, u64)) -> Vec<SqlValue> {
    vec![SqlValue::Int(r.0 as i64), SqlValue::Int(r.1 as i64)]
}

fn sink(pg: &PgCluster, name: &str, mode: WriteMode) -> PostgresSink<(u64, u64)> {
    let options = PostgresOptions::new(
        pg.conninfo(),
        table(name, mode),
        format!("cairn-test-{name}"),
    );
    PostgresSink::new(options, row).unwrap()
}

fn rows(pg: &PgCluster, name: &str) -> Vec<(u64, u64)> {
    pg.psql(&format!("SELECT key, n FROM {name} ORDER BY key, n"))
        .iter()
        .map(|l| {
            let (k, n) = l.split_once('|').unwrap();
            (k.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

fn upsert() -> WriteMode {
    WriteMode::Upsert {
        key: vec!["key".into()],
    }
}

/// Runs `fault` into table `name` and checks the table and the server.
fn check(pg: &PgCluster, name: &str, mode: WriteMode, fault: Fault) {
    let upserting = mode != WriteMode::Insert;
    let run = run(
        fault,
        Flaky::new(sink(pg, name, mode), fault, None),
        no_retry(),
        3,
        Duration::ZERO,
    );
    assert_ran(fault, &run);
    let expected = if upserting {
        expected_upserts()
    } else {
        expected_inserts()
    };
    assert_exact(&format!("{name} {fault:?}"), &rows(pg, name), &expected);
    assert_eq!(pg.prepared(), Vec::<String>::new(), "{name} {fault:?}");
}

#[test]
fn fault_free_output_is_every_count_once_and_nothing_stays_prepared() {
    let pg = PgCluster::start();
    check(&pg, "clean", WriteMode::Insert, Fault::None);
}

#[test]
fn every_fault_of_the_matrix_loses_and_duplicates_no_row() {
    let pg = PgCluster::start();
    for (i, fault) in Fault::matrix().into_iter().enumerate() {
        check(&pg, &format!("matrix{i}"), WriteMode::Insert, fault);
    }
}

#[test]
fn upserts_hold_each_final_count_once_through_failures() {
    let pg = PgCluster::start();
    check(&pg, "up_clean", upsert(), Fault::None);
    check(
        &pg,
        "up_operator",
        upsert(),
        Fault::Operator(splitmix(7) % fault_matrix::RECORDS),
    );
    check(
        &pg,
        "up_in_commit",
        upsert(),
        Fault::InCommit(2 + splitmix(8) % 5),
    );
}

#[test]
fn a_server_stopped_hard_at_a_commit_and_started_again_loses_and_duplicates_nothing() {
    let pg = Arc::new(PgCluster::start());
    let server = pg.clone();
    // Stops the server as a crash would, and starts it again a little later
    // while the commit retries (and the writers' open transactions fail).
    let hook: Hook = Arc::new(move || {
        server.stop_immediate();
        let again = server.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            again.start_again();
        });
    });
    let fault = Fault::Hook(2 + splitmix(9) % 5);
    let retry = CommitRetry {
        attempts: 30,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };
    let run = run(
        fault,
        Flaky::new(sink(&pg, "crash", WriteMode::Insert), fault, Some(hook)),
        retry,
        20,
        Duration::from_millis(200),
    );
    assert_ran(fault, &run);
    assert_exact("server crash", &rows(&pg, "crash"), &expected_inserts());
    assert_eq!(pg.prepared(), Vec::<String>::new());
}

#[test]
fn a_server_that_is_down_fails_the_attempt_naming_host_port_and_table() {
    let pg = PgCluster::start();
    let port = pg.port();
    drop(pg);
    let options = PostgresOptions::new(
        format!("host=127.0.0.1 port={port} user=postgres connect_timeout=2"),
        table("gone", WriteMode::Insert),
        "cairn-test-gone",
    );
    let sink = PostgresSink::<(u64, u64)>::new(options, row).unwrap();
    let mut committer = executor::sink::committing::CommittingSink::committer(
        &sink,
        executor::sink::SinkContext::new(0, 1),
    )
    .unwrap();
    let err = committer.recover(None).unwrap_err().to_string();
    assert!(
        err.contains(&format!("postgres 127.0.0.1:{port} table \"gone\"")),
        "{err}"
    );
    assert!(err.contains("connecting failed"), "{err}");
}

#[test]
fn copied_text_arrives_byte_for_byte_and_only_at_commit() {
    use executor::sink::SinkContext;
    use executor::sink::committing::CommittingSink;
    use state_core::CheckpointId;

    let pg = PgCluster::start();
    let table = SqlTable::new(
        "texts",
        vec![
            SqlColumn::new("id", SqlType::BigInt),
            SqlColumn::new("body", SqlType::Text),
        ],
        WriteMode::Insert,
    );
    let options = PostgresOptions::new(pg.conninfo(), table, "cairn-test-texts");
    let sink = PostgresSink::new(options, |r: &(i64, String)| {
        vec![SqlValue::Int(r.0), SqlValue::Text(r.1.clone())]
    })
    .unwrap();
    let ctx = SinkContext::new(0, 1);
    let mut committer = sink.committer(ctx).unwrap();
    committer.recover(None).unwrap();
    let mut writer = sink.writer(ctx).unwrap();
    let bodies = [
        "tab\there",
        "new\nline",
        "back\\slash \\N",
        "quote ' \" é",
        "",
    ];
    for (i, b) in bodies.iter().enumerate() {
        writer.write((i as i64, (*b).to_owned())).unwrap();
    }
    let prepared = writer.prepare_commit(CheckpointId(1)).unwrap();
    assert_eq!(prepared.len(), 1);
    assert_eq!(pg.prepared(), ["cairn-test-texts-0-1"]);
    assert!(
        pg.psql("SELECT id FROM texts").is_empty(),
        "visible before commit"
    );
    committer.commit(CheckpointId(1), &prepared[0]).unwrap();
    committer.commit(CheckpointId(1), &prepared[0]).unwrap();
    let hex = pg.psql("SELECT encode(convert_to(body, 'UTF8'), 'hex') FROM texts ORDER BY id");
    let want: Vec<String> = bodies
        .iter()
        .map(|b| b.bytes().map(|x| format!("{x:02x}")).collect())
        .collect();
    assert_eq!(hex, want);
    assert!(pg.prepared().is_empty());
}
