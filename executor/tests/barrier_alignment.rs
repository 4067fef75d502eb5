//! Barrier alignment on a task with two inputs (a keyed operator fed by two
//! upstream subtasks), driven deterministically through the task's barrier
//! handler with scripted input sequences.

// Helpers outside #[test] fns unwrap too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;

use executor::CheckpointingMode;
use executor::barrier::{BarrierAction, BarrierHandler};
use state_core::CheckpointId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Record(&'static str),
    Barrier(u64),
    End,
}

use In::{Barrier, End, Record};

/// What a task did: records processed in order, and at each snapshot the
/// records its state reflected.
#[derive(Debug, Default)]
struct Trace {
    processed: Vec<&'static str>,
    snapshots: Vec<(CheckpointId, Vec<&'static str>)>,
    declined: Vec<CheckpointId>,
}

/// Reads the unblocked inputs round-robin, as a task's select does (fairly).
fn drive(mode: CheckpointingMode, inputs: Vec<Vec<In>>) -> Trace {
    let mut queues: Vec<VecDeque<In>> = inputs.into_iter().map(VecDeque::from).collect();
    let mut handler = BarrierHandler::new(mode, queues.len());
    let mut trace = Trace::default();
    let mut next = 0;
    while !handler.all_ended() {
        let n = queues.len();
        let channel = (0..n)
            .map(|i| (next + i) % n)
            .find(|&c| !handler.is_blocked(c) && !queues[c].is_empty())
            .expect("a readable channel (the script would deadlock otherwise)");
        next = channel + 1;
        let action = match queues[channel].pop_front().unwrap() {
            Record(r) => {
                trace.processed.push(r);
                BarrierAction::None
            }
            Barrier(id) => handler.on_barrier(channel, CheckpointId(id)),
            End => handler.on_end_of_input(channel),
        };
        let snapshot = match action {
            BarrierAction::None => None,
            BarrierAction::Snapshot(id) => Some(id),
            BarrierAction::Abort(ids) => {
                trace.declined.extend(ids);
                None
            }
            BarrierAction::AbortAndSnapshot(ids, id) => {
                trace.declined.extend(ids);
                Some(id)
            }
        };
        if let Some(id) = snapshot {
            trace.snapshots.push((id, trace.processed.clone()));
        }
    }
    trace
}

fn script() -> Vec<Vec<In>> {
    vec![
        vec![
            Record("a1"),
            Record("a2"),
            Barrier(1),
            Record("a3"),
            Record("a4"),
            End,
        ],
        vec![
            Record("b1"),
            Record("b2"),
            Record("b3"),
            Barrier(1),
            Record("b4"),
            End,
        ],
    ]
}

#[test]
fn exactly_once_holds_records_after_the_barrier_until_all_inputs_delivered_it() {
    let trace = drive(CheckpointingMode::ExactlyOnce, script());
    assert_eq!(trace.snapshots.len(), 1);
    let (id, state) = &trace.snapshots[0];
    assert_eq!(*id, CheckpointId(1));
    // The snapshot reflects exactly the records before barrier 1 on each input.
    let mut state = state.clone();
    state.sort_unstable();
    assert_eq!(state, vec!["a1", "a2", "b1", "b2", "b3"]);
    // a3 waited for barrier 1 on the second input.
    let pos = |r| trace.processed.iter().position(|x| *x == r).unwrap();
    assert!(pos("a3") > pos("b3"));
    assert_eq!(trace.processed.len(), 8);
}

#[test]
fn at_least_once_does_not_wait_and_snapshots_at_the_last_barrier() {
    let trace = drive(CheckpointingMode::AtLeastOnce, script());
    assert_eq!(trace.snapshots.len(), 1);
    let (id, state) = &trace.snapshots[0];
    assert_eq!(*id, CheckpointId(1));
    // a3 (after barrier 1 on the first input) was processed while barrier 1
    // was still missing on the second: it is in the snapshot, and will be
    // replayed again after a restore (at-least-once).
    assert!(state.contains(&"a3"), "{state:?}");
    assert!(!state.contains(&"b4"), "{state:?}");
}

#[test]
fn an_ended_input_does_not_hold_up_alignment() {
    let inputs = vec![
        vec![Record("a1"), Barrier(1), Record("a2"), End],
        vec![Record("b1"), End],
    ];
    let trace = drive(CheckpointingMode::ExactlyOnce, inputs);
    assert_eq!(trace.snapshots.len(), 1);
    assert!(!trace.snapshots[0].1.contains(&"a2"));
}

#[test]
fn a_newer_barrier_overtakes_an_unfinished_alignment() {
    let inputs = vec![
        vec![Barrier(1), Record("a1"), Barrier(2), End],
        vec![Record("b1"), Barrier(2), Record("b2"), End],
    ];
    let trace = drive(CheckpointingMode::ExactlyOnce, inputs);
    assert_eq!(trace.declined, vec![CheckpointId(1)]);
    assert_eq!(trace.snapshots.len(), 1);
    assert_eq!(trace.snapshots[0].0, CheckpointId(2));
    let mut state = trace.snapshots[0].1.clone();
    state.sort_unstable();
    assert_eq!(state, vec!["a1", "b1"]);
}
