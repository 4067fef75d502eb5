//! # cairn executor
//!
//! A small, real streaming runtime in one process, driving cairn's state
//! backends the way Flink's runtime drives its own:
//!
//! - [`StreamEnv`] builds a dataflow — sources, `map`, `flat_map`, `filter`,
//!   `key_by`, `process` (keyed state and timers, the [`process`] API),
//!   `reduce` / `sum`, sinks — whose operators carry stable uids that key
//!   their state in checkpoints. Each operator family has its own module
//!   under `job/`, with an example on each method.
//! - Subtasks run on threads; operators that need no exchange are chained on
//!   one thread; `key_by` routes batches by key group over bounded channels,
//!   so a slow sink backpressures the sources.
//! - The checkpoint [`coordinator`] triggers sources, which snapshot their
//!   offsets and emit barriers; tasks align barriers ([`barrier`]) in
//!   exactly-once mode, snapshot their backends (synchronous part on the task
//!   thread, the write on another), acknowledge, and are notified when the
//!   checkpoint completes.
//! - A failing task fails the attempt; the [`restart`] strategy decides, and
//!   every task restores from the latest completed checkpoint while sources
//!   seek to its offsets.
//! - [`source`] and [`sink`] are the contracts of inputs and outputs, and
//!   `sink` has print, file and collect sinks; [`log`] is a replayable
//!   partitioned log on local files (a Kafka topic's role) with its
//!   [`log::LogSource`].
//! - [`JobConfig`] holds parallelism, checkpointing and restart settings with
//!   Flink's defaults; [`JobConfig::validate`] checks them against the ranges
//!   Flink allows. Parsing them from flags is the front end's job (`cli`).
//!
//! # Place in the workspace
//! `state-core <- backend-* <- executor <- cli`. The executor codes against
//! `state-core`'s traits only ([`state_core::BackendFactory`],
//! [`state_core::CheckpointStorage`]); backends appear here only as
//! dev-dependencies, and `cli` chooses the concrete one.
//!
//! # Example
//!
//! A WordCount over a small checkpointed source, with keyed state in the
//! heap backend and checkpoints in memory:
//!
//! ```
//! use std::sync::Arc;
//!
//! use backend_heap::HeapBackendFactory;
//! use executor::sink::collect::CollectSink;
//! use executor::source::{Source, SourceContext, SourcePoll};
//! use executor::{JobConfig, JobStatus, StreamEnv};
//! use state_core::OperatorStateMode;
//! use state_core::OperatorStateStore;
//! use state_core::{JobId, MemoryCheckpointStorage};
//!
//! /// Reads a fixed list of lines; its offset is checkpointed.
//! struct Lines {
//!     lines: Vec<&'static str>,
//!     offset: usize,
//! }
//!
//! impl Source<String> for Lines {
//!     fn open(&mut self, _: SourceContext, restored: Option<&OperatorStateStore>) -> executor::Result<()> {
//!         if let Some(state) = restored {
//!             self.offset = state.get_typed::<usize>("offset")?.first().copied().unwrap_or(0);
//!         }
//!         Ok(())
//!     }
//!
//!     fn poll_next(&mut self) -> executor::Result<SourcePoll<String>> {
//!         let Some(line) = self.lines.get(self.offset) else {
//!             return Ok(SourcePoll::End);
//!         };
//!         self.offset += 1;
//!         Ok(SourcePoll::Record(line.to_string()))
//!     }
//!
//!     fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> executor::Result<()> {
//!         state.register("offset", OperatorStateMode::Split)?;
//!         Ok(state.update_typed("offset", &[self.offset])?)
//!     }
//! }
//!
//! # fn main() -> executor::Result<()> {
//! let config = JobConfig::new(JobId::new("word-count")?);
//! let storage = Arc::new(MemoryCheckpointStorage::default());
//! let env = StreamEnv::new(config, HeapBackendFactory::default(), storage);
//! let (sink, counts) = CollectSink::new();
//! env.source("lines", |_: SourceContext| {
//!     Ok(Box::new(Lines { lines: vec!["a b", "a c"], offset: 0 }) as Box<dyn Source<String>>)
//! })
//! .flat_map("split", |line: String, out: &mut Vec<(String, i64)>| {
//!     out.extend(line.split(' ').map(|word| (word.to_owned(), 1)));
//!     Ok(())
//! })
//! .key_by(|(word, _)| word.clone())
//! .sum("count", |(_, n)| *n, |(_, n), sum| *n = sum)
//! .sink("collect", sink);
//!
//! let result = env.execute()?;
//! assert_eq!(result.status, JobStatus::Finished);
//! let expected = [("a", 1), ("b", 1), ("a", 2), ("c", 1)];
//! assert_eq!(counts.snapshot(), expected.map(|(w, n)| (w.to_owned(), n)));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
mod job;
pub mod log;
pub mod metrics;
pub mod process;
pub mod restart;
mod runtime;
pub mod sink;
pub mod source;

pub use config::{
    CheckpointConfig, CheckpointingMode, InvalidSetting, JobConfig, RestartStrategyConfig, Setting,
    SettingProblem,
};
pub use error::{ExecutorError, Result, UserError};
pub use job::data_stream::DataStream;
pub use job::handle::{JobCanceller, JobController, JobHandle};
pub use job::keyed_stream::KeyedStream;
pub use job::savepoint::{SavepointInfo, SavepointTarget};
pub use job::stream_env::StreamEnv;
pub use metrics::{JobMetrics, OperatorMetrics};
pub use process::{KeyedContext, KeyedProcessFunction, TimeDomain};
/// The barrier handler of tasks with several inputs (deterministic state machine).
pub use runtime::barrier;
/// The checkpoint coordinator (deterministic state machine).
pub use runtime::coordinator;
pub use runtime::events::{CompletedCheckpointInfo, JobEvent, JobResult, JobStatus};
