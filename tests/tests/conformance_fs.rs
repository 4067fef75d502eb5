//! The state-testkit conformance suite and model test on heap state checkpointed
//! to filesystem storage in a temporary directory (Flink's FsStateBackend).

// `setup` runs only inside the suite's tests: a failure there is a test failure.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use state_core::{JobId, SnapshotMode};
use state_testkit::Setup;

/// Heap state over filesystem storage in a fresh temporary directory,
/// snapshotting in `mode`.
fn setup_in(mode: SnapshotMode) -> Setup<HeapBackendFactory> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let job = JobId::new("conformance").expect("valid job id");
    let storage = FsCheckpointStorage::open(dir.path(), job).expect("filesystem storage opens");
    Setup::new(
        HeapBackendFactory::new(HeapBackendOptions::default()),
        Arc::new(storage),
    )
    .with_mode(mode)
    .with_guard(dir)
}

fn setup() -> Setup<HeapBackendFactory> {
    setup_in(SnapshotMode::Full)
}

state_testkit::conformance_tests!(setup);

/// The same suite with incremental checkpoints: chains of a base and deltas
/// in the storage's `shared/` location.
mod incremental {
    use super::*;

    fn setup() -> Setup<HeapBackendFactory> {
        setup_in(SnapshotMode::Incremental)
    }

    state_testkit::conformance_tests!(setup);
}
