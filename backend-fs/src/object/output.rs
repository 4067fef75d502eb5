//! [`ObjectOutput`]: one checkpoint stream uploaded to an object store.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload, PutResult};
use state_core::{CheckpointOutput, Result, StateError, StreamHandle, StreamLocation};
use tokio::task::JoinHandle;

use super::retry::to_state;
use super::shared::Shared;

type PartTask = JoinHandle<std::result::Result<(), object_store::Error>>;

/// A stream being written to an object store.
///
/// Bytes are buffered up to the part size. A stream smaller than the
/// storage's inline threshold is not uploaded: its handle carries the bytes
/// ([`StreamLocation::Inline`], written inside `_metadata`). A stream that
/// stays below the part size is uploaded with one PUT when closed (retried
/// whole on transient errors). A larger one becomes a multipart upload
/// whose parts go up on the storage's runtime while the writer goes on, at
/// most `upload_concurrency` at once (the writer waits for the oldest
/// beyond that), and is completed on close; then the assembled object's
/// size is checked. The CRC-32 of every byte is computed as it is written
/// and checked on every read. Dropped without
/// [`CheckpointOutput::close`], a multipart upload is aborted and nothing
/// becomes visible.
#[derive(Debug)]
pub struct ObjectOutput {
    shared: Arc<Shared>,
    key: ObjectPath,
    relative: String,
    buf: Vec<u8>,
    hasher: crc32fast::Hasher,
    written: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    parts: VecDeque<PartTask>,
}

impl ObjectOutput {
    pub(crate) fn new(shared: Arc<Shared>, key: ObjectPath, relative: String) -> Self {
        ObjectOutput {
            shared,
            key,
            relative,
            buf: Vec::new(),
            hasher: crc32fast::Hasher::new(),
            written: 0,
            upload: None,
            parts: VecDeque::new(),
        }
    }

    fn url(&self) -> String {
        self.shared.url_of(&self.relative)
    }

    fn fail(&self, e: object_store::Error) -> io::Error {
        io::Error::other(to_state(&self.url(), e))
    }

    /// Waits for the oldest part in flight.
    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(task) = self.parts.pop_front() {
            match futures::executor::block_on(task) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail(e)),
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "{}: upload task failed: {e}",
                        self.url()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Sends the buffer as the next part, starting the multipart upload first.
    fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let s = self.shared.clone();
            let key = self.key.clone();
            let what = self.url();
            let upload = self
                .shared
                .block_on(async move { s.retrier.run(&what, || s.store.put_multipart(&key)).await })
                .map_err(io::Error::other)?
                .map_err(|e| self.fail(e))?;
            self.upload = Some(upload);
        }
        while self.parts.len() >= self.shared.upload_concurrency {
            self.wait_oldest()?;
        }
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        if let Some(upload) = self.upload.as_mut() {
            let part = upload.put_part(PutPayload::from_bytes(bytes));
            self.parts.push_back(self.shared.handle.spawn(part));
        }
        self.buf.reserve(self.shared.part_size);
        Ok(())
    }

    fn finish(&mut self) -> Result<StreamHandle> {
        let url = self.url();
        let crc32 = self.hasher.clone().finalize();
        if self.upload.is_none() && self.buf.len() < self.shared.inline_threshold {
            // Small enough to travel inside `_metadata`: no request at all.
            tracing::trace!(stream = %url, bytes = self.written, "checkpoint stream kept inline");
            return Ok(StreamHandle {
                location: StreamLocation::Inline(Bytes::from(std::mem::take(&mut self.buf))),
                size: self.written,
                crc32,
            });
        }
        let as_state = |e: io::Error| StateError::io(url.clone(), e);
        match self.upload.take() {
            None => {
                // One PUT. Its success means the server stored the whole
                // body its Content-Length announced (and, with the S3
                // option `checksum_algorithm`, that the body's checksum
                // matched), so no HEAD follows it.
                let s = self.shared.clone();
                let key = self.key.clone();
                let bytes = Bytes::from(std::mem::take(&mut self.buf));
                let what = url.clone();
                let result: PutResult = self
                    .shared
                    .block_on(async move {
                        s.retrier
                            .run(&what, || {
                                s.store.put(&key, PutPayload::from_bytes(bytes.clone()))
                            })
                            .await
                    })?
                    .map_err(|e| to_state(&url, e))?;
                tracing::trace!(object = %url, bytes = self.written, e_tag = ?result.e_tag, "uploaded checkpoint stream");
            }
            Some(upload) => {
                self.upload = Some(upload);
                if !self.buf.is_empty() {
                    self.send_part().map_err(as_state)?;
                }
                while !self.parts.is_empty() {
                    self.wait_oldest().map_err(as_state)?;
                }
                let Some(mut upload) = self.upload.take() else {
                    return Err(StateError::io(
                        url,
                        io::Error::other("multipart upload lost"),
                    ));
                };
                self.shared
                    .block_on(async move { upload.complete().await })?
                    .map_err(|e| to_state(&url, e))?;
                self.check_assembled_size(&url)?;
            }
        }
        Ok(StreamHandle {
            location: StreamLocation::File(self.relative.clone()),
            size: self.written,
            crc32,
        })
    }

    /// Checks that a completed multipart upload holds every byte written:
    /// the server assembles the object from the parts the completion lists,
    /// so a part lost on the way would shorten it without any error.
    fn check_assembled_size(&self, url: &str) -> Result<()> {
        let s = self.shared.clone();
        let key = self.key.clone();
        let what = url.to_owned();
        let meta = self
            .shared
            .block_on(async move { s.retrier.run(&what, || s.store.head(&key)).await })?
            .map_err(|e| to_state(url, e))?;
        if meta.size != self.written {
            return Err(StateError::corrupted(
                self.relative.clone(),
                format!(
                    "uploaded {} bytes but {url} holds {}",
                    self.written, meta.size
                ),
            ));
        }
        tracing::trace!(object = %url, bytes = self.written, parts = "multipart", "uploaded checkpoint stream");
        Ok(())
    }
}

impl Write for ObjectOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.shared.part_size.saturating_sub(self.buf.len());
        let take = data.len().min(room.max(1));
        self.buf.extend_from_slice(&data[..take]);
        self.hasher.update(&data[..take]);
        self.written += take as u64;
        if self.buf.len() >= self.shared.part_size {
            self.send_part()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for ObjectOutput {
    fn position(&self) -> u64 {
        self.written
    }

    fn close(mut self: Box<Self>) -> Result<StreamHandle> {
        self.finish()
    }
}

impl Drop for ObjectOutput {
    fn drop(&mut self) {
        for task in self.parts.drain(..) {
            task.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            // Not closed: abort the upload so no parts are left billed and invisible.
            self.shared.handle.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}
