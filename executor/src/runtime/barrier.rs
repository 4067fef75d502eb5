//! Checkpoint barrier handling on a task with several input channels.
//!
//! [`BarrierHandler`] is a deterministic state machine: the task tells it
//! which channel delivered which barrier (or ended), and it answers when the
//! task must snapshot and which channels it may read meanwhile.
//!
//! - [`CheckpointingMode::ExactlyOnce`] aligns barriers like Flink's
//!   `SingleCheckpointBarrierHandler`: after barrier `n` arrives on a channel
//!   that channel is blocked (its records stay buffered) until barrier `n`
//!   arrived on every open channel; then the task snapshots and unblocks all.
//!   A newer barrier arriving during an alignment aborts the older checkpoint.
//! - [`CheckpointingMode::AtLeastOnce`] tracks barriers like Flink's
//!   `CheckpointBarrierTracker`: no channel is ever blocked; the task
//!   snapshots when the last open channel delivered barrier `n`, so records
//!   that arrived after barrier `n` on other channels are in the snapshot
//!   (and replayed again after a restore).
//!
//! A channel that ended (end of input) counts as having delivered every
//! barrier.

use std::collections::BTreeMap;

use state_core::CheckpointId;

use crate::config::CheckpointingMode;

/// What the task must do after a barrier, end of input or abort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierAction {
    /// Nothing yet.
    None,
    /// Every open channel delivered the barrier: snapshot now and forward it.
    Snapshot(CheckpointId),
    /// These checkpoints can no longer complete on this task (a newer barrier
    /// overtook them): decline them.
    Abort(Vec<CheckpointId>),
    /// Decline the listed checkpoints, then snapshot this one.
    AbortAndSnapshot(Vec<CheckpointId>, CheckpointId),
}

/// Tracks barriers over the input channels of one task.
#[derive(Debug, Clone)]
pub struct BarrierHandler {
    mode: CheckpointingMode,
    ended: Vec<bool>,
    /// Exactly-once: the checkpoint being aligned and which channels delivered it.
    aligning: Option<(CheckpointId, Vec<bool>)>,
    /// At-least-once: per checkpoint, which channels delivered it.
    tracking: BTreeMap<CheckpointId, Vec<bool>>,
    /// Barriers at or below this id are stale (snapshotted or aborted).
    last_done: Option<CheckpointId>,
}

impl BarrierHandler {
    /// A handler for `channels` input channels.
    pub fn new(mode: CheckpointingMode, channels: usize) -> Self {
        BarrierHandler {
            mode,
            ended: vec![false; channels],
            aligning: None,
            tracking: BTreeMap::new(),
            last_done: None,
        }
    }

    /// The number of input channels.
    pub fn channels(&self) -> usize {
        self.ended.len()
    }

    /// Whether the task must not read `channel` now (it delivered the barrier
    /// being aligned, or it ended). Out-of-range channels are blocked.
    pub fn is_blocked(&self, channel: usize) -> bool {
        if self.ended.get(channel).copied().unwrap_or(true) {
            return true;
        }
        match &self.aligning {
            Some((_, seen)) => seen.get(channel).copied().unwrap_or(true),
            None => false,
        }
    }

    /// Whether every channel ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// The checkpoint being aligned (exactly-once), if any.
    pub fn aligning(&self) -> Option<CheckpointId> {
        self.aligning.as_ref().map(|(id, _)| *id)
    }

    fn is_stale(&self, id: CheckpointId) -> bool {
        self.last_done.is_some_and(|done| id <= done)
    }

    /// Barrier `id` arrived on `channel`.
    pub fn on_barrier(&mut self, channel: usize, id: CheckpointId) -> BarrierAction {
        if channel >= self.ended.len() || self.is_stale(id) {
            return BarrierAction::None;
        }
        match self.mode {
            CheckpointingMode::ExactlyOnce => self.aligned_barrier(channel, id),
            CheckpointingMode::AtLeastOnce => self.tracked_barrier(channel, id),
        }
    }

    fn aligned_barrier(&mut self, channel: usize, id: CheckpointId) -> BarrierAction {
        let mut aborted = Vec::new();
        match &mut self.aligning {
            Some((current, seen)) if *current == id => {
                if let Some(s) = seen.get_mut(channel) {
                    *s = true;
                }
            }
            Some((current, _)) if *current > id => return BarrierAction::None,
            _ => {
                if let Some((older, _)) = self.aligning.take() {
                    aborted.push(older);
                }
                let mut seen = self.ended.clone();
                if let Some(s) = seen.get_mut(channel) {
                    *s = true;
                }
                self.aligning = Some((id, seen));
            }
        }
        let snapshot = self.finish_alignment_if_complete();
        combine(aborted, snapshot)
    }

    fn finish_alignment_if_complete(&mut self) -> Option<CheckpointId> {
        let done = matches!(&self.aligning, Some((_, seen)) if seen.iter().all(|s| *s));
        if !done {
            return None;
        }
        let (id, _) = self.aligning.take()?;
        self.last_done = Some(id);
        Some(id)
    }

    fn tracked_barrier(&mut self, channel: usize, id: CheckpointId) -> BarrierAction {
        let ended = &self.ended;
        let seen = self.tracking.entry(id).or_insert_with(|| ended.clone());
        if let Some(s) = seen.get_mut(channel) {
            *s = true;
        }
        if seen.iter().all(|s| *s) {
            self.complete_tracked(id)
        } else {
            BarrierAction::None
        }
    }

    /// Checkpoint `id` is complete on every channel: older tracked ones are
    /// overtaken and aborted.
    fn complete_tracked(&mut self, id: CheckpointId) -> BarrierAction {
        let newer = self.tracking.split_off(&id);
        let aborted: Vec<CheckpointId> = std::mem::replace(&mut self.tracking, newer)
            .into_keys()
            .collect();
        self.tracking.remove(&id);
        self.last_done = Some(id);
        combine(aborted, Some(id))
    }

    /// `channel` delivered its end of input. A pending checkpoint waiting only
    /// for this channel can now snapshot.
    pub fn on_end_of_input(&mut self, channel: usize) -> BarrierAction {
        let Some(e) = self.ended.get_mut(channel) else {
            return BarrierAction::None;
        };
        *e = true;
        match self.mode {
            CheckpointingMode::ExactlyOnce => {
                if let Some((_, seen)) = &mut self.aligning
                    && let Some(s) = seen.get_mut(channel)
                {
                    *s = true;
                }
                combine(Vec::new(), self.finish_alignment_if_complete())
            }
            CheckpointingMode::AtLeastOnce => {
                for seen in self.tracking.values_mut() {
                    if let Some(s) = seen.get_mut(channel) {
                        *s = true;
                    }
                }
                let complete = self
                    .tracking
                    .iter()
                    .rev()
                    .find(|(_, seen)| seen.iter().all(|s| *s))
                    .map(|(id, _)| *id);
                match complete {
                    Some(id) => self.complete_tracked(id),
                    None => BarrierAction::None,
                }
            }
        }
    }

    /// Checkpoint `id` was aborted by the coordinator: stop aligning it (the
    /// blocked channels are released) and ignore its late barriers.
    pub fn on_abort(&mut self, id: CheckpointId) {
        if self.aligning.as_ref().is_some_and(|(a, _)| *a == id) {
            self.aligning = None;
        }
        self.tracking.remove(&id);
        if self.last_done.is_none_or(|done| done < id) {
            self.last_done = Some(id);
        }
    }
}

fn combine(aborted: Vec<CheckpointId>, snapshot: Option<CheckpointId>) -> BarrierAction {
    match (aborted.is_empty(), snapshot) {
        (true, None) => BarrierAction::None,
        (true, Some(id)) => BarrierAction::Snapshot(id),
        (false, None) => BarrierAction::Abort(aborted),
        (false, Some(id)) => BarrierAction::AbortAndSnapshot(aborted, id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: CheckpointId = CheckpointId(1);
    const C2: CheckpointId = CheckpointId(2);

    #[test]
    fn exactly_once_blocks_until_all_channels_delivered() {
        let mut h = BarrierHandler::new(CheckpointingMode::ExactlyOnce, 3);
        assert_eq!(h.on_barrier(0, C1), BarrierAction::None);
        assert!(h.is_blocked(0) && !h.is_blocked(1) && !h.is_blocked(2));
        assert_eq!(h.on_barrier(2, C1), BarrierAction::None);
        assert!(h.is_blocked(2));
        assert_eq!(h.on_barrier(1, C1), BarrierAction::Snapshot(C1));
        assert!(!(0..3).any(|c| h.is_blocked(c)));
        // A late duplicate is ignored.
        assert_eq!(h.on_barrier(1, C1), BarrierAction::None);
    }

    #[test]
    fn newer_barrier_aborts_the_alignment() {
        let mut h = BarrierHandler::new(CheckpointingMode::ExactlyOnce, 2);
        h.on_barrier(0, C1);
        assert_eq!(h.on_barrier(1, C2), BarrierAction::Abort(vec![C1]));
        assert_eq!(h.aligning(), Some(C2));
        assert_eq!(h.on_barrier(0, C2), BarrierAction::Snapshot(C2));
    }

    #[test]
    fn end_of_input_completes_alignment_and_abort_releases() {
        let mut h = BarrierHandler::new(CheckpointingMode::ExactlyOnce, 2);
        h.on_barrier(0, C1);
        assert_eq!(h.on_end_of_input(1), BarrierAction::Snapshot(C1));
        assert!(h.is_blocked(1) && !h.is_blocked(0));
        let mut h = BarrierHandler::new(CheckpointingMode::ExactlyOnce, 2);
        h.on_barrier(0, C1);
        h.on_abort(C1);
        assert!(!h.is_blocked(0));
        assert_eq!(h.on_barrier(1, C1), BarrierAction::None);
    }

    #[test]
    fn at_least_once_never_blocks_and_overtakes() {
        let mut h = BarrierHandler::new(CheckpointingMode::AtLeastOnce, 2);
        assert_eq!(h.on_barrier(0, C1), BarrierAction::None);
        assert!(!h.is_blocked(0));
        assert_eq!(h.on_barrier(0, C2), BarrierAction::None);
        assert_eq!(
            h.on_barrier(1, C2),
            BarrierAction::AbortAndSnapshot(vec![C1], C2)
        );
        assert_eq!(h.on_barrier(1, C1), BarrierAction::None);
    }
}
