//! `--sink`: where a bundled job's output goes, and with what guarantee.
//!
//! ```text
//! --sink print          one line per record on stdout (default; at-least-once)
//! --sink file:<dir>     part files committed at each checkpoint (exactly-once);
//!                       `--output <dir>` is the same
//! --sink wal:<file>     held in the checkpoint, appended to <file> once it
//!                       completed (write-ahead; see its one caveat)
//! ```

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
}

/// What `--sink` accepts, for error messages.
const FORMS: &str = "print, file:<dir>, wal:<file>";

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
        match kind {
            "file" => Ok(SinkSpec::File(path("dir")?)),
            "wal" => Ok(SinkSpec::WriteAhead(path("file")?)),
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
        let err = "file:".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("file: needs dir"), "{err}");
        let err = "kafka:topic".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("unknown sink kind \"kafka\""), "{err}");
        let err = "stdout".parse::<SinkSpec>().unwrap_err();
        assert!(err.contains("expected one of print"), "{err}");
    }
}
