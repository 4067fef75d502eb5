//! The committer: on worker 0, turns the acknowledgements of every
//! participant into the checkpoint's `_metadata`, in the layout and format
//! the executor's coordinator writes, and announces the completion.

use std::collections::BTreeMap;

use state_core::{
    CheckpointId, CheckpointMetadata, CompletedCheckpointStore, JobId, KeyedStateHandle,
    SubtaskPart,
};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::error::fail_stop;
use crate::protocol::{Ack, Completion};

/// Routes every acknowledgement to worker 0, which writes checkpoint `n`'s
/// metadata once its input frontier passed `n - 1` (every participant of
/// every worker acknowledged `n`) and emits `n`'s [`Completion`] at `n - 1`.
/// A checkpoint with a failed part, or whose metadata cannot be written, is
/// aborted (its files discarded) and announced as such; more than
/// `tolerable` failures in a row stop the process.
pub(crate) fn committer<'s>(
    acks: StreamVec<'s, u64, Ack>,
    mut store: Option<CompletedCheckpointStore>,
    job_id: JobId,
    clock: std::sync::Arc<dyn state_core::Clock>,
    tolerable: u32,
) -> StreamVec<'s, u64, Completion> {
    acks.unary_frontier::<CapacityContainerBuilder<Vec<Completion>>, _, _, _>(
        Exchange::new(|_: &Ack| 0),
        "cairn-checkpoint-committer",
        move |_capability, _info| {
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<Ack>)> = BTreeMap::new();
            let mut failures = Failures {
                in_a_row: 0,
                tolerable,
            };
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else {
                        return;
                    };
                    for batch in data {
                        for ack in batch.drain(..) {
                            let n = ack.checkpoint;
                            stash
                                .entry(n)
                                .or_insert_with(|| (cap.delayed(&n.saturating_sub(1)), Vec::new()))
                                .1
                                .push(ack);
                        }
                    }
                });
                let reached = frontier.frontier().iter().min().copied();
                let due: Vec<u64> = stash
                    .keys()
                    .copied()
                    .filter(|&n| reached.is_none_or(|f| n <= f))
                    .collect();
                for n in due {
                    let Some((cap, acks)) = stash.remove(&n) else {
                        continue;
                    };
                    let Some(store) = store.as_mut() else {
                        continue;
                    };
                    let completion = match finalize(store, &job_id, clock.as_ref(), n, acks) {
                        Ok(completion) => {
                            failures.in_a_row = 0;
                            completion
                        }
                        Err(reason) => failures.abort(n, &job_id, &reason),
                    };
                    output.session(&cap).give(completion);
                }
            }
        },
    )
}

/// The failed checkpoints in a row, against the number tolerated.
struct Failures {
    in_a_row: u32,
    tolerable: u32,
}

impl Failures {
    /// Counts aborted checkpoint `n`; stops the process past the tolerated
    /// number (fail-stop), as Flink fails the job over.
    fn abort(&mut self, n: u64, job_id: &JobId, reason: &str) -> Completion {
        self.in_a_row += 1;
        if self.in_a_row > self.tolerable {
            fail_stop(
                &format!(
                    "checkpoint {n} of job {job_id} failed ({} in a row, the tolerable failed \
                     checkpoints are {})",
                    self.in_a_row, self.tolerable
                ),
                &reason,
            );
        }
        tracing::warn!(
            job = %job_id,
            checkpoint_id = n,
            failures_in_a_row = self.in_a_row,
            tolerable = self.tolerable,
            "Checkpoint {n} of job {job_id} failed and was aborted ({} of {} tolerated in a row): {reason}",
            self.in_a_row,
            self.tolerable
        );
        Completion {
            checkpoint: n,
            subsumed: Vec::new(),
            last: false,
            aborted: true,
        }
    }
}

/// Writes checkpoint `n` from every participant's acknowledgement, as the
/// executor's coordinator does: one operator entry per uid (sorted by uid),
/// its subtasks sorted, incremental if any keyed handle is. A failed part
/// aborts it: what the others wrote is discarded and the reason returned;
/// so is a metadata write that failed (the store discarded it).
fn finalize(
    store: &mut CompletedCheckpointStore,
    job_id: &JobId,
    clock: &dyn state_core::Clock,
    n: u64,
    acks: Vec<Ack>,
) -> Result<Completion, String> {
    let id = CheckpointId(n);
    let failed: Vec<&str> = acks.iter().filter_map(|a| a.failure.as_deref()).collect();
    if !failed.is_empty() {
        let reason = failed.join("; ");
        let written: Vec<KeyedStateHandle> = acks
            .iter()
            .filter_map(|a| a.snapshot.as_ref())
            .flat_map(|s| s.keyed.iter().cloned())
            .collect();
        if let Err(err) = store.abort(id, &written) {
            tracing::warn!(checkpoint_id = n, error = %err, "could not discard aborted checkpoint {n} completely");
        }
        return Err(reason);
    }
    let sources: Vec<bool> = acks.iter().filter_map(|a| a.source_exhausted).collect();
    let last = !sources.is_empty() && sources.iter().all(|&e| e);
    let timestamp = acks
        .iter()
        .filter_map(|a| a.timestamp_millis)
        .max()
        .unwrap_or_else(|| clock.now_millis());
    let parts = acks.into_iter().filter_map(|ack| {
        ack.snapshot.map(|snapshot| SubtaskPart {
            operator: ack.operator,
            parallelism: ack.parallelism,
            max_parallelism: ack.max_parallelism,
            snapshot,
        })
    });
    let metadata =
        CheckpointMetadata::from_parts(id, job_id.clone(), timestamp, parts, |uid| uid.0.clone());
    let bytes = metadata.checkpointed_size();
    let subsumed = store
        .complete(metadata)
        .map_err(|err| format!("completing checkpoint {n}: {err}"))?;
    tracing::info!(
        job = %job_id,
        checkpoint_id = n,
        bytes,
        last,
        "Completed checkpoint {n} for job {job_id} ({bytes} bytes)."
    );
    Ok(Completion {
        checkpoint: n,
        subsumed: subsumed.into_iter().map(CheckpointId::get).collect(),
        last,
        aborted: false,
    })
}
