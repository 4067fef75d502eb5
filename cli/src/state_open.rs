//! Opening what the state tool reads and writes: a checkpoint or savepoint
//! given as a `chk-<n>` directory, its `_metadata`, or a job or savepoint
//! directory (its newest completed checkpoint), as a [`SavepointReader`]
//! whose native handles are converted to the canonical format; and the
//! `--out` directory of a savepoint the tool writes.
//!
//! A native handle (a RocksDB incremental checkpoint or native savepoint, a
//! heap incremental chain) is restored into a temporary backend of its
//! kind, which then writes a full snapshot in the canonical format into a
//! temporary directory; both are removed when the command ends. The clock
//! of that backend stands at 0, so the full snapshot drops no entry as
//! expired: what is dumped is what was stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use state_core::backend_support::KeyGroupStreamWriter;
use state_core::{
    BackendContext, CheckpointId, CheckpointStorage, Checkpointable, ErrorKind, JobId,
    KeyedStateHandle, ManualClock, MaxParallelism, SavepointReader, SnapshotMode, StateError,
    StateScope,
};

use crate::human;

/// A checkpoint opened for reading, with the temporary files its
/// conversion needs (kept until it is dropped).
#[derive(Debug)]
pub(crate) struct Opened {
    /// The reader, every handle canonical.
    pub reader: SavepointReader,
    /// The `chk-<n>` directory read.
    pub dir: PathBuf,
    /// How many native handles were converted.
    pub converted: usize,
    _tmp: Option<tempfile::TempDir>,
}

/// Opens `path` and converts the native handles of operator `only` (or of
/// every operator). Errors name the path.
pub(crate) fn open(path: &Path, only: Option<&str>) -> anyhow::Result<Opened> {
    let (storage, id) =
        FsCheckpointStorage::open_path(path).map_err(|e| naming(path, human::anyhow(e)))?;
    let id = match id {
        Some(id) => id,
        None => newest_readable(&storage).map_err(|e| naming(path, e))?,
    };
    let dir = storage.checkpoint_dir(id);
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let mut reader =
        SavepointReader::open(storage, id).map_err(|e| naming(&dir, human::anyhow(e)))?;
    if let Some(uid) = only {
        reader.operator(uid).map_err(human::anyhow)?;
    }
    let native = reader.native_handles();
    if native == 0 {
        return Ok(Opened {
            reader,
            dir,
            converted: 0,
            _tmp: None,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("cairn-state-")
        .tempdir()
        .context("creating a temporary directory to read native snapshots")?;
    let converted = convert_native(&mut reader, only, tmp.path()).map_err(|e| naming(&dir, e))?;
    Ok(Opened {
        reader,
        dir,
        converted,
        _tmp: Some(tmp),
    })
}

/// `error`, prefixed with `path` unless it names it already.
fn naming(path: &Path, error: anyhow::Error) -> anyhow::Error {
    let shown = path.display().to_string();
    if format!("{error:#}").contains(&shown) {
        error
    } else {
        error.context(shown)
    }
}

/// The newest checkpoint of a job or savepoint directory whose metadata
/// reads; the error says there is none.
fn newest_readable(storage: &FsCheckpointStorage) -> anyhow::Result<CheckpointId> {
    let ids = storage.list_checkpoints().map_err(human::anyhow)?;
    let mut last_error = None;
    for id in ids.into_iter().rev() {
        match storage.read_metadata(id) {
            Ok(_) => return Ok(id),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(human::anyhow(e)),
        None => bail!("holds no completed checkpoint (no chk-<n>/_metadata)"),
    }
}

/// Converts the native handles of operator `only` (or of every operator):
/// each is restored into a temporary backend of the kind that wrote it (its
/// clock at 0), which writes a canonical savepoint into `tmp`.
fn convert_native(
    reader: &mut SavepointReader,
    only: Option<&str>,
    tmp: &Path,
) -> anyhow::Result<usize> {
    let out: Arc<dyn CheckpointStorage> = Arc::new(
        FsCheckpointStorage::open(tmp.join("canonical"), JobId::new("converted")?)
            .map_err(human::anyhow)?,
    );
    let id = CheckpointId(1);
    out.initialize_checkpoint(id).map_err(human::anyhow)?;
    let mut converted = 0usize;
    reader
        .convert_native(only, &mut |native| {
            let op = native.operator;
            let context = BackendContext {
                operator_id: op.operator_id.clone(),
                subtask: native.subtask,
                parallelism: op.parallelism,
                max_parallelism: MaxParallelism::new(op.max_parallelism)?,
                clock: Arc::new(ManualClock::new(0)),
            };
            let handles = std::slice::from_ref(native.handle);
            let written = match native.handle {
                KeyedStateHandle::Incremental(h) if h.backend == HEAP => {
                    let mut backend = HeapBackend::new(&context, HeapBackendOptions::default())?;
                    backend.restore(handles, native.storage.as_ref())?;
                    backend
                        .snapshot(id, SnapshotMode::CanonicalSavepoint)?
                        .write(out.as_ref())?
                }
                _ => rocks_to_canonical(&context, handles, native.storage.as_ref(), tmp, id, &out)?,
            };
            converted += 1;
            match written {
                Some(KeyedStateHandle::KeyGroups(h)) => Ok((h, out.clone())),
                Some(KeyedStateHandle::Incremental(_)) => Err(StateError::invalid(
                    "the temporary backend wrote an incremental snapshot",
                )),
                None => {
                    // No state: an empty canonical stream of the same key groups.
                    let name = format!("empty-{converted}");
                    let stream = out.create_output(id, StateScope::Exclusive, &name)?;
                    let writer = KeyGroupStreamWriter::new(
                        stream,
                        &name,
                        "converted",
                        context.max_parallelism,
                        native.handle.key_groups(),
                        &[],
                        0,
                    )?;
                    Ok((writer.finish()?, out.clone()))
                }
            }
        })
        .map_err(human::anyhow)?;
    Ok(converted)
}

/// The name heap snapshots carry in their handles.
const HEAP: &str = "heap";

/// A full snapshot of native RocksDB `handles`, written by a temporary
/// instance in `tmp`.
#[cfg(feature = "rocks")]
fn rocks_to_canonical(
    context: &BackendContext,
    handles: &[KeyedStateHandle],
    storage: &dyn CheckpointStorage,
    tmp: &Path,
    id: CheckpointId,
    out: &Arc<dyn CheckpointStorage>,
) -> state_core::Result<Option<KeyedStateHandle>> {
    use backend_rocks::{RocksBackend, RocksBackendOptions};

    let options = RocksBackendOptions::new(tmp.join("rocks")).with_incremental(false);
    let mut backend = RocksBackend::new(context, options)?;
    backend.restore(handles, storage)?;
    backend
        .snapshot(id, SnapshotMode::Full)?
        .write(out.as_ref())
}

#[cfg(not(feature = "rocks"))]
fn rocks_to_canonical(
    _: &BackendContext,
    _: &[KeyedStateHandle],
    _: &dyn CheckpointStorage,
    _: &Path,
    _: CheckpointId,
    _: &Arc<dyn CheckpointStorage>,
) -> state_core::Result<Option<KeyedStateHandle>> {
    Err(StateError::invalid(
        "holds native RocksDB snapshots, and this build of cairn has no RocksDB (built without \
         the `rocks` feature); build it with `cargo build -p cairn-cli --features rocks`",
    ))
}

/// The storage of a new savepoint directory `out` (`--out`): its parent is
/// created if missing; `out` must not exist or be empty, and its name (the
/// savepoint's id in the storage) must be a valid job id.
pub(crate) fn savepoint_dir(out: &Path) -> anyhow::Result<FsCheckpointStorage> {
    let id = check_new_dir(out)?;
    let base = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    FsCheckpointStorage::open(base, id)
        .map_err(human::anyhow)
        .with_context(|| format!("--out {}", out.display()))
}

/// Checks that `out` can become a new savepoint directory (see
/// [`savepoint_dir`]) without creating anything; returns its id.
pub(crate) fn check_new_dir(out: &Path) -> anyhow::Result<JobId> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out)
            .with_context(|| format!("--out {}: not a directory", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {}: already exists and is not empty; a savepoint is written into a new directory",
                out.display()
            );
        }
    }
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    JobId::new(name)
        .map_err(human::anyhow)
        .with_context(|| format!("--out {}: the directory's name", out.display()))
}
