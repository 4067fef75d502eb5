//! The closed set of backends the `cairn` command can run a job on, and the
//! checkpoint storage that goes with each (`--backend`, `--checkpoint-dir`).
//!
//! The executor is generic over the backend factory; this module is the one
//! place that names concrete backends and dispatches to generic code through
//! a [`BackendVisitor`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackendFactory, HeapBackendOptions};
use executor::args::BackendKind;
use state_core::{BackendFactory, CheckpointStorage, JobId, MemoryCheckpointStorage};

/// Generic code to run with the concrete backend chosen on the command line.
pub(crate) trait BackendVisitor {
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
pub(crate) fn storage_for(
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
pub(crate) fn name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Heap => "heap",
        BackendKind::Fs => "fs",
        BackendKind::Rocks => "rocks",
    }
}

/// Where the rocks backend works (`--local-dir`; heap and fs ignore it) and
/// whether backends keep local checkpoint copies (`--local-recovery`: rocks
/// on local disk, heap and fs in memory).
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalState {
    /// The working directory; `None` = `<temp>/cairn-rocks/<job-id>`.
    pub dir: Option<PathBuf>,
    /// Keep local copies of checkpoints and restore from them when intact.
    pub recovery: bool,
    /// The rocks backend's value cache in bytes (`None`: its default).
    pub rocks_value_cache: Option<usize>,
}

impl LocalState {
    /// The local state settings of a job's options.
    pub(crate) fn from_args(args: &executor::args::JobArgs) -> Self {
        LocalState {
            dir: args.local_dir.clone(),
            recovery: args.local_recovery,
            rocks_value_cache: None,
        }
    }

    fn dir_for(&self, job_id: &JobId) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("cairn-rocks")
                .join(job_id.as_str())
        })
    }
}

/// Runs `visitor` with the backend `kind` over `storage`; the rocks backend
/// works in `local` (its databases and local checkpoint copies).
pub(crate) fn with_backend_local<V: BackendVisitor>(
    kind: BackendKind,
    storage: Arc<dyn CheckpointStorage>,
    local: &LocalState,
    job_id: &JobId,
    visitor: V,
) -> anyhow::Result<V::Output> {
    match kind {
        BackendKind::Heap | BackendKind::Fs => {
            let _ = job_id;
            let options = HeapBackendOptions::default().with_local_recovery(local.recovery);
            visitor.visit(HeapBackendFactory::new(options), storage)
        }
        #[cfg(feature = "rocks")]
        BackendKind::Rocks => {
            let dir = local.dir_for(job_id);
            let mut options =
                backend_rocks::RocksBackendOptions::new(&dir).with_local_recovery(local.recovery);
            if let Some(bytes) = local.rocks_value_cache {
                options = options.with_value_cache(bytes);
            }
            let factory = backend_rocks::RocksBackendFactory::new(options)
                .with_context(|| format!("rocks backend in {}", dir.display()))?;
            visitor.visit(factory, storage)
        }
        #[cfg(not(feature = "rocks"))]
        BackendKind::Rocks => bail!(
            "--backend rocks is not available in this build of cairn (built without the `rocks` feature)"
        ),
    }
}
