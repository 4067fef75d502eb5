//! The state-testkit conformance suite and model test on the heap backend with
//! in-memory checkpoint storage (Flink's HashMap backend + JobManager storage).

use std::sync::Arc;

use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use state_core::MemoryCheckpointStorage;
use state_testkit::Setup;

fn setup() -> Setup<HeapBackendFactory> {
    Setup::new(
        HeapBackendFactory::new(HeapBackendOptions::default()),
        Arc::new(MemoryCheckpointStorage::default()),
    )
}

state_testkit::conformance_tests!(setup);

/// The same suite with local recovery on: restores of handles the factory's
/// backends wrote take the kept in-memory snapshots instead of the streams.
mod local_recovery {
    use super::*;

    fn setup() -> Setup<HeapBackendFactory> {
        Setup::new(
            HeapBackendFactory::new(HeapBackendOptions::default().with_local_recovery(true)),
            Arc::new(MemoryCheckpointStorage::default()),
        )
        .with_local_copies()
    }

    state_testkit::conformance_tests!(setup);
}

/// The same suite with incremental checkpoints: the model test confirms each
/// snapshot, so later ones write deltas on its chain.
mod incremental {
    use super::*;
    use state_core::SnapshotMode;

    fn setup() -> Setup<HeapBackendFactory> {
        Setup::new(
            HeapBackendFactory::new(HeapBackendOptions::default()),
            Arc::new(MemoryCheckpointStorage::default()),
        )
        .with_mode(SnapshotMode::Incremental)
    }

    state_testkit::conformance_tests!(setup);
}
