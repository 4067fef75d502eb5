//! One `cairn-bench state-size` run: load K keys of S-byte values into a backend,
//! checkpoint, then R rounds of "update a fraction F of the keys,
//! checkpoint", then restore the last checkpoint into fresh backends and
//! check that every key came back with its latest value: from the local
//! checkpoint copies where the backend keeps them (rocks, incremental), then
//! from storage alone.
//!
//! The state is one value state of the operator `state-size` in P subtasks
//! (each owns its key groups, as in a job; the subtasks load, snapshot and
//! restore on P threads). Checkpoints go through the same
//! [`CompletedCheckpointStore`] a job uses (one retained checkpoint), so the
//! bytes in storage after each checkpoint are what a job would keep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use cairn_benches::{key_text, updated_key, value_into, value_seed};
use cairn_cli::backend::{self, BackendVisitor, LocalState};
use cairn_cli::human;
use cairn_cli::job_args::BackendKind;
use indicatif::ProgressBar;
use serde::Serialize;
use state_core::{
    BackendContext, BackendFactory, CheckpointId, CheckpointStorage, Checkpointable, Clock,
    EntryKey, JobId, KeyedStateBackend, KeyedStateHandle, MaxParallelism, MemoryCheckpointStorage,
    OperatorId, SavepointFormat, SnapshotMode, StateDescriptor, StateKind, SystemClock,
};
use state_core::{CompletedCheckpointStore, ExternalizedCheckpointCleanup, JobTerminalStatus};

use super::checkpointing::{CheckpointCtx, SavepointReport, checkpoint, savepoint};
use super::lsm::{self, FileHistory};
use super::memory::{PhaseMemory, Phases};
use super::restore::{Source, check_source, local_copy_dirs, restore_fresh};
use super::subtasks::{Subtask, parallel};
use crate::proc_stats::IoCounters;
use crate::report::{CheckpointReport, ms, progress};
use crate::scratch::{Scratch, check_interrupted};

/// One run's parameters.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Params {
    /// The backend.
    pub backend: BackendKind,
    /// Checkpoints in this object store (`--checkpoint-url`) instead of files.
    pub checkpoint_url: Option<String>,
    /// `--incremental`.
    pub incremental: bool,
    /// Keys loaded.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Fraction of the keys updated per round.
    pub update_fraction: f64,
    /// Update rounds.
    pub rounds: u32,
    /// Subtasks.
    pub parallelism: u32,
    /// Seed of values and update choices.
    pub seed: u64,
    /// Show progress bars.
    pub show_progress: bool,
    /// After the rounds, take a canonical and a native savepoint.
    pub savepoints: bool,
    /// Before the first checkpoint, wait for RocksDB's flushes and
    /// compactions of the load to finish (`--settle`).
    pub settle: bool,
}

/// What one `state-size` run reports (sizes in bytes, times in ms).
#[derive(Debug, Clone, Serialize)]
pub(super) struct StateSizeReport {
    /// `heap`, `fs`, `rocks`.
    pub backend: &'static str,
    /// Where the checkpoints went: `file` (or memory for heap) or the URL.
    pub storage: String,
    /// Whether incremental checkpoints were asked for.
    pub incremental: bool,
    /// Keys loaded.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Fraction updated per round.
    pub update_fraction: f64,
    /// Update rounds.
    pub rounds: u32,
    /// Subtasks.
    pub parallelism: u32,
    /// Seed.
    pub seed: u64,
    /// Bytes of all keys and values as the application sees them.
    pub raw_bytes: u64,
    /// Wall time of the load.
    pub load_seconds: f64,
    /// Keys put per second during the load.
    pub load_ops_per_sec: f64,
    /// With `--settle`: how long the load's flushes and compactions took
    /// to finish after it, before the first checkpoint (rocks; about 0
    /// for the heap backends, which have none).
    pub settle_seconds: Option<f64>,
    /// Time of each update round (before its checkpoint).
    pub update_ms: Vec<f64>,
    /// The initial checkpoint, then one per round.
    pub checkpoints: Vec<CheckpointReport>,
    /// Restore of the last checkpoint from the local checkpoint copies (the
    /// harness turns local recovery on: rocks with `--incremental` on local
    /// disk, heap and fs in memory); null for rocks full snapshots, which
    /// keep no local copy.
    pub restore_local_ms: Option<f64>,
    /// Restore of the last checkpoint from storage into fresh backends, after
    /// the local copies are removed, so nothing comes from them.
    pub restore_storage_ms: f64,
    /// Keys the restored backends hold with their latest value.
    pub restored_keys: u64,
    /// Whether the restore gave back every key with its latest value, and nothing else.
    pub restore_exact: bool,
    /// Peak resident memory of the process during this run.
    pub peak_rss_bytes: Option<u64>,
    /// The run's memory phase by phase: load, checkpoints, each restore.
    pub memory: Vec<PhaseMemory>,
    /// Bytes this run made the storage layer read.
    pub io_read_bytes: Option<u64>,
    /// Bytes this run made the storage layer write.
    pub io_write_bytes: Option<u64>,
    /// With `--savepoints`: a canonical, then a native savepoint of the
    /// state of the last checkpoint, taken right after it.
    pub savepoints: Vec<SavepointReport>,
    /// Where the checkpoint data was kept (`--keep`), else null.
    pub dir: Option<String>,
}

/// Runs one `state-size` measurement.
pub(super) fn run_one(
    params: &Params,
    dir: Option<&Path>,
    keep: bool,
) -> anyhow::Result<StateSizeReport> {
    let job_id = JobId::new("bench-state-size").map_err(human::anyhow)?;
    let scratch = match params.backend {
        BackendKind::Heap if !params.savepoints => None,
        _ => Some(Scratch::create(dir, "cairn-bench-state-size", keep)?),
    };
    let storage: Arc<dyn CheckpointStorage> = match (&params.checkpoint_url, &scratch) {
        (Some(url), _) => backend::storage_for(params.backend, Some(Path::new(url)), &job_id)?,
        // Heap state with checkpoints in memory, without the 5 MiB bound
        // (a scratch directory only for the savepoints).
        (None, None) => Arc::new(MemoryCheckpointStorage::new(u64::MAX)),
        (None, Some(_)) if params.backend == BackendKind::Heap => {
            Arc::new(MemoryCheckpointStorage::new(u64::MAX))
        }
        (None, Some(s)) => backend::storage_for(params.backend, Some(s.path()), &job_id)?,
    };
    let savepoint_dir = scratch
        .as_ref()
        .filter(|_| params.savepoints)
        .map(|s| s.path().join("savepoints"));
    // The bytes in storage are measured for a directory only.
    let job_dir = match params.checkpoint_url {
        Some(_) => None,
        None => scratch
            .as_ref()
            .filter(|_| params.backend != BackendKind::Heap)
            .map(|s| s.path().join(job_id.as_str())),
    };
    // Local recovery is on, so the run can restore from the local copies
    // and from storage: RocksDB keeps its copies in the scratch directory,
    // heap (and fs) keep theirs in memory.
    let local = LocalState {
        dir: scratch.as_ref().map(|s| s.path().join("local")),
        recovery: true,
        rocks_value_cache: None,
        rocks_partitioned_index_filters: None,
    };
    // The rocks backend works in the job's own directory under it.
    let local_dir = local.dir.is_some().then(|| local.job_dir(&job_id));
    let kept = scratch
        .as_ref()
        .filter(|s| s.kept())
        .map(|s| s.path().display().to_string());
    let io_before = IoCounters::now();
    let run_job_id = job_id.clone();
    let mut report = backend::with_backend_local(
        params.backend,
        storage,
        &local,
        &job_id,
        Run {
            params,
            job_id: run_job_id,
            job_dir,
            local_dir,
            savepoint_dir,
            keep,
        },
    )?;
    if let Some((now, before)) = IoCounters::now().zip(io_before) {
        let io = now.since(before);
        report.io_read_bytes = Some(io.read_bytes);
        report.io_write_bytes = Some(io.write_bytes);
    }
    report.peak_rss_bytes = report.memory.iter().filter_map(|m| m.peak_rss_bytes).max();
    report.dir = kept;
    Ok(report)
}

struct Run<'a> {
    params: &'a Params,
    job_id: JobId,
    job_dir: Option<PathBuf>,
    /// Where the backend keeps local checkpoint copies (rocks), else `None`.
    local_dir: Option<PathBuf>,
    /// Where savepoints go (`--savepoints`), else `None`.
    savepoint_dir: Option<PathBuf>,
    /// `--keep`: leave the checkpoints where they are.
    keep: bool,
}

/// How long `--settle` waits for RocksDB's background work after the load.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often (in keys) the loops check Ctrl-C and move the progress bar.
const CHUNK: u64 = 16_384;

impl BackendVisitor for Run<'_> {
    type Output = StateSizeReport;

    fn visit<F: BackendFactory + 'static>(
        self,
        factory: F,
        storage: Arc<dyn CheckpointStorage>,
    ) -> anyhow::Result<StateSizeReport> {
        let p = self.params;
        let max_parallelism = MaxParallelism::default_for(p.parallelism);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let operator = OperatorId("state-size".into());
        let contexts: Vec<BackendContext> = (0..p.parallelism)
            .map(|subtask| BackendContext {
                operator_id: operator.clone(),
                subtask,
                parallelism: p.parallelism,
                max_parallelism,
                clock: clock.clone(),
            })
            .collect();
        let descriptor = StateDescriptor::new("value", StateKind::Value);
        let mut subtasks = Vec::with_capacity(contexts.len());
        for context in &contexts {
            let mut backend = factory.create(context)?;
            let state = backend.register_state(&descriptor)?;
            subtasks.push(Subtask {
                index: context.subtask,
                backend,
                state,
                range: context.key_group_range()?,
            });
        }
        let keys = p.keys;
        let mode = if p.incremental {
            SnapshotMode::Incremental
        } else {
            SnapshotMode::Full
        };
        let last_round_len =
            usize::try_from(keys).context("--keys is too large for this machine")?;
        // The round that last wrote each key (0: the load).
        let mut last_round = vec![0u16; last_round_len];

        let mut phases = Phases::start();
        // Load.
        let bar = progress(p.show_progress, keys, "load");
        let started = Instant::now();
        parallel(&mut subtasks, |sub| {
            put_keys(sub, max_parallelism, p, 0, (0..keys).map(|i| (i, i)), &bar)
        })?;
        let load = started.elapsed();
        bar.finish_and_clear();
        let settle_seconds = if p.settle {
            let started = Instant::now();
            parallel(&mut subtasks, |sub| {
                lsm::settle(&sub.backend, SETTLE_TIMEOUT)
                    .with_context(|| format!("subtask {} after the load (--settle)", sub.index))
            })?;
            Some((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0)
        } else {
            None
        };
        phases.end("load", &subtasks)?;
        let mut files = FileHistory::default();

        let mut store = CompletedCheckpointStore::new(
            storage.clone(),
            1,
            ExternalizedCheckpointCleanup::DeleteOnCancellation,
        )?;
        let mut checkpoints = Vec::new();
        let mut update_ms = Vec::new();
        let ctx = CheckpointCtx {
            storage: storage.as_ref(),
            job_id: &self.job_id,
            operator: &operator,
            parallelism: p.parallelism,
            max_parallelism,
            clock: clock.as_ref(),
            mode,
            job_dir: self.job_dir.as_deref(),
        };
        checkpoints.push(checkpoint(
            &ctx,
            &mut store,
            &mut subtasks,
            CheckpointId(1),
            &mut files,
        )?);

        let per_round = ((p.update_fraction * keys as f64).round() as u64).min(keys);
        for round in 1..=p.rounds {
            check_interrupted()?;
            let round16 = u16::try_from(round).context("--rounds is at most 65535")?;
            let bar = progress(p.show_progress, per_round, &format!("update {round}"));
            let started = Instant::now();
            let seed = p.seed;
            parallel(&mut subtasks, |sub| {
                let choices = (0..per_round).map(|n| (n, updated_key(seed, round, n, keys)));
                put_keys(sub, max_parallelism, p, round, choices, &bar)
            })?;
            update_ms.push(ms(started.elapsed()));
            bar.finish_and_clear();
            for n in 0..per_round {
                let k = updated_key(seed, round, n, keys);
                if let Some(r) = usize::try_from(k).ok().and_then(|k| last_round.get_mut(k)) {
                    *r = round16;
                }
            }
            let id = CheckpointId(u64::from(round) + 1);
            checkpoints.push(checkpoint(&ctx, &mut store, &mut subtasks, id, &mut files)?);
        }
        check_interrupted()?;
        let mut savepoints = Vec::new();
        if let Some(dir) = &self.savepoint_dir {
            let mut id = CheckpointId(u64::from(p.rounds) + 2);
            for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
                savepoints.push(savepoint(&ctx, &mut subtasks, id, format, dir)?);
                id = CheckpointId(id.get() + 1);
            }
        }

        phases.end("checkpoints", &subtasks)?;

        // Restore the last checkpoint into fresh backends, as a restarted job
        // would (the loaded backends are dropped first): from the local
        // copies where the backend keeps them, then from storage alone.
        drop(subtasks);
        let latest = store.latest().context("no checkpoint completed")?.clone();
        let handles: Vec<KeyedStateHandle> = latest
            .operators
            .iter()
            .flat_map(|o| o.subtasks.iter())
            .flat_map(|s| s.keyed.iter().cloned())
            .collect();
        let check = Expected {
            params: p,
            descriptor: &descriptor,
            max_parallelism,
            last_round: &last_round,
        };
        let local_copies = local_copy_dirs(self.local_dir.as_deref(), &handles);
        let in_memory_copies = matches!(p.backend, BackendKind::Heap | BackendKind::Fs);
        let mut restore_local = None;
        let mut local_exact = true;
        if in_memory_copies || !local_copies.is_empty() {
            let (mut restored, took) =
                restore_fresh(&factory, &contexts, &handles, storage.as_ref())?;
            check_source(&restored, Source::LocalCopy)?;
            let (found, entries) = check.count(&mut restored)?;
            local_exact = found == keys && entries == keys;
            restore_local = Some(took);
            phases.end("restore-local", &restored)?;
            // Drop the local copies so the next restore reads storage only:
            // retention dropping the checkpoint drops the in-memory copies.
            for sub in &mut restored {
                sub.backend
                    .notify_checkpoint_subsumed(latest.checkpoint_id)?;
            }
            drop(restored);
            // (RocksDB removes its adopted copies on that notification; any
            // left are removed here.)
            for dir in local_copies.iter().filter(|d| d.exists()) {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("removing the local copy {}", dir.display()))?;
            }
        }
        let (mut restored, restore) =
            restore_fresh(&factory, &contexts, &handles, storage.as_ref())?;
        if restore_local.is_some() {
            check_source(&restored, Source::Storage)?;
        }
        let (restored_keys, entries) = check.count(&mut restored)?;
        phases.end("restore-storage", &restored)?;
        if p.checkpoint_url.is_some() && !self.keep {
            // No scratch directory holds these: delete the retained
            // checkpoint and its shared files, so the next run can use the
            // same URL (its `_metadata` creates would be refused otherwise).
            drop(restored);
            store
                .shutdown(JobTerminalStatus::Canceled)
                .context("deleting the run's checkpoints from the object store")?;
        }
        let raw_bytes = (0..keys)
            .map(|i| key_text(i).1 as u64 + p.value_size as u64)
            .sum();
        let load_seconds = load.as_secs_f64();
        Ok(StateSizeReport {
            backend: backend::name(p.backend),
            storage: p
                .checkpoint_url
                .clone()
                .unwrap_or_else(|| "file".to_owned()),
            incremental: p.incremental,
            keys,
            value_size: p.value_size,
            update_fraction: p.update_fraction,
            rounds: p.rounds,
            parallelism: p.parallelism,
            seed: p.seed,
            raw_bytes,
            load_seconds: (load_seconds * 1000.0).round() / 1000.0,
            load_ops_per_sec: (keys as f64 / load_seconds.max(1e-9)).round(),
            settle_seconds,
            update_ms,
            checkpoints,
            restore_local_ms: restore_local.map(ms),
            restore_storage_ms: ms(restore),
            restored_keys,
            restore_exact: local_exact && restored_keys == keys && entries == keys,
            peak_rss_bytes: None,
            memory: phases.into_phases(),
            io_read_bytes: None,
            io_write_bytes: None,
            savepoints,
            dir: None,
        })
    }
}

/// What the restored state must hold: every key with the value of the round
/// that last wrote it.
struct Expected<'a> {
    params: &'a Params,
    descriptor: &'a StateDescriptor,
    max_parallelism: MaxParallelism,
    last_round: &'a [u16],
}

impl Expected<'_> {
    /// Registers the state in the restored backends and counts (keys with
    /// their latest value, entries in all); not timed.
    fn count<B: KeyedStateBackend>(
        &self,
        restored: &mut [Subtask<B>],
    ) -> anyhow::Result<(u64, u64)> {
        let p = self.params;
        let mut restored_keys = 0u64;
        let mut entries = 0u64;
        let mut expected = Vec::with_capacity(p.value_size + 8);
        for sub in restored.iter_mut() {
            sub.state = sub.backend.register_state(self.descriptor)?;
            sub.backend.keys(sub.state, &mut |_| {
                entries += 1;
                std::ops::ControlFlow::Continue(())
            })?;
        }
        for i in 0..p.keys {
            let (buf, len) = key_text(i);
            let key = buf.get(..len).unwrap_or_default();
            let key_group = self.max_parallelism.key_group_of(key);
            let subtask = self
                .max_parallelism
                .subtask_for_key_group(p.parallelism, key_group);
            let Some(sub) = usize::try_from(subtask).ok().and_then(|s| restored.get(s)) else {
                continue;
            };
            let round = usize::try_from(i)
                .ok()
                .and_then(|i| self.last_round.get(i))
                .copied()
                .unwrap_or(0);
            value_into(
                value_seed(p.seed, i, u32::from(round)),
                p.value_size,
                &mut expected,
            );
            let entry = EntryKey {
                key_group,
                key,
                namespace: b"",
            };
            if sub.backend.get(sub.state, &entry)?.as_deref() == Some(&expected[..]) {
                restored_keys += 1;
            }
        }
        Ok((restored_keys, entries))
    }
}

/// Puts the values of `round` for the chosen `(n, key index)` pairs that
/// fall in this subtask's key groups.
fn put_keys<B: KeyedStateBackend>(
    sub: &mut Subtask<B>,
    max_parallelism: MaxParallelism,
    p: &Params,
    round: u32,
    choices: impl Iterator<Item = (u64, u64)>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mine = sub.range;
    let lead = mine.start().get() == 0;
    for (n, i) in choices {
        if n % CHUNK == CHUNK - 1 {
            check_interrupted()?;
            if lead {
                // Every subtask advances at about the same pace.
                bar.inc(CHUNK);
            }
        }
        let (buf, len) = key_text(i);
        let key = buf.get(..len).unwrap_or_default();
        let key_group = max_parallelism.key_group_of(key);
        if !mine.contains(key_group) {
            continue;
        }
        let mut value = Vec::with_capacity(p.value_size + 8);
        value_into(value_seed(p.seed, i, round), p.value_size, &mut value);
        let entry = EntryKey {
            key_group,
            key,
            namespace: b"",
        };
        sub.backend.put(sub.state, &entry, Bytes::from(value))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_heap_run_restores_every_key() {
        let params = Params {
            backend: BackendKind::Heap,
            checkpoint_url: None,
            incremental: false,
            keys: 500,
            value_size: 16,
            update_fraction: 0.5,
            rounds: 2,
            parallelism: 3,
            seed: 7,
            show_progress: false,
            savepoints: true,
            settle: true,
        };
        let report = run_one(&params, None, false).unwrap();
        assert_eq!(report.checkpoints.len(), 3);
        // Heap state has no compactions to wait for, and no LSM figures.
        assert!(report.settle_seconds.is_some());
        assert!(report.checkpoints.iter().all(|c| c.rocks.is_none()));
        assert_eq!(report.restored_keys, 500);
        assert!(report.restore_exact);
        assert_eq!(report.raw_bytes, 500 * (11 + 16));
        for c in &report.checkpoints {
            assert!(c.written_bytes <= c.full_bytes);
            assert_eq!(
                c.storage_bytes,
                Some(c.full_bytes),
                "one retained, in memory"
            );
        }
        // Both savepoints hold the whole state: heap writes canonical for both.
        let formats: Vec<&str> = report.savepoints.iter().map(|s| s.format).collect();
        assert_eq!(formats, ["canonical", "native"]);
        for s in &report.savepoints {
            assert!(s.files >= 3, "metadata and a stream per subtask: {s:?}");
            assert!(s.bytes >= report.checkpoints[2].full_bytes, "{s:?}");
        }
    }
}
