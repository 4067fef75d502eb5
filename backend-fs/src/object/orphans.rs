//! The orphan sweep ([`crate::find_orphans`], [`crate::sweep_orphans`]) over
//! an object store: directories are key prefixes, listed with a delimiter;
//! files are objects, deleted in batches. There are no links and no empty
//! directories, so a directory orphan needs no removal of its own.

use std::ffi::OsStr;
use std::path::Path;

use state_core::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, METADATA_FILE_NAME, Result, StateError,
};

use super::lock::ObjectJobLock;
use super::storage::ObjectCheckpointStorage;
use crate::orphans::{ListedEntry, ListedKind, Orphan, OrphanKind, OrphanScan};

fn relative_str(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

impl OrphanScan for ObjectCheckpointStorage {
    type Lock = ObjectJobLock;

    fn location(&self) -> String {
        self.job_url().to_string()
    }

    fn list_entries(&self, relative: &Path) -> Result<Option<Vec<ListedEntry>>> {
        let entries = self
            .list_dir(&relative_str(relative))?
            .into_iter()
            .map(|(name, size)| ListedEntry {
                name: name.into(),
                kind: size.map_or(ListedKind::Dir, ListedKind::File),
            })
            .collect();
        Ok(Some(entries))
    }

    fn metadata_kind(&self, checkpoint_dir: &OsStr) -> Result<Option<ListedKind>> {
        let relative = format!("{}/{METADATA_FILE_NAME}", checkpoint_dir.to_string_lossy());
        Ok(self.object_size(&relative)?.map(ListedKind::File))
    }

    fn read_checkpoint(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        self.read_metadata(id)
    }

    fn check_lock(&self, lock: &ObjectJobLock) -> Result<()> {
        if lock.storage().job_url() == self.job_url() {
            Ok(())
        } else {
            Err(StateError::invalid(format!(
                "sweeping {} needs its own lock, not the lock of {}",
                self.job_url(),
                lock.storage().job_url()
            )))
        }
    }

    fn empty_dirs_are_entries(&self) -> bool {
        false
    }

    fn remove_orphans(&self, orphans: &[Orphan]) -> Vec<Result<()>> {
        let files: Vec<String> = orphans
            .iter()
            .filter(|o| o.kind != OrphanKind::Dir)
            .map(|o| relative_str(&o.path))
            .collect();
        if self.delete_objects(&files).is_ok() {
            return orphans.iter().map(|_| Ok(())).collect();
        }
        // Some deletions failed: find which, one by one.
        orphans
            .iter()
            .map(|o| match o.kind {
                OrphanKind::Dir => Ok(()),
                _ => self.delete_objects(&[relative_str(&o.path)]),
            })
            .collect()
    }
}
