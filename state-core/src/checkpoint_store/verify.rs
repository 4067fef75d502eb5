//! Verifying checkpoints and choosing the one to restore from.

use std::collections::HashSet;

use crate::checkpoint_id::CheckpointId;
use crate::handle::StreamHandle;
use crate::metadata::{CheckpointMetadata, METADATA_FILE_NAME};
use crate::storage::{CheckpointStorage, read_verified};
use crate::{ErrorKind, Result, StateError};

/// The checkpoint a restore should use, and the newer ones passed over.
#[derive(Debug)]
pub struct RestoreSelection {
    /// The newest checkpoint whose metadata and every stream are intact.
    pub metadata: CheckpointMetadata,
    /// Newer checkpoints that were tried first and found damaged, newest
    /// first, with what is wrong (the error names the file).
    pub skipped: Vec<(CheckpointId, StateError)>,
}

impl RestoreSelection {
    /// The chosen checkpoint's id.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.metadata.checkpoint_id
    }
}

/// Reads checkpoint `id`'s metadata and checks the length and CRC-32 of every
/// stream it references. Returns the metadata if all are intact, else the
/// first error, which names the damaged file.
pub fn load_verified(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
) -> Result<CheckpointMetadata> {
    let metadata = storage.read_metadata(id)?;
    let mut seen = HashSet::new();
    for stream in metadata.streams() {
        if first_visit(&mut seen, stream) {
            read_verified(storage, stream)?;
        }
    }
    Ok(metadata)
}

/// Chooses the checkpoint to restore from: the newest listed checkpoint whose
/// metadata and every stream are intact ([`load_verified`]). Damaged newer
/// checkpoints are logged (`tracing::warn`) and returned in
/// [`RestoreSelection::skipped`], so callers can say "checkpoint 7 is corrupt
/// (chk-7/op-0-keyed: checksum mismatch ...), restoring from checkpoint 6".
///
/// Errors: [`StateError::NotFound`] if storage holds no checkpoint at all;
/// [`StateError::Corrupted`] naming every checkpoint tried and what is wrong
/// with each if none is intact; storage errors while listing.
pub fn select_for_restore(storage: &dyn CheckpointStorage) -> Result<RestoreSelection> {
    let span = tracing::info_span!("select_for_restore", storage = %storage.describe());
    let _entered = span.enter();
    let ids = storage.list_checkpoints()?;
    let Some(&newest) = ids.last() else {
        return Err(StateError::NotFound {
            checkpoint: CheckpointId(0),
            detail: format!("no completed checkpoint in {}", storage.describe()),
        });
    };
    let mut skipped: Vec<(CheckpointId, StateError)> = Vec::new();
    for &id in ids.iter().rev() {
        match load_verified(storage, id) {
            Ok(metadata) => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        checkpoint_id = id.get(),
                        skipped = skipped.len(),
                        "restoring from an older checkpoint because newer ones are damaged"
                    );
                }
                return Ok(RestoreSelection { metadata, skipped });
            }
            Err(err) => {
                tracing::warn!(
                    checkpoint_id = id.get(),
                    error = %err,
                    "checkpoint is damaged; trying the previous one"
                );
                skipped.push((id, err));
            }
        }
    }
    let detail = skipped
        .iter()
        .map(|(id, err)| format!("checkpoint {id}: {err}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(StateError::corrupted(
        format!(
            "every checkpoint in {} (tried {} down to {})",
            storage.describe(),
            newest,
            ids.first().copied().unwrap_or(newest)
        ),
        detail,
    ))
}

/// The result of checking one file of a checkpoint.
#[derive(Debug)]
pub struct FileCheck {
    /// The file, relative to the job's checkpoint directory (`chk-7/_metadata`,
    /// `chk-7/op-0-keyed`, `shared/000042.sst`), or a description of inline state.
    pub path: String,
    /// The expected length from the metadata; `None` for the metadata file itself.
    pub size: Option<u64>,
    /// The expected CRC-32 from the metadata; `None` for the metadata file itself.
    pub crc32: Option<u32>,
    /// `None` if the file is intact, else what is wrong with it.
    pub error: Option<StateError>,
}

impl FileCheck {
    /// Whether the file is intact.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// What [`verify_checkpoint`] found: every file of one checkpoint and its state.
#[derive(Debug)]
pub struct VerifyReport {
    /// The checkpoint checked.
    pub checkpoint_id: CheckpointId,
    /// The decoded metadata, if `_metadata` could be read.
    pub metadata: Option<CheckpointMetadata>,
    /// The metadata file first, then every distinct stream in metadata order.
    pub files: Vec<FileCheck>,
}

impl VerifyReport {
    /// Whether the metadata and every stream are intact.
    pub fn is_ok(&self) -> bool {
        self.files.iter().all(FileCheck::is_ok)
    }

    /// The files that failed.
    pub fn failures(&self) -> impl Iterator<Item = &FileCheck> {
        self.files.iter().filter(|f| !f.is_ok())
    }
}

/// Re-reads checkpoint `id`'s metadata and every stream it references and
/// reports each file: path, expected size and CRC-32, and whether it is
/// intact. Damage is reported in the [`VerifyReport`], not as an error; the
/// error cases are a checkpoint that does not exist ([`StateError::NotFound`])
/// and storage failures while listing.
pub fn verify_checkpoint(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
) -> Result<VerifyReport> {
    let metadata_path = format!("{}/{METADATA_FILE_NAME}", id.dir_name());
    let metadata = match storage.read_metadata(id) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == ErrorKind::NotFound => return Err(err),
        Err(err) => {
            tracing::warn!(checkpoint_id = id.get(), error = %err, "checkpoint metadata is damaged");
            return Ok(VerifyReport {
                checkpoint_id: id,
                metadata: None,
                files: vec![FileCheck {
                    path: metadata_path,
                    size: None,
                    crc32: None,
                    error: Some(err),
                }],
            });
        }
    };
    let mut files = vec![FileCheck {
        path: metadata_path,
        size: None,
        crc32: None,
        error: None,
    }];
    let mut seen = HashSet::new();
    for stream in metadata.streams() {
        if !first_visit(&mut seen, stream) {
            continue;
        }
        let error = read_verified(storage, stream).err();
        if let Some(err) = &error {
            tracing::warn!(checkpoint_id = id.get(), stream = %stream.describe(), error = %err, "checkpoint stream is damaged");
        }
        files.push(FileCheck {
            path: stream.describe(),
            size: Some(stream.size),
            crc32: Some(stream.crc32),
            error,
        });
    }
    Ok(VerifyReport {
        checkpoint_id: id,
        metadata: Some(metadata),
        files,
    })
}

/// Whether `stream` is seen for the first time (inline streams always are).
fn first_visit<'a>(seen: &mut HashSet<&'a str>, stream: &'a StreamHandle) -> bool {
    match stream.file_path() {
        Some(path) => seen.insert(path),
        None => true,
    }
}
