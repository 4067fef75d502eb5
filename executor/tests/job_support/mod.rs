//! Sources and sinks for the executor's job tests.
//!
//! A panic here is a test failure, so unwrapping is fine.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor::Result;
use executor::sink::{Sink, SinkContext};
use executor::source::{Source, SourceContext, SourcePoll};
use state_core::OperatorStateMode;
use state_core::OperatorStateStore;

/// A shared, growing log of numbers that [`LogSource`]s read; subtask `i` of
/// `p` reads the indexes `i, i + p, ...`. Its position (records read) is
/// checkpointed as split operator state `(subtask, position)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NumberLog {
    records: Arc<Mutex<Vec<u64>>>,
    /// Every (subtask, position) a source was opened at.
    pub opened_at: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl NumberLog {
    pub(crate) fn with_range(n: u64) -> Self {
        let log = NumberLog::default();
        log.append(0..n);
        log
    }

    pub(crate) fn append(&self, values: impl IntoIterator<Item = u64>) {
        self.records.lock().unwrap().extend(values);
    }

    /// A source factory; with `bounded` the source ends at the log's end,
    /// otherwise it waits for more. Every `idle_every` records it reports
    /// Idle once, so checkpoints interleave with records.
    pub(crate) fn source(
        &self,
        bounded: bool,
        idle_every: u64,
    ) -> impl Fn(SourceContext) -> Result<Box<dyn Source<u64>>> + Send + Sync + 'static {
        let log = self.clone();
        move |ctx: SourceContext| {
            Ok(Box::new(LogSource {
                log: log.clone(),
                ctx,
                position: 0,
                bounded,
                idle_every,
                since_idle: 0,
            }) as Box<dyn Source<u64>>)
        }
    }
}

struct LogSource {
    log: NumberLog,
    ctx: SourceContext,
    /// Records of this subtask read so far.
    position: u64,
    bounded: bool,
    idle_every: u64,
    since_idle: u64,
}

impl Source<u64> for LogSource {
    fn open(&mut self, ctx: SourceContext, restored: Option<&OperatorStateStore>) -> Result<()> {
        self.ctx = ctx;
        if let Some(state) = restored {
            let positions: Vec<(u32, u64)> = state.get_typed("position")?;
            for (subtask, position) in positions {
                if subtask == ctx.subtask {
                    self.position = position;
                }
            }
        }
        self.log
            .opened_at
            .lock()
            .unwrap()
            .push((ctx.subtask, self.position));
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll<u64>> {
        if self.idle_every > 0 && self.since_idle >= self.idle_every {
            self.since_idle = 0;
            return Ok(SourcePoll::Idle);
        }
        let index = self.position * u64::from(self.ctx.parallelism) + u64::from(self.ctx.subtask);
        let next = self
            .log
            .records
            .lock()
            .unwrap()
            .get(index as usize)
            .copied();
        match next {
            Some(v) => {
                self.position += 1;
                self.since_idle += 1;
                Ok(SourcePoll::Record(v))
            }
            None if self.bounded => Ok(SourcePoll::End),
            None => Ok(SourcePoll::Idle),
        }
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<()> {
        state.register("position", OperatorStateMode::Split)?;
        state.update_typed("position", &[(self.ctx.subtask, self.position)])?;
        Ok(())
    }
}

/// Collects everything written, across restarts.
#[derive(Debug)]
pub(crate) struct Collect<T> {
    pub records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collect<T> {
    fn clone(&self) -> Self {
        Collect {
            records: self.records.clone(),
        }
    }
}

impl<T: Clone + Send + 'static> Collect<T> {
    pub(crate) fn new() -> Self {
        Collect {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<T> {
        self.records.lock().unwrap().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Waits (up to a minute, then panics) until at least `n` records arrived.
    pub(crate) fn wait_for(&self, n: usize) {
        let start = Instant::now();
        while self.len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {n} records"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub(crate) fn sink(
        &self,
    ) -> impl Fn(SinkContext) -> Result<Box<dyn Sink<T>>> + Send + Sync + 'static {
        let records = self.records.clone();
        move |_ctx: SinkContext| {
            Ok(Box::new(Collect {
                records: records.clone(),
            }) as Box<dyn Sink<T>>)
        }
    }
}

impl<T: Send> Sink<T> for Collect<T> {
    fn open(&mut self, _ctx: SinkContext, _restored: Option<&OperatorStateStore>) -> Result<()> {
        Ok(())
    }

    fn write(&mut self, record: T) -> Result<()> {
        self.records.lock().unwrap().push(record);
        Ok(())
    }
}

/// A map function that fails once, at the record `at`.
pub(crate) fn fail_once_at(
    at: Option<u64>,
) -> impl Fn(u64) -> std::result::Result<u64, executor::UserError> + Send + Sync {
    let failed = Arc::new(AtomicBool::new(false));
    move |v| {
        if Some(v) == at && !failed.swap(true, Ordering::SeqCst) {
            Err(format!("injected failure at record {v}").into())
        } else {
            Ok(v)
        }
    }
}
