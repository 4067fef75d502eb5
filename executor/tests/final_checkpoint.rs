//! The final checkpoint of a bounded job (Flink 1.14+): taken after every
//! record went through (and after any checkpoint in flight), completed and
//! notified to the sink before the job is FINISHED; and a checkpoint still
//! in flight when a newer one completes is aborted as overtaken, not counted
//! as a failure.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use executor::sink::{Sink, SinkContext};
use executor::{
    CheckpointConfig, JobConfig, JobEvent, JobStatus, RestartStrategyConfig, StreamEnv,
};
use job_support::NumberLog;
use state_core::{
    CheckpointId, CheckpointOutput, CheckpointStorage, JobId, MemoryCheckpointStorage,
    OperatorStateStore, StateScope,
};
use state_testkit::{Intercept, InterceptStorage};

/// What the sink saw, in order: `w` per record, `s<n>` at barrier n,
/// `c<n>` at the completion of n, `f` at the end of input.
#[derive(Clone, Default)]
struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Sink<u64> for Trace {
    fn open(&mut self, _: SinkContext, _: Option<&OperatorStateStore>) -> executor::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: u64) -> executor::Result<()> {
        self.push("w".into());
        Ok(())
    }
    fn snapshot_state(
        &mut self,
        id: CheckpointId,
        _: &mut OperatorStateStore,
    ) -> executor::Result<()> {
        self.push(format!("s{id}"));
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> executor::Result<()> {
        self.push(format!("c{id}"));
        Ok(())
    }
    fn finish(&mut self) -> executor::Result<()> {
        self.push("f".into());
        Ok(())
    }
}

/// Holds the streams of one checkpoint until released.
#[derive(Default)]
struct Hold {
    checkpoint: AtomicU64,
    released: Mutex<bool>,
    wake: Condvar,
}

impl Hold {
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

struct Held(Arc<Hold>);

impl Intercept for Held {
    fn create_output(
        &self,
        inner: &dyn CheckpointStorage,
        id: CheckpointId,
        scope: StateScope,
        name: &str,
    ) -> state_core::Result<Box<dyn CheckpointOutput>> {
        if id.get() == self.0.checkpoint.load(Ordering::SeqCst) {
            let mut released = self.0.released.lock().unwrap();
            while !*released {
                released = self.0.wake.wait(released).unwrap();
            }
        }
        inner.create_output(id, scope, name)
    }
}

fn config() -> JobConfig {
    let mut config = JobConfig::new(JobId::new("final").unwrap());
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_secs(3600)));
    config.restart = Some(RestartStrategyConfig::None);
    config
}

#[test]
fn the_last_records_are_committed_before_the_job_finishes() {
    let storage = Arc::new(MemoryCheckpointStorage::default());
    let env = StreamEnv::new(config(), HeapBackendFactory::default(), storage);
    let log = NumberLog::with_range(100);
    let trace = Trace::default();
    let sink = trace.clone();
    env.source("numbers", log.source(true, 0))
        .sink("trace", move |_: SinkContext| {
            Ok(Box::new(sink.clone()) as Box<dyn Sink<u64>>)
        });
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let ids: Vec<u64> = result.checkpoints.iter().map(|c| c.id.get()).collect();
    assert_eq!(ids, [1], "one final checkpoint, no periodic one in an hour");
    let events = trace.events();
    let tail: Vec<&str> = events.iter().skip(100).map(String::as_str).collect();
    assert_eq!(events.iter().filter(|e| *e == "w").count(), 100);
    // Every record, then the end of input, then the final barrier, then its
    // completion: the sink commits everything before FINISHED.
    assert_eq!(tail, ["f", "s1", "c1"]);
}

#[test]
fn a_checkpoint_overtaken_by_a_newer_one_is_aborted_without_failing_the_job() {
    let hold = Arc::new(Hold::default());
    hold.checkpoint.store(1, Ordering::SeqCst);
    let storage = Arc::new(InterceptStorage::new(
        Arc::new(MemoryCheckpointStorage::default()),
        Held(hold.clone()),
    ));
    let mut config = config();
    if let Some(c) = config.checkpointing.as_mut() {
        c.max_concurrent = 2;
    }
    let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
    let log = NumberLog::with_range(1_000);
    env.source("numbers", log.source(false, 10))
        .key_by(|v: &u64| v % 5)
        .sum("sum", |v| *v as i64, |v, s| *v = s as u64)
        .sink("trace", |_: SinkContext| {
            Ok(Box::new(Trace::default()) as Box<dyn Sink<u64>>)
        });
    let job = env.start().unwrap();
    let events = job.events();
    // Checkpoint 1's snapshot is held; checkpoint 2, triggered after it,
    // completes first. Then 1 is let go.
    assert_eq!(job.trigger_checkpoint().unwrap(), CheckpointId(1));
    assert_eq!(job.trigger_checkpoint().unwrap(), CheckpointId(2));
    let overtaken = loop {
        match events.recv_timeout(Duration::from_secs(60)).unwrap() {
            JobEvent::CheckpointCompleted(info) => assert_eq!(info.id, CheckpointId(2)),
            JobEvent::CheckpointFailed { id, reason } => break (id, reason),
            _ => {}
        }
    };
    hold.release();
    job.cancel();
    let result = job.wait().unwrap();
    assert_eq!(overtaken.0, CheckpointId(1));
    assert!(
        overtaken
            .1
            .contains("checkpoint 2, triggered after it, completed first"),
        "{}",
        overtaken.1
    );
    assert_eq!(result.status, JobStatus::Canceled, "{:?}", result.failure);
    assert_eq!(result.restarts, 0);
    let ids: Vec<u64> = result.checkpoints.iter().map(|c| c.id.get()).collect();
    assert_eq!(ids, [2]);
}
