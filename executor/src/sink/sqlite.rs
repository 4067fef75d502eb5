//! [`SqliteSink`]: exactly-once rows in a SQLite table by idempotent,
//! checkpoint-numbered transactions.
//!
//! SQLite has no prepared transactions, so the rows travel in the
//! checkpoint instead (as with the write-ahead sink): each subtask buffers
//! the rows of one checkpoint interval, in upsert mode one per key (the last
//! record wins), and at checkpoint `n`'s barrier hands them over as a
//! [`SqliteBatch`] stored in `n`. When `n` completes, one SQLite transaction
//! applies the batch and records `n` as the last committed checkpoint of
//! (sink name, origin subtask) in the table `cairn_sink_progress`; a batch
//! whose checkpoint is not newer than the recorded one is skipped. The rows
//! and the progress commit together or not at all, so a replay (a restore
//! commits its checkpoint's batches again) never applies a checkpoint twice.
//! A fresh start (no restored checkpoint) forgets the progress of its own
//! subtasks, so a new run of the job writes again.
//!
//! **The guarantee:** every record is applied exactly once (insert mode), or
//! every key holds the value of its last record (upsert mode), when its
//! checkpoint's commit ran; nothing is visible before. Each checkpoint
//! carries the rows of one interval. A restore from a checkpoint older than
//! the last committed one skips the replayed checkpoints up to that one (the
//! table keeps what they wrote the first time). Subtasks commit on their own
//! connections to one database file (WAL mode, waiting up to
//! [`SqliteOptions::busy_timeout`] for each other); a file the sink cannot
//! open or write fails the attempt with an [`ExecutorError::SinkTarget`]
//! naming the file and table.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use state_core::CheckpointId;

use super::SinkContext;
use super::committing::{Committer, CommittingSink, CommittingWriter, TwoPhaseCommit};
use super::sql::{RowBuffer, SqlTable, SqlType, SqlValue, ToRow};
use crate::error::{ExecutorError, Result};

/// The table recording each (sink, subtask)'s last committed checkpoint.
pub const PROGRESS_TABLE: &str = "cairn_sink_progress";

/// Where and how a [`SqliteSink`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// The table, its columns and the write mode.
    pub table: SqlTable,
    /// The sink's name in the progress table, unique per job and sink
    /// writing this database (`cairn-<job>-<sink uid>`).
    pub sink_name: String,
    /// How long a commit waits for another connection's (default 30 s).
    pub busy_timeout: Duration,
}

impl SqliteOptions {
    /// `table` in the database at `path`, progress recorded under
    /// `sink_name`, waiting up to 30 s for other writers.
    pub fn new(path: impl Into<PathBuf>, table: SqlTable, sink_name: impl Into<String>) -> Self {
        SqliteOptions {
            path: path.into(),
            table,
            sink_name: sink_name.into(),
            busy_timeout: Duration::from_secs(30),
        }
    }
}

/// The committable of a [`SqliteSink`]: the rows one subtask wrote in one
/// checkpoint interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteBatch {
    /// The subtask that wrote them (its progress row decides).
    pub subtask: u32,
    /// The checkpoint whose barrier closed the batch.
    pub checkpoint: u64,
    /// The rows, deduped by key in upsert mode.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Writes records as rows of a SQLite table, exactly once; see the module
/// docs. Use it through [`SqliteSink::exactly_once`] (a [`TwoPhaseCommit`]).
pub struct SqliteSink<T> {
    target: Arc<Target>,
    to_row: ToRow<T>,
}

impl<T> Debug for SqliteSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink")
            .field("target", &self.target.describe)
            .field("sink_name", &self.target.options.sink_name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> SqliteSink<T> {
    /// The committing sink writing `to_row(record)` per record, per
    /// `options`; fails on a bad table or an empty sink name.
    pub fn new(
        options: SqliteOptions,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<Self> {
        let key = options.table.key_positions()?;
        if options.sink_name.is_empty() {
            return Err(ExecutorError::InvalidJob(
                "SQLite sink: the sink name (its key in the progress table) is empty".into(),
            ));
        }
        let describe = format!(
            "sqlite {} table {:?}",
            options.path.display(),
            options.table.name
        );
        Ok(SqliteSink {
            target: Arc::new(Target {
                options,
                describe,
                key,
            }),
            to_row: Arc::new(to_row),
        })
    }

    /// A sink factory writing per `options`, committed at each completed
    /// checkpoint, with the default commit retries.
    pub fn exactly_once(
        options: SqliteOptions,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<TwoPhaseCommit<SqliteSink<T>>> {
        Ok(TwoPhaseCommit::new(SqliteSink::new(options, to_row)?))
    }

    /// The file and table, as error messages name them.
    pub fn target(&self) -> &str {
        &self.target.describe
    }
}

#[derive(Debug)]
struct Target {
    options: SqliteOptions,
    describe: String,
    key: Vec<usize>,
}

impl Target {
    fn error(&self, what: &str, e: &rusqlite::Error) -> ExecutorError {
        ExecutorError::SinkTarget {
            target: self.describe.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    fn open(&self) -> Result<Connection> {
        let path = &self.options.path;
        let conn = Connection::open(path).map_err(|e| self.error("opening failed", &e))?;
        conn.busy_timeout(self.options.busy_timeout)
            .map_err(|e| self.error("setting the busy timeout failed", &e))?;
        // Switching a new database to WAL (or recovering the WAL a killed
        // process left) does not wait on the busy handler: subtasks opening
        // it at once retry, for as long as the busy timeout.
        let patience = self.options.busy_timeout.as_millis() / 20;
        let mut tries = 0;
        loop {
            let mode = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0));
            match mode {
                Ok(_) => return Ok(conn),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && tries < patience =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(self.error("turning on WAL mode failed", &e)),
            }
        }
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Bool(v) => ValueRef::Integer(i64::from(*v)),
            SqlValue::Int(v) => ValueRef::Integer(*v),
            SqlValue::Float(v) => ValueRef::Real(*v),
            SqlValue::Text(v) => ValueRef::Text(v.as_bytes()),
            SqlValue::Bytes(v) => ValueRef::Blob(v),
        }))
    }
}

impl<T: Send + 'static> CommittingSink<T> for SqliteSink<T> {
    type Committable = SqliteBatch;

    fn writer(&self, context: SinkContext) -> Result<Box<dyn CommittingWriter<T, SqliteBatch>>> {
        Ok(Box::new(BatchWriter {
            table: self.target.options.table.name.clone(),
            to_row: self.to_row.clone(),
            subtask: context.subtask,
            buffer: RowBuffer::new(
                self.target.options.table.columns.len(),
                self.target.key.clone(),
            ),
        }))
    }

    fn committer(&self, context: SinkContext) -> Result<Box<dyn Committer<SqliteBatch>>> {
        Ok(Box::new(BatchCommitter {
            target: self.target.clone(),
            context,
            conn: None,
        }))
    }
}

/// One subtask's writer: the rows of the current interval.
struct BatchWriter<T> {
    table: String,
    to_row: ToRow<T>,
    subtask: u32,
    buffer: RowBuffer,
}

impl<T: Send> CommittingWriter<T, SqliteBatch> for BatchWriter<T> {
    fn write(&mut self, record: T) -> Result<()> {
        let row = (self.to_row)(&record);
        self.buffer.push(row, &self.table)
    }

    fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<SqliteBatch>> {
        if self.buffer.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![SqliteBatch {
            subtask: self.subtask,
            checkpoint: checkpoint.get(),
            rows: self.buffer.take(),
        }])
    }
}

/// One subtask's committer, on a connection of its own.
struct BatchCommitter {
    target: Arc<Target>,
    context: SinkContext,
    conn: Option<Connection>,
}

impl BatchCommitter {
    fn conn(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            self.conn = Some(self.target.open()?);
        }
        self.conn.as_mut().ok_or_else(|| ExecutorError::SinkTarget {
            target: self.target.describe.clone(),
            reason: "no connection".into(),
        })
    }

    fn apply(&mut self, batch: &SqliteBatch) -> Result<bool> {
        let target = self.target.clone();
        let err = |what: &str| {
            let target = target.clone();
            let what = what.to_owned();
            move |e: rusqlite::Error| target.error(&what, &e)
        };
        let table = &target.options.table;
        let name = &target.options.sink_name;
        let conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("beginning a transaction failed"))?;
        let last: Option<i64> = tx
            .query_row(
                &format!(
                    "SELECT checkpoint FROM {PROGRESS_TABLE} WHERE sink = ?1 AND subtask = ?2"
                ),
                params![name, batch.subtask],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("reading the progress table failed"))?;
        let checkpoint = i64::try_from(batch.checkpoint).unwrap_or(i64::MAX);
        if last.is_some_and(|last| last >= checkpoint) {
            tracing::debug!(
                checkpoint_id = batch.checkpoint,
                subtask = batch.subtask,
                "batch committed before; skipped"
            );
            return Ok(false);
        }
        {
            let placeholders: Vec<String> =
                (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}){}",
                table.quoted_name(),
                table.quoted_columns(),
                placeholders.join(", "),
                table.conflict_clause()
            );
            let mut insert = tx
                .prepare_cached(&sql)
                .map_err(err("preparing the INSERT failed"))?;
            for row in &batch.rows {
                insert
                    .execute(rusqlite::params_from_iter(row.iter()))
                    .map_err(err("INSERT failed"))?;
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {PROGRESS_TABLE} (sink, subtask, checkpoint) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sink, subtask) DO UPDATE SET checkpoint = EXCLUDED.checkpoint"
            ),
            params![name, batch.subtask, checkpoint],
        )
        .map_err(err("recording the progress failed"))?;
        tx.commit().map_err(err("COMMIT failed"))?;
        Ok(true)
    }
}

impl Committer<SqliteBatch> for BatchCommitter {
    fn commit(&mut self, _checkpoint: CheckpointId, batch: &SqliteBatch) -> Result<()> {
        let result = self.apply(batch);
        if result.is_err() {
            // Reopened at the next try.
            self.conn = None;
        }
        result.map(|_| ())
    }

    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        let target = self.target.clone();
        let table = &target.options.table;
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (sink TEXT NOT NULL, \
             subtask INTEGER NOT NULL, checkpoint INTEGER NOT NULL, PRIMARY KEY (sink, subtask));"
        );
        if table.create_if_missing {
            sql.push_str(&table.create_statement(SqlType::sqlite_name));
            sql.push(';');
        }
        let SinkContext {
            subtask,
            parallelism,
            ..
        } = self.context;
        let name = target.options.sink_name.clone();
        let conn = self.conn()?;
        let result = conn.execute_batch(&sql).and_then(|()| {
            if restored.is_none() {
                // A fresh start: progress of an earlier run of this job.
                conn.execute(
                    &format!(
                        "DELETE FROM {PROGRESS_TABLE} WHERE sink = ?1 \
                         AND (subtask = ?2 OR (?2 = 0 AND subtask >= ?3))"
                    ),
                    params![name, subtask, parallelism],
                )?;
            }
            Ok(())
        });
        if let Err(e) = result {
            self.conn = None;
            return Err(target.error("preparing the tables failed", &e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use state_core::OperatorStateStore;

    use super::*;
    use crate::sink::sql::{SqlColumn, WriteMode};
    use crate::sink::{Sink, SinkFactory};

    fn options(path: PathBuf, mode: WriteMode) -> SqliteOptions {
        SqliteOptions::new(
            path,
            SqlTable::new(
                "counts",
                vec![
                    SqlColumn::new("word", SqlType::Text),
                    SqlColumn::new("count", SqlType::BigInt),
                ],
                mode,
            ),
            "cairn-test-out",
        )
    }

    fn rows(path: &std::path::Path) -> Vec<(String, i64)> {
        let conn = Connection::open(path).unwrap();
        let mut s = conn
            .prepare("SELECT word, count FROM counts ORDER BY word, count")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn upsert() -> WriteMode {
        WriteMode::Upsert {
            key: vec!["word".into()],
        }
    }

    fn pair(r: &(String, i64)) -> Vec<SqlValue> {
        vec![r.0.clone().into(), r.1.into()]
    }

    #[test]
    fn rows_appear_at_completion_and_a_replayed_commit_applies_nothing_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("out.db");
        let factory =
            SqliteSink::exactly_once(options(db.clone(), WriteMode::Insert), pair).unwrap();
        let ctx = SinkContext::new(0, 1);
        let mut s: Box<dyn Sink<(String, i64)>> = factory.create(ctx).unwrap();
        s.open(ctx, None).unwrap();
        s.write(("a".into(), 1)).unwrap();
        s.write(("a".into(), 2)).unwrap();
        let mut state = OperatorStateStore::new();
        s.snapshot_state(CheckpointId(1), &mut state).unwrap();
        assert!(rows(&db).is_empty(), "nothing before completion");
        s.notify_checkpoint_complete(CheckpointId(1)).unwrap();
        assert_eq!(rows(&db), [("a".into(), 1), ("a".into(), 2)]);

        // Checkpoint 2 completes and commits, then the process dies; a
        // restore from 2 commits its batch again: skipped.
        s.write(("b".into(), 1)).unwrap();
        s.snapshot_state(CheckpointId(2), &mut state).unwrap();
        s.notify_checkpoint_complete(CheckpointId(2)).unwrap();
        drop(s);
        let restored = ctx.restored_from(Some(CheckpointId(2)));
        let mut again: Box<dyn Sink<(String, i64)>> = factory.create(restored).unwrap();
        again.open(restored, Some(&state)).unwrap();
        assert_eq!(
            rows(&db),
            [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]
        );
    }

    #[test]
    fn upserts_keep_one_row_per_key_with_the_last_value() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("out.db");
        let factory = SqliteSink::exactly_once(options(db.clone(), upsert()), pair).unwrap();
        let ctx = SinkContext::new(0, 1);
        let mut s: Box<dyn Sink<(String, i64)>> = factory.create(ctx).unwrap();
        s.open(ctx, None).unwrap();
        let mut state = OperatorStateStore::new();
        for (i, (w, n)) in [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]
            .into_iter()
            .enumerate()
        {
            s.write((w.into(), n)).unwrap();
            if i % 2 == 1 {
                let id = CheckpointId(i as u64);
                s.snapshot_state(id, &mut state).unwrap();
                s.notify_checkpoint_complete(id).unwrap();
            }
        }
        s.finish().unwrap();
        s.snapshot_state(CheckpointId(9), &mut state).unwrap();
        s.notify_checkpoint_complete(CheckpointId(9)).unwrap();
        assert_eq!(rows(&db), [("a".into(), 3), ("b".into(), 2)]);
    }

    #[test]
    fn an_unopenable_file_fails_naming_file_and_table() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("no-such-dir").join("out.db");
        let sink = SqliteSink::<(String, i64)>::new(options(db, upsert()), pair).unwrap();
        let mut committer = sink.committer(SinkContext::new(0, 1)).unwrap();
        let err = committer.recover(None).unwrap_err().to_string();
        assert!(err.contains("no-such-dir/out.db table \"counts\""), "{err}");
        let err = SqliteSink::<(String, i64)>::new(
            SqliteOptions {
                sink_name: String::new(),
                ..options(tmp.path().join("x.db"), upsert())
            },
            pair,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sink name"), "{err}");
    }
}
