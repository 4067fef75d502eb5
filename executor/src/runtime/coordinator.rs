//! The checkpoint coordinator as a deterministic state machine.
//!
//! [`CheckpointCoordinator`] decides when checkpoints are triggered, collects
//! the acknowledgements of every task, and decides when a checkpoint is
//! complete, expired or failed, and when failed checkpoints must fail the job
//! (Flink's `CheckpointCoordinator`, `CheckpointRequestDecider` and
//! `CheckpointFailureManager`). It never reads a clock: every call carries
//! `now` (milliseconds on any monotonic scale), so tests drive it with
//! explicit times and the runtime with a real one.
//!
//! Rules, as in Flink:
//! - Periodic checkpoints are triggered every `interval`, but never while
//!   `max_concurrent` checkpoints are pending, nor before `min_pause` has
//!   passed since the last checkpoint ended (completed or failed). A trigger
//!   held back by these fires as soon as they allow.
//! - Manual triggers ([`CheckpointCoordinator::trigger_now`]) bypass the
//!   interval, min pause and max concurrent (like a savepoint).
//! - A checkpoint not acknowledged by every task within `timeout` of its
//!   trigger expires.
//! - Expired and declined checkpoints count as failures; a completion resets
//!   the count. When more than `tolerable_failures` failures happen in a row
//!   the job must fail over. Aborts because of a failover or finished tasks
//!   are not counted.

use std::collections::BTreeMap;
use std::time::Duration;

use state_core::CheckpointId;

use crate::config::CheckpointConfig;

/// A checkpoint every task acknowledged.
#[derive(Debug)]
pub struct CompletedPending<S> {
    /// The checkpoint.
    pub id: CheckpointId,
    /// When it was triggered (coordinator time, ms).
    pub triggered_at: u64,
    /// Trigger to last acknowledgement.
    pub duration: Duration,
    /// Every task's acknowledgement, by task index.
    pub acks: Vec<S>,
}

/// A checkpoint that failed, expired or was aborted.
#[derive(Debug)]
pub struct FailedCheckpoint<S> {
    /// The checkpoint.
    pub id: CheckpointId,
    /// Why.
    pub reason: String,
    /// The acknowledgements received before it failed (their state must be discarded).
    pub acks: Vec<S>,
    /// Whether the failure made the consecutive-failure count exceed the
    /// tolerable number: the job must fail over.
    pub fail_job: bool,
}

/// What an acknowledgement led to.
#[derive(Debug)]
pub enum AckOutcome<S> {
    /// More tasks must acknowledge.
    Pending,
    /// That was the last one: complete the checkpoint.
    Completed(CompletedPending<S>),
    /// The checkpoint is not pending (already aborted, or unknown): discard
    /// the acknowledged state.
    Unknown(S),
}

#[derive(Debug)]
struct Pending<S> {
    triggered_at: u64,
    acks: BTreeMap<usize, S>,
}

/// Triggers, tracks and completes checkpoints for `tasks` tasks.
#[derive(Debug)]
pub struct CheckpointCoordinator<S> {
    interval: Option<u64>,
    timeout: u64,
    min_pause: u64,
    max_concurrent: usize,
    tolerable_failures: u32,
    tasks: usize,
    next_id: u64,
    next_periodic: u64,
    last_end: Option<u64>,
    consecutive_failures: u32,
    pending: BTreeMap<CheckpointId, Pending<S>>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<S> CheckpointCoordinator<S> {
    /// A coordinator for `tasks` tasks whose first checkpoint is `first_id`.
    /// With `periodic` the first checkpoint is due `interval` after `now`;
    /// without, checkpoints are only triggered by [`CheckpointCoordinator::trigger_now`].
    pub fn new(
        config: &CheckpointConfig,
        periodic: bool,
        tasks: usize,
        first_id: CheckpointId,
        now: u64,
    ) -> Self {
        let interval = periodic.then(|| millis(config.interval).max(1));
        CheckpointCoordinator {
            interval,
            timeout: millis(config.timeout),
            min_pause: millis(config.min_pause),
            max_concurrent: (config.max_concurrent as usize).max(1),
            tolerable_failures: config.tolerable_failures,
            tasks,
            next_id: first_id.get(),
            next_periodic: now.saturating_add(interval.unwrap_or(u64::MAX)),
            last_end: None,
            consecutive_failures: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The id the next triggered checkpoint gets.
    pub fn next_checkpoint_id(&self) -> CheckpointId {
        CheckpointId(self.next_id)
    }

    /// The checkpoints in flight, ascending.
    pub fn pending(&self) -> Vec<CheckpointId> {
        self.pending.keys().copied().collect()
    }

    /// Failed checkpoints in a row since the last completion.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The earliest time a periodic trigger is allowed by the interval and
    /// the min pause (ignoring max concurrent).
    fn earliest_periodic(&self) -> Option<u64> {
        self.interval?;
        let after_pause = self
            .last_end
            .map_or(0, |end| end.saturating_add(self.min_pause));
        Some(self.next_periodic.max(after_pause))
    }

    /// Triggers a periodic checkpoint if one is due at `now` and allowed.
    pub fn trigger_due(&mut self, now: u64) -> Option<CheckpointId> {
        let at = self.earliest_periodic()?;
        if now < at || self.pending.len() >= self.max_concurrent {
            return None;
        }
        let id = self.register(now);
        self.next_periodic = now.saturating_add(self.interval.unwrap_or(u64::MAX));
        Some(id)
    }

    /// Triggers a checkpoint now, regardless of interval, min pause and max concurrent.
    pub fn trigger_now(&mut self, now: u64) -> CheckpointId {
        self.register(now)
    }

    fn register(&mut self, now: u64) -> CheckpointId {
        let id = CheckpointId(self.next_id);
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                triggered_at: now,
                acks: BTreeMap::new(),
            },
        );
        id
    }

    /// Task `task` acknowledged checkpoint `id` with `state`.
    pub fn acknowledge(
        &mut self,
        id: CheckpointId,
        task: usize,
        state: S,
        now: u64,
    ) -> AckOutcome<S> {
        let Some(p) = self.pending.get_mut(&id) else {
            return AckOutcome::Unknown(state);
        };
        if task >= self.tasks {
            return AckOutcome::Unknown(state);
        }
        p.acks.insert(task, state);
        if p.acks.len() < self.tasks {
            return AckOutcome::Pending;
        }
        let Some(p) = self.pending.remove(&id) else {
            return AckOutcome::Pending;
        };
        self.consecutive_failures = 0;
        self.last_end = Some(now);
        AckOutcome::Completed(CompletedPending {
            id,
            triggered_at: p.triggered_at,
            duration: Duration::from_millis(now.saturating_sub(p.triggered_at)),
            acks: p.acks.into_values().collect(),
        })
    }

    /// Checkpoint `id` failed (a task declined it, or it could not be
    /// finalized): it is removed and counted. `None` if it was not pending.
    pub fn fail(
        &mut self,
        id: CheckpointId,
        reason: impl Into<String>,
        now: u64,
    ) -> Option<FailedCheckpoint<S>> {
        let p = self.pending.remove(&id)?;
        Some(self.counted(id, reason.into(), p.acks.into_values().collect(), now))
    }

    /// Aborts pending checkpoint `id` without counting a failure (it was
    /// overtaken by a newer one). `None` if it was not pending.
    pub fn abort(
        &mut self,
        id: CheckpointId,
        reason: impl Into<String>,
    ) -> Option<FailedCheckpoint<S>> {
        let p = self.pending.remove(&id)?;
        Some(FailedCheckpoint {
            id,
            reason: reason.into(),
            acks: p.acks.into_values().collect(),
            fail_job: false,
        })
    }

    /// A checkpoint that had completed on every task failed while being
    /// finalized (its metadata could not be written): counted as a failure.
    /// Returns whether the job must fail over.
    pub fn record_finalize_failure(&mut self, now: u64) -> bool {
        self.last_end = Some(now);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_failures > self.tolerable_failures
    }

    fn counted(
        &mut self,
        id: CheckpointId,
        reason: String,
        acks: Vec<S>,
        now: u64,
    ) -> FailedCheckpoint<S> {
        let fail_job = self.record_finalize_failure(now);
        FailedCheckpoint {
            id,
            reason,
            acks,
            fail_job,
        }
    }

    /// Expires every pending checkpoint triggered `timeout` or more before `now`.
    pub fn check_timeouts(&mut self, now: u64) -> Vec<FailedCheckpoint<S>> {
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.triggered_at) >= self.timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(expired.len());
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let reason = format!(
                    "checkpoint expired before completing (timeout {} ms)",
                    self.timeout
                );
                out.push(self.counted(id, reason, p.acks.into_values().collect(), now));
            }
        }
        out
    }

    /// Aborts every pending checkpoint without counting failures (job
    /// failover, cancellation, or a task finished).
    pub fn abort_all(&mut self, reason: &str) -> Vec<FailedCheckpoint<S>> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(id, p)| FailedCheckpoint {
                id,
                reason: reason.to_owned(),
                acks: p.acks.into_values().collect(),
                fail_job: false,
            })
            .collect()
    }

    /// The next time something may happen without an event: a periodic
    /// trigger or a timeout.
    pub fn next_wakeup(&self) -> Option<u64> {
        let timeout = self
            .pending
            .values()
            .map(|p| p.triggered_at.saturating_add(self.timeout))
            .min();
        let trigger = if self.pending.len() < self.max_concurrent {
            self.earliest_periodic()
        } else {
            None
        };
        match (timeout, trigger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
