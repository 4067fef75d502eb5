//! [`Shared`]: what every clone of an object storage and each of its
//! outputs share: the client, the job's key prefix, the sizes, the retry
//! policy and the handle of the runtime the storage owns.

use std::future::Future;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use state_core::{Result, StateError};
use std::sync::Arc;

use super::ObjectUrl;
use super::retry::Retrier;
use crate::storage::plain_parts;

/// What every clone of a storage and each of its outputs share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `<url>/<job-id>` for messages.
    pub(crate) job_url: ObjectUrl,
    /// The key prefix of the job.
    pub(crate) job_prefix: ObjectPath,
    pub(crate) part_size: usize,
    /// Streams smaller than this stay inline in their handles.
    pub(crate) inline_threshold: usize,
    pub(crate) upload_concurrency: usize,
    pub(crate) download_concurrency: usize,
    pub(crate) retrier: Retrier,
    pub(crate) handle: tokio::runtime::Handle,
}

impl Shared {
    /// The URL of the object at `relative` (for messages).
    pub(crate) fn url_of(&self, relative: &str) -> String {
        format!("{}/{relative}", self.job_url)
    }

    /// The key of the object at `relative`, a checked relative path.
    pub(crate) fn key(&self, relative: &str) -> Result<ObjectPath> {
        let mut key = self.job_prefix.clone();
        for part in plain_parts(relative)? {
            key = key.join(part);
        }
        Ok(key)
    }

    /// Runs `fut` on the storage's runtime and waits for it from this
    /// thread, which need not (but may) be inside a tokio runtime.
    pub(crate) fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let task = self.handle.spawn(fut);
        futures::executor::block_on(task).map_err(|e| {
            StateError::io(
                self.job_url.to_string(),
                std::io::Error::other(format!("object storage task failed: {e}")),
            )
        })
    }
}

impl Shared {
    pub(crate) fn retrier_attempts(&self) -> u32 {
        self.retrier.attempts()
    }
}
