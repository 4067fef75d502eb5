//! Checkpoint storage on object stores (feature `object-store`): S3 and
//! S3-compatible servers, Google Cloud Storage, Azure Blob Storage and local
//! directories, through the `object_store` crate.
//!
//! The layout is the filesystem storage's, as object keys under
//! `<url>/<job-id>/`: `chk-<n>/_metadata`, `chk-<n>/<stream>`, `shared/`,
//! `taskowned/`, and `_lock`. Object stores have no rename, no hard links and
//! no directory fsync, so the commit is different (see
//! [`ObjectCheckpointStorage`]): every stream is uploaded whole (one PUT, or
//! a multipart upload whose parts go up in parallel) before its handle
//! exists, and `_metadata` is written last with a conditional create
//! (`PutMode::Create`, `If-None-Match: *` on S3): it appears whole or not at
//! all, it is never overwritten, and a second writer of the same checkpoint
//! id is refused.
//!
//! [`CheckpointStorage`](state_core::CheckpointStorage) is synchronous and
//! called from plain threads; the storage owns a small tokio runtime and
//! blocks on it, so callers need no runtime (and may be inside one).

mod lock;
mod orphans;
mod output;
mod retry;
mod shared;
mod storage;
mod url;

use std::time::Duration;

pub use lock::ObjectJobLock;
pub use output::ObjectOutput;
pub use storage::ObjectCheckpointStorage;
pub use url::{ObjectScheme, ObjectUrl, is_object_url};

use state_core::{JobId, Result, StateError};

/// The default multipart part size, and the size above which a stream is
/// uploaded in parts: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// The smallest part size S3 accepts (every part but the last): 5 MiB.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Streams smaller than this are kept inside the checkpoint's `_metadata`
/// instead of becoming objects: 20 KiB, Flink's default
/// `state.storage.fs.memory-threshold`.
pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;
/// The largest inline threshold accepted: 1 MiB, Flink's bound too (every
/// inline stream is read and written with the whole `_metadata`).
pub const MAX_INLINE_THRESHOLD: usize = 1024 * 1024;

/// How failed requests are retried.
///
/// Two layers: the object_store client retries each HTTP request
/// (`request_retries` times, exponential backoff with jitter from
/// `initial_backoff` to `max_backoff`) on 5xx, throttling, timeouts and
/// dropped connections; around that, each whole operation (a PUT, a GET, a
/// listing, a batch of deletes) that still failed with a transient error is
/// tried again, `attempts` times in all, with the same backoff and a jitter
/// drawn from a seeded SplitMix64 (no wall clock, no ambient RNG). Permanent
/// errors (not found, already exists, permission denied, bad request) are
/// never retried.
#[derive(Debug, Clone)]
pub struct RetryOptions {
    /// Tries of a whole operation (at least 1; default 4).
    pub attempts: u32,
    /// Retries of one HTTP request inside the client (default 5).
    pub request_retries: usize,
    /// The first backoff (default 100 ms).
    pub initial_backoff: Duration,
    /// The largest backoff (default 5 s).
    pub max_backoff: Duration,
    /// The timeout of one HTTP request (default 30 s).
    pub request_timeout: Duration,
    /// The seed of the backoff jitter.
    pub jitter_seed: u64,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            attempts: 4,
            request_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            jitter_seed: 0x5eed_cafe,
        }
    }
}

/// Options of [`ObjectCheckpointStorage::open`].
#[derive(Debug, Clone)]
pub struct ObjectStorageOptions {
    /// The checkpoint location shared by jobs (Flink's
    /// `state.checkpoints.dir`); the job's is `<url>/<job_id>`.
    pub url: ObjectUrl,
    /// The job whose checkpoints are stored.
    pub job_id: JobId,
    /// Streams larger than this go up as multipart uploads of parts this
    /// size, and restores read objects larger than this in ranges of it, in
    /// parallel (at least [`MIN_PART_SIZE`] except for `file://`; default
    /// [`DEFAULT_PART_SIZE`]).
    pub part_size: usize,
    /// Parts of one stream uploaded at once (default 4).
    pub upload_concurrency: usize,
    /// Ranges of one object downloaded at once (default 4).
    pub download_concurrency: usize,
    /// Worker threads of the runtime the storage owns (default 2).
    pub runtime_threads: usize,
    /// Streams smaller than this many bytes are not uploaded: their handles
    /// carry the bytes inside `_metadata` (Flink's
    /// `state.storage.fs.memory-threshold`; default
    /// [`DEFAULT_INLINE_THRESHOLD`], at most [`MAX_INLINE_THRESHOLD`], 0
    /// uploads every stream). On an object store every object costs a
    /// request, and a small incremental checkpoint is mostly small streams
    /// (an operator's meta stream, RocksDB's CURRENT, OPTIONS and MANIFEST).
    pub inline_threshold: usize,
    /// How failed requests are retried.
    pub retry: RetryOptions,
}

impl ObjectStorageOptions {
    /// Options with the defaults for checkpoints of `job_id` under `url`.
    pub fn new(url: ObjectUrl, job_id: JobId) -> Self {
        ObjectStorageOptions {
            url,
            job_id,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: 4,
            download_concurrency: 4,
            runtime_threads: 2,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            retry: RetryOptions::default(),
        }
    }

    /// Sets the multipart part size.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// Sets the size up to which streams are kept inside `_metadata`.
    pub fn with_inline_threshold(mut self, bytes: usize) -> Self {
        self.inline_threshold = bytes;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryOptions) -> Self {
        self.retry = retry;
        self
    }

    fn validate(&self) -> Result<()> {
        let min = match self.url.scheme() {
            ObjectScheme::File => 1,
            _ => MIN_PART_SIZE,
        };
        if self.part_size < min || self.part_size > 1024 * 1024 * 1024 {
            return Err(StateError::invalid(format!(
                "part_size {} of {} must be between {min} and 1 GiB",
                self.part_size, self.url
            )));
        }
        for (name, value) in [
            ("upload_concurrency", self.upload_concurrency),
            ("download_concurrency", self.download_concurrency),
            ("runtime_threads", self.runtime_threads),
        ] {
            if value == 0 || value > 256 {
                return Err(StateError::invalid(format!(
                    "{name} {value} must be between 1 and 256"
                )));
            }
        }
        if self.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(StateError::invalid(format!(
                "inline_threshold {} of {} must be at most {MAX_INLINE_THRESHOLD} bytes (1 MiB)",
                self.inline_threshold, self.url
            )));
        }
        if self.retry.attempts == 0 {
            return Err(StateError::invalid("retry attempts must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
