//! The native RocksDB checkpoint of a snapshot, taken on a thread of its
//! own so the task does not wait for the memtable flush.
//!
//! A native checkpoint flushes the memtables (an SST write and its
//! `fdatasync`) and hard-links the SST files: at 10M keys with a 1% update
//! between checkpoints that is a 16 MB flush, most of the synchronous part
//! (Flink's RocksDB backend flushes on the task thread too). Here the
//! synchronous part writes the value cache back, closes the [`WriteGate`]
//! and starts the checkpoint on a thread; the asynchronous part waits for it
//! ([`NativeCheckpoint::wait`]) before it reads the checkpoint directory.
//!
//! While the gate is closed RocksDB receives no write, so the flush holds
//! exactly what was written before the snapshot: value, reducing and
//! aggregating states keep writing into the value cache (write-back waits
//! until the gate opens, unless the cache is over its budget); a write that
//! must reach RocksDB itself (list and map states, a restore, a new state's
//! column family) waits for the gate ([`WriteGate::wait`]). A keyed
//! aggregation therefore never waits; a job writing list or map state right
//! after a barrier waits at most what the synchronous part used to take.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rocksdb::checkpoint::Checkpoint;
use state_core::{CheckpointId, Result, StateError};

use crate::db::OpenDb;
use crate::rocks_error;

/// Closed while a native checkpoint is being taken: RocksDB takes no
/// writes then (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Time writers spent waiting for the gate, in nanoseconds.
    waited_nanos: AtomicU64,
}

impl WriteGate {
    /// Whether a native checkpoint is being taken now.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    pub(crate) fn open(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.opened.notify_all();
    }

    /// Blocks until no native checkpoint is being taken.
    pub(crate) fn wait(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        if !*closed {
            return;
        }
        let started = Instant::now();
        while *closed {
            closed = self
                .opened
                .wait(closed)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(waited, Ordering::Relaxed);
    }

    /// Time writers have spent waiting for native checkpoints so far.
    pub(crate) fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }
}

/// A native checkpoint being taken on its own thread.
#[derive(Debug)]
pub(crate) struct NativeCheckpoint {
    done: mpsc::Receiver<Result<()>>,
    dir: PathBuf,
}

/// Opens the gate when the checkpoint thread ends, however it ends, after
/// dropping its handle on the database (so the backend has it to itself
/// again once the gate is open).
struct OpenOnDrop {
    db: Option<Arc<OpenDb>>,
    gate: Arc<WriteGate>,
}

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        drop(self.db.take());
        self.gate.open();
    }
}

impl NativeCheckpoint {
    /// Closes `gate` and starts a native checkpoint of `db` into `dir` on a
    /// thread; the gate opens when it is taken or has failed.
    pub(crate) fn start(
        db: Arc<OpenDb>,
        dir: PathBuf,
        id: CheckpointId,
        gate: Arc<WriteGate>,
    ) -> Result<Self> {
        let (tx, done) = mpsc::sync_channel(1);
        gate.close();
        let guard = OpenOnDrop {
            db: Some(db),
            gate: Arc::clone(&gate),
        };
        let target = dir.clone();
        let spawned = std::thread::Builder::new()
            .name("cairn-rocks-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let result = guard
                    .db
                    .as_deref()
                    .ok_or(StateError::Closed("rocks backend database"))
                    .and_then(|db| take(db, &target));
                tracing::debug!(
                    checkpoint_id = id.get(),
                    dir = %target.display(),
                    took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    ok = result.is_ok(),
                    "native rocks checkpoint taken off the task thread"
                );
                drop(guard);
                // The receiver is gone only when the snapshot was dropped
                // unwritten; its directory is removed by the abort.
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => Ok(NativeCheckpoint { done, dir }),
            // The closure, and with it the guard, was dropped: the gate is open.
            Err(e) => Err(StateError::io(
                &dir,
                std::io::Error::new(
                    e.kind(),
                    format!("could not start the native checkpoint thread: {e}"),
                ),
            )),
        }
    }

    /// A checkpoint already in `dir` (unit tests build snapshots on one).
    #[cfg(test)]
    pub(crate) fn ready(dir: &Path) -> Self {
        let (tx, done) = mpsc::sync_channel(1);
        let _ = tx.send(Ok(()));
        NativeCheckpoint {
            done,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until the checkpoint is in its directory, or says why it is not.
    pub(crate) fn wait(&self) -> Result<()> {
        self.done.recv().unwrap_or_else(|_| {
            Err(StateError::io(
                &self.dir,
                std::io::Error::other("the native checkpoint thread ended without a result"),
            ))
        })
    }
}

/// Flushes the memtables of `db` and hard-links its files into `dir`.
fn take(db: &OpenDb, dir: &Path) -> Result<()> {
    Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint(dir))
        .map_err(|e| rocks_error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_on_an_open_gate_returns_at_once_and_a_closed_one_until_it_opens() {
        let gate = Arc::new(WriteGate::default());
        gate.wait();
        assert!(!gate.is_closed());
        assert_eq!(gate.waited(), Duration::ZERO);
        gate.close();
        assert!(gate.is_closed());
        let opener = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                gate.open();
            })
        };
        gate.wait();
        assert!(!gate.is_closed());
        assert!(gate.waited() > Duration::ZERO);
        opener.join().unwrap();
    }
}
