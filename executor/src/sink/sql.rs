//! What the SQL sinks ([`postgres`](super::postgres), [`sqlite`](super::sqlite))
//! share: the table a sink writes ([`SqlTable`]), a record's column values
//! ([`SqlValue`], made by a [`ToRow`] function), and the per-checkpoint row
//! buffer that dedupes upserts by key ([`RowBuffer`]).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{ExecutorError, Result};

/// One column value of a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// A `BOOLEAN`.
    Bool(bool),
    /// A `BIGINT` (SQLite `INTEGER`).
    Int(i64),
    /// A `DOUBLE PRECISION` (SQLite `REAL`); compared and hashed by bits.
    Float(f64),
    /// A `TEXT`.
    Text(String),
    /// A `BYTEA` (SQLite `BLOB`).
    Bytes(Vec<u8>),
}

impl PartialEq for SqlValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SqlValue::Null, SqlValue::Null) => true,
            (SqlValue::Bool(a), SqlValue::Bool(b)) => a == b,
            (SqlValue::Int(a), SqlValue::Int(b)) => a == b,
            (SqlValue::Float(a), SqlValue::Float(b)) => a.to_bits() == b.to_bits(),
            (SqlValue::Text(a), SqlValue::Text(b)) => a == b,
            (SqlValue::Bytes(a), SqlValue::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SqlValue {}

impl Hash for SqlValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            SqlValue::Null => {}
            SqlValue::Bool(v) => v.hash(state),
            SqlValue::Int(v) => v.hash(state),
            SqlValue::Float(v) => v.to_bits().hash(state),
            SqlValue::Text(v) => v.hash(state),
            SqlValue::Bytes(v) => v.hash(state),
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Bool(v)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Float(v)
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> Self {
        SqlValue::Bytes(v)
    }
}

/// A column's SQL type, for creating the table when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `BOOLEAN`.
    Bool,
    /// `BIGINT`.
    BigInt,
    /// `DOUBLE PRECISION` (SQLite `REAL`).
    Double,
    /// `TEXT`.
    Text,
    /// `BYTEA` (SQLite `BLOB`).
    Bytes,
}

impl SqlType {
    /// The type's name in PostgreSQL.
    pub fn postgres_name(self) -> &'static str {
        match self {
            SqlType::Bool => "BOOLEAN",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE PRECISION",
            SqlType::Text => "TEXT",
            SqlType::Bytes => "BYTEA",
        }
    }

    /// The type's name in SQLite.
    pub fn sqlite_name(self) -> &'static str {
        match self {
            SqlType::Bool | SqlType::BigInt => "INTEGER",
            SqlType::Double => "REAL",
            SqlType::Text => "TEXT",
            SqlType::Bytes => "BLOB",
        }
    }
}

/// A column written by a SQL sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlColumn {
    /// The column name (quoted in every statement, so any name works).
    pub name: String,
    /// Its type, used only when the sink creates the table.
    pub ty: SqlType,
}

impl SqlColumn {
    /// Column `name` of type `ty`.
    pub fn new(name: impl Into<String>, ty: SqlType) -> Self {
        SqlColumn {
            name: name.into(),
            ty,
        }
    }
}

/// How rows reach the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Every record becomes a new row.
    Insert,
    /// One row per key: a record whose key columns match a row replaces
    /// its other columns (`INSERT … ON CONFLICT (key) DO UPDATE`). The table
    /// needs a primary key or unique index on exactly these columns (a
    /// table the sink creates gets a primary key).
    Upsert {
        /// The key columns, a non-empty subset of the table's columns.
        key: Vec<String>,
    },
}

/// The table a SQL sink writes: its name, columns, write mode, and whether
/// the sink creates it when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTable {
    /// The table name, optionally `schema.table`; each part is quoted.
    pub name: String,
    /// The columns a record's values go to, in order.
    pub columns: Vec<SqlColumn>,
    /// Insert or upsert.
    pub mode: WriteMode,
    /// `CREATE TABLE IF NOT EXISTS` before the first write.
    pub create_if_missing: bool,
}

impl SqlTable {
    /// Table `name` with `columns`, in `mode`, created if missing.
    pub fn new(name: impl Into<String>, columns: Vec<SqlColumn>, mode: WriteMode) -> Self {
        SqlTable {
            name: name.into(),
            columns,
            mode,
            create_if_missing: true,
        }
    }

    /// Checks that there are columns, that the upsert key names some of
    /// them, and returns the key's column positions (empty for inserts).
    pub fn key_positions(&self) -> Result<Vec<usize>> {
        let bad = |why: String| {
            Err(ExecutorError::InvalidJob(format!(
                "SQL sink table {:?}: {why}",
                self.name
            )))
        };
        if self.name.is_empty() {
            return bad("the table name is empty".into());
        }
        if self.columns.is_empty() {
            return bad("no columns".into());
        }
        let WriteMode::Upsert { key } = &self.mode else {
            return Ok(Vec::new());
        };
        if key.is_empty() {
            return bad("upsert mode needs at least one key column".into());
        }
        let mut positions = Vec::with_capacity(key.len());
        for k in key {
            match self.columns.iter().position(|c| &c.name == k) {
                Some(i) => positions.push(i),
                None => return bad(format!("upsert key column {k:?} is not one of its columns")),
            }
        }
        if positions.len() == self.columns.len() {
            return bad("every column is a key column: nothing to update".into());
        }
        Ok(positions)
    }

    /// The quoted table name (`"schema"."table"`).
    pub fn quoted_name(&self) -> String {
        self.name
            .split('.')
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The quoted column list, `"a", "b"`.
    pub fn quoted_columns(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `CREATE TABLE IF NOT EXISTS`, with column types per `type_name` and a
    /// primary key on the upsert key.
    pub fn create_statement(&self, type_name: fn(SqlType) -> &'static str) -> String {
        let mut defs: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), type_name(c.ty)))
            .collect();
        if let WriteMode::Upsert { key } = &self.mode {
            let key: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.quoted_name(),
            defs.join(", ")
        )
    }

    /// The statement tail after `VALUES …`: empty for inserts,
    /// `ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c, …` for upserts
    /// (the same in PostgreSQL and SQLite).
    pub fn conflict_clause(&self) -> String {
        let WriteMode::Upsert { key } = &self.mode else {
            return String::new();
        };
        let sets: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !key.contains(&c.name))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
            .collect();
        let key: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            key.join(", "),
            sets.join(", ")
        )
    }
}

/// Quotes an SQL identifier: `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Turns a record into its column values, in the order of
/// [`SqlTable::columns`].
pub type ToRow<T> = Arc<dyn Fn(&T) -> Vec<SqlValue> + Send + Sync>;

/// The rows of one checkpoint interval, in arrival order; in upsert mode a
/// row whose key is already buffered replaces that row (the last wins), so
/// no statement touches a key twice.
#[derive(Debug, Clone, Default)]
pub struct RowBuffer {
    rows: Vec<Vec<SqlValue>>,
    by_key: HashMap<Vec<SqlValue>, usize>,
    key: Vec<usize>,
    columns: usize,
}

impl RowBuffer {
    /// A buffer for rows of `columns` values, deduped on the values at
    /// `key` (empty: no dedupe).
    pub fn new(columns: usize, key: Vec<usize>) -> Self {
        RowBuffer {
            rows: Vec::new(),
            by_key: HashMap::new(),
            key,
            columns,
        }
    }

    /// Adds a row; `table` names the table in the error when the row has
    /// the wrong number of values.
    pub fn push(&mut self, row: Vec<SqlValue>, table: &str) -> Result<()> {
        if row.len() != self.columns {
            return Err(ExecutorError::InvalidJob(format!(
                "SQL sink table {table:?}: a record gave {} values for {} columns",
                row.len(),
                self.columns
            )));
        }
        if self.key.is_empty() {
            self.rows.push(row);
            return Ok(());
        }
        let key: Vec<SqlValue> = self.key.iter().map(|&i| row[i].clone()).collect();
        match self.by_key.get(&key) {
            Some(&at) => self.rows[at] = row,
            None => {
                self.by_key.insert(key, self.rows.len());
                self.rows.push(row);
            }
        }
        Ok(())
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Takes the rows out, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<Vec<SqlValue>> {
        self.by_key.clear();
        std::mem::take(&mut self.rows)
    }
}

impl fmt::Display for SqlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Bool(v) => write!(f, "{v}"),
            SqlValue::Int(v) => write!(f, "{v}"),
            SqlValue::Float(v) => write!(f, "{v}"),
            SqlValue::Text(v) => write!(f, "{v:?}"),
            SqlValue::Bytes(v) => write!(f, "<{} bytes>", v.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(mode: WriteMode) -> SqlTable {
        SqlTable::new(
            "public.counts",
            vec![
                SqlColumn::new("word", SqlType::Text),
                SqlColumn::new("count", SqlType::BigInt),
            ],
            mode,
        )
    }

    #[test]
    fn upsert_statements_quote_names_and_key_on_the_key() {
        let t = table(WriteMode::Upsert {
            key: vec!["word".into()],
        });
        assert_eq!(t.key_positions().unwrap(), [0]);
        assert_eq!(t.quoted_name(), "\"public\".\"counts\"");
        assert_eq!(
            t.create_statement(SqlType::postgres_name),
            "CREATE TABLE IF NOT EXISTS \"public\".\"counts\" (\"word\" TEXT, \"count\" BIGINT, \
             PRIMARY KEY (\"word\"))"
        );
        assert_eq!(
            t.conflict_clause(),
            " ON CONFLICT (\"word\") DO UPDATE SET \"count\" = EXCLUDED.\"count\""
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(table(WriteMode::Insert).conflict_clause(), "");
    }

    #[test]
    fn a_bad_table_is_refused_with_what_is_wrong() {
        let err = table(WriteMode::Upsert {
            key: vec!["nope".into()],
        })
        .key_positions()
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"nope\" is not one of its columns"), "{err}");
        let err = table(WriteMode::Upsert { key: vec![] })
            .key_positions()
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one key column"), "{err}");
    }

    #[test]
    fn the_buffer_keeps_the_last_row_per_key_in_first_arrival_order() {
        let mut b = RowBuffer::new(2, vec![0]);
        for (w, n) in [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)] {
            b.push(vec![w.into(), SqlValue::Int(n)], "t").unwrap();
        }
        assert_eq!(b.len(), 3);
        let rows = b.take();
        assert_eq!(
            rows,
            [
                vec![SqlValue::from("a"), SqlValue::Int(2)],
                vec![SqlValue::from("b"), SqlValue::Int(2)],
                vec![SqlValue::from("c"), SqlValue::Int(1)],
            ]
        );
        assert!(b.is_empty());
        b.push(vec!["a".into(), SqlValue::Int(3)], "t").unwrap();
        assert_eq!(b.take().len(), 1, "the key index was cleared");
        let err = b.push(vec![SqlValue::Null], "t").unwrap_err().to_string();
        assert!(err.contains("1 values for 2 columns"), "{err}");
        let mut inserts = RowBuffer::new(1, vec![]);
        inserts.push(vec![SqlValue::Int(1)], "t").unwrap();
        inserts.push(vec![SqlValue::Int(1)], "t").unwrap();
        assert_eq!(inserts.len(), 2);
    }
}
