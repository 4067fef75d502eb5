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
use state_core::{BackendFactory, CheckpointId, CheckpointStorage, JobId, MemoryCheckpointStorage};

use crate::job_args::{BackendKind, JobArgs};

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
        (_, Some(dir)) if object_url(dir).is_some() => open_object_storage(dir, job_id),
        (_, Some(dir)) => Ok(Arc::new(
            FsCheckpointStorage::open(plain_path(dir), job_id.clone())
                .map_err(crate::human::anyhow)
                .with_context(|| format!("--checkpoint-dir {}", dir.display()))?,
        )),
        (BackendKind::Heap, None) => Ok(Arc::new(MemoryCheckpointStorage::default())),
        (other, None) => bail!(
            "--backend {} needs --checkpoint-dir (where its checkpoints are written)",
            name(other)
        ),
    }
}

/// The text of `path` when it is an object-store URL (`s3://`, `gs://`,
/// `az://`, `hdfs://`, `viewfs://`) that `--checkpoint-dir`, `--from` and `cairn
/// checkpoints` route to the object storage, `None` for a plain path.
///
/// `file://` URLs are plain directories: the filesystem storage serves them
/// (with its OS lock, fsyncs and memory maps), so only the URL prefix goes.
pub fn object_url(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    [
        "s3://",
        "gs://",
        "az://",
        "s3a://",
        "abfs://",
        "hdfs://",
        "viewfs://",
    ]
    .iter()
    .any(|scheme| text.starts_with(scheme))
    .then_some(text)
}

/// `path` with a `file://` prefix removed (`file:///data/ckpt` is `/data/ckpt`).
pub fn plain_path(path: &Path) -> PathBuf {
    match path.to_str().and_then(|t| t.strip_prefix("file://")) {
        Some(rest) => PathBuf::from(rest),
        None => path.to_path_buf(),
    }
}

/// The job location `<base>/<job-id>` of a checkpoint directory or URL
/// (before a URL's `?options`).
pub fn job_location(base: &Path, job_id: &JobId) -> PathBuf {
    match object_url(base) {
        Some(url) => {
            let (path, query) = url.split_once('?').map_or((url, ""), |(p, q)| (p, q));
            let mut joined = format!("{}/{job_id}", path.trim_end_matches('/'));
            if !query.is_empty() {
                joined.push('?');
                joined.push_str(query);
            }
            PathBuf::from(joined)
        }
        None => plain_path(base).join(job_id.as_str()),
    }
}

#[cfg(feature = "object-store")]
fn open_object_storage(dir: &Path, job_id: &JobId) -> anyhow::Result<Arc<dyn CheckpointStorage>> {
    use backend_fs::object::{ObjectCheckpointStorage, ObjectStorageOptions, ObjectUrl};
    let text = dir.to_string_lossy();
    let url = ObjectUrl::parse(&text)
        .map_err(crate::human::anyhow)
        .with_context(|| format!("--checkpoint-dir {text}"))?;
    let storage = ObjectCheckpointStorage::open(ObjectStorageOptions::new(url, job_id.clone()))
        .map_err(crate::human::anyhow)
        .with_context(|| format!("--checkpoint-dir {text}"))?;
    Ok(Arc::new(storage))
}

#[cfg(not(feature = "object-store"))]
fn open_object_storage(dir: &Path, _job_id: &JobId) -> anyhow::Result<Arc<dyn CheckpointStorage>> {
    bail!("{}", no_object_store(&dir.to_string_lossy()))
}

/// Why the object-store URL `url` is refused by a build without the
/// feature, naming the feature that serves it (`hdfs://` and `viewfs://`
/// need `hdfs`, which brings `object-store` with it).
pub fn no_object_store(url: &str) -> String {
    let feature = if url.starts_with("hdfs://") || url.starts_with("viewfs://") {
        "hdfs"
    } else {
        "object-store"
    };
    let default = if feature == "hdfs" {
        "off by default"
    } else {
        "on by default; this build left it out"
    };
    format!(
        "{url}: object-store URLs need the `{feature}` feature of cairn-cli ({default}): \
         build with `cargo build -p cairn-cli --features {feature}`"
    )
}

/// The command-line name of a backend kind.
pub fn name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Heap => "heap",
        BackendKind::Fs => "fs",
        BackendKind::Rocks => "rocks",
    }
}

/// Where the rocks backend works (`--local-dir`; heap and fs ignore it) and
/// whether backends keep local checkpoint copies (`--local-recovery`: rocks
/// on local disk, heap and fs in memory).
///
/// Each job works in a directory of its own, `<local-dir>/<job-id>` (as
/// Flink's `localState/…/jid_<job>/`), holding one directory per backend
/// instance: two jobs sharing a `--local-dir` never sweep each other's.
#[derive(Debug, Clone, Default)]
pub struct LocalState {
    /// The local directory shared by jobs; `None` = `<temp>/cairn-rocks`.
    /// The job's own is [`LocalState::job_dir`].
    pub dir: Option<PathBuf>,
    /// Keep local copies of checkpoints and restore from them when intact.
    pub recovery: bool,
    /// The rocks backend's value cache in bytes (`None`: its default).
    pub rocks_value_cache: Option<usize>,
    /// The rocks backend's partitioned index and filter blocks on or off
    /// (`None`: its default, on).
    pub rocks_partitioned_index_filters: Option<bool>,
}

impl LocalState {
    /// The local state settings of a job's options.
    pub fn from_args(args: &JobArgs) -> Self {
        LocalState {
            dir: args.local_dir.clone(),
            recovery: args.local_recovery,
            rocks_value_cache: None,
            rocks_partitioned_index_filters: None,
        }
    }

    /// The rocks backend's working directory of job `job_id`:
    /// `<dir>/<job-id>`, `<temp>/cairn-rocks/<job-id>` without a `dir`.
    pub fn job_dir(&self, job_id: &JobId) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("cairn-rocks"))
            .join(job_id.as_str())
    }
}

/// Removes the directories that dead rocks backend instances of job
/// `job_id` (killed processes) left in its local directory
/// ([`LocalState::job_dir`]), keeping their local copies of the `retained`
/// checkpoints, and logs what it removed. Heap and fs keep no local files:
/// nothing to do. Call it before the job starts, holding its job lock.
pub fn sweep_dead_local_state(
    kind: BackendKind,
    local: &LocalState,
    job_id: &JobId,
    retained: &[CheckpointId],
) -> anyhow::Result<()> {
    match kind {
        BackendKind::Heap | BackendKind::Fs => Ok(()),
        #[cfg(feature = "rocks")]
        BackendKind::Rocks => {
            let dir = local.job_dir(job_id);
            let swept = backend_rocks::sweep_local_dir(&dir, retained)
                .map_err(crate::human::anyhow)
                .with_context(|| format!("sweeping the rocks local directory {}", dir.display()))?;
            if !swept.removed.is_empty() || !swept.kept.is_empty() {
                tracing::info!(
                    dir = %dir.display(),
                    removed = swept.removed.len(),
                    bytes = swept.bytes_removed,
                    kept_local_copies = swept.kept.len(),
                    "removed what dead rocks backend instances left in the local directory"
                );
            }
            Ok(())
        }
        #[cfg(not(feature = "rocks"))]
        BackendKind::Rocks => {
            let _ = (local, job_id, retained);
            Ok(())
        }
    }
}

/// Runs `visitor` with the backend `kind` over `storage`; the rocks backend
/// works in `local` (its databases and local checkpoint copies).
pub fn with_backend_local<V: BackendVisitor>(
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
            let dir = local.job_dir(job_id);
            let mut options =
                backend_rocks::RocksBackendOptions::new(&dir).with_local_recovery(local.recovery);
            if let Some(bytes) = local.rocks_value_cache {
                options = options.with_value_cache(bytes);
            }
            if let Some(on) = local.rocks_partitioned_index_filters {
                options = options.with_partitioned_index_filters(on);
            }
            let factory = backend_rocks::RocksBackendFactory::new(options)
                .with_context(|| format!("rocks backend in {}", dir.display()))?;
            visitor.visit(factory, storage)
        }
        #[cfg(not(feature = "rocks"))]
        BackendKind::Rocks => bail!(
            "--backend rocks is not available in this build of cairn (built without the `rocks` \
             feature, as scripts/quickstart.sh builds it for the demo); build it with \
             `cargo build -p cairn-cli --features rocks` (RocksDB's C++: ~25 min cold, ~2 min \
             from ccache) or run scripts/test.sh, which builds it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without object stores names the feature that serves the URL.
    #[test]
    fn a_build_without_object_stores_names_the_feature_the_url_needs() {
        let s3 = no_object_store("s3://b/ckpt");
        assert!(s3.starts_with("s3://b/ckpt: "), "{s3}");
        assert!(s3.contains("--features object-store"), "{s3}");
        for url in ["hdfs://nn:8020/ckpt", "viewfs://cluster/ckpt"] {
            let msg = no_object_store(url);
            assert!(
                msg.contains("`hdfs` feature") && msg.contains("--features hdfs"),
                "{msg}"
            );
        }
    }
}
