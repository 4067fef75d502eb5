//! LogSource: bounded and unbounded reading, start positions, offsets in
//! operator state, restore with exact seeks, and rescaling.

// Test helpers unwrap: a panic there is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use executor::log::{LogRecord, LogSource, LogSourceOptions, OFFSETS_STATE, StartPosition, Topic};
use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
use state_core::OperatorStateHandle;
use state_core::OperatorStateStore;
use state_core::{CheckpointId, CheckpointStorage, MemoryCheckpointStorage};

fn options(dir: &std::path::Path, bounded: bool, start: StartPosition) -> LogSourceOptions {
    LogSourceOptions {
        dir: dir.to_path_buf(),
        topic: "word".into(),
        bounded,
        start,
    }
}

fn ctx(subtask: u32, parallelism: u32) -> SourceContext {
    SourceContext {
        subtask,
        parallelism,
    }
}

fn open(
    source: &LogSource,
    subtask: u32,
    parallelism: u32,
    restored: Option<&OperatorStateStore>,
) -> Box<dyn Source<LogRecord>> {
    let mut s = source.create(ctx(subtask, parallelism)).unwrap();
    s.open(ctx(subtask, parallelism), restored).unwrap();
    s
}

/// Polls until End (bounded) or Idle (unbounded); the (partition, offset) pairs read.
fn drain(source: &mut dyn Source<LogRecord>) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    loop {
        match source.poll_next().unwrap() {
            SourcePoll::Record(r) => out.push((r.partition, r.offset)),
            SourcePoll::Idle | SourcePoll::End => return out,
        }
    }
}

fn take(source: &mut dyn Source<LogRecord>, n: usize) -> Vec<(u32, u64)> {
    (0..n)
        .map(|_| match source.poll_next().unwrap() {
            SourcePoll::Record(r) => (r.partition, r.offset),
            other => panic!("expected a record, got {other:?}"),
        })
        .collect()
}

/// Writes `records` records round-robin into a new topic of `partitions`.
fn topic_with(dir: &std::path::Path, partitions: u32, records: u32) -> Topic {
    let topic = Topic::create(dir, "word", partitions).unwrap();
    let mut w = topic.writer().unwrap();
    for i in 0..records {
        w.append(None, format!("r{i}").as_bytes(), None).unwrap();
    }
    topic
}

/// Snapshots each source's offsets as one subtask of a checkpoint.
fn checkpoint(
    storage: &MemoryCheckpointStorage,
    sources: &mut [Box<dyn Source<LogRecord>>],
) -> Vec<OperatorStateHandle> {
    let id = CheckpointId(1);
    storage.initialize_checkpoint(id).unwrap();
    sources
        .iter_mut()
        .enumerate()
        .map(|(i, s)| {
            let mut state = OperatorStateStore::new();
            state
                .set_stream_name(&format!("source-{i}-operator"))
                .unwrap();
            s.snapshot_state(&mut state).unwrap();
            state.snapshot(id, storage).unwrap().unwrap()
        })
        .collect()
}

fn restore(
    storage: &MemoryCheckpointStorage,
    handles: &[OperatorStateHandle],
    parallelism: u32,
    index: u32,
) -> OperatorStateStore {
    OperatorStateStore::restore(handles, storage, parallelism, index).unwrap()
}

#[test]
fn bounded_ends_unbounded_idles_and_tails() {
    let dir = tempfile::tempdir().unwrap();
    let topic = topic_with(dir.path(), 2, 4);
    let bounded = LogSource::new(options(dir.path(), true, StartPosition::Earliest));
    let mut s = open(&bounded, 0, 1, None);
    let mut w = topic.writer().unwrap();
    // Appended after open: not part of the bounded input.
    w.append(None, b"late", Some(0)).unwrap();
    let got: BTreeSet<_> = drain(s.as_mut()).into_iter().collect();
    assert_eq!(got, BTreeSet::from([(0, 0), (0, 1), (1, 0), (1, 1)]));
    assert_eq!(s.poll_next().unwrap(), SourcePoll::End);

    let unbounded = LogSource::new(options(dir.path(), false, StartPosition::Earliest));
    let mut s = open(&unbounded, 0, 1, None);
    assert_eq!(drain(s.as_mut()).len(), 5);
    assert_eq!(s.poll_next().unwrap(), SourcePoll::Idle);
    w.append(None, b"new", Some(1)).unwrap();
    match s.poll_next().unwrap() {
        SourcePoll::Record(r) => {
            assert_eq!((r.partition, r.offset, &r.value[..]), (1, 2, &b"new"[..]))
        }
        other => panic!("expected the new record, got {other:?}"),
    }
    // A subtask without partitions: End when bounded, Idle otherwise.
    assert_eq!(
        open(&bounded, 2, 3, None).poll_next().unwrap(),
        SourcePoll::End
    );
    assert_eq!(
        open(&unbounded, 2, 3, None).poll_next().unwrap(),
        SourcePoll::Idle
    );
}

#[test]
fn start_positions() {
    let dir = tempfile::tempdir().unwrap();
    topic_with(dir.path(), 2, 6);
    let latest = LogSource::new(options(dir.path(), true, StartPosition::Latest));
    assert_eq!(
        open(&latest, 0, 1, None).poll_next().unwrap(),
        SourcePoll::End
    );
    let offsets = LogSource::new(options(
        dir.path(),
        true,
        StartPosition::Offsets(vec![(1, 2)]),
    ));
    let got: BTreeSet<_> = drain(open(&offsets, 0, 1, None).as_mut())
        .into_iter()
        .collect();
    assert_eq!(got, BTreeSet::from([(0, 0), (0, 1), (0, 2), (1, 2)]));
    let beyond = LogSource::new(options(
        dir.path(),
        true,
        StartPosition::Offsets(vec![(0, 9)]),
    ));
    let err = beyond
        .create(ctx(0, 1))
        .unwrap()
        .open(ctx(0, 1), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("offset 9 is beyond the end offset 3"), "{err}");
    let missing = LogSourceOptions {
        topic: "nope".into(),
        ..options(dir.path(), true, StartPosition::Earliest)
    };
    let err = LogSource::new(missing)
        .create(ctx(0, 1))
        .unwrap()
        .open(ctx(0, 1), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

/// Collects the messages of tracing events.
#[derive(Default, Clone)]
struct Messages(Arc<Mutex<Vec<String>>>);

struct Visitor<'a>(&'a mut String);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::INFO {
            let mut message = String::new();
            event.record(&mut Visitor(&mut message));
            self.0.lock().unwrap().push(message);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn snapshot_then_restore_seeks_like_the_wordcount_walk_through() {
    // The WordCount failure-and-recovery walk-through: offsets 25..=27 read
    // before checkpoint 2, 28 (a), 29 (c), 30 (ERROR) after.
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::create(dir.path(), "word", 1).unwrap();
    let mut w = topic.writer().unwrap();
    for i in 0..25 {
        w.append(None, format!("old-{i}").as_bytes(), None).unwrap();
    }
    for word in ["a", "b", "a", "a", "c", "ERROR"] {
        w.append(None, word.as_bytes(), None).unwrap();
    }
    let source = LogSource::new(options(
        dir.path(),
        false,
        StartPosition::Offsets(vec![(0, 25)]),
    ));
    let storage = MemoryCheckpointStorage::default();
    let mut first = vec![open(&source, 0, 1, None)];
    assert_eq!(take(first[0].as_mut(), 3), [(0, 25), (0, 26), (0, 27)]);
    let handles = checkpoint(&storage, &mut first);
    assert_eq!(take(first[0].as_mut(), 3), [(0, 28), (0, 29), (0, 30)]);

    let restored = restore(&storage, &handles, 1, 0);
    assert_eq!(
        restored.get_typed::<(u32, u64)>(OFFSETS_STATE).unwrap(),
        [(0, 28)]
    );
    let messages = Messages::default();
    let mut again = tracing::subscriber::with_default(messages.clone(), || {
        open(&source, 0, 1, Some(&restored))
    });
    assert_eq!(
        messages.0.lock().unwrap().as_slice(),
        ["Seeking partition 0 to offset 28"]
    );
    let replayed: Vec<String> = (0..3)
        .map(|_| match again.poll_next().unwrap() {
            SourcePoll::Record(r) => format!("{}@{}", r.value_str(), r.offset),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replayed, ["a@28", "c@29", "ERROR@30"]);
}

/// Reads `per_subtask[i]` records on subtask i of `old_p`, checkpoints,
/// restores at `new_p` and checks that together the new subtasks read
/// exactly the records not read before, each from its own partitions.
fn rescale(old_p: u32, new_p: u32, per_subtask: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let topic = topic_with(dir.path(), 4, 40);
    let source = LogSource::new(options(dir.path(), true, StartPosition::Earliest));
    let storage = MemoryCheckpointStorage::default();
    let mut old: Vec<_> = (0..old_p).map(|i| open(&source, i, old_p, None)).collect();
    let mut read_before = BTreeSet::new();
    for (s, &n) in old.iter_mut().zip(per_subtask) {
        read_before.extend(take(s.as_mut(), n));
    }
    let handles = checkpoint(&storage, &mut old);
    let mut read_after = BTreeSet::new();
    for i in 0..new_p {
        let state = restore(&storage, &handles, new_p, i);
        let mut s = open(&source, i, new_p, Some(&state));
        for (p, o) in drain(s.as_mut()) {
            assert_eq!(p % new_p, i, "subtask {i} read partition {p}");
            assert!(read_after.insert((p, o)), "({p}, {o}) read twice");
        }
        // Its own snapshot holds only its partitions.
        let mut snap = OperatorStateStore::new();
        s.snapshot_state(&mut snap).unwrap();
        let own: Vec<(u32, u64)> = snap.get_typed(OFFSETS_STATE).unwrap();
        assert!(
            own.iter().all(|(p, o)| p % new_p == i && *o == 10),
            "{own:?}"
        );
    }
    assert!(read_before.is_disjoint(&read_after));
    let all: BTreeSet<_> = (0..4).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    let both: BTreeSet<_> = read_before.union(&read_after).copied().collect();
    assert_eq!(both, all);
    assert_eq!(topic.end_offset(3).unwrap(), 10);
}

#[test]
fn rescale_offsets_2_to_1() {
    rescale(2, 1, &[5, 13]);
}

#[test]
fn rescale_offsets_1_to_3() {
    rescale(1, 3, &[17]);
}
