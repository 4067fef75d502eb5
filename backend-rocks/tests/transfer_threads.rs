//! Incremental checkpoints upload, and restores download, several files at
//! once (`RocksBackendOptions::transfer_threads`): a failed upload among
//! concurrent ones leaves no file of the snapshot behind, and a restore
//! through the parallel downloads is exact.
// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backend_rocks::{RocksBackend, RocksBackendFactory};
use state_core::{
    CheckpointId, CheckpointOutput, CheckpointStorage, Checkpointable, KeyedStateBackend,
    KeyedStateHandle, ManualClock, SnapshotMode, StateDescriptor, StateError, StateId, StateKind,
    StreamHandle,
};
use state_testkit::{Intercept, InterceptStorage};
use support::*;

/// Value states written, one SST each in a native checkpoint.
const STATES: usize = 8;
/// Shared uploads that must have completed before the failing one fails,
/// so the failure meets uploads that ran beside it.
const COMPLETED_BEFORE_FAILURE: usize = 3;

/// Fails the first shared stream checkpoint `fail_in` opens, once
/// [`COMPLETED_BEFORE_FAILURE`] other shared streams of it were closed
/// (or after a long wait, if they never are: then the test fails on the
/// count, rather than hanging).
struct FailAmongConcurrent {
    fail_in: CheckpointId,
    armed: AtomicBool,
    closed: Arc<(Mutex<usize>, Condvar)>,
}

impl Intercept for FailAmongConcurrent {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: state_core::StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if id != self.fail_in || scope != state_core::StateScope::Shared {
            return inner.create_output(id, scope, name);
        }
        if self.armed.swap(false, Ordering::SeqCst) {
            let (count, changed) = &*self.closed;
            let guard = count.lock().unwrap();
            let _ = changed
                .wait_timeout_while(guard, Duration::from_secs(60), |n| {
                    *n < COMPLETED_BEFORE_FAILURE
                })
                .unwrap();
            return Err(StateError::io(
                name,
                io::Error::other("injected upload failure"),
            ));
        }
        Ok(Box::new(CountClose {
            inner: inner.create_output(id, scope, name)?,
            closed: Arc::clone(&self.closed),
        }))
    }
}

/// An output that counts its close.
struct CountClose {
    inner: Box<dyn CheckpointOutput>,
    closed: Arc<(Mutex<usize>, Condvar)>,
}

impl Write for CountClose {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointOutput for CountClose {
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn close(self: Box<Self>) -> state_core::Result<StreamHandle> {
        let handle = self.inner.close()?;
        let (count, changed) = &*self.closed;
        *count.lock().unwrap() += 1;
        changed.notify_all();
        Ok(handle)
    }
}

fn factory_with_threads(dir: &std::path::Path, threads: usize) -> RocksBackendFactory {
    RocksBackendFactory::new(
        options(dir)
            .with_incremental(true)
            .with_transfer_threads(threads),
    )
    .unwrap()
}

/// Registers the states and writes `round`'s value of 100 keys in each.
fn write_round(b: &mut RocksBackend, round: u32) -> Vec<StateId> {
    let ids: Vec<StateId> = (0..STATES)
        .map(|s| {
            b.register_state(&StateDescriptor::new(format!("s{s}"), StateKind::Value))
                .unwrap()
        })
        .collect();
    for (s, id) in ids.iter().enumerate() {
        for k in 0u32..100 {
            let key = k.to_be_bytes();
            b.put(*id, &entry(&key), bytes(format!("{s}-{k}-{round}")))
                .unwrap();
        }
    }
    ids
}

fn snapshot(
    b: &mut RocksBackend,
    storage: &dyn CheckpointStorage,
    id: u64,
) -> state_core::Result<Option<KeyedStateHandle>> {
    let id = CheckpointId(id);
    storage.initialize_checkpoint(id)?;
    b.snapshot(id, SnapshotMode::Incremental)?.write(storage)
}

#[test]
fn a_failed_upload_among_concurrent_ones_leaves_none_of_the_snapshots_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory_with_threads(&dir.path().join("local"), 4);
    let fs = fs_storage(&dir.path().join("storage"));
    let closed = Arc::new((Mutex::new(0usize), Condvar::new()));
    let storage = InterceptStorage::new(
        fs.clone(),
        FailAmongConcurrent {
            fail_in: CheckpointId(2),
            armed: AtomicBool::new(true),
            closed: Arc::clone(&closed),
        },
    );
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = create(&f, 0, 1, &clock);
    write_round(&mut b, 1);
    let Some(KeyedStateHandle::Incremental(h1)) = snapshot(&mut b, &storage, 1).unwrap() else {
        panic!("expected an incremental handle");
    };
    assert!(h1.shared.len() >= STATES, "{:?}", h1.shared);
    b.notify_checkpoint_complete(CheckpointId(1)).unwrap();
    let after_first = tree_files(fs.job_dir());

    // Every state changes: checkpoint 2 uploads a new SST per state.
    write_round(&mut b, 2);
    let err = snapshot(&mut b, &storage, 2).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(
        *closed.0.lock().unwrap() >= COMPLETED_BEFORE_FAILURE,
        "the failing upload did not run beside others"
    );
    // What checkpoint 1 wrote is there; nothing checkpoint 2 uploaded is.
    assert_eq!(tree_files(fs.job_dir()), after_first);
    b.notify_checkpoint_aborted(CheckpointId(2)).unwrap();

    // The backend goes on; the next checkpoint restores exactly through
    // parallel downloads.
    let h3 = match snapshot(&mut b, &storage, 3).unwrap() {
        Some(KeyedStateHandle::Incremental(h)) => h,
        other => panic!("expected an incremental handle, got {other:?}"),
    };
    let mut r = create(&f, 0, 1, &clock);
    r.restore(&[KeyedStateHandle::Incremental(h3.clone())], fs.as_ref())
        .unwrap();
    let stats = r.last_restore_stats().unwrap();
    assert_eq!(stats.files_from_storage, h3.shared.len() + h3.private.len());
    let ids = write_round_ids(&mut r);
    for (s, id) in ids.iter().enumerate() {
        for k in 0u32..100 {
            let key = k.to_be_bytes();
            let got = r.get(*id, &entry(&key)).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(format!("{s}-{k}-2").as_bytes()),
                "state {s} key {k}"
            );
        }
    }
}

/// The ids of the states [`write_round`] registers, registered again.
fn write_round_ids(b: &mut RocksBackend) -> Vec<StateId> {
    (0..STATES)
        .map(|s| {
            b.register_state(&StateDescriptor::new(format!("s{s}"), StateKind::Value))
                .unwrap()
        })
        .collect()
}

#[test]
fn a_failed_download_fails_the_restore_and_leaves_the_backend_empty() {
    /// Fails reading one shared stream.
    struct FailOneRead;
    impl Intercept for FailOneRead {
        fn read(
            &self,
            inner: &dyn CheckpointStorage,
            handle: &StreamHandle,
        ) -> state_core::Result<bytes::Bytes> {
            if handle.file_path().is_some_and(|p| p.starts_with("shared/")) {
                return Err(StateError::io(
                    handle.describe(),
                    io::Error::other("injected download failure"),
                ));
            }
            inner.read(handle)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let f = factory_with_threads(&dir.path().join("local"), 4);
    let fs = fs_storage(&dir.path().join("storage"));
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = create(&f, 0, 1, &clock);
    write_round(&mut b, 1);
    let h = snapshot(&mut b, fs.as_ref(), 1).unwrap().unwrap();
    let failing = InterceptStorage::new(fs.clone(), FailOneRead);
    let mut r = create(&f, 0, 1, &clock);
    let err = r.restore(&[h], &failing).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let ids = write_round_ids(&mut r);
    let key = 7u32.to_be_bytes();
    assert_eq!(r.get(ids[0], &entry(&key)).unwrap(), None);
}
