//! What an `EpochSink` sees: each checkpoint's records in batches as they
//! arrive, none after that checkpoint's pre-commit, a pre-commit for every
//! checkpoint in order, a commit only of pre-committed checkpoints, and
//! every record once. (That no epoch's output is held in memory for the
//! sink depends on batch sizes, so on timing: the bench shows it, not this
//! test.)

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use cairn_timely::{
    CheckpointConfig, EpochPolicy, EpochSink, StateStream, TimelyError, run_worker,
};
use state_core::typed::ValueStateDescriptor;
use state_core::{CheckpointId, JobId};
use support::{WordSource, Words};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Write(u64, usize),
    PreCommit(u64),
    Commit(u64),
}

/// Records every call it gets, per worker.
#[derive(Debug, Clone)]
struct Recording {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl EpochSink<(String, u64)> for Recording {
    fn recover(&mut self, _: Option<CheckpointId>) -> Result<(), TimelyError> {
        Ok(())
    }
    fn write(
        &mut self,
        checkpoint: CheckpointId,
        records: Vec<(String, u64)>,
    ) -> Result<(), TimelyError> {
        let call = Call::Write(checkpoint.get(), records.len());
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::PreCommit(checkpoint.get()));
        Ok(())
    }
    fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), TimelyError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Commit(checkpoint.get()));
        Ok(())
    }
}

#[test]
fn a_sink_gets_each_checkpoints_records_in_batches_before_its_pre_commit() {
    let dir = tempfile::tempdir().unwrap();
    let words = Words {
        partitions: 2,
        per_partition: 20_000,
        vocabulary: 500,
        seed: 21,
    };
    let storage =
        backend_fs::FsCheckpointStorage::open(dir.path(), JobId::new("sink").unwrap()).unwrap();
    let mut config = CheckpointConfig::new(JobId::new("sink").unwrap(), Arc::new(storage));
    config.epochs = EpochPolicy::Records(8_000);
    let per_worker: Vec<Arc<Mutex<Vec<Call>>>> = (0..2).map(|_| Arc::default()).collect();
    let sinks = per_worker.clone();
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let calls = Arc::clone(&sinks[worker.index()]);
        let source = WordSource {
            words,
            kill_after: None,
        };
        run_worker(
            worker,
            &config,
            move |_| Ok(source),
            move |_| Ok(Recording { calls }),
            |cairn, stream| {
                stream.keyed_value(
                    cairn,
                    "count",
                    backend_heap::HeapBackendFactory::new(
                        backend_heap::HeapBackendOptions::default(),
                    ),
                    ValueStateDescriptor::<u64>::new("n"),
                    |w: &String| w.clone(),
                    |_, n, w, out| {
                        let c = n.get_or_insert(0);
                        *c += 1;
                        out.push((w, *c));
                        Ok(())
                    },
                )
            },
        )
    })
    .unwrap();
    for r in guards.join() {
        r.unwrap().unwrap();
    }

    let mut total = 0;
    for (worker, calls) in per_worker.iter().enumerate() {
        let calls = calls.lock().unwrap();
        let mut pre_committed = Vec::new();
        let mut committed = Vec::new();
        for call in calls.iter() {
            match *call {
                Call::Write(n, len) => {
                    assert!(
                        !pre_committed.contains(&n),
                        "worker {worker}: records of checkpoint {n} came after its pre-commit"
                    );
                    total += len;
                }
                Call::PreCommit(n) => pre_committed.push(n),
                Call::Commit(n) => {
                    assert!(
                        pre_committed.contains(&n),
                        "worker {worker}: commit of {n} before its pre-commit"
                    );
                    committed.push(n);
                }
            }
        }
        let expected: Vec<u64> = (1..=pre_committed.len() as u64).collect();
        assert_eq!(
            pre_committed, expected,
            "worker {worker}: a pre-commit per checkpoint, in order"
        );
        assert_eq!(
            committed.last(),
            pre_committed.last(),
            "worker {worker}: the final checkpoint committed"
        );
    }
    assert_eq!(
        total as u64,
        2 * 20_000,
        "every output record reached a sink once"
    );
}
