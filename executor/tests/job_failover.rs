//! Failure and restart behaviour through the public API: the WordCount
//! failure-and-recovery walk-through (checkpoint, poison record, three restarts, FAILED,
//! then recovery from the retained checkpoint), panics, and invalid jobs.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod job_support;

use std::sync::Arc;
use std::time::Duration;

use backend_heap::HeapBackendFactory;
use executor::{
    CheckpointConfig, ExecutorError, JobConfig, JobEvent, JobStatus, RestartStrategyConfig,
    StreamEnv,
};
use job_support::{Collect, NumberLog};
use state_core::ExternalizedCheckpointCleanup;
use state_core::{CheckpointId, CheckpointStorage, JobId, MemoryCheckpointStorage};

const POISON: u64 = 999;

fn config(restart: RestartStrategyConfig) -> JobConfig {
    let mut config = JobConfig::new(JobId::new("word-count").unwrap());
    let mut checkpoints = CheckpointConfig::every(Duration::from_secs(3600));
    checkpoints.cleanup = ExternalizedCheckpointCleanup::RetainOnCancellation;
    config.checkpointing = Some(checkpoints);
    config.restart = Some(restart);
    config
}

fn word_count(
    env: &StreamEnv<HeapBackendFactory>,
    log: &NumberLog,
    bounded: bool,
    filter_poison: bool,
    out: &Collect<(u64, u64)>,
) {
    env.source("log", log.source(bounded, 0))
        .filter("drop-poison", move |v| Ok(!(filter_poison && *v == POISON)))
        .map("parse", |v| Ok((v, 1u64)))
        .key_by(|(word, _)| *word)
        .sum("sum", |t| t.1 as i64, |t, v| t.1 = v as u64)
        // Failing in the sink's chain makes the outputs before the poison
        // record deterministic (they are written before it is processed).
        .map("check", |(word, n)| {
            if word == POISON {
                Err("custom error flag, restart application".into())
            } else {
                Ok((word, n))
            }
        })
        .sink("print", out.sink());
}

#[test]
fn wordcount_fails_after_three_restarts_and_recovers_from_the_retained_checkpoint() {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::default());
    let log = NumberLog::default();
    log.append([1, 2, 1]);
    let out = Collect::new();
    let env = StreamEnv::new(
        config(RestartStrategyConfig::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(1),
        }),
        HeapBackendFactory::default(),
        storage.clone(),
    );
    word_count(&env, &log, false, false, &out);
    let job = env.start().unwrap();
    let events = job.events();
    out.wait_for(3);
    let checkpoint = job.trigger_checkpoint().unwrap();
    job.wait_for_checkpoint(checkpoint).unwrap();
    log.append([1, 3, POISON]);
    let result = job.wait().unwrap();

    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.restarts, 3);
    let failure = result.failure.unwrap();
    assert!(
        failure.contains("custom error flag") && failure.contains("check"),
        "{failure}"
    );
    // Outputs as in the walk-through's table: the records after the checkpoint are
    // replayed on every restart (at-least-once output), the state is not.
    let mut expected = vec![(1, 1), (2, 1), (1, 2)];
    for _ in 0..4 {
        expected.extend([(1, 3), (3, 1)]);
    }
    assert_eq!(out.snapshot(), expected);

    let events: Vec<JobEvent> = events.try_iter().collect();
    let mut expected_events = vec![
        JobEvent::StatusChanged {
            from: JobStatus::Created,
            to: JobStatus::Running,
        },
        JobEvent::CheckpointTriggered {
            id: checkpoint,
            timestamp_millis: 0,
        },
    ];
    for attempt in 1..=3 {
        expected_events.extend([
            JobEvent::StatusChanged {
                from: JobStatus::Running,
                to: JobStatus::Failing,
            },
            JobEvent::StatusChanged {
                from: JobStatus::Failing,
                to: JobStatus::Restarting,
            },
            JobEvent::Restarting {
                attempt,
                delay: Duration::from_millis(1),
            },
            JobEvent::Restored { checkpoint },
            JobEvent::StatusChanged {
                from: JobStatus::Restarting,
                to: JobStatus::Running,
            },
        ]);
    }
    expected_events.extend([
        JobEvent::StatusChanged {
            from: JobStatus::Running,
            to: JobStatus::Failing,
        },
        JobEvent::StatusChanged {
            from: JobStatus::Failing,
            to: JobStatus::Failed,
        },
    ]);
    // Compare without timestamps, completion details and task failures,
    // which are checked separately.
    let shape: Vec<JobEvent> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::CheckpointTriggered { id, .. } => Some(JobEvent::CheckpointTriggered {
                id: *id,
                timestamp_millis: 0,
            }),
            JobEvent::CheckpointCompleted(_) | JobEvent::TaskFailed { .. } => None,
            other => Some(other.clone()),
        })
        .collect();
    assert_eq!(shape, expected_events);
    let failed_tasks: Vec<&JobEvent> = events
        .iter()
        .filter(|e| matches!(e, JobEvent::TaskFailed { .. }))
        .collect();
    assert_eq!(failed_tasks.len(), 4);
    assert!(matches!(failed_tasks[0], JobEvent::TaskFailed { task, .. } if task == "check (1/1)"));

    // The failed job keeps its checkpoint; restoring it with the poison
    // record filtered out continues the counts.
    assert_eq!(storage.list_checkpoints().unwrap(), vec![checkpoint]);
    let metadata = storage.read_metadata(checkpoint).unwrap();
    let out2 = Collect::new();
    let env = StreamEnv::new(
        config(RestartStrategyConfig::None),
        HeapBackendFactory::default(),
        storage.clone(),
    )
    .restore_from(metadata);
    word_count(&env, &log, true, true, &out2);
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Finished);
    assert_eq!(out2.snapshot(), vec![(1, 3), (3, 1)]);
}

#[test]
fn a_panicking_task_fails_the_job_without_restart_strategy() {
    let mut config = JobConfig::new(JobId::new("panics").unwrap());
    config.parallelism = 2;
    let env = StreamEnv::new(
        config,
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::default()),
    );
    let out = Collect::<u64>::new();
    env.source("numbers", NumberLog::with_range(1000).source(true, 0))
        .map("boom", |v| {
            if v == 500 {
                panic!("boom at {v}")
            } else {
                Ok(v)
            }
        })
        .sink("out", out.sink());
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.restarts, 0);
    let failure = result.failure.unwrap();
    assert!(failure.contains("panicked: boom at 500"), "{failure}");
}

#[test]
fn bounded_job_finishes_and_reports_metrics() {
    let mut config = JobConfig::new(JobId::new("metrics").unwrap());
    config.parallelism = 2;
    let env = StreamEnv::new(
        config,
        HeapBackendFactory::default(),
        Arc::new(MemoryCheckpointStorage::default()),
    );
    let out = Collect::<(u64, u64)>::new();
    env.source("numbers", NumberLog::with_range(1000).source(true, 0))
        .filter("even", |v| Ok(v % 2 == 0))
        .flat_map("twice", |v, out| {
            out.push(v);
            out.push(v);
            Ok(())
        })
        .key_by(|v| v % 7)
        .process_count("count")
        .sink("out", out.sink());
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Finished);
    assert_eq!(out.len(), 1000);
    let ops = &result.metrics.operators;
    let by_uid = |uid: &str| ops.iter().find(|o| o.uid == uid).unwrap().clone();
    assert_eq!(by_uid("numbers").records_out, 1000);
    assert_eq!(
        (by_uid("even").records_in, by_uid("even").records_out),
        (1000, 500)
    );
    assert_eq!(by_uid("twice").records_out, 1000);
    assert_eq!(by_uid("count").records_in, 1000);
    assert_eq!(by_uid("out").records_in, 1000);
}

/// A keyed count through the generic `reduce`.
trait CountExt<F: state_core::BackendFactory> {
    fn process_count(self, uid: &str) -> executor::DataStream<(u64, u64), F>;
}

impl<F: state_core::BackendFactory> CountExt<F> for executor::KeyedStream<u64, u64, F> {
    fn process_count(self, uid: &str) -> executor::DataStream<(u64, u64), F> {
        self.process(uid, Counter(None))
    }
}

#[derive(Clone)]
struct Counter(Option<state_core::typed::ValueState<u64>>);

impl<B: state_core::KeyedStateBackend> executor::KeyedProcessFunction<B> for Counter {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64);

    fn open(
        &mut self,
        state: &mut state_core::typed::KeyedState<B>,
    ) -> Result<(), executor::UserError> {
        self.0 = Some(state.value_state(&state_core::typed::ValueStateDescriptor::new("n"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut executor::KeyedContext<'_, B, u64>,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), executor::UserError> {
        let state = self.0.as_ref().ok_or("not open")?;
        let n = state.value(ctx.state())?.unwrap_or(0) + 1;
        state.update(ctx.state(), &n)?;
        assert_eq!(*ctx.current_key(), value % 7);
        out.push((*ctx.current_key(), n));
        Ok(())
    }
}

#[test]
fn invalid_jobs_are_rejected_with_the_operator_named() {
    let storage = Arc::new(MemoryCheckpointStorage::default());
    let env = StreamEnv::new(
        JobConfig::new(JobId::new("dup").unwrap()),
        HeapBackendFactory::default(),
        storage.clone(),
    );
    let out = Collect::<u64>::new();
    env.source("same", NumberLog::with_range(1).source(true, 0))
        .map("same", Ok)
        .sink("out", out.sink());
    let err = env.execute().unwrap_err();
    assert!(
        matches!(&err, ExecutorError::InvalidJob(m) if m.contains("\"same\" is used twice")),
        "{err}"
    );

    let env = StreamEnv::new(
        JobConfig::new(JobId::new("nosink").unwrap()),
        HeapBackendFactory::default(),
        storage.clone(),
    );
    let _dangling = env
        .source("lonely", NumberLog::with_range(1).source(true, 0))
        .map("m", Ok);
    let err = env.execute().unwrap_err();
    assert!(err.to_string().contains("no sink"), "{err}");

    let env = StreamEnv::new(
        JobConfig::new(JobId::new("baduid").unwrap()),
        HeapBackendFactory::default(),
        storage,
    );
    env.source("bad uid/", NumberLog::with_range(1).source(true, 0))
        .sink("out", out.sink());
    assert!(env.execute().unwrap_err().to_string().contains("bad uid/"));
    let _ = CheckpointId(0);
}

#[test]
fn an_error_no_restart_can_fix_fails_the_job_at_once() {
    // A sink that cannot be created: the same on every attempt.
    let mut config = JobConfig::new(JobId::new("permanent").unwrap());
    config.checkpointing = Some(CheckpointConfig::every(Duration::from_millis(10)));
    config.restart = Some(RestartStrategyConfig::FixedDelay {
        attempts: u32::MAX,
        delay: Duration::from_millis(1),
    });
    let storage = Arc::new(MemoryCheckpointStorage::default());
    let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
    let log = NumberLog::with_range(10);
    env.source("numbers", log.source(true, 0)).sink(
        "broken",
        |_: executor::sink::SinkContext| -> executor::Result<Box<dyn executor::sink::Sink<u64>>> {
            Err(ExecutorError::InvalidJob(
                "sink \"broken\": its target can never be opened".into(),
            ))
        },
    );
    let result = env.execute().unwrap();
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.restarts, 0);
    assert!(result.permanent_failure);
    let failure = result.failure.unwrap();
    assert!(
        failure.contains("can never be opened") && failure.contains("no restart can fix"),
        "{failure}"
    );
}
