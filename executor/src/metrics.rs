//! Job metrics: checkpoints, restarts, records per operator, state size.
//!
//! [`JobMetrics`] is a snapshot taken by `JobHandle::metrics` or returned in
//! the job result. Record counts are totals since the job started, records
//! replayed after a restart included.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use state_core::OperatorId;

use crate::runtime::chain::OpCounters;

/// Records into and out of one operator, summed over its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorMetrics {
    /// The operator uid.
    pub uid: String,
    /// Records it received (for a source: 0).
    pub records_in: u64,
    /// Records it emitted (for a sink: 0).
    pub records_out: u64,
}

/// A snapshot of a job's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobMetrics {
    /// Checkpoints completed.
    pub checkpoints_completed: u64,
    /// Checkpoints failed, expired or aborted.
    pub checkpoints_failed: u64,
    /// Trigger-to-completion time of the last completed checkpoint.
    pub last_checkpoint_duration: Option<Duration>,
    /// Bytes the last completed checkpoint wrote.
    pub last_checkpoint_size: Option<u64>,
    /// Full state size of the last completed checkpoint (shared files included).
    pub state_size: Option<u64>,
    /// Restarts so far.
    pub restarts: u32,
    /// Per operator, in declaration order.
    pub operators: Vec<OperatorMetrics>,
}

#[derive(Debug, Default)]
struct Inner {
    order: Vec<OperatorId>,
    counters: BTreeMap<(OperatorId, u32), Arc<OpCounters>>,
    job: JobMetrics,
}

/// The live metrics of a job, shared by its tasks and its handle.
#[derive(Debug, Default)]
pub(crate) struct MetricsRegistry {
    inner: Mutex<Inner>,
}

impl MetricsRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares the operators, in order.
    pub(crate) fn set_operators(&self, operators: Vec<OperatorId>) {
        self.lock().order = operators;
    }

    /// The counters of one operator subtask (the same across restarts).
    pub(crate) fn counters(&self, uid: &OperatorId, subtask: u32) -> Arc<OpCounters> {
        self.lock()
            .counters
            .entry((uid.clone(), subtask))
            .or_default()
            .clone()
    }

    /// Updates the job-level figures.
    pub(crate) fn update(&self, f: impl FnOnce(&mut JobMetrics)) {
        f(&mut self.lock().job);
    }

    /// A snapshot of everything.
    pub(crate) fn snapshot(&self) -> JobMetrics {
        let inner = self.lock();
        let mut out = inner.job.clone();
        out.operators = inner
            .order
            .iter()
            .map(|uid| {
                let (mut records_in, mut records_out) = (0, 0);
                for ((_, _), c) in inner
                    .counters
                    .range((uid.clone(), 0)..=(uid.clone(), u32::MAX))
                {
                    records_in += c.records_in.load(Ordering::Relaxed);
                    records_out += c.records_out.load(Ordering::Relaxed);
                }
                OperatorMetrics {
                    uid: uid.0.clone(),
                    records_in,
                    records_out,
                }
            })
            .collect();
        out
    }
}
