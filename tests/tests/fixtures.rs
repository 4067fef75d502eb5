//! Checked-in checkpoints of older formats must still restore.
//!
//! `tests/fixtures/v1/fixture-v1` was written by format version 1 (see
//! `cairn_tests::fixture`), `tests/fixtures/v2/fixture-v1` by version 2,
//! which records each state's type name: both restore, the first taking
//! the types its job registers, the second refusing another type. It is restored here at its own parallelism and
//! rescaled, and every kind of state, TTL state, timers and source offsets are
//! checked against what the job had counted. Never regenerate these files to
//! make this test pass: a failure means old checkpoints no longer restore.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_fs::FsCheckpointStorage;
use backend_heap::{HeapBackend, HeapBackendOptions};
use cairn_tests::fixture::{self, WORDS};
use state_core::typed::{KeyedState, ValueStateDescriptor};
use state_core::{
    CheckpointId, CheckpointMetadata, Checkpointable, ManualClock, MaxParallelism,
    OperatorStateStore, SavepointReader, TimerService, handles_for_range, load_verified,
    select_for_restore,
};

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/fixture-v1")
}

/// The same job written by format version 2 (state type names recorded).
fn checked_in_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v2/fixture-v1")
}

/// Restores `metadata` at `parallelism` and checks every word's state as of
/// `lines_seen` input lines.
fn restore_and_check(
    storage: &FsCheckpointStorage,
    metadata: &CheckpointMetadata,
    parallelism: u32,
    lines_seen: usize,
) {
    let op = &metadata.operators[0];
    assert_eq!(op.operator_id.0, fixture::OPERATOR);
    let handles: Vec<_> = op.subtasks.iter().flat_map(|s| s.keyed.clone()).collect();
    let clock = Arc::new(ManualClock::new(fixture::WRITTEN_AT_MILLIS + 3_600_000));
    let max = MaxParallelism::new(fixture::MAX_PARALLELISM).unwrap();
    let mut found = 0;
    for s in 0..parallelism {
        let ctx = fixture::context(s, parallelism, clock.clone());
        let range = ctx.key_group_range().unwrap();
        let mut backend = HeapBackend::new(&ctx, HeapBackendOptions::default()).unwrap();
        backend
            .restore(&handles_for_range(&handles, range), storage)
            .unwrap();
        let mut st = KeyedState::new(backend, clock.clone());
        let mut timers = TimerService::new(&mut st).unwrap();
        let count = st.value_state(&fixture::count_state()).unwrap();
        let seen = st.list_state(&fixture::seen_state()).unwrap();
        let next = st.map_state(&fixture::next_state()).unwrap();
        let longest = st.reducing_state(&fixture::longest_state()).unwrap();
        let last = st.value_state(&fixture::last_seen_state()).unwrap();
        for (i, word) in WORDS.iter().enumerate() {
            let kg = max.key_group_of(&postcard::to_stdvec(word).unwrap());
            if !range.contains(kg) {
                continue;
            }
            found += 1;
            let lines = (i + 1).min(lines_seen) as u32;
            st.set_current_key(word).unwrap();
            assert_eq!(
                count.value(&mut st).unwrap(),
                Some(u64::from(lines)),
                "{word}"
            );
            assert_eq!(seen.get(&mut st).unwrap(), (0..lines).collect::<Vec<_>>());
            let expected_next: Vec<(String, u64)> = match WORDS.get(i + 1) {
                Some(n) => vec![(n.to_string(), u64::from(lines))],
                None => vec![],
            };
            assert_eq!(next.entries(&mut st).unwrap(), expected_next, "{word}");
            assert_eq!(longest.get(&mut st).unwrap(), Some(WORDS.len() as u32));
            assert_eq!(last.value(&mut st).unwrap(), Some(lines - 1), "{word}");
        }
        // Every word occurs on line 0, so every word in this range has its one
        // event-time timer.
        let fired = timers.advance_watermark(&mut st, u64::MAX).unwrap();
        let mut fired_words: Vec<String> = fired
            .iter()
            .map(|t| postcard::from_bytes::<String>(&t.key).unwrap())
            .collect();
        fired_words.sort();
        let mut expected: Vec<String> = WORDS
            .iter()
            .filter(|w| range.contains(max.key_group_of(&postcard::to_stdvec(w).unwrap())))
            .map(|w| w.to_string())
            .collect();
        expected.sort();
        assert_eq!(fired_words, expected);
    }
    let words_seen = WORDS.len();
    assert_eq!(found, words_seen, "every word restored exactly once");

    // Source offsets (split state) are redistributed, none lost.
    let op_handles: Vec<_> = op
        .subtasks
        .iter()
        .filter_map(|s| s.operator.clone())
        .collect();
    let mut offsets: Vec<(u32, u64)> = Vec::new();
    for s in 0..parallelism {
        let store = OperatorStateStore::restore(&op_handles, storage, parallelism, s).unwrap();
        offsets.extend(store.get_typed::<(u32, u64)>("offsets").unwrap());
    }
    offsets.sort();
    assert_eq!(
        offsets,
        vec![(0, lines_seen as u64), (1, lines_seen as u64)]
    );
}

#[test]
fn v1_fixture_restores_at_its_parallelism_and_rescaled() {
    let storage = FsCheckpointStorage::for_job_dir(checked_in()).unwrap();
    let selection = select_for_restore(&storage).unwrap();
    assert!(selection.skipped.is_empty());
    assert_eq!(selection.metadata.checkpoint_id, CheckpointId(2));
    for p in [fixture::PARALLELISM, 1, 3] {
        restore_and_check(&storage, &selection.metadata, p, WORDS.len());
    }
}

#[test]
fn v1_fixture_older_checkpoint_restores() {
    let storage = FsCheckpointStorage::for_job_dir(checked_in()).unwrap();
    let metadata = load_verified(&storage, CheckpointId(1)).unwrap();
    restore_and_check(&storage, &metadata, fixture::PARALLELISM, 4);
}

#[test]
fn fixture_generator_writes_what_the_checks_expect() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write(dir.path()).unwrap();
    let storage = FsCheckpointStorage::for_job_dir(dir.path().join(fixture::JOB)).unwrap();
    let selection = select_for_restore(&storage).unwrap();
    restore_and_check(&storage, &selection.metadata, 2, WORDS.len());
}

#[test]
fn v2_fixture_restores_and_records_the_state_types() {
    let storage = FsCheckpointStorage::for_job_dir(checked_in_v2()).unwrap();
    let selection = select_for_restore(&storage).unwrap();
    assert_eq!(selection.metadata.checkpoint_id, CheckpointId(2));
    for p in [fixture::PARALLELISM, 3] {
        restore_and_check(&storage, &selection.metadata, p, WORDS.len());
    }
    let reader = SavepointReader::new(Arc::new(storage), selection.metadata.clone());
    let types: Vec<(String, Option<String>)> = reader
        .states(fixture::OPERATOR)
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.type_name))
        .filter(|(name, _)| !name.starts_with("_timers"))
        .collect();
    let named = |n: &str, t: &str| (n.to_owned(), Some(t.to_owned()));
    assert_eq!(
        types,
        vec![
            named("count", "u64"),
            named("seen-on-lines", "u32"),
            named("next-word", "alloc::string::String => u64"),
            named("longest-line", "u32"),
            named("last-seen", "u32"),
        ]
    );
}

#[test]
fn v1_fixture_records_no_types_and_takes_the_registered_ones() {
    let storage = FsCheckpointStorage::for_job_dir(checked_in()).unwrap();
    let selection = select_for_restore(&storage).unwrap();
    let reader = SavepointReader::new(Arc::new(storage), selection.metadata);
    let states = reader.states(fixture::OPERATOR).unwrap();
    assert!(!states.is_empty());
    assert!(states.iter().all(|d| d.type_name.is_none()), "{states:?}");
}

#[test]
fn v2_fixture_refuses_another_type_naming_both() {
    let storage = FsCheckpointStorage::for_job_dir(checked_in_v2()).unwrap();
    let metadata = select_for_restore(&storage).unwrap().metadata;
    let handles: Vec<_> = metadata.operators[0]
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.clone())
        .collect();
    let clock = Arc::new(ManualClock::new(fixture::WRITTEN_AT_MILLIS));
    let ctx = fixture::context(0, 1, clock.clone());
    let mut backend = HeapBackend::new(&ctx, HeapBackendOptions::default()).unwrap();
    backend.restore(&handles, &storage).unwrap();
    let mut st = KeyedState::new(backend, clock);
    let err = st
        .value_state(&ValueStateDescriptor::<String>::new("count"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"count\"")
            && err.contains("type u64")
            && err.contains("alloc::string::String"),
        "{err}"
    );
    // With a migration from the recorded type, every count converts.
    let count = st
        .value_state(
            &ValueStateDescriptor::<String>::new("count")
                .with_migration(|n: u64| format!("{n} times")),
        )
        .unwrap();
    st.set_current_key("flink").unwrap();
    assert_eq!(count.value(&mut st).unwrap().as_deref(), Some("4 times"));
}
