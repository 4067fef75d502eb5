//! [`UploadTracker`]: which shared SST files this instance's incremental
//! snapshots uploaded, and which of them the last confirmed checkpoint holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Incremental snapshots taken and not yet confirmed or aborted.
    pending: BTreeSet<CheckpointId>,
}

impl UploadTracker {
    /// A tracker whose confirmed checkpoint is `id` with `files` (after a restore).
    pub(crate) fn seeded(id: CheckpointId, files: &[SharedFile]) -> Self {
        UploadTracker {
            finished: BTreeMap::new(),
            confirmed: Arc::new(files.iter().map(|f| (f.name.clone(), f.clone())).collect()),
            confirmed_id: Some(id),
            pending: BTreeSet::new(),
        }
    }

    /// The files snapshot `id` may reuse, and `id` counted as pending.
    ///
    /// The confirmed checkpoint's files, unless an earlier snapshot is
    /// still pending: that one may complete as a checkpoint that does not
    /// reuse them (its own base was older), and its completion subsumes the
    /// confirmed one and deletes them before this snapshot completes. Then
    /// nothing is reused and every SST goes up again under `id`'s names.
    pub(crate) fn base_for(&mut self, id: CheckpointId) -> Arc<HashMap<String, SharedFile>> {
        let base = if self.pending.is_empty() {
            Arc::clone(&self.confirmed)
        } else {
            Arc::default()
        };
        self.pending.insert(id);
        base
    }

    /// Snapshot `id` was aborted: it is no longer pending.
    pub(crate) fn abort(&mut self, id: CheckpointId) {
        self.finished.remove(&id);
        self.pending.remove(&id);
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
        // Every snapshot up to `id` is done with: completed or overtaken.
        self.pending = self
            .pending
            .split_off(&CheckpointId(id.get().saturating_add(1)));
    }
}

pub(crate) fn lock(tracker: &Mutex<UploadTracker>) -> std::sync::MutexGuard<'_, UploadTracker> {
    match tracker.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Runs `work` on every item of `items`, at most `threads` at once (the
/// calling thread is one of them), taking items in order; once one fails no
/// further item is started, while those already running finish. Returns each
/// item's outcome in item order, `None` for one never started, so the caller
/// sees every success (to undo it) and can pick the first error by order,
/// whatever the timing.
pub(crate) fn transfer_each<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> state_core::Result<R> + Sync,
) -> Vec<Option<state_core::Result<R>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<state_core::Result<R>>>> =
        Mutex::new(items.iter().map(|_| None).collect());
    let span = tracing::Span::current();
    let worker = || {
        let _entered = span.enter();
        while !failed.load(Ordering::SeqCst) {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(item) = items.get(i) else { break };
            let outcome = work(item);
            if outcome.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            let mut slots = results.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(outcome);
            }
        }
    };
    let helpers = threads.clamp(1, items.len().max(1)) - 1;
    std::thread::scope(|scope| {
        for n in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("cairn-transfer-{n}"))
                .spawn_scoped(scope, worker);
            // Without the thread the others (this one at least) do its share.
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "could not start a transfer thread");
                break;
            }
        }
        worker();
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::StateError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn file(name: &str, by: u64) -> SharedFile {
        SharedFile {
            name: name.to_owned(),
            handle: state_core::StreamHandle {
                location: state_core::StreamLocation::File(format!("shared/{by}-{name}")),
                size: 1,
                crc32: 0,
            },
            uploaded_by: CheckpointId(by),
        }
    }

    /// A snapshot reuses the confirmed checkpoint's files only while no
    /// earlier snapshot is pending; a confirmation clears every pending
    /// snapshot up to it, an abort the aborted one.
    #[test]
    fn a_snapshot_reuses_files_only_while_nothing_is_pending() {
        let mut t = UploadTracker::seeded(CheckpointId(1), &[file("000010.sst", 1)]);
        assert_eq!(t.base_for(CheckpointId(2)).len(), 1, "nothing pending");
        assert!(t.base_for(CheckpointId(3)).is_empty(), "2 is pending");
        t.finished
            .insert(CheckpointId(2), vec![file("000010.sst", 1)]);
        t.confirm(CheckpointId(2));
        assert!(t.base_for(CheckpointId(4)).is_empty(), "3 is still pending");
        t.abort(CheckpointId(3));
        assert!(t.base_for(CheckpointId(5)).is_empty(), "4 is still pending");
        t.confirm(CheckpointId(5));
        assert_eq!(
            t.base_for(CheckpointId(6)).len(),
            1,
            "5's confirmation ended 4 as well"
        );
    }

    #[test]
    fn every_item_runs_once_and_outcomes_keep_item_order() {
        let items: Vec<u32> = (0..50).collect();
        for threads in [1, 4, 64] {
            let calls = AtomicUsize::new(0);
            let out = transfer_each(&items, threads, |&i| {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(i * 2)
            });
            assert_eq!(calls.load(Ordering::SeqCst), 50);
            let got: Vec<u32> = out.into_iter().map(|o| o.unwrap().unwrap()).collect();
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn after_a_failure_no_item_starts_and_one_thread_stops_at_it() {
        let items: Vec<u32> = (0..20).collect();
        let out = transfer_each(&items, 1, |&i| {
            if i == 5 {
                Err(StateError::invalid(format!("item {i}")))
            } else {
                Ok(i)
            }
        });
        assert!(out.iter().take(5).all(|o| matches!(o, Some(Ok(_)))));
        assert!(matches!(out.get(5), Some(Some(Err(_)))));
        assert!(out.iter().skip(6).all(Option::is_none));
        // With several threads the failure is reported at its own place.
        let out = transfer_each(&items, 4, |&i| {
            if i == 0 {
                Err(StateError::invalid("item 0"))
            } else {
                Ok(i)
            }
        });
        assert!(matches!(out.first(), Some(Some(Err(_)))));
        assert!(out.iter().skip(1).flatten().all(Result::is_ok));
    }
}
