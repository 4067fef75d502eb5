//! A job returns only after every thread it started is done: an
//! asynchronous snapshot still writing when the job is cancelled finishes
//! before `JobHandle::wait` returns, so nothing writes into checkpoint
//! storage after the job ended (the storage's owner may remove it then).

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use crossbeam_channel::Sender;
use executor::{CheckpointConfig, JobConfig, JobStatus, RestartStrategyConfig, StreamEnv};
use job_support::{Collect, NumberLog};
use state_core::{
    CheckpointId, CheckpointOutput, CheckpointStorage, JobId, MemoryCheckpointStorage, Result,
    StateScope, StreamHandle,
};
use state_testkit::{Intercept, InterceptStorage};

/// Only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// Streams that take a while to open, counted while they are written.
struct Slow {
    writing: Arc<AtomicUsize>,
    opened: Mutex<Sender<()>>,
}

struct SlowOutput {
    inner: Box<dyn CheckpointOutput>,
    writing: Arc<AtomicUsize>,
}

impl Write for SlowOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointOutput for SlowOutput {
    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn close(self: Box<Self>) -> Result<StreamHandle> {
        let handle = self.inner.close();
        self.writing.fetch_sub(1, Ordering::SeqCst);
        handle
    }
}

impl Intercept for Slow {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> Result<Box<dyn CheckpointOutput>> {
        self.writing.fetch_add(1, Ordering::SeqCst);
        let _ = self.opened.lock().unwrap().send(());
        // Long enough for the job to be cancelled meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Box::new(SlowOutput {
            inner: inner.create_output(id, scope, name)?,
            writing: self.writing.clone(),
        }))
    }
}

#[test]
fn a_cancelled_job_returns_after_its_snapshot_threads() {
    let mut config = JobConfig::new(JobId::new("job-end").unwrap());
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(3600)));
    config.restart = Some(RestartStrategyConfig::None);
    let (opened_tx, opened) = crossbeam_channel::unbounded();
    let writing = Arc::new(AtomicUsize::new(0));
    let storage = Arc::new(InterceptStorage::new(
        Arc::new(MemoryCheckpointStorage::default()),
        Slow {
            writing: writing.clone(),
            opened: Mutex::new(opened_tx),
        },
    ));
    let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
    let log = NumberLog::with_range(100);
    let out = Collect::<(u64, u64)>::new();
    env.source("numbers", log.source(false, 0))
        .map("pair", |v| Ok((v, 1u64)))
        .key_by(|(k, _)| *k)
        .sum("count", |t| t.1 as i64, |t, v| t.1 = v as u64)
        .sink("out", out.sink());
    let job = env.start().unwrap();
    out.wait_for(100);

    job.trigger_checkpoint().unwrap();
    // A snapshot thread is opening its first stream: cancel the job now.
    opened.recv_timeout(PATIENCE).unwrap();
    job.cancel();
    let result = job.wait().unwrap();

    assert_eq!(result.status, JobStatus::Canceled);
    assert_eq!(
        writing.load(Ordering::SeqCst),
        0,
        "a snapshot was still writing after the job returned"
    );
}
