//! How rows reach the server: [`SqlValue`] as a bound parameter
//! ([`ToSql`], each variant checking the column's type) and rows as `COPY`
//! text.

use std::io::Write as _;

use bytes::BytesMut;
use postgres::Client;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::Target;
use crate::error::{ExecutorError, Result};
use crate::sink::sql::SqlValue;

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Bool(v) => v.to_sql_checked(ty, out),
            SqlValue::Int(v) => v.to_sql_checked(ty, out),
            SqlValue::Float(v) => v.to_sql_checked(ty, out),
            SqlValue::Text(v) => v.to_sql_checked(ty, out),
            SqlValue::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant checks the column's type itself (`to_sql_checked`).
        true
    }

    to_sql_checked!();
}

/// Sends `rows` with one `COPY … FROM STDIN` (text format).
pub(super) fn copy_rows(
    client: &mut Client,
    target: &Target,
    rows: &[Vec<SqlValue>],
) -> Result<()> {
    let table = &target.options.table;
    let sql = format!(
        "COPY {} ({}) FROM STDIN",
        table.quoted_name(),
        table.quoted_columns()
    );
    let mut text = String::with_capacity(rows.len() * 24);
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                text.push('\t');
            }
            copy_text(value, &mut text);
        }
        text.push('\n');
    }
    let mut copy = client
        .copy_in(&sql)
        .map_err(|e| target.error("COPY failed", &e))?;
    copy.write_all(text.as_bytes())
        .map_err(|e| ExecutorError::SinkTarget {
            target: target.describe.clone(),
            reason: format!("COPY failed: {e}"),
        })?;
    copy.finish().map_err(|e| target.error("COPY failed", &e))?;
    Ok(())
}

/// One value in `COPY`'s text format: `\N` for NULL, backslash, tab,
/// newline and carriage return escaped.
fn copy_text(value: &SqlValue, out: &mut String) {
    use std::fmt::Write as _;
    match value {
        SqlValue::Null => out.push_str("\\N"),
        SqlValue::Bool(v) => out.push(if *v { 't' } else { 'f' }),
        SqlValue::Int(v) => {
            let _ = write!(out, "{v}");
        }
        SqlValue::Float(v) if v.is_nan() => out.push_str("NaN"),
        SqlValue::Float(v) if v.is_infinite() => {
            out.push_str(if *v > 0.0 { "Infinity" } else { "-Infinity" });
        }
        SqlValue::Float(v) => {
            let _ = write!(out, "{v}");
        }
        SqlValue::Text(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
        SqlValue::Bytes(v) => {
            // bytea's hex input `\x…`, its backslash escaped for COPY.
            out.push_str("\\\\x");
            for b in v {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_text_format_needs() {
        let mut out = String::new();
        for v in [
            SqlValue::Null,
            SqlValue::Text("a\tb\\c\nd".into()),
            SqlValue::Bytes(vec![0, 255]),
            SqlValue::Float(f64::NEG_INFINITY),
            SqlValue::Bool(true),
            SqlValue::Int(-7),
        ] {
            copy_text(&v, &mut out);
            out.push('|');
        }
        assert_eq!(out, "\\N|a\\tb\\\\c\\nd|\\\\x00ff|-Infinity|t|-7|");
    }
}
