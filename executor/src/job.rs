//! The job builder API, one concept per module in the style of
//! timely-dataflow's `operators/core/*.rs`: [`crate::StreamEnv`]
//! (`stream_env.rs`) starts a job and [`StreamEnv::source`](crate::StreamEnv::source)
//! (`source.rs`) its streams; a [`crate::DataStream`] (`data_stream.rs`) runs
//! `map` / `flat_map` (`map.rs`), `filter` (`filter.rs`), `key_by` into a
//! [`crate::KeyedStream`] (`keyed_stream.rs`), which runs `process`
//! (`process.rs`) and `reduce` / `sum` (`reduce.rs`); every stream ends in a
//! `sink` (`sink.rs`); [`crate::JobHandle`] (`handle.rs`) is the running job,
//! and `savepoint.rs` holds what its savepoint calls take and return.
//!
//! Operators that need no exchange are chained on one thread; `key_by`
//! starts a new stage whose subtasks receive records routed by key group.
//! Every operator has a stable uid that keys its state in checkpoints.
//!
//! The streams share the graph under construction (`env_core.rs`); each
//! operator module adds its methods to the stream types with an `impl`
//! block, so no module imports from one that imports it back.

pub(crate) mod data_stream;
pub(crate) mod env_core;
pub(crate) mod filter;
pub(crate) mod handle;
pub(crate) mod keyed_stream;
pub(crate) mod map;
pub(crate) mod process;
pub(crate) mod reduce;
pub(crate) mod savepoint;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod stream_env;
