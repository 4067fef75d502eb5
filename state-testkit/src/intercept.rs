//! [`InterceptStorage`]: a checkpoint storage that forwards every call to
//! another one and lets a test step in where streams are opened or read —
//! to hold a snapshot's asynchronous part, slow it down, or change the
//! bytes a restore reads.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointOutput, CheckpointStorage, Result, StateScope,
    StreamHandle,
};

/// What a test does in place of the inner storage's calls; each method
/// defaults to forwarding, so an implementation names only what it changes.
pub trait Intercept: Send + Sync {
    /// Opens a stream; the default is `inner.create_output(id, scope, name)`.
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        inner.create_output(id, scope, name)
    }

    /// Reads a whole stream; the default is `inner.read(handle)`.
    fn read(&self, inner: &dyn CheckpointStorage, handle: &StreamHandle) -> Result<Bytes> {
        inner.read(handle)
    }
}

/// A shared intercept, so a test keeps a handle to change or read it while
/// the storage uses it.
impl<I: Intercept + ?Sized> Intercept for Arc<I> {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        (**self).create_output(inner, id, scope, name)
    }

    fn read(&self, inner: &dyn CheckpointStorage, handle: &StreamHandle) -> Result<Bytes> {
        (**self).read(inner, handle)
    }
}

/// A [`CheckpointStorage`] over `inner` whose stream opens and reads go
/// through an [`Intercept`]; everything else is `inner`'s.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use bytes::Bytes;
/// use state_core::{CheckpointStorage, MemoryCheckpointStorage, Result, StreamHandle};
/// use state_testkit::{Intercept, InterceptStorage};
///
/// /// Counts the streams a restore reads.
/// #[derive(Default)]
/// struct CountReads(AtomicUsize);
///
/// impl Intercept for CountReads {
///     fn read(&self, inner: &dyn CheckpointStorage, handle: &StreamHandle) -> Result<Bytes> {
///         self.0.fetch_add(1, Ordering::SeqCst);
///         inner.read(handle)
///     }
/// }
///
/// let storage = InterceptStorage::new(
///     Arc::new(MemoryCheckpointStorage::default()),
///     CountReads::default(),
/// );
/// assert_eq!(storage.list_checkpoints().unwrap(), vec![]);
/// assert_eq!(storage.intercept().0.load(Ordering::SeqCst), 0);
/// ```
pub struct InterceptStorage<I> {
    inner: Arc<dyn CheckpointStorage>,
    intercept: I,
}

impl<I: Intercept> InterceptStorage<I> {
    /// `inner`, with its stream opens and reads going through `intercept`.
    pub fn new(inner: Arc<dyn CheckpointStorage>, intercept: I) -> Self {
        InterceptStorage { inner, intercept }
    }

    /// The intercept, to read what it recorded.
    pub fn intercept(&self) -> &I {
        &self.intercept
    }
}

impl<I> fmt::Debug for InterceptStorage<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptStorage")
            .field("inner", &self.inner.describe())
            .finish_non_exhaustive()
    }
}

impl<I: Intercept> CheckpointStorage for InterceptStorage<I> {
    fn describe(&self) -> String {
        format!("intercepted {}", self.inner.describe())
    }

    fn initialize_checkpoint(&self, id: CheckpointId) -> Result<()> {
        self.inner.initialize_checkpoint(id)
    }

    fn create_output(
        &self,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        self.intercept
            .create_output(self.inner.as_ref(), id, scope, name)
    }

    fn read(&self, handle: &StreamHandle) -> Result<Bytes> {
        self.intercept.read(self.inner.as_ref(), handle)
    }

    fn discard_stream(&self, handle: &StreamHandle) -> Result<()> {
        self.inner.discard_stream(handle)
    }

    fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        self.inner.write_metadata(metadata)
    }

    fn read_metadata(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        self.inner.read_metadata(id)
    }

    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        self.inner.list_checkpoints()
    }

    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        self.inner.discard_checkpoint(id)
    }
}
