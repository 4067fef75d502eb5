//! The format-v1 fixture: a word-count-like job at parallelism 2 with every
//! kind of state, TTL, timers and source offsets, checkpointed twice to
//! filesystem storage.
//!
//! Regenerate (only when a new format version is introduced; the files of
//! older versions must then stay as they are): `cargo run -p cairn-tests
//! --example write_fixture -- tests/fixtures/vN`. `tests/fixtures/v1` was
//! written by format version 1, `tests/fixtures/v2` by version 2 (state type
//! names recorded, `docs/format-v2.md`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use state_core::typed::{
    KeyedState, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use state_core::{
    BackendContext, CheckpointId, CheckpointMetadata, CheckpointStorage, Checkpointable, Clock,
    CompletedCheckpointStore, ExternalizedCheckpointCleanup, JobId, ManualClock, MaxParallelism,
    OperatorId, OperatorSnapshot, OperatorStateMode, OperatorStateStore, Result, SnapshotKind,
    SnapshotMode, SubtaskSnapshot, TimerService, TtlConfig,
};

/// The fixture's job id (its directory under the fixture base dir).
pub const JOB: &str = "fixture-v1";
/// The operator uid holding the keyed state.
pub const OPERATOR: &str = "wordcount";
/// The parallelism the fixture was written at.
pub const PARALLELISM: u32 = 2;
/// Its number of key groups.
pub const MAX_PARALLELISM: u32 = 128;
/// The clock reading when the fixture was written (2026-11-22T00:00:00Z).
pub const WRITTEN_AT_MILLIS: u64 = 1_795_305_600_000;
/// The words counted; word `i` occurs `i + 1` times before checkpoint 2.
pub const WORDS: [&str; 8] = ["a", "b", "c", "flink", "cairn", "state", "barrier", "ERROR"];
/// The event-time timer registered for word `i` (`1000 * (i + 1)`).
pub fn timer_for(i: usize) -> u64 {
    1000 * (i as u64 + 1)
}

/// Descriptors of the fixture's states.
pub fn count_state() -> ValueStateDescriptor<u64> {
    ValueStateDescriptor::new("count")
}
/// Every line number a word was seen on.
pub fn seen_state() -> ListStateDescriptor<u32> {
    ListStateDescriptor::new("seen-on-lines")
}
/// Per word, the count of each following word.
pub fn next_state() -> MapStateDescriptor<String, u64> {
    MapStateDescriptor::new("next-word")
}
/// The longest line length a word was seen on.
pub fn longest_state() -> ReducingStateDescriptor<u32> {
    ReducingStateDescriptor::new("longest-line", |a: &u32, b: &u32| *a.max(b))
}
/// The last line a word was seen on, with a one-day TTL.
pub fn last_seen_state() -> ValueStateDescriptor<u32> {
    ValueStateDescriptor::new("last-seen")
        .with_ttl(TtlConfig::new(Duration::from_secs(24 * 3600)).expect("a day is a valid TTL"))
}

fn max() -> MaxParallelism {
    MaxParallelism::new(MAX_PARALLELISM).expect("128 is a valid max parallelism")
}

/// The context of one subtask of the keyed operator.
pub fn context(subtask: u32, parallelism: u32, clock: Arc<dyn Clock>) -> BackendContext {
    BackendContext {
        operator_id: OperatorId(OPERATOR.into()),
        subtask,
        parallelism,
        max_parallelism: max(),
        clock,
    }
}

/// The lines of input: line `n` holds word `i` for every `i >= n`, so word
/// `i` occurs on lines `0..=i`.
pub fn lines() -> Vec<Vec<&'static str>> {
    (0..WORDS.len())
        .map(|n| WORDS.iter().skip(n).copied().collect())
        .collect()
}

/// Writes the fixture's two checkpoints (after line 3, and after all lines)
/// under `base_dir/fixture-v1/`, retaining both.
pub fn write(base_dir: &Path) -> Result<()> {
    let clock = Arc::new(ManualClock::new(WRITTEN_AT_MILLIS));
    let storage = Arc::new(FsCheckpointStorage::open(base_dir, JobId::new(JOB)?)?);
    let mut store = CompletedCheckpointStore::new(
        storage.clone(),
        2,
        ExternalizedCheckpointCleanup::RetainOnCancellation,
    )?;
    let mut subtasks = Vec::new();
    for s in 0..PARALLELISM {
        let backend = HeapBackend::new(
            &context(s, PARALLELISM, clock.clone()),
            HeapBackendOptions::default(),
        )?;
        let mut st = KeyedState::new(backend, clock.clone());
        let timers = TimerService::new(&mut st)?;
        let mut offsets = OperatorStateStore::new();
        offsets.set_stream_name(&format!("source-{s}-offsets"))?;
        offsets.register("offsets", OperatorStateMode::Split)?;
        subtasks.push((st, timers, offsets));
    }
    let all_lines = lines();
    for (n, line) in all_lines.iter().enumerate() {
        for (pos, word) in line.iter().enumerate() {
            let kg = max().key_group_of(&postcard::to_stdvec(word).expect("a str encodes"));
            let owner = max().subtask_for_key_group(PARALLELISM, kg) as usize;
            let (st, timers, _) = &mut subtasks[owner];
            st.set_current_key(word)?;
            let count = st.value_state(&count_state())?;
            let c = count.value(st)?.unwrap_or(0);
            count.update(st, &(c + 1))?;
            st.list_state(&seen_state())?.add(st, &(n as u32))?;
            if let Some(next) = line.get(pos + 1) {
                let map = st.map_state(&next_state())?;
                let c = map.get(st, &next.to_string())?.unwrap_or(0);
                map.put(st, &next.to_string(), &(c + 1))?;
            }
            st.reducing_state(&longest_state())?
                .add(st, line.len() as u32)?;
            st.value_state(&last_seen_state())?
                .update(st, &(n as u32))?;
            let i = WORDS.iter().position(|w| w == word).unwrap_or(0);
            timers.register_event_time_timer(st, timer_for(i))?;
        }
        // Each source subtask reads one partition; offsets are line numbers.
        for (s, (_, _, offsets)) in subtasks.iter_mut().enumerate() {
            offsets.update_typed("offsets", &[(s as u32, n as u64 + 1)])?;
        }
        if n == 3 || n + 1 == all_lines.len() {
            let id = CheckpointId(if n == 3 { 1 } else { 2 });
            storage.initialize_checkpoint(id)?;
            let mut snapshots = Vec::new();
            for (s, (st, _, offsets)) in subtasks.iter_mut().enumerate() {
                let keyed = st
                    .backend_mut()
                    .snapshot(id, SnapshotMode::Full)?
                    .write(storage.as_ref())?;
                snapshots.push(SubtaskSnapshot {
                    subtask: s as u32,
                    keyed: keyed.into_iter().collect(),
                    operator: offsets.snapshot(id, storage.as_ref())?,
                });
            }
            store.complete(CheckpointMetadata {
                checkpoint_id: id,
                job_id: JobId::new(JOB)?,
                timestamp_millis: clock.now_millis(),
                kind: SnapshotKind::Full,
                operators: vec![OperatorSnapshot {
                    operator_id: OperatorId(OPERATOR.into()),
                    parallelism: PARALLELISM,
                    max_parallelism: MAX_PARALLELISM,
                    subtasks: snapshots,
                }],
            })?;
            clock.advance(60_000);
        }
    }
    Ok(())
}
