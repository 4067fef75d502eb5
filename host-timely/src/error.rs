//! The crate's error type.

use state_core::StateError;

/// What can go wrong setting up or running a checkpointed timely job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimelyError {
    /// A state or checkpoint-storage operation failed (the error names the
    /// file or checkpoint).
    #[error(transparent)]
    State(#[from] StateError),
    /// A setting is out of range or the arguments are inconsistent; the
    /// message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Timely could not start (bad communication settings, ports in use).
    #[error("timely: {0}")]
    Timely(String),
    /// A file outside checkpoint storage (a sink's output, a host file)
    /// could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The path or operation.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl TimelyError {
    /// An I/O error about `what` (a path or operation).
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TimelyError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The exit code of a process that stopped itself because a worker hit an
/// error no operator can recover from (timely is fail-stop: the supervisor
/// restarts every process from the newest intact checkpoint).
pub const FAIL_STOP_EXIT_CODE: i32 = 70;

/// Ends the whole process after an unrecoverable error in a worker.
///
/// Timely has no partial failure: one worker that stops makes its peers wait
/// forever, so the process exits at once and the supervisor restarts all
/// processes, which resume from the newest intact checkpoint. The reason
/// goes to the log and to standard error: a program that installed no
/// tracing subscriber would otherwise exit without saying why.
pub(crate) fn fail_stop(what: &str, err: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %err, "{what}: {err}; stopping the process (fail-stop)");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("cairn-timely: {what}: {err}; stopping the process (fail-stop)");
    }
    std::process::exit(FAIL_STOP_EXIT_CODE)
}
