//! [`ObjectCheckpointStorage`]: checkpoint storage in an object store.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use state_core::backend_support::check_stream_name;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointOutput, CheckpointStorage, METADATA_FILE_NAME,
    Result, StateError, StateScope, StreamHandle, StreamLocation,
};

use super::output::ObjectOutput;
use super::retry::{Retrier, to_state};
use super::shared::Shared;
use super::{ObjectStorageOptions, ObjectUrl};
use crate::storage::{FsCheckpointStorage, SHARED_DIR, TASK_OWNED_DIR};

/// The runtime the storage owns; shut down without waiting when the last
/// clone of the storage goes (so dropping it inside another runtime is safe).
#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Checkpoint storage in an object store (S3, GCS, Azure, `file://`), in the
/// filesystem storage's layout under `<url>/<job-id>/`:
///
/// ```text
/// chk-<n>/_metadata       checkpoint n's metadata; n exists once it is there
/// chk-<n>/<stream>        exclusive streams of checkpoint n
/// shared/<stream>         streams shared between (incremental) checkpoints
/// taskowned/<stream>      streams owned by tasks
/// _lock                   the running job's owner (see ObjectJobLock)
/// ```
///
/// **Commit without rename.** A stream is one object, visible only once its
/// upload completed (a single PUT, or a multipart upload completed after
/// every part); [`CheckpointOutput::close`] returns its handle after that,
/// with the CRC-32 of the bytes written, and checks the stored size.
/// [`CheckpointStorage::write_metadata`] writes `_metadata` last, with a
/// conditional create: it is never overwritten, and a second writer of the
/// same checkpoint id gets an error ([`std::io::ErrorKind::AlreadyExists`])
/// naming the object. Reads check every stream's size and CRC-32.
///
/// Durability assumption: a completed PUT is durable and read-after-write
/// consistent (S3 since 2020, GCS, Azure).
///
/// Thread-safety: all methods take `&self`; clones share one client and one
/// runtime.
#[derive(Debug, Clone)]
pub struct ObjectCheckpointStorage {
    shared: Arc<Shared>,
    // Declared after `shared` so the runtime outlives nothing that uses it.
    _runtime: Arc<OwnedRuntime>,
}

impl ObjectCheckpointStorage {
    /// Opens (creating nothing but a probe object) the job location
    /// `<url>/<job-id>` for writing checkpoints: the bucket must be
    /// reachable and writable, which a small object written and deleted at
    /// `<job>/_probe` proves; errors name the URL.
    pub fn open(options: ObjectStorageOptions) -> Result<Self> {
        let storage = Self::connect(options)?;
        let probe = storage.shared.key("_probe")?;
        let url = storage.shared.url_of("_probe");
        let store = storage.shared.store.clone();
        storage
            .shared
            .block_on(async move {
                store.put(&probe, PutPayload::from_static(b"cairn")).await?;
                store.delete(&probe).await
            })?
            .map_err(|e| to_state(&url, e))
            .map_err(|e| {
                StateError::invalid(format!(
                    "checkpoints cannot be written to {}: {e}",
                    storage.shared.job_url
                ))
            })?;
        tracing::debug!(url = %storage.shared.job_url, "opened object checkpoint storage");
        Ok(storage)
    }

    /// The storage of the job location `url` (`<base>/<job-id>`), making no
    /// request: nothing is checked until it is used.
    pub fn at_job_url(url: &ObjectUrl) -> Result<Self> {
        let Some((base, job)) = url.split_last() else {
            return Err(StateError::invalid(format!(
                "{url} is not a cairn job checkpoint location: it names no job below the bucket"
            )));
        };
        Self::connect(ObjectStorageOptions::new(
            base,
            state_core::JobId::new(job)?,
        ))
    }

    /// Opens the existing job location `url` (`<base>/<job-id>`) without
    /// writing anything. Fails naming the URL when nothing of a job is there
    /// (no `chk-<n>/`, `shared/` or `taskowned/` objects).
    pub fn for_job_url(url: &ObjectUrl) -> Result<Self> {
        let storage = Self::at_job_url(url)?;
        let names = storage.list_dir("")?;
        let looks_like_job = names.iter().any(|(name, _)| {
            name == SHARED_DIR
                || name == TASK_OWNED_DIR
                || CheckpointId::from_dir_name(name).is_some()
        });
        if !looks_like_job {
            return Err(StateError::invalid(format!(
                "{url} is not a cairn job checkpoint location: no chk-<n>/, {SHARED_DIR}/ or {TASK_OWNED_DIR}/ under it"
            )));
        }
        Ok(storage)
    }

    /// Opens the checkpoint at `url`, `<job>/chk-<n>` or `<job>/chk-<n>/_metadata`,
    /// returning its job's storage and its id. Fails naming the URL when it
    /// names no `chk-<n>` or its `_metadata` does not exist.
    pub fn for_checkpoint_url(url: &ObjectUrl) -> Result<(Self, CheckpointId)> {
        let chk = match url.split_last() {
            Some((parent, METADATA_FILE_NAME)) => parent,
            _ => url.clone(),
        };
        let not_chk = || {
            StateError::invalid(format!(
                "{url} is not a checkpoint: expected <job>/chk-<n> or its {METADATA_FILE_NAME}"
            ))
        };
        let (job_url, name) = chk.split_last().ok_or_else(not_chk)?;
        let id = CheckpointId::from_dir_name(name).ok_or_else(not_chk)?;
        let (base, job) = job_url.split_last().ok_or_else(not_chk)?;
        let storage = Self::connect(ObjectStorageOptions::new(
            base,
            state_core::JobId::new(job)?,
        ))?;
        let exists = storage.object_size(&format!("{}/{METADATA_FILE_NAME}", id.dir_name()))?;
        if exists.is_none() {
            return Err(StateError::invalid(format!(
                "{chk} is not a checkpoint: no {METADATA_FILE_NAME}"
            )));
        }
        Ok((storage, id))
    }

    /// The storage without any request made yet.
    pub(crate) fn connect(options: ObjectStorageOptions) -> Result<Self> {
        options.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.runtime_threads)
            .thread_name("cairn-objstore")
            .enable_all()
            .build()
            .map_err(|e| StateError::io(options.url.to_string(), e))?;
        let store = options.url.build_store(&options.retry, runtime.handle())?;
        let job_url = options.url.join(options.job_id.as_str())?;
        let mut parts: Vec<String> = options.url.prefix().to_vec();
        parts.push(options.job_id.as_str().to_owned());
        // Keys of the local store (`file://`) are absolute paths without the leading `/`.
        let job_prefix = ObjectPath::from_iter(parts.iter().map(String::as_str));
        let shared = Shared {
            store,
            job_url,
            job_prefix,
            part_size: options.part_size,
            inline_threshold: options.inline_threshold,
            upload_concurrency: options.upload_concurrency,
            download_concurrency: options.download_concurrency,
            retrier: Retrier::new(options.retry),
            handle: runtime.handle().clone(),
        };
        Ok(ObjectCheckpointStorage {
            shared: Arc::new(shared),
            _runtime: Arc::new(OwnedRuntime(Some(runtime))),
        })
    }

    /// The job's location, `<url>/<job-id>`.
    pub fn job_url(&self) -> &ObjectUrl {
        &self.shared.job_url
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The entries directly below `relative` (`""`: the job location), as
    /// (name, size): objects with `Some(bytes)`, common prefixes
    /// ("directories") with `None`; sorted by name.
    pub fn list_dir(&self, relative: &str) -> Result<Vec<(String, Option<u64>)>> {
        let prefix = if relative.is_empty() {
            self.shared.job_prefix.clone()
        } else {
            self.shared.key(relative)?
        };
        let s = self.shared.clone();
        let what = self.shared.url_of(relative);
        let listed = prefix.clone();
        let listing = self
            .shared
            .block_on(async move {
                s.retrier
                    .run(&what, || s.store.list_with_delimiter(Some(&prefix)))
                    .await
            })?
            .map_err(|e| to_state(&self.shared.url_of(relative), e))?;
        let mut out = Vec::new();
        for dir in listing.common_prefixes {
            if let Some(name) = dir.filename() {
                out.push((name.to_owned(), None));
            }
        }
        for object in listing.objects {
            // Filer-backed stores (SeaweedFS) list a directory's own marker.
            if object.location == listed {
                continue;
            }
            if let Some(name) = object.location.filename() {
                out.push((name.to_owned(), Some(object.size)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The size of the object at `relative`, `None` when it does not exist.
    pub fn object_size(&self, relative: &str) -> Result<Option<u64>> {
        let key = self.shared.key(relative)?;
        let s = self.shared.clone();
        let what = self.shared.url_of(relative);
        let w = what.clone();
        match self
            .shared
            .block_on(async move { s.retrier.run(&w, || s.store.head(&key)).await })?
        {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(to_state(&what, e)),
        }
    }

    /// Deletes the objects at `relatives` in batches (one request per batch
    /// of up to 1,000 where the store supports it); missing ones count as
    /// deleted. Returns the first error after trying every one.
    pub fn delete_objects(&self, relatives: &[String]) -> Result<()> {
        let mut keys = Vec::with_capacity(relatives.len());
        for relative in relatives {
            keys.push(self.shared.key(relative)?);
        }
        let s = self.shared.clone();
        let what = self.shared.job_url.to_string();
        let failures: Vec<object_store::Error> = self.shared.block_on(async move {
            let mut failures = Vec::new();
            let mut pending = keys;
            for attempt in 0.. {
                let batch = futures::stream::iter(pending.clone().into_iter().map(Ok)).boxed();
                let results: Vec<_> = s.store.delete_stream(batch).collect().await;
                let mut retry = Vec::new();
                failures.clear();
                for (key, result) in pending.iter().zip(results) {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) if super::retry::is_transient(&e) => {
                            retry.push(key.clone());
                            failures.push(e);
                        }
                        Err(e) => failures.push(e),
                    }
                }
                if retry.is_empty() || attempt + 1 >= s.retrier_attempts() {
                    break;
                }
                tokio::time::sleep(s.retrier.backoff(attempt)).await;
                pending = retry;
            }
            failures
        })?;
        match failures.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(to_state(&what, e)),
        }
    }

    /// Every object key below `relative` (recursively; `""`: the whole job
    /// location), relative to the job location, with its size; sorted.
    pub fn list_below(&self, relative: &str) -> Result<Vec<(String, u64)>> {
        let prefix = if relative.is_empty() {
            self.shared.job_prefix.clone()
        } else {
            self.shared.key(relative)?
        };
        let s = self.shared.clone();
        let what = self.shared.url_of(relative);
        let prefix_listed = prefix.clone();
        let metas = self
            .shared
            .block_on(async move {
                s.retrier
                    .run(&what, || {
                        s.store.list(Some(&prefix)).try_collect::<Vec<_>>()
                    })
                    .await
            })?
            .map_err(|e| to_state(&self.shared.url_of(relative), e))?;
        let job = self.shared.job_prefix.clone();
        let mut out = Vec::new();
        for meta in metas {
            if meta.location == prefix_listed {
                continue;
            }
            if let Some(parts) = meta.location.prefix_match(&job) {
                let rel: Vec<String> = parts.map(|p| p.as_ref().to_owned()).collect();
                out.push((rel.join("/"), meta.size));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn fetch(
        s: Arc<Shared>,
        key: ObjectPath,
        what: String,
        expected: u64,
    ) -> std::result::Result<Bytes, object_store::Error> {
        if expected <= s.part_size as u64 {
            return s
                .retrier
                .run(&what, || async { s.store.get(&key).await?.bytes().await })
                .await;
        }
        let size = s.retrier.run(&what, || s.store.head(&key)).await?.size;
        if size != expected {
            // The caller's size check names the difference.
            return s
                .retrier
                .run(&what, || async { s.store.get(&key).await?.bytes().await })
                .await;
        }
        let part = s.part_size as u64;
        let ranges: Vec<std::ops::Range<u64>> = (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect();
        let chunks: Vec<Bytes> = futures::stream::iter(ranges)
            .map(|range| {
                let (s, key, what) = (s.clone(), key.clone(), what.clone());
                async move {
                    s.retrier
                        .run(&what, || s.store.get_range(&key, range.clone()))
                        .await
                }
            })
            .buffered(s.download_concurrency)
            .try_collect()
            .await?;
        let mut out = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
        for chunk in chunks {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

impl CheckpointStorage for ObjectCheckpointStorage {
    fn describe(&self) -> String {
        self.shared.job_url.to_string()
    }

    fn initialize_checkpoint(&self, _id: CheckpointId) -> Result<()> {
        // Object stores have no directories: a checkpoint's prefix exists
        // once an object is under it.
        Ok(())
    }

    fn create_output(
        &self,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        check_stream_name(name)?;
        let relative = FsCheckpointStorage::relative_path(id, scope, name);
        let key = self.shared.key(&relative)?;
        Ok(Box::new(ObjectOutput::new(
            self.shared.clone(),
            key,
            relative,
        )))
    }

    fn read(&self, handle: &StreamHandle) -> Result<Bytes> {
        let relative = match &handle.location {
            StreamLocation::Inline(bytes) => return Ok(bytes.clone()),
            StreamLocation::File(relative) => relative.clone(),
        };
        let key = self.shared.key(&relative)?;
        let what = self.shared.url_of(&relative);
        let fut = Self::fetch(self.shared.clone(), key, what.clone(), handle.size);
        let bytes = match self.shared.block_on(fut)? {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StateError::corrupted(
                    relative,
                    format!("object is missing ({what} does not exist)"),
                ));
            }
            Err(e) => return Err(to_state(&what, e)),
        };
        handle.check(&bytes)?;
        Ok(bytes)
    }

    fn discard_stream(&self, handle: &StreamHandle) -> Result<()> {
        let Some(relative) = handle.file_path() else {
            return Ok(());
        };
        self.delete_objects(&[relative.to_owned()])
    }

    /// Deletes the streams' objects in batches (see
    /// [`ObjectCheckpointStorage::delete_objects`]).
    fn discard_streams(&self, handles: &[&StreamHandle]) -> Result<()> {
        let relatives: Vec<String> = handles
            .iter()
            .filter_map(|h| h.file_path())
            .map(str::to_owned)
            .collect();
        if relatives.is_empty() {
            return Ok(());
        }
        self.delete_objects(&relatives)
    }

    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        let id = metadata.checkpoint_id;
        let bytes = Bytes::from(metadata.encode()?);
        let relative = format!("{}/{METADATA_FILE_NAME}", id.dir_name());
        let key = self.shared.key(&relative)?;
        let what = self.shared.url_of(&relative);
        let s = self.shared.clone();
        let (w, b) = (what.clone(), bytes.clone());
        let result = self.shared.block_on(async move {
            let put = s
                .retrier
                .run(&w, || {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    };
                    s.store
                        .put_opts(&key, PutPayload::from_bytes(b.clone()), opts)
                })
                .await;
            match put {
                Ok(_) => Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    // A retried PUT whose first try landed reads back the same bytes.
                    let existing = s.store.get(&key).await?.bytes().await?;
                    Ok(existing == b)
                }
                Err(e) => Err(e),
            }
        })?;
        match result {
            Ok(true) => {}
            Ok(false) => {
                return Err(StateError::io(
                    what.clone(),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!(
                            "{what} already exists with other contents: another writer committed checkpoint {id} of this job; refusing to overwrite it"
                        ),
                    ),
                ));
            }
            Err(e) => return Err(to_state(&what, e)),
        }
        tracing::debug!(checkpoint_id = id.get(), bytes = bytes.len(), url = %what, "wrote checkpoint metadata");
        Ok(())
    }

    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        let relative = format!("{}/{METADATA_FILE_NAME}", id.dir_name());
        let key = self.shared.key(&relative)?;
        let what = self.shared.url_of(&relative);
        let s = self.shared.clone();
        let w = what.clone();
        let bytes = match self.shared.block_on(async move {
            s.retrier
                .run(&w, || async { s.store.get(&key).await?.bytes().await })
                .await
        })? {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StateError::NotFound {
                    checkpoint: id,
                    detail: format!("{what} does not exist"),
                });
            }
            Err(e) => return Err(to_state(&what, e)),
        };
        let metadata = CheckpointMetadata::decode(&bytes, &relative)?;
        if metadata.checkpoint_id != id {
            return Err(StateError::corrupted(
                relative,
                format!("holds checkpoint {} instead", metadata.checkpoint_id),
            ));
        }
        Ok(metadata)
    }

    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let candidates: Vec<CheckpointId> = self
            .list_dir("")?
            .into_iter()
            .filter(|(_, size)| size.is_none())
            .filter_map(|(name, _)| CheckpointId::from_dir_name(&name))
            .collect();
        let s = self.shared.clone();
        let mut keys = Vec::new();
        for id in &candidates {
            keys.push((
                *id,
                self.shared
                    .key(&format!("{}/{METADATA_FILE_NAME}", id.dir_name()))?,
            ));
        }
        let what = self.shared.job_url.to_string();
        let found = self.shared.block_on(async move {
            futures::stream::iter(keys)
                .map(|(id, key)| {
                    let s = s.clone();
                    async move {
                        match s.retrier.run("_metadata", || s.store.head(&key)).await {
                            Ok(_) => Ok(Some(id)),
                            Err(object_store::Error::NotFound { .. }) => Ok(None),
                            Err(e) => Err(e),
                        }
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<Option<CheckpointId>>>()
                .await
        })?;
        let mut ids: Vec<CheckpointId> = found
            .map_err(|e| to_state(&what, e))?
            .into_iter()
            .flatten()
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        // The metadata goes first: once it is gone the checkpoint is no
        // longer visible, so a crash while the rest is removed leaves only
        // orphans, never a checkpoint with missing objects.
        self.delete_objects(&[format!("{}/{METADATA_FILE_NAME}", id.dir_name())])?;
        let rest: Vec<String> = self
            .list_below(&id.dir_name())?
            .into_iter()
            .map(|(relative, _)| relative)
            .collect();
        self.delete_objects(&rest)?;
        tracing::debug!(
            checkpoint_id = id.get(),
            objects = rest.len(),
            "discarded checkpoint objects"
        );
        Ok(())
    }
}
