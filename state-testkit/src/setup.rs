//! [`Setup`]: what the conformance suite and the model test run a backend with.

use std::sync::Arc;

use state_core::{BackendFactory, CheckpointStorage, SnapshotMode};

/// What a backend under test needs: a factory, a checkpoint storage, and
/// whatever must live as long as they do (temporary directories).
pub struct Setup<F: BackendFactory> {
    /// Creates the backends under test.
    pub factory: F,
    /// Where their snapshots go.
    pub storage: Arc<dyn CheckpointStorage>,
    /// Kept alive for the test's duration (for example a `tempfile::TempDir`).
    pub guard: Box<dyn std::any::Any>,
    /// The mode every snapshot of the suite and the model test asks for
    /// (default [`SnapshotMode::Full`]).
    pub mode: SnapshotMode,
    /// The factory's backends restore handles they wrote themselves from a
    /// local copy (local recovery), so damage done to the storage copy of
    /// such a handle goes unnoticed by design (default false).
    pub local_copies: bool,
}

impl<F: BackendFactory> Setup<F> {
    /// A setup with nothing to keep alive.
    pub fn new(factory: F, storage: Arc<dyn CheckpointStorage>) -> Self {
        Setup {
            factory,
            storage,
            guard: Box::new(()),
            mode: SnapshotMode::Full,
            local_copies: false,
        }
    }

    /// The same setup, declaring that its backends restore from local copies.
    pub fn with_local_copies(mut self) -> Self {
        self.local_copies = true;
        self
    }

    /// The same setup taking snapshots in `mode`.
    pub fn with_mode(mut self, mode: SnapshotMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same setup keeping `guard` alive.
    pub fn with_guard(mut self, guard: impl std::any::Any) -> Self {
        self.guard = Box::new(guard);
        self
    }
}

impl<F: BackendFactory> std::fmt::Debug for Setup<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("factory", &self.factory)
            .field("storage", &self.storage.describe())
            .field("mode", &self.mode)
            .field("local_copies", &self.local_copies)
            .finish_non_exhaustive()
    }
}
