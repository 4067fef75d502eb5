//! [`UploadTracker`]: which shared SST files this instance's incremental
//! snapshots uploaded, and which of them the last confirmed checkpoint holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use state_core::{CheckpointId, SharedFile};

/// The shared SST files of this instance's incremental snapshots.
#[derive(Debug, Default)]
pub(crate) struct UploadTracker {
    /// Shared files of each snapshot whose asynchronous part succeeded.
    pub(crate) finished: BTreeMap<CheckpointId, Vec<SharedFile>>,
    /// The last confirmed checkpoint's shared files, by local file name.
    pub(crate) confirmed: Arc<HashMap<String, SharedFile>>,
    confirmed_id: Option<CheckpointId>,
}

impl UploadTracker {
    /// A tracker whose confirmed checkpoint is `id` with `files` (after a restore).
    pub(crate) fn seeded(id: CheckpointId, files: &[SharedFile]) -> Self {
        UploadTracker {
            finished: BTreeMap::new(),
            confirmed: Arc::new(files.iter().map(|f| (f.name.clone(), f.clone())).collect()),
            confirmed_id: Some(id),
        }
    }

    /// Forgets the confirmed checkpoint (a restored one the job does not
    /// own), so the next snapshots upload every file they need.
    pub(crate) fn forget_confirmed(&mut self) {
        self.confirmed = Arc::new(HashMap::new());
        self.confirmed_id = None;
    }

    pub(crate) fn confirm(&mut self, id: CheckpointId) {
        if let Some(files) = self.finished.remove(&id) {
            self.confirmed = Arc::new(files.into_iter().map(|f| (f.name.clone(), f)).collect());
            self.confirmed_id = Some(id);
        }
        self.finished = self.finished.split_off(&id);
    }
}

pub(crate) fn lock(tracker: &Mutex<UploadTracker>) -> std::sync::MutexGuard<'_, UploadTracker> {
    match tracker.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
