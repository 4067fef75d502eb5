//! The runtime behind [`crate::job`]: the job graph, tasks on threads,
//! chained operators, keyed exchanges, barrier alignment, the checkpoint
//! coordinator and the job master that fails over and restarts.

mod attempt;
pub mod barrier;
pub(crate) mod chain;
pub mod coordinator;
pub(crate) mod events;
pub(crate) mod graph;
pub(crate) mod job_state;
pub(crate) mod keyed;
pub(crate) mod master;
pub(crate) mod savepoint;
pub(crate) mod task;
