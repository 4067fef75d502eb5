//! `--sink postgres:<conninfo>#<table>` and `--sink sqlite:<path>#<table>`
//! for the WordCount: the table has columns `word TEXT, count BIGINT` and is
//! created if missing; `--sink-mode upsert` (the default) keys it on `word`,
//! `--sink-mode insert` adds a row per output record. The PostgreSQL
//! transactions are named `cairn-<job>-<sink uid>-<subtask>-<checkpoint>`,
//! and the SQLite progress rows `cairn-<job>-<sink uid>`.

// Built without both sinks, only the error arms are left.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite")),
    allow(dead_code, unused_variables, unused_imports)
)]

use anyhow::bail;
use executor::StreamEnv;
use executor::log::LogSource;
use executor::sink::sql::{SqlColumn, SqlTable, SqlType, SqlValue, WriteMode};
use state_core::BackendFactory;

use crate::sink_arg::{SinkMode, SinkSpec};
use crate::wordcount::{self, WordCount};

/// The WordCount's table `name` in `mode`.
fn table(name: &str, mode: SinkMode) -> SqlTable {
    SqlTable::new(
        name,
        vec![
            SqlColumn::new("word", SqlType::Text),
            SqlColumn::new("count", SqlType::BigInt),
        ],
        match mode {
            SinkMode::Upsert => WriteMode::Upsert {
                key: vec!["word".into()],
            },
            SinkMode::Insert => WriteMode::Insert,
        },
    )
}

fn row(w: &WordCount) -> Vec<SqlValue> {
    vec![SqlValue::Text(w.word.clone()), SqlValue::Int(w.count)]
}

/// `cairn-<job>-<sink uid>`, with anything but letters, digits, `-`, `_`
/// and `.` replaced by `_`.
fn sink_name(job: &str) -> String {
    format!("cairn-{job}-{}", wordcount::uid::SINK)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Adds the WordCount writing to the SQL sink of `spec` (a
/// [`SinkSpec::Postgres`] or [`SinkSpec::Sqlite`]) to `env`.
pub(crate) fn build<F: BackendFactory + 'static>(
    env: &StreamEnv<F>,
    source: LogSource,
    filter_poison: bool,
    spec: SinkSpec,
    mode: SinkMode,
    job: &str,
) -> anyhow::Result<()> {
    match spec {
        #[cfg(feature = "postgres")]
        SinkSpec::Postgres { conninfo, table: t } => {
            use executor::sink::postgres::{PostgresOptions, PostgresSink};
            let options = PostgresOptions::new(conninfo, table(&t, mode), sink_name(job));
            let sink = PostgresSink::exactly_once(options, row)?;
            wordcount::build(env, source, filter_poison, sink);
            Ok(())
        }
        #[cfg(feature = "sqlite")]
        SinkSpec::Sqlite { path, table: t } => {
            use executor::sink::sqlite::{SqliteOptions, SqliteSink};
            let options = SqliteOptions::new(path, table(&t, mode), sink_name(job));
            let sink = SqliteSink::exactly_once(options, row)?;
            wordcount::build(env, source, filter_poison, sink);
            Ok(())
        }
        #[cfg(not(feature = "postgres"))]
        SinkSpec::Postgres { .. } => {
            bail!("--sink postgres:…: this cairn was built without the `postgres` feature")
        }
        #[cfg(not(feature = "sqlite"))]
        SinkSpec::Sqlite { .. } => {
            bail!("--sink sqlite:…: this cairn was built without the `sqlite` feature")
        }
        other => bail!("--sink {other:?} is not a SQL sink"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_the_transaction_prefix_accepts() {
        assert_eq!(sink_name("wc"), "cairn-wc-Print");
        assert_eq!(sink_name("a b/c"), "cairn-a_b_c-Print");
        assert_eq!(
            table("t", SinkMode::Upsert).mode,
            WriteMode::Upsert {
                key: vec!["word".into()]
            }
        );
        assert_eq!(table("t", SinkMode::Insert).mode, WriteMode::Insert);
    }
}
