//! `--sink`: where a bundled job's output goes, and with what guarantee.
//!
//! ```text
//! --sink print          one line per record on stdout (default; at-least-once)
//! --sink file:<dir>     part files committed at each checkpoint (exactly-once);
//!                       `--output <dir>` is the same
//! --sink wal:<file>     held in the checkpoint, appended to <file> once it
//!                       completed (write-ahead; see its one caveat)
//! --sink postgres:<conninfo>#<table>
//!                       rows in a PostgreSQL table, two-phase commit per
//!                       checkpoint (exactly-once)
//! --sink sqlite:<path>#<table>
//!                       rows in a SQLite table, one checkpoint-numbered
//!                       transaction per checkpoint (exactly-once)
//! ```
//!
//! The SQL sinks write columns `word TEXT, count BIGINT`, creating the
//! table if missing; `--sink-mode upsert` (the default) keeps one row per
//! word, `--sink-mode insert` one row per output record.

use std::path::PathBuf;
use std::str::FromStr;

/// A parsed `--sink` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkSpec {
    /// `print`: stdout.
    Print,
    /// `file:<dir>`: exactly-once part files.
    File(PathBuf),
    /// `wal:<file>`: the write-ahead sink appending to a file.
    WriteAhead(PathBuf),
    /// `postgres:<conninfo>#<table>`: the PostgreSQL two-phase-commit sink.
    Postgres {
        /// The libpq connection string or URL.
        conninfo: String,
        /// The table.
        table: String,
    },
    /// `sqlite:<path>#<table>`: the SQLite sink.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: String,
    },
}

/// What `--sink` accepts, for error messages.
const FORMS: &str =
    "print, file:<dir>, wal:<file>, postgres:<conninfo>#<table>, sqlite:<path>#<table>";

/// `--sink-mode`: how the SQL sinks write rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum SinkMode {
    /// One row per word, holding its latest count.
    #[default]
    Upsert,
    /// One row per output record.
    Insert,
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "print" {
            return Ok(SinkSpec::Print);
        }
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(format!("{s:?} is not a sink: expected one of {FORMS}"));
        };
        let path = |what: &str| -> Result<PathBuf, String> {
            if rest.is_empty() {
                Err(format!(
                    "{kind}: needs {what} after the colon ({kind}:<{what}>)"
                ))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        // `<target>#<table>`, split at the last `#`.
        let with_table = |what: &str| -> Result<(String, String), String> {
            match rest.rsplit_once('#') {
                Some((target, table)) if !target.is_empty() && !table.is_empty() => {
                    Ok((target.to_owned(), table.to_owned()))
                }
                _ => Err(format!(
                    "{kind}: needs {what} and a table ({kind}:<{what}>#<table>), got {rest:?}"
                )),
            }
        };
        match kind {
            "file" => Ok(SinkSpec::File(path("dir")?)),
            "wal" => Ok(SinkSpec::WriteAhead(path("file")?)),
            "postgres" => {
                let (conninfo, table) = with_table("conninfo")?;
                Ok(SinkSpec::Postgres { conninfo, table })
            }
            "sqlite" => {
                let (path, table) = with_table("path")?;
                Ok(SinkSpec::Sqlite {
                    path: path.into(),
                    table,
                })
            }
            other => Err(format!(
                "unknown sink kind {other:?} in {s:?}: expected one of {FORMS}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_names_what_is_wrong() {
        assert_eq!("print".parse(), Ok(SinkSpec::Print));
        assert_eq!("file:out".parse(), Ok(SinkSpec::File("out".into())));
        assert_eq!(
            "wal:/tmp/x.txt".parse(),
            Ok(SinkSpec::WriteAhead("/tmp/x.txt".into()))
        );
        assert_eq!(
            "postgres:host=127.0.0.1 port=5433 user=postgres#counts".parse(),
            Ok(SinkSpec::Postgres {
                conninfo: "host=127.0.0.1 port=5433 user=postgres".into(),
                table: "counts".into()
            })
        );
        assert_eq!(
            "sqlite:/tmp/a#b.db#public.counts".parse(),
            Ok(SinkSpec::Sqlite {
                path: "/tmp/a#b.db".into(),
                table: "public.counts".into()
            })
        );
        let err = "postgres:host=x".parse::<SinkSpec>().unwrap_err();
        assert!(
            err.contains("postgres: needs conninfo and a table (postgres:<conninfo>#<table>)"),
            "{err}"
        );
        let err = "sqlite:out.db#".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("sqlite: needs path and a table"), "{err}");
        let err = "file:".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("file: needs dir"), "{err}");
        let err = "kafka:topic".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("unknown sink kind \"kafka\""), "{err}");
        let err = "stdout".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("expected one of print"), "{err}");
    }
}
