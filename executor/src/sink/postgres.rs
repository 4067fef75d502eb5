//! [`PostgresSink`]: exactly-once rows in a PostgreSQL table by real
//! two-phase commit (Flink's JDBC exactly-once sink, XA in Java).
//!
//! Each subtask writes the records of one checkpoint interval in one
//! transaction of its own connection, buffered, never a round trip per
//! record: inserts go as one `COPY … FROM STDIN` per
//! [`PostgresOptions::batch_rows`] rows; upserts as multi-row `INSERT …
//! VALUES (…), (…) ON CONFLICT (key) DO UPDATE` statements of that many
//! rows, their buffer holding each key once (the last record wins) and sent
//! at the barrier only, so it holds the distinct keys of one interval. At
//! checkpoint `n`'s barrier the transaction is flushed and prepared, `PREPARE
//! TRANSACTION '<prefix>-<subtask>-<n>'`: durable on the server, invisible
//! to readers, and no longer tied to the connection. Its committable is that
//! gid. When `n` completes, `COMMIT PREPARED` makes it visible; a gid the
//! server no longer knows was committed before (a restore commits its
//! checkpoint's transactions again), so that succeeds.
//!
//! At every start, once the restored checkpoint's transactions are
//! committed, the sink reads `pg_prepared_xacts` for its prefix: its own
//! gids (this subtask's, and on subtask 0 those of subtasks at or beyond the
//! current parallelism) of checkpoints up to the restored one are committed,
//! later ones rolled back (`ROLLBACK PREPARED`): their records are read again
//! from the restored offsets. A fresh start rolls back every own gid.
//!
//! **The guarantee:** every record is in the table exactly once (insert
//! mode), or every key holds the value of its last record (upsert mode),
//! when its checkpoint's commit ran; nothing is visible before. The server
//! must allow prepared transactions (`max_prepared_transactions` > 0, at
//! least the sink's parallelism, times two when checkpoints overlap their
//! commits). A server that is down or refuses fails the attempt with an
//! [`ExecutorError::SinkTarget`] naming host, port and table; the job
//! restarts, and prepared transactions survive a server crash, so nothing
//! committed or pre-committed is lost. Upserts need each key written by one
//! subtask (key the stream by the upsert key): a prepared transaction holds
//! its rows' locks until committed, and a statement waiting on them longer
//! than [`PostgresOptions::lock_timeout`] fails the attempt.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Statement};
use serde::{Deserialize, Serialize};
use state_core::CheckpointId;

use super::SinkContext;
use super::committing::{Committer, CommittingSink, CommittingWriter, TwoPhaseCommit};
use super::sql::{RowBuffer, SqlTable, SqlType, SqlValue, ToRow};
use crate::error::{ExecutorError, Result};

mod encode;
use encode::copy_rows;

/// Where and how a [`PostgresSink`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// A libpq-style connection string (`host=… port=… user=… dbname=…`)
    /// or a `postgresql://` URL.
    pub conninfo: String,
    /// The table, its columns and the write mode.
    pub table: SqlTable,
    /// The transaction-id prefix, unique per job and sink
    /// (`cairn-<job>-<sink uid>`): the sink owns, commits and rolls back
    /// every prepared transaction whose gid starts with it. Letters,
    /// digits, `-`, `_` and `.` only.
    pub transaction_prefix: String,
    /// Rows per statement: one `COPY` in insert mode, one multi-row
    /// `INSERT … ON CONFLICT` in upsert mode (default 5,000; capped so a
    /// statement has at most 65,535 parameters).
    pub batch_rows: usize,
    /// How long a statement waits for a row lock before failing the
    /// attempt (default 30 s).
    pub lock_timeout: Duration,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
}

impl PostgresOptions {
    /// `table` on the server of `conninfo`, transactions named
    /// `<transaction_prefix>-<subtask>-<checkpoint>`, other options default.
    pub fn new(
        conninfo: impl Into<String>,
        table: SqlTable,
        transaction_prefix: impl Into<String>,
    ) -> Self {
        PostgresOptions {
            conninfo: conninfo.into(),
            table,
            transaction_prefix: transaction_prefix.into(),
            batch_rows: 5_000,
            lock_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The committable of a [`PostgresSink`]: one prepared transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTransaction {
    /// `<prefix>-<subtask>-<checkpoint>`.
    pub gid: String,
}

/// Writes records as rows of a PostgreSQL table, exactly once, by two-phase
/// commit; see the module docs. Use it through [`PostgresSink::exactly_once`]
/// (a [`TwoPhaseCommit`]).
pub struct PostgresSink<T> {
    target: Arc<Target>,
    to_row: ToRow<T>,
}

impl<T> Debug for PostgresSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target.describe)
            .field("prefix", &self.target.options.transaction_prefix)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> PostgresSink<T> {
    /// The committing sink writing `to_row(record)` per record, per
    /// `options`; fails on a bad connection string, prefix or table.
    pub fn new(
        options: PostgresOptions,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<Self> {
        Ok(PostgresSink {
            target: Arc::new(Target::new(options)?),
            to_row: Arc::new(to_row),
        })
    }

    /// A sink factory writing per `options`, committed at each completed
    /// checkpoint, with the default commit retries.
    pub fn exactly_once(
        options: PostgresOptions,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<TwoPhaseCommit<PostgresSink<T>>> {
        Ok(TwoPhaseCommit::new(PostgresSink::new(options, to_row)?))
    }

    /// The server and table, as error messages name them
    /// (`postgres 127.0.0.1:5432 table "counts"`).
    pub fn target(&self) -> &str {
        &self.target.describe
    }
}

/// `conninfo` with its password hidden, for messages and logs: the value of
/// a `password=` key, and the password of a `postgres://user:password@`
/// URL.
fn redact_password(conninfo: &str) -> String {
    if let Some((scheme, rest)) = conninfo.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    conninfo
        .split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parsed options, shared by a sink's writers and committers.
#[derive(Debug)]
struct Target {
    options: PostgresOptions,
    config: Config,
    describe: String,
    key: Vec<usize>,
    batch_rows: usize,
}

impl Target {
    fn new(options: PostgresOptions) -> Result<Self> {
        let key = options.table.key_positions()?;
        let prefix = &options.transaction_prefix;
        if prefix.is_empty()
            || prefix.len() > 150
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ExecutorError::InvalidJob(format!(
                "PostgreSQL sink transaction prefix {prefix:?}: needs 1 to 150 letters, digits, \
                 '-', '_' or '.'"
            )));
        }
        let mut config: Config = options.conninfo.parse().map_err(|e| {
            ExecutorError::InvalidJob(format!(
                "PostgreSQL sink connection string {:?}: {e}",
                redact_password(&options.conninfo)
            ))
        })?;
        config.connect_timeout(options.connect_timeout);
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let describe = format!("postgres {host}:{port} table {:?}", options.table.name);
        let batch_rows = options
            .batch_rows
            .clamp(1, 65_535 / options.table.columns.len().max(1));
        Ok(Target {
            options,
            config,
            describe,
            key,
            batch_rows,
        })
    }

    fn error(&self, what: &str, e: &postgres::Error) -> ExecutorError {
        ExecutorError::SinkTarget {
            target: self.describe.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    fn connect(&self) -> Result<Client> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| self.error("connecting failed", &e))?;
        let set = format!(
            "SET lock_timeout = {}",
            self.options.lock_timeout.as_millis().max(1)
        );
        client
            .batch_execute(&set)
            .map_err(|e| self.error("setting lock_timeout failed", &e))?;
        Ok(client)
    }

    fn gid(&self, subtask: u32, checkpoint: CheckpointId) -> String {
        format!(
            "{}-{subtask}-{}",
            self.options.transaction_prefix,
            checkpoint.get()
        )
    }

    /// `(subtask, checkpoint)` of one of this sink's gids.
    fn parse_gid(&self, gid: &str) -> Option<(u32, u64)> {
        let rest = gid
            .strip_prefix(self.options.transaction_prefix.as_str())?
            .strip_prefix('-')?;
        let (subtask, checkpoint) = rest.split_once('-')?;
        Some((subtask.parse().ok()?, checkpoint.parse().ok()?))
    }

    /// The multi-row statement for `rows` rows.
    fn insert_statement(&self, rows: usize) -> String {
        let table = &self.options.table;
        let columns = table.columns.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            table.quoted_name(),
            table.quoted_columns()
        );
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&(r * columns + c + 1).to_string());
            }
            sql.push(')');
        }
        sql.push_str(&table.conflict_clause());
        sql
    }
}

/// `'text'` with inner quotes doubled (gids are checked to need none).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl<T: Send + 'static> CommittingSink<T> for PostgresSink<T> {
    type Committable = PreparedTransaction;

    fn writer(
        &self,
        context: SinkContext,
    ) -> Result<Box<dyn CommittingWriter<T, PreparedTransaction>>> {
        Ok(Box::new(PgWriter {
            target: self.target.clone(),
            to_row: self.to_row.clone(),
            subtask: context.subtask,
            client: None,
            full_batch: None,
            in_transaction: false,
            broken: None,
            buffer: RowBuffer::new(
                self.target.options.table.columns.len(),
                self.target.key.clone(),
            ),
            upsert: !self.target.key.is_empty(),
        }))
    }

    fn committer(&self, context: SinkContext) -> Result<Box<dyn Committer<PreparedTransaction>>> {
        Ok(Box::new(PgCommitter {
            target: self.target.clone(),
            context,
            client: None,
        }))
    }
}

/// One subtask's writer: one open transaction at a time.
struct PgWriter<T> {
    target: Arc<Target>,
    to_row: ToRow<T>,
    subtask: u32,
    client: Option<Client>,
    /// The prepared statement for a full batch, on `client`.
    full_batch: Option<Statement>,
    /// Whether `BEGIN` was sent since the last prepare.
    in_transaction: bool,
    /// Set once a statement failed: the open transaction is gone, so this
    /// writer refuses to go on (the attempt fails and restarts).
    broken: Option<String>,
    buffer: RowBuffer,
    /// Upsert mode: rows are sent at the barrier only.
    upsert: bool,
}

impl<T> PgWriter<T> {
    fn check(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(reason) => Err(ExecutorError::SinkTarget {
                target: self.target.describe.clone(),
                reason: format!("an earlier statement of this transaction failed: {reason}"),
            }),
        }
    }

    /// Runs `f` on the connection; a failure breaks the writer.
    fn with_client<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.check()?;
        let result = f(self);
        if let Err(e) = &result {
            self.broken = Some(e.to_string());
            self.client = None;
            self.full_batch = None;
            self.in_transaction = false;
        }
        result
    }

    /// Sends the buffered rows into the open transaction (opening it).
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = self.buffer.take();
        self.with_client(|w| {
            let target = w.target.clone();
            if w.client.is_none() {
                w.client = Some(target.connect()?);
            }
            let Some(client) = w.client.as_mut() else {
                return Ok(());
            };
            if !w.in_transaction {
                client
                    .batch_execute("BEGIN")
                    .map_err(|e| target.error("BEGIN failed", &e))?;
                w.in_transaction = true;
            }
            if !w.upsert {
                return copy_rows(client, &target, &rows);
            }
            for chunk in rows.chunks(target.batch_rows) {
                let params: Vec<&(dyn ToSql + Sync)> = chunk
                    .iter()
                    .flatten()
                    .map(|v| v as &(dyn ToSql + Sync))
                    .collect();
                let statement = if chunk.len() == target.batch_rows {
                    match &w.full_batch {
                        Some(s) => s.clone(),
                        None => {
                            let s = client
                                .prepare(&target.insert_statement(chunk.len()))
                                .map_err(|e| target.error("preparing the INSERT failed", &e))?;
                            w.full_batch = Some(s.clone());
                            s
                        }
                    }
                } else {
                    client
                        .prepare(&target.insert_statement(chunk.len()))
                        .map_err(|e| target.error("preparing the INSERT failed", &e))?
                };
                client
                    .execute(&statement, &params)
                    .map_err(|e| target.error("INSERT failed", &e))?;
            }
            Ok(())
        })
    }
}

impl<T: Send> CommittingWriter<T, PreparedTransaction> for PgWriter<T> {
    fn write(&mut self, record: T) -> Result<()> {
        self.check()?;
        let row = (self.to_row)(&record);
        self.buffer.push(row, &self.target.options.table.name)?;
        // Upserts are sent at the barrier only: the last checkpoint's
        // prepared transaction holds its rows' locks until its commit, which
        // runs on this thread after the checkpoint completes.
        if !self.upsert && self.buffer.len() >= self.target.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn prepare_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<PreparedTransaction>> {
        self.flush()?;
        if !self.in_transaction {
            self.check()?;
            return Ok(Vec::new());
        }
        let gid = self.target.gid(self.subtask, checkpoint);
        self.with_client(|w| {
            let target = w.target.clone();
            let Some(client) = w.client.as_mut() else {
                return Err(ExecutorError::SinkTarget {
                    target: target.describe.clone(),
                    reason: "the connection of the open transaction is gone".into(),
                });
            };
            client
                .batch_execute(&format!("PREPARE TRANSACTION {}", literal(&gid)))
                .map_err(|e| target.error(&format!("PREPARE TRANSACTION {gid:?} failed"), &e))?;
            w.in_transaction = false;
            Ok(())
        })?;
        tracing::debug!(
            checkpoint_id = checkpoint.get(),
            gid,
            "prepared the transaction"
        );
        Ok(vec![PreparedTransaction { gid }])
    }
}

/// One subtask's committer, on a connection of its own.
struct PgCommitter {
    target: Arc<Target>,
    context: SinkContext,
    client: Option<Client>,
}

impl PgCommitter {
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            self.client = Some(self.target.connect()?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ExecutorError::SinkTarget {
                target: self.target.describe.clone(),
                reason: "no connection".into(),
            })
    }

    /// `COMMIT PREPARED` or `ROLLBACK PREPARED` of `gid`; a gid the server
    /// does not know is done already.
    fn finish(&mut self, verb: &str, gid: &str) -> Result<()> {
        let target = self.target.clone();
        let client = self.client()?;
        match client.batch_execute(&format!("{verb} PREPARED {}", literal(gid))) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                tracing::debug!(gid, "{verb} PREPARED: no such transaction, done before");
                Ok(())
            }
            Err(e) => {
                // A broken connection is replaced at the next try.
                if e.code().is_none() {
                    self.client = None;
                }
                Err(target.error(&format!("{verb} PREPARED {gid:?} failed"), &e))
            }
        }
    }

    /// Creates the table if it is missing, serialised by an advisory lock
    /// (concurrent `CREATE TABLE IF NOT EXISTS` can collide).
    fn create_table(&mut self) -> Result<()> {
        let target = self.target.clone();
        let table = &target.options.table;
        if !table.create_if_missing {
            return Ok(());
        }
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext({})); {}; COMMIT",
            literal(&table.quoted_name()),
            table.create_statement(SqlType::postgres_name)
        );
        let client = self.client()?;
        if let Err(e) = client.batch_execute(&sql) {
            self.client = None;
            return Err(target.error("creating the table failed", &e));
        }
        Ok(())
    }
}

impl Committer<PreparedTransaction> for PgCommitter {
    fn commit(&mut self, _checkpoint: CheckpointId, txn: &PreparedTransaction) -> Result<()> {
        self.finish("COMMIT", &txn.gid)
    }

    fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        self.create_table()?;
        let target = self.target.clone();
        let pattern = format!("{}-", target.options.transaction_prefix);
        let client = self.client()?;
        let rows = match client.query(
            "SELECT gid FROM pg_prepared_xacts \
             WHERE database = current_database() AND left(gid, length($1)) = $1",
            &[&pattern],
        ) {
            Ok(rows) => rows,
            Err(e) => {
                self.client = None;
                return Err(target.error("reading pg_prepared_xacts failed", &e));
            }
        };
        let SinkContext {
            subtask,
            parallelism,
            ..
        } = self.context;
        let upto = restored.map(CheckpointId::get);
        for row in rows {
            let gid: String = row
                .try_get(0)
                .map_err(|e| target.error("reading pg_prepared_xacts failed", &e))?;
            let Some((owner, checkpoint)) = target.parse_gid(&gid) else {
                continue;
            };
            if owner != subtask && !(subtask == 0 && owner >= parallelism) {
                continue;
            }
            if upto.is_some_and(|n| checkpoint <= n) {
                tracing::info!(
                    gid,
                    "committing a transaction prepared for a completed checkpoint"
                );
                self.finish("COMMIT", &gid)?;
            } else {
                tracing::info!(
                    gid,
                    "rolling back a transaction prepared after the restored checkpoint"
                );
                self.finish("ROLLBACK", &gid)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sql::{SqlColumn, WriteMode};

    fn options(prefix: &str) -> PostgresOptions {
        PostgresOptions::new(
            "host=127.0.0.1 port=6543 user=postgres",
            SqlTable::new(
                "counts",
                vec![
                    SqlColumn::new("word", SqlType::Text),
                    SqlColumn::new("count", SqlType::BigInt),
                ],
                WriteMode::Upsert {
                    key: vec!["word".into()],
                },
            ),
            prefix,
        )
    }

    #[test]
    fn gids_name_prefix_subtask_and_checkpoint_and_parse_back() {
        let t = Target::new(options("cairn-wc-out")).unwrap();
        assert_eq!(t.describe, "postgres 127.0.0.1:6543 table \"counts\"");
        let gid = t.gid(2, CheckpointId(17));
        assert_eq!(gid, "cairn-wc-out-2-17");
        assert_eq!(t.parse_gid(&gid), Some((2, 17)));
        assert_eq!(t.parse_gid("cairn-wc-out2-2-17"), None);
        assert_eq!(t.parse_gid("cairn-wc-out-x-17"), None);
        assert_eq!(t.parse_gid("cairn-wc-other-1-2"), None);
    }

    #[test]
    fn statements_batch_rows_and_upsert_on_the_key() {
        let t = Target::new(options("p")).unwrap();
        assert_eq!(
            t.insert_statement(2),
            "INSERT INTO \"counts\" (\"word\", \"count\") VALUES ($1, $2), ($3, $4) \
             ON CONFLICT (\"word\") DO UPDATE SET \"count\" = EXCLUDED.\"count\""
        );
        assert_eq!(literal("a'b"), "'a''b'");
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        let err = Target::new(options("bad prefix'")).unwrap_err().to_string();
        assert!(err.contains("transaction prefix \"bad prefix'\""), "{err}");
        let mut o = options("p");
        o.conninfo = "port=notaport".into();
        let err = Target::new(o).unwrap_err().to_string();
        assert!(err.contains("connection string \"port=notaport\""), "{err}");
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact_password("host=db port=5432 user=app password=s3cret dbname=x"),
            "host=db port=5432 user=app password=*** dbname=x"
        );
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_password("host=db user=app"), "host=db user=app");
    }
}
