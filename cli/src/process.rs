//! The edges every cairn binary shares (the `cairn` command and the
//! `cairn-bench` harness): logs on stderr, errors as one line, and the exit
//! status for bad input. For a binary's `main` only.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// The exit status for bad input or usage (clap uses it for usage errors too).
pub const EXIT_BAD_INPUT: u8 = 2;

/// The log filter without `RUST_LOG`: warnings, except the per-file
/// warnings of checkpoint verification, which `verify` prints itself.
pub const DEFAULT_LOG_FILTER: &str = "warn,state_core::checkpoint_store::verify=error";

/// Installs the process's log subscriber: stderr, with `default_filter`
/// unless `RUST_LOG` is set. Call once, from `main`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The exit status of a command that wrote to `out`: flushes `out`; an
/// error (the command's, or the flush's) goes to `err` as one line,
/// `error: …`, and gives [`EXIT_BAD_INPUT`].
pub fn finish(
    result: anyhow::Result<ExitCode>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(err, "error: {}", one_line(&error));
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// An error and its sources on one line, whatever the sources say.
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_exit_2() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let failed = Err(anyhow::anyhow!("line one\nline two").context("--dir /x"));
        assert_eq!(
            finish(failed, &mut out, &mut err),
            ExitCode::from(EXIT_BAD_INPUT)
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error: --dir /x: line one line two\n"
        );
        let mut err = Vec::new();
        assert_eq!(
            finish(Ok(ExitCode::SUCCESS), &mut out, &mut err),
            ExitCode::SUCCESS
        );
        assert!(err.is_empty());
    }
}
