//! The state-testkit conformance suite and model test on the RocksDB backend
//! taking full snapshots (cairn's key-group stream format), with filesystem
//! checkpoint storage in a temporary directory.

// `setup` runs only inside the suite's tests: a failure there is a test failure.
#![allow(clippy::expect_used)]

use backend_fs::FsCheckpointStorage;
use backend_rocks::{RocksBackendFactory, RocksBackendOptions};
use state_core::JobId;
use state_testkit::Setup;

fn setup() -> Setup<RocksBackendFactory> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let job = JobId::new("conformance").expect("valid job id");
    let storage = FsCheckpointStorage::open(dir.path().join("storage"), job)
        .expect("filesystem storage opens");
    let options = RocksBackendOptions::new(dir.path().join("local"))
        .with_write_buffer_size(1 << 20)
        .with_memory_budget(64 << 20)
        .with_value_cache(16 << 20);
    Setup::new(
        RocksBackendFactory::new(options).expect("valid options"),
        std::sync::Arc::new(storage),
    )
    .with_guard(dir)
}

state_testkit::conformance_tests!(setup);
