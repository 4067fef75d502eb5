//! The closed set of backends the `cairn` command can run a job on, and the
//! checkpoint storage that goes with each (`--backend`, `--checkpoint-dir`).
//!
//! The executor is generic over the backend factory; this module is the one
//! place that names concrete backends and dispatches to generic code through
//! a [`BackendVisitor`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use executor::args::BackendKind;
use state_core::{BackendFactory, CheckpointStorage, JobId, MemoryCheckpointStorage};

/// Generic code to run with the concrete backend chosen on the command line.
pub trait BackendVisitor {
    /// What the visit returns.
    type Output;
    /// Runs with `factory` creating the keyed-state backends and `storage`
    /// receiving the checkpoints.
    fn visit<F: BackendFactory + 'static>(
        self,
        factory: F,
        storage: Arc<dyn CheckpointStorage>,
    ) -> anyhow::Result<Self::Output>;
}

/// The checkpoint storage for `kind`: `heap` keeps checkpoints in memory
/// (bounded, 5 MiB) unless a checkpoint directory is given; `fs` and `rocks`
/// need a checkpoint directory and write `<dir>/<job-id>/chk-<n>/`.
pub fn storage_for(
    kind: BackendKind,
    checkpoint_dir: Option<&Path>,
    job_id: &JobId,
) -> anyhow::Result<Arc<dyn CheckpointStorage>> {
    match (kind, checkpoint_dir) {
        (_, Some(dir)) => Ok(Arc::new(
            FsCheckpointStorage::open(dir, job_id.clone())
                .with_context(|| format!("--checkpoint-dir {}", dir.display()))?,
        )),
        (BackendKind::Heap, None) => Ok(Arc::new(MemoryCheckpointStorage::default())),
        (other, None) => bail!(
            "--backend {} needs --checkpoint-dir (where its checkpoints are written)",
            name(other)
        ),
    }
}

/// The command-line name of a backend kind.
pub fn name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Heap => "heap",
        BackendKind::Fs => "fs",
        BackendKind::Rocks => "rocks",
    }
}

/// Runs `visitor` with the backend `kind` over `storage`.
pub fn with_backend<V: BackendVisitor>(
    kind: BackendKind,
    storage: Arc<dyn CheckpointStorage>,
    visitor: V,
) -> anyhow::Result<V::Output> {
    match kind {
        BackendKind::Heap | BackendKind::Fs => visitor.visit(
            HeapBackendFactory::new(HeapBackendOptions::default()),
            storage,
        ),
        BackendKind::Rocks => bail!(
            "--backend rocks is not available in this build of cairn (the RocksDB backend is not built in yet)"
        ),
    }
}
