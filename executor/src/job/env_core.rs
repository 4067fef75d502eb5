//! What the streams of one job share while it is being built: the backend
//! factory and the job graph under construction.

use std::cell::RefCell;
use std::sync::Arc;

use crate::error::Result;
use crate::runtime::chain::Output;
use crate::runtime::graph::{JobGraph, TaskEnv};
use crate::runtime::task::Task;

/// A chain under construction: given the output of its last operator (and
/// the task's environment), builds the task that runs the chain.
pub(crate) type Partial<T> =
    Arc<dyn Fn(&mut TaskEnv, Box<dyn Output<T>>) -> Result<Box<dyn Task>> + Send + Sync>;

/// The backend factory and the graph every stream of a job adds to.
pub(crate) struct EnvCore<F> {
    pub(crate) factory: Arc<F>,
    pub(crate) graph: RefCell<JobGraph>,
}
