//! Retrying whole object-store operations on transient errors, with
//! exponential backoff and seeded jitter, and mapping object-store errors
//! onto [`StateError`].

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use state_core::StateError;

use super::RetryOptions;

/// Retries operations as [`RetryOptions`] say.
#[derive(Debug)]
pub(crate) struct Retrier {
    options: RetryOptions,
    /// SplitMix64 state for the jitter.
    state: AtomicU64,
}

/// Whether an object-store error may go away when the operation is tried
/// again: network errors, timeouts, 5xx and throttling surface as `Generic`
/// once the client's own retries are used up. Everything with a meaning
/// (missing, exists, precondition, permissions, bad path or option) is final.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

impl Retrier {
    pub(crate) fn new(options: RetryOptions) -> Self {
        let state = AtomicU64::new(options.jitter_seed);
        Retrier { options, state }
    }

    /// Tries of a whole operation.
    pub(crate) fn attempts(&self) -> u32 {
        self.options.attempts
    }

    fn next_random(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The wait before try `attempt + 1`: half the exponential backoff plus
    /// a random part of the other half ("equal jitter").
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .options
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.options.max_backoff);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.next_random() % nanos)
    }

    /// Runs `op` until it succeeds, fails permanently, or used up its tries.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &str,
        mut op: F,
    ) -> Result<T, object_store::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if is_transient(&e) && attempt + 1 < self.options.attempts => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(object = what, attempt = attempt + 1, error = %e, wait_ms = wait.as_millis() as u64, "object store operation failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An object-store error as a [`StateError::Io`] naming `what` (an object
/// URL), its kind kept where it has one.
pub(crate) fn to_state(what: &str, e: object_store::Error) -> StateError {
    let kind =
        match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
            object_store::Error::InvalidPath { .. }
            | object_store::Error::UnknownConfigurationKey { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
    StateError::io(what, io::Error::new(kind, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jitters_within_the_upper_half() {
        let r = Retrier::new(RetryOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
            ..RetryOptions::default()
        });
        for attempt in 0..8u32 {
            let base = Duration::from_millis(100 * (1u64 << attempt.min(3)));
            let wait = r.backoff(attempt);
            assert!(wait >= base / 2 && wait < base, "{attempt}: {wait:?}");
        }
        let waits: Vec<Duration> = (0..8).map(|_| r.backoff(3)).collect();
        assert!(
            waits.windows(2).any(|w| w[0] != w[1]),
            "no jitter: {waits:?}"
        );
    }

    #[test]
    fn only_generic_errors_are_transient() {
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let missing = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(is_transient(&generic));
        assert!(!is_transient(&missing));
        let e = to_state("s3://b/x", missing);
        assert!(e.to_string().contains("s3://b/x"), "{e}");
    }
}
