//! cairn as the state backend of [timely dataflow]: keyed state in a cairn
//! backend for the key groups each worker owns, and Flink-grade
//! checkpoints taken from timely's frontiers instead of barriers.
//!
//! Place in the workspace: depends on `state-core` alone (and `timely`);
//! backends and storages are chosen by the program (examples, tests, the
//! bench), as the executor does.
//!
//! Timestamps are epochs (`u64`). Checkpoint `n` covers every record of the
//! epochs before `n`: when a stateful operator's input frontier passes
//! `n - 1`, every such record has arrived (an aligned barrier for free), so
//! it takes the synchronous snapshot part and writes the asynchronous part
//! on another thread. Each participant (sources, keyed operators, the sink)
//! acknowledges its part on a timely stream routed to worker 0, whose
//! committer writes `_metadata` once the frontier says every part is
//! durable. Sources keep offsets per epoch; sinks pre-commit per
//! checkpoint and commit when it completed; at most
//! [`CheckpointConfig::epochs_in_flight`] epochs are open at once. Timely
//! is fail-stop: the [`supervisor`] restarts every process, which resume
//! from the newest intact checkpoint, at any number of workers.
//!
//! [`StateStream::keyed_process`] gives `logic` the whole keyed-state API;
//! [`StateStream::keyed_value`], for a fold into one value per key (a
//! count, a sum, the last value seen), keeps the values typed in memory
//! between checkpoints and writes them to the backend once per checkpoint,
//! so a record costs one hash lookup. Sinks ([`EpochSink`]) get records as
//! they arrive, in the transaction of the checkpoint that covers them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cairn_timely::{run_worker, CheckpointConfig, StateStream};
//! # fn demo<F, S, K>(config: CheckpointConfig, factory: F, source: S, sink: K)
//! # where F: state_core::BackendFactory + Clone + 'static,
//! #   S: cairn_timely::PartitionedSource<Item = String> + Clone + Send + Sync,
//! #   K: cairn_timely::EpochSink<(String, u64)> + Clone + Send + Sync {
//! use state_core::typed::ValueStateDescriptor;
//! timely::execute(timely::Config::process(2), move |worker| {
//!     let (source, sink, factory) = (source.clone(), sink.clone(), factory.clone());
//!     run_worker(worker, &config, |_| Ok(source), |_| Ok(sink), |cairn, words| {
//!         words.keyed_process(
//!             cairn,
//!             "count",
//!             factory,
//!             |w: &String| w.clone(),
//!             |st| st.value_state(&ValueStateDescriptor::<u64>::new("n")),
//!             |st, n, word, out| {
//!                 let c = n.value(st)?.unwrap_or(0) + 1;
//!                 n.update(st, &c)?;
//!                 out.push((word, c));
//!                 Ok(())
//!             },
//!         )
//!     })
//! })
//! .map(|guards| guards.join());
//! # }
//! ```
//!
//! [timely dataflow]: https://github.com/TimelyDataflow/timely-dataflow
#![forbid(unsafe_code)]

mod committer;
mod config;
mod context;
mod driver;
mod error;
mod keyed;
mod protocol;
mod sink;
mod source;
pub mod supervisor;
mod value_cache;

pub use config::{CheckpointConfig, EpochPolicy};
pub use context::Cairn;
pub use driver::{WorkerReport, barrier, run_worker};
pub use error::{FAIL_STOP_EXIT_CODE, TimelyError};
pub use keyed::StateStream;
pub use sink::{EpochFileSink, EpochSink, SINK_UID};
pub use source::{PartitionedSource, ReadOutcome, SOURCE_UID};
