//! # cairn executor
//!
//! A small, real streaming runtime in one process, driving cairn's state
//! backends the way Flink's runtime drives its own:
//!
//! - [`StreamEnv`] builds a dataflow — sources, `map`, `flat_map`, `filter`,
//!   `key_by`, `process` (keyed state and timers), `reduce` / `sum`, sinks —
//!   whose operators carry stable uids that key their state in checkpoints.
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
//! - [`log`] is a replayable partitioned log on local files (a Kafka topic's
//!   role) with its [`log::LogSource`]; [`sink`] has print, file and collect
//!   sinks; [`JobConfig::validate`] checks a job's settings against the
//!   ranges Flink allows (front ends such as `cairn` parse them).
//!
//! # Place in the workspace
//! `state-core <- backend-* <- executor <- cli`. The executor codes against
//! `state-core`'s traits only ([`state_core::BackendFactory`],
//! [`state_core::CheckpointStorage`]); backends appear here only as
//! dev-dependencies, and `cli` chooses the concrete one.
//!
//! # Example
//! See [`job`] for a complete, compiled WordCount.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod job;
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
pub use job::{
    CompletedCheckpointInfo, DataStream, JobCanceller, JobEvent, JobHandle, JobResult, JobStatus,
    KeyedContext, KeyedProcessFunction, KeyedStream, StreamEnv, TimeDomain,
};
pub use metrics::{JobMetrics, OperatorMetrics};
/// The barrier handler of tasks with several inputs (deterministic state machine).
pub use runtime::barrier;
/// The checkpoint coordinator (deterministic state machine).
pub use runtime::coordinator;
