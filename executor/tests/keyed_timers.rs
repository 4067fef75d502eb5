//! A KeyedProcessFunction with processing-time timers (driven by an
//! injected clock) and event-time timers (all fire at the end of a bounded
//! input), the timers surviving a checkpoint and restore.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::sync::Arc;

use backend_heap::HeapBackendFactory;
use executor::{
    JobConfig, JobStatus, KeyedContext, KeyedProcessFunction, StreamEnv, TimeDomain, UserError,
};
use job_support::{Collect, NumberLog};
use state_core::typed::{KeyedState, ValueState, ValueStateDescriptor};
use state_core::{
    CheckpointStorage, JobId, KeyedStateBackend, ManualClock, MemoryCheckpointStorage,
};

/// Sums the values per key and emits (key, sum, domain) when the key's timer
/// (registered at its first record) fires.
#[derive(Clone)]
struct Delayed {
    sum: Option<ValueState<u64>>,
    domain: TimeDomain,
    /// When the timers fire.
    at: u64,
}

impl<B: KeyedStateBackend> KeyedProcessFunction<B> for Delayed {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64, TimeDomain);

    fn open(&mut self, state: &mut KeyedState<B>) -> Result<(), UserError> {
        self.sum = Some(state.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, B, u64>,
        _out: &mut Vec<Self::Out>,
    ) -> Result<(), UserError> {
        let sum = self.sum.as_ref().ok_or("not open")?;
        let old = sum.value(ctx.state())?;
        sum.update(ctx.state(), &(old.unwrap_or(0) + value))?;
        if old.is_none() {
            assert!(ctx.current_processing_time() < self.at);
            let at = self.at;
            match self.domain {
                TimeDomain::ProcessingTime => {
                    ctx.timer_service().register_processing_time_timer(at)?
                }
                TimeDomain::EventTime => ctx.timer_service().register_event_time_timer(at)?,
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _timestamp: u64,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, B, u64>,
        out: &mut Vec<Self::Out>,
    ) -> Result<(), UserError> {
        let sum = self.sum.as_ref().ok_or("not open")?;
        let total = sum.value(ctx.state())?.unwrap_or(0);
        out.push((*ctx.current_key(), total, domain));
        Ok(())
    }
}

fn config(parallelism: u32) -> JobConfig {
    let mut config = JobConfig::new(JobId::new("timers").unwrap());
    config.parallelism = parallelism;
    config
}

#[test]
fn processing_time_timers_fire_when_the_clock_passes_them() {
    let clock = Arc::new(ManualClock::new(1_000));
    let env = StreamEnv::new(
        config(2),
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::default()),
    )
    .with_clock(clock.clone());
    let log = NumberLog::with_range(40);
    let out = Collect::new();
    env.source("numbers", log.source(false, 0))
        .key_by(|v| v % 4)
        .process(
            "delayed",
            Delayed {
                sum: None,
                domain: TimeDomain::ProcessingTime,
                at: 1_100,
            },
        )
        .sink("out", out.sink());
    let job = env.start().unwrap();
    // Every record is in before the clock moves: the counters reach 40 records.
    while job
        .metrics()
        .operators
        .iter()
        .find(|o| o.uid == "delayed")
        .unwrap()
        .records_in
        < 40
    {
        std::thread::yield_now();
    }
    assert_eq!(out.len(), 0, "no timer is due before the clock passes 1100");
    clock.set(1_100);
    out.wait_for(4);
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    let mut fired = out.snapshot();
    fired.sort_unstable_by_key(|(k, _, _)| *k);
    let expected: Vec<(u64, u64, TimeDomain)> = (0..4)
        .map(|k| {
            (
                k,
                (0..40).filter(|v| v % 4 == k).sum(),
                TimeDomain::ProcessingTime,
            )
        })
        .collect();
    assert_eq!(fired, expected);
}

#[test]
fn event_time_timers_fire_at_end_of_input_and_survive_a_restore() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let clock = Arc::new(ManualClock::new(5));
    // First run: register timers, checkpoint, cancel (timers never fired).
    let mut cfg = config(1);
    let mut checkpoints = executor::CheckpointConfig::every(std::time::Duration::from_secs(3600));
    checkpoints.cleanup = state_core::ExternalizedCheckpointCleanup::RetainOnCancellation;
    cfg.checkpointing = Some(checkpoints);
    let env = StreamEnv::new(cfg.clone(), HeapBackendFactory::default(), storage.clone())
        .with_clock(clock.clone());
    let log = NumberLog::with_range(10);
    let out = Collect::new();
    env.source("numbers", log.source(false, 0))
        .key_by(|v| v % 2)
        .process(
            "delayed",
            Delayed {
                sum: None,
                domain: TimeDomain::EventTime,
                at: 100,
            },
        )
        .sink("out", out.sink());
    let job = env.start().unwrap();
    while job
        .metrics()
        .operators
        .iter()
        .find(|o| o.uid == "delayed")
        .unwrap()
        .records_in
        < 10
    {
        std::thread::yield_now();
    }
    let id = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(id).unwrap();
    job.cancel();
    job.wait().unwrap();
    assert_eq!(out.len(), 0);

    // Second run from the checkpoint over a bounded input with no new
    // records: the restored event-time timers fire at the end of input.
    let out2 = Collect::new();
    let env = StreamEnv::new(cfg, HeapBackendFactory::default(), storage.clone())
        .with_clock(clock)
        .restore_from(storage.read_metadata(id).unwrap());
    env.source("numbers", log.source(true, 0))
        .key_by(|v| v % 2)
        .process(
            "delayed",
            Delayed {
                sum: None,
                domain: TimeDomain::EventTime,
                at: 100,
            },
        )
        .sink("out", out2.sink());
    assert_eq!(env.execute().unwrap().status, JobStatus::Finished);
    let mut fired = out2.snapshot();
    fired.sort_unstable_by_key(|(k, _, _)| *k);
    assert_eq!(
        fired,
        vec![
            (0, 20, TimeDomain::EventTime),
            (1, 25, TimeDomain::EventTime)
        ]
    );
}
