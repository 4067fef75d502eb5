//! Snapshots: incremental (SST diff against the last confirmed checkpoint)
//! and full (cairn's key-group stream format), both from a native RocksDB
//! checkpoint taken in the synchronous part.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::DBRawIterator;
#[cfg(test)]
use rocksdb::checkpoint::Checkpoint;
use state_core::backend_support::{KeyGroupStreamWriter, output_error};
use state_core::{
    AsyncSnapshot, CheckpointId, CheckpointStorage, Checkpointable, IncrementalHandle, KeyGroup,
    KeyGroupRange, KeyedStateHandle, MaxParallelism, NamedStream, Result, SharedFile, SnapshotMode,
    StateError, StateLayout, StateScope, StreamHandle,
};

use crate::backend::RocksBackend;
use crate::db::{State, cf_of, open_read_only};
use crate::key_codec::{decode_key, decode_list};
use crate::local_copy::{remove_dir_logged, scrub_local_copy};
use crate::meta::{LOCAL_META_FILE, MetaState, RocksMeta};
use crate::native_checkpoint::NativeCheckpoint;
use crate::options::{RocksBackendOptions, SharedMemoryRef};
use crate::uploads::{UploadTracker, lock};
use crate::verified::VerifiedFiles;
use crate::{BACKEND_NAME, rocks_error};

/// A snapshot of a backend holding nothing.
struct NothingToWrite;

impl AsyncSnapshot for NothingToWrite {
    fn write(
        self: Box<Self>,
        _storage: &dyn CheckpointStorage,
    ) -> Result<Option<KeyedStateHandle>> {
        tracing::debug!("rocks backend holds no state; nothing written");
        Ok(None)
    }
}

/// Copies the local file `path` into a new stream of checkpoint `id`; with
/// `verified`, notes the file's CRC-32 for later restores from it.
fn upload_file(
    storage: &dyn CheckpointStorage,
    id: CheckpointId,
    scope: StateScope,
    name: &str,
    path: &Path,
    verified: Option<&VerifiedFiles>,
) -> Result<StreamHandle> {
    let reading = verified.and_then(|_| VerifiedFiles::before_read(path));
    let mut file = std::fs::File::open(path).map_err(|e| StateError::io(path, e))?;
    let mut out = storage.create_output(id, scope, name)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).map_err(|e| StateError::io(path, e))?;
        let Some(chunk) = buf.get(..n) else { break };
        if chunk.is_empty() {
            break;
        }
        out.write_all(chunk).map_err(|e| output_error(e, name))?;
    }
    let handle = out.close()?;
    if let Some(v) = verified {
        v.note(path, reading, handle.crc32);
    }
    Ok(handle)
}

/// The asynchronous part of an incremental snapshot.
struct IncrementalSnapshot {
    checkpoint: CheckpointId,
    /// The native checkpoint being taken into `dir`.
    native: NativeCheckpoint,
    dir: PathBuf,
    backend_id: String,
    range: KeyGroupRange,
    meta: Vec<u8>,
    base: Arc<HashMap<String, SharedFile>>,
    /// Where the uploaded files are noted for later snapshots to build on;
    /// `None` for a native savepoint, which nothing builds on.
    tracker: Option<Arc<Mutex<UploadTracker>>>,
    keep_local: bool,
    memory: SharedMemoryRef,
    /// Files uploaded at once.
    transfer_threads: usize,
}

/// A file of the native checkpoint an incremental snapshot uploads.
struct Transfer {
    name: String,
    scope: StateScope,
    stream: String,
    path: PathBuf,
}

impl IncrementalSnapshot {
    /// Uploads every file the base lacks, `transfer_threads` at once, and
    /// the meta stream; pushes every stream it wrote to `uploaded` (for the
    /// caller to discard on failure), even when it fails. The handle lists
    /// files in name order whatever the order the uploads finished in; the
    /// error is the one of the first failed file in name order.
    fn upload(
        &self,
        storage: &dyn CheckpointStorage,
        uploaded: &mut Vec<StreamHandle>,
    ) -> Result<IncrementalHandle> {
        let id = self.checkpoint;
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| StateError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| StateError::io(&self.dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        // Each file is either a base file reused as it is or a transfer.
        let mut plan: Vec<std::result::Result<SharedFile, usize>> = Vec::new();
        let mut transfers = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            if name == LOCAL_META_FILE {
                continue;
            }
            let (scope, stream) = if name.ends_with(".sst") {
                let len = std::fs::metadata(&path)
                    .map_err(|e| StateError::io(&path, e))?
                    .len();
                if let Some(f) = self.base.get(&name).filter(|f| f.handle.size == len) {
                    plan.push(Ok(f.clone()));
                    continue;
                }
                let stream = format!("{}-{}-{name}", self.backend_id, id.get());
                (StateScope::Shared, stream)
            } else {
                (StateScope::Exclusive, format!("{}-{name}", self.backend_id))
            };
            plan.push(Err(transfers.len()));
            transfers.push(Transfer {
                name,
                scope,
                stream,
                path,
            });
        }
        let verified = self.keep_local.then_some(&*self.memory.verified);
        let outcomes = crate::uploads::transfer_each(&transfers, self.transfer_threads, |t| {
            upload_file(storage, id, t.scope, &t.stream, &t.path, verified)
        });
        let mut handles = Vec::with_capacity(outcomes.len());
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Some(Ok(handle)) => {
                    uploaded.push(handle.clone());
                    handles.push(Some(handle));
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                    handles.push(None);
                }
                None => handles.push(None),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let (mut shared, mut private) = (Vec::new(), Vec::new());
        let (mut reused, mut new_sst, mut new_bytes) = (0usize, 0usize, 0u64);
        for step in plan {
            let i = match step {
                Ok(base_file) => {
                    shared.push(base_file);
                    reused += 1;
                    continue;
                }
                Err(i) => i,
            };
            let (Some(t), Some(Some(handle))) =
                (transfers.get(i), handles.get_mut(i).map(Option::take))
            else {
                return Err(StateError::io(
                    &self.dir,
                    io::Error::other("an upload of the snapshot left no outcome"),
                ));
            };
            new_bytes += handle.size;
            if t.scope == StateScope::Shared {
                new_sst += 1;
                shared.push(SharedFile {
                    name: t.name.clone(),
                    handle,
                    uploaded_by: id,
                });
            } else {
                private.push(NamedStream {
                    name: t.name.clone(),
                    handle,
                });
            }
        }
        let meta_name = format!("{}-meta", self.backend_id);
        let mut out = storage.create_output(id, StateScope::Exclusive, &meta_name)?;
        out.write_all(&self.meta)
            .map_err(|e| output_error(e, &meta_name))?;
        let meta = out.close()?;
        uploaded.push(meta.clone());
        if self.keep_local {
            let path = self.dir.join(LOCAL_META_FILE);
            std::fs::write(&path, &self.meta).map_err(|e| StateError::io(&path, e))?;
            scrub_local_copy(&self.dir, &shared, &self.memory.verified);
        }
        tracing::info!(
            checkpoint_id = id.get(),
            backend = BACKEND_NAME,
            bytes = new_bytes + meta.size,
            new_sst,
            reused_sst = reused,
            "incremental rocks snapshot written"
        );
        Ok(IncrementalHandle {
            backend: BACKEND_NAME.to_string(),
            backend_id: self.backend_id.clone(),
            range: self.range,
            checkpoint_id: id,
            shared,
            private,
            meta,
        })
    }
}

impl AsyncSnapshot for IncrementalSnapshot {
    fn write(self: Box<Self>, storage: &dyn CheckpointStorage) -> Result<Option<KeyedStateHandle>> {
        let span = tracing::info_span!(
            "snapshot",
            checkpoint_id = self.checkpoint.get(),
            backend = BACKEND_NAME,
            mode = "incremental"
        );
        let _entered = span.enter();
        if let Err(e) = self.native.wait() {
            remove_dir_logged(&self.dir);
            tracing::info!(checkpoint_id = self.checkpoint.get(), error = %e, "native rocks checkpoint failed");
            return Err(e);
        }
        let mut uploaded = Vec::new();
        match self.upload(storage, &mut uploaded) {
            Ok(handle) => {
                if let Some(tracker) = &self.tracker {
                    lock(tracker)
                        .finished
                        .insert(self.checkpoint, handle.shared.clone());
                }
                if !self.keep_local {
                    remove_dir_logged(&self.dir);
                }
                Ok(Some(KeyedStateHandle::Incremental(handle)))
            }
            Err(e) => {
                // The files this snapshot uploaded are referenced by no
                // handle: delete them now (in one batch where the storage
                // can), nobody else can.
                let streams: Vec<&StreamHandle> = uploaded.iter().collect();
                if let Err(err) = storage.discard_streams(&streams) {
                    tracing::warn!(files = streams.len(), error = %err, "could not delete the files of a failed snapshot");
                }
                remove_dir_logged(&self.dir);
                tracing::info!(checkpoint_id = self.checkpoint.get(), error = %e, "incremental rocks snapshot failed");
                Err(e)
            }
        }
    }
}

/// The asynchronous part of a full snapshot: the native checkpoint is
/// opened read-only and written in cairn's key-group stream format.
struct FullSnapshot {
    checkpoint: CheckpointId,
    /// The native checkpoint being taken into `dir`.
    native: NativeCheckpoint,
    dir: PathBuf,
    stream_name: String,
    max_parallelism: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<State>,
    options: Arc<RocksBackendOptions>,
    memory: SharedMemoryRef,
    now_millis: u64,
}

impl FullSnapshot {
    fn write_stream(&self, storage: &dyn CheckpointStorage) -> Result<KeyedStateHandle> {
        let db = open_read_only(&self.options, &self.memory, &self.dir, &self.states)?;
        let out =
            storage.create_output(self.checkpoint, StateScope::Exclusive, &self.stream_name)?;
        let descriptors: Vec<_> = self.states.iter().map(|s| s.descriptor.clone()).collect();
        let mut writer = KeyGroupStreamWriter::new(
            out,
            &self.stream_name,
            BACKEND_NAME,
            self.max_parallelism,
            self.range,
            &descriptors,
            self.now_millis,
        )?;
        let mut iters = Vec::with_capacity(self.states.len());
        for s in &self.states {
            let mut it = db.raw_iterator_cf(cf_of(&db, s)?);
            it.seek_to_first();
            iters.push(it);
        }
        for kg in self.range.iter() {
            writer.begin_key_group(kg)?;
            for (index, (s, it)) in self.states.iter().zip(iters.iter_mut()).enumerate() {
                let index = u32::try_from(index)
                    .map_err(|_| StateError::invalid("more than 2^32 states"))?;
                self.write_key_group(&mut writer, index, s, it, kg)?;
            }
        }
        for it in &iters {
            it.status().map_err(|e| rocks_error(&self.dir, e))?;
        }
        let handle = writer.finish()?;
        tracing::info!(
            checkpoint_id = self.checkpoint.get(),
            backend = BACKEND_NAME,
            bytes = handle.stream.size,
            "full rocks snapshot written"
        );
        Ok(KeyedStateHandle::KeyGroups(handle))
    }

    fn corrupt(&self, s: &State, detail: &str) -> StateError {
        StateError::corrupted(
            format!("state {:?} in {}", s.descriptor.name, self.dir.display()),
            detail.to_string(),
        )
    }

    /// Writes the entries of `kg` from `it` (positioned at or before them).
    fn write_key_group(
        &self,
        writer: &mut KeyGroupStreamWriter,
        index: u32,
        s: &State,
        it: &mut DBRawIterator<'_>,
        kg: KeyGroup,
    ) -> Result<()> {
        loop {
            let (Some(raw), Some(value)) = (it.key(), it.value()) else {
                return Ok(());
            };
            let d =
                decode_key(raw).ok_or_else(|| self.corrupt(s, "a RocksDB key does not decode"))?;
            if d.key_group > kg {
                return Ok(());
            }
            if d.key_group < kg {
                it.next();
                continue;
            }
            match s.layout() {
                StateLayout::Value => {
                    writer.write_value(index, d.key, d.namespace, value)?;
                    it.next();
                }
                StateLayout::List => {
                    let elements = decode_list(value)
                        .ok_or_else(|| self.corrupt(s, "a list value does not decode"))?;
                    writer.write_list(index, d.key, d.namespace, elements.iter().copied())?;
                    it.next();
                }
                StateLayout::Map => {
                    let prefix = raw.get(..d.prefix_len).unwrap_or(raw).to_vec();
                    let (key, namespace) = (d.key.to_vec(), d.namespace.to_vec());
                    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                    while let (Some(raw), Some(value)) = (it.key(), it.value()) {
                        let Some(user_key) = raw.strip_prefix(prefix.as_slice()) else {
                            break;
                        };
                        entries.push((user_key.to_vec(), value.to_vec()));
                        it.next();
                    }
                    writer.write_map(
                        index,
                        &key,
                        &namespace,
                        entries.iter().map(|(k, v)| (&k[..], &v[..])),
                    )?;
                }
            }
        }
    }
}

impl AsyncSnapshot for FullSnapshot {
    fn write(self: Box<Self>, storage: &dyn CheckpointStorage) -> Result<Option<KeyedStateHandle>> {
        let span = tracing::info_span!(
            "snapshot",
            checkpoint_id = self.checkpoint.get(),
            backend = BACKEND_NAME,
            mode = "full"
        );
        let _entered = span.enter();
        let result = self.native.wait().and_then(|()| self.write_stream(storage));
        remove_dir_logged(&self.dir);
        result.map(Some)
    }
}

impl RocksBackend {
    /// The name of this instance's full snapshot stream.
    fn full_stream_name(&self) -> String {
        format!("{}-keyed", self.backend_id)
    }

    /// The meta stream of an incremental snapshot of the current states.
    fn meta_bytes(&self) -> Result<Vec<u8>> {
        RocksMeta {
            max_parallelism: self.max_parallelism.get(),
            range: self.range,
            states: self
                .states
                .iter()
                .map(|s| MetaState {
                    descriptor: s.descriptor.clone(),
                    cf_name: s.cf_name.clone(),
                })
                .collect(),
        }
        .encode()
    }

    /// Deletes the local copy of checkpoint `id` of this instance and of
    /// the instances it restored from.
    fn remove_local_copies(&mut self, id: CheckpointId) {
        remove_dir_logged(&self.instance_dir.join(id.dir_name()));
        self.adopted_local.retain(|adopted| {
            let dir = &adopted.dir;
            remove_dir_logged(&dir.join(id.dir_name()));
            // Its last copy gone, the dead instance's directory goes with its lock file.
            let empty = crate::local_dir::holds_only_its_lock(dir);
            if empty {
                remove_dir_logged(dir);
            }
            !empty
        });
    }
}

impl Checkpointable for RocksBackend {
    /// Writes the value cache back and starts a native RocksDB checkpoint
    /// (memtable flush, hard links) into `<instance dir>/chk-<id>` on a
    /// thread of its own, during which RocksDB takes no writes (see
    /// [`crate::native_checkpoint`]); the returned part waits for it, then
    /// uploads it (incremental) or writes it as a key-group stream (full). Incremental
    /// when `mode` is [`SnapshotMode::Incremental`] or the backend's
    /// `incremental` option is on, except for savepoints: a canonical one is
    /// always a key-group stream, a native one uploads every SST file (no
    /// base) and keeps no local copy.
    fn snapshot(&mut self, id: CheckpointId, mode: SnapshotMode) -> Result<Box<dyn AsyncSnapshot>> {
        let incremental = match mode {
            SnapshotMode::Full => self.options.incremental,
            SnapshotMode::Incremental | SnapshotMode::NativeSavepoint => true,
            SnapshotMode::CanonicalSavepoint => false,
        };
        let savepoint = mode.is_savepoint();
        // An earlier snapshot's native checkpoint still being taken.
        self.gate.wait();
        let started = std::time::Instant::now();
        // is_empty writes the value cache back first, so the checkpoint
        // holds every write made before it.
        if self.is_empty()? {
            return Ok(Box::new(NothingToWrite));
        }
        let dir = self.instance_dir.join(id.dir_name());
        if dir.exists() {
            tracing::info!(dir = %dir.display(), "removing a stale local checkpoint directory");
            std::fs::remove_dir_all(&dir).map_err(|e| StateError::io(&dir, e))?;
        }
        let shared = self
            .db
            .as_ref()
            .map(Arc::clone)
            .ok_or(StateError::Closed("rocks backend database"))?;
        let native = NativeCheckpoint::start(shared, dir.clone(), id, Arc::clone(&self.gate))?;
        tracing::debug!(
            checkpoint_id = id.get(),
            incremental,
            dir = %dir.display(),
            write_back_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "native rocks checkpoint started"
        );
        if incremental {
            let base = if savepoint {
                Arc::default()
            } else {
                lock(&self.uploads).base_for(id)
            };
            Ok(Box::new(IncrementalSnapshot {
                checkpoint: id,
                native,
                dir,
                backend_id: self.backend_id.clone(),
                range: self.range,
                meta: self.meta_bytes()?,
                base,
                tracker: (!savepoint).then(|| Arc::clone(&self.uploads)),
                keep_local: self.options.local_recovery && !savepoint,
                memory: Arc::clone(&self.memory),
                transfer_threads: self.options.transfer_threads,
            }))
        } else {
            Ok(Box::new(FullSnapshot {
                checkpoint: id,
                native,
                dir,
                stream_name: self.full_stream_name(),
                max_parallelism: self.max_parallelism,
                range: self.range,
                states: self.states.to_vec(),
                options: Arc::clone(&self.options),
                memory: Arc::clone(&self.memory),
                now_millis: self.clock.now_millis(),
            }))
        }
    }

    fn restore(
        &mut self,
        handles: &[state_core::KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        self.restore_handles(handles, storage)
    }

    /// The next incremental snapshots upload every SST file: none of the
    /// restored checkpoint's files is referenced again.
    fn forget_restored_files(&mut self) -> Result<()> {
        lock(&self.uploads).forget_confirmed();
        Ok(())
    }

    /// Later incremental snapshots upload only SST files `id` did not have.
    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.gate.wait();
        lock(&self.uploads).confirm(id);
        if !self.options.local_recovery {
            remove_dir_logged(&self.instance_dir.join(id.dir_name()));
        }
        Ok(())
    }

    /// Forgets `id`'s uploads (never reused) and deletes its local copy.
    fn notify_checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        // Its native checkpoint may still be being taken into the directory.
        self.gate.wait();
        lock(&self.uploads).abort(id);
        remove_dir_logged(&self.instance_dir.join(id.dir_name()));
        Ok(())
    }

    /// Deletes `id`'s local copy.
    fn notify_checkpoint_subsumed(&mut self, id: CheckpointId) -> Result<()> {
        self.gate.wait();
        self.remove_local_copies(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_fs::FsCheckpointStorage;
    use state_core::{EntryKey, JobId, KeyedStateBackend, ManualClock, StateDescriptor, StateKind};

    /// A backend with `states` value states, each holding a few keys, so a
    /// native checkpoint has one SST per state.
    fn backend_with_states(dir: &Path, states: usize) -> RocksBackend {
        let clock = Arc::new(ManualClock::new(1_000));
        let context = state_testkit::test_context(0, 1, 128, clock).unwrap();
        let options = RocksBackendOptions::new(dir)
            .with_write_buffer_size(1 << 20)
            .with_memory_budget(32 << 20)
            .with_value_cache(8 << 20);
        let mut b = RocksBackend::new(&context, options).unwrap();
        for s in 0..states {
            let id = b
                .register_state(&StateDescriptor::new(format!("s{s}"), StateKind::Value))
                .unwrap();
            for k in 0u32..50 {
                let key = k.to_be_bytes();
                let e = EntryKey {
                    key_group: context.max_parallelism.key_group_of(&key),
                    key: &key,
                    namespace: b"",
                };
                b.put(id, &e, bytes::Bytes::from(format!("{s}-{k}")))
                    .unwrap();
            }
        }
        b.write_back_cache().unwrap();
        b
    }

    /// The asynchronous part of an incremental snapshot of the native
    /// checkpoint `dir`, on `base`, with `threads` transfer threads.
    fn part(
        b: &RocksBackend,
        dir: &Path,
        id: u64,
        base: &HashMap<String, SharedFile>,
        threads: usize,
    ) -> IncrementalSnapshot {
        IncrementalSnapshot {
            checkpoint: CheckpointId(id),
            native: NativeCheckpoint::ready(dir),
            dir: dir.to_path_buf(),
            backend_id: b.backend_id.clone(),
            range: b.range,
            meta: b.meta_bytes().unwrap(),
            base: Arc::new(base.clone()),
            tracker: None,
            // Keeps the native checkpoint for the next upload of it.
            keep_local: true,
            memory: Arc::clone(&b.memory),
            transfer_threads: threads,
        }
    }

    #[test]
    fn concurrent_upload_gives_the_handle_and_files_of_a_sequential_one() {
        let tmp = tempfile::tempdir().unwrap();
        let b = backend_with_states(&tmp.path().join("local"), 9);
        let native = tmp.path().join("native");
        Checkpoint::new(b.db().unwrap())
            .and_then(|c| c.create_checkpoint(&native))
            .unwrap();
        let job = JobId::new("job").unwrap();
        let storage = |name: &str| FsCheckpointStorage::open(tmp.path().join(name), job.clone());
        // A base holding three of the SSTs, as the last confirmed checkpoint would.
        let first = storage("first").unwrap();
        let h1 = part(&b, &native, 1, &HashMap::new(), 1)
            .upload(&first, &mut Vec::new())
            .unwrap();
        assert!(h1.shared.len() >= 9, "{:?}", h1.shared);
        let base: HashMap<String, SharedFile> = h1
            .shared
            .iter()
            .step_by(3)
            .map(|f| (f.name.clone(), f.clone()))
            .collect();

        let (sequential, concurrent) = (storage("one").unwrap(), storage("four").unwrap());
        let mut seq_uploaded = Vec::new();
        let seq = part(&b, &native, 2, &base, 1)
            .upload(&sequential, &mut seq_uploaded)
            .unwrap();
        let mut con_uploaded = Vec::new();
        let con = part(&b, &native, 2, &base, 4)
            .upload(&concurrent, &mut con_uploaded)
            .unwrap();
        assert_eq!(con, seq);
        assert_eq!(con_uploaded, seq_uploaded);
        let names: Vec<&str> = con.shared.iter().map(|f| f.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "shared files in name order");
        assert_eq!(
            con.shared
                .iter()
                .filter(|f| f.uploaded_by == CheckpointId(1))
                .count(),
            base.len()
        );
        let files = |s: &FsCheckpointStorage| {
            let mut out = Vec::new();
            for sub in ["shared", "chk-2"] {
                for e in std::fs::read_dir(s.job_dir().join(sub)).unwrap() {
                    let e = e.unwrap();
                    out.push((
                        format!("{sub}/{}", e.file_name().to_string_lossy()),
                        std::fs::read(e.path()).unwrap(),
                    ));
                }
            }
            out.sort();
            out
        };
        assert_eq!(files(&concurrent), files(&sequential));
    }

    #[test]
    fn while_a_native_checkpoint_is_taken_value_writes_wait_in_the_cache_and_list_writes_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = backend_with_states(&tmp.path().join("local"), 1);
        let lists = b
            .register_state(&StateDescriptor::new("l", StateKind::List))
            .unwrap();
        let value = state_core::StateId(0);
        let key = 7u32.to_be_bytes();
        let e = EntryKey {
            key_group: b.max_parallelism.key_group_of(&key),
            key: &key,
            namespace: b"",
        };
        // A key the value cache has never seen: a blind write of it goes
        // straight to RocksDB while the gate is open.
        let fresh = 9_999u32.to_be_bytes();
        let f = EntryKey {
            key_group: b.max_parallelism.key_group_of(&fresh),
            key: &fresh,
            namespace: b"",
        };
        let in_rocks = |b: &RocksBackend, k: &EntryKey<'_>| {
            let mut raw = Vec::new();
            crate::key_codec::encode_key(&mut raw, k.key_group, k.key, k.namespace);
            let db = b.db().unwrap();
            let cf = cf_of(db, b.states.first().unwrap()).unwrap();
            db.get_cf(cf, &raw).unwrap()
        };

        b.gate.close();
        b.put(value, &f, bytes::Bytes::from_static(b"during"))
            .unwrap();
        b.put(value, &e, bytes::Bytes::from_static(b"also"))
            .unwrap();
        assert_eq!(in_rocks(&b, &f), None, "RocksDB took a write while closed");
        assert_eq!(b.get(value, &f).unwrap().as_deref(), Some(&b"during"[..]));
        assert_eq!(b.checkpoint_write_wait(), std::time::Duration::ZERO);

        // A list append must reach RocksDB: it waits until the gate opens.
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opener = {
            let (gate, opened) = (Arc::clone(&b.gate), Arc::clone(&opened));
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                opened.store(true, std::sync::atomic::Ordering::SeqCst);
                gate.open();
            })
        };
        b.append(lists, &e, bytes::Bytes::from_static(b"x"))
            .unwrap();
        assert!(
            opened.load(std::sync::atomic::Ordering::SeqCst),
            "the append went ahead while the gate was closed"
        );
        opener.join().unwrap();
        assert!(b.checkpoint_write_wait() > std::time::Duration::ZERO);
        assert_eq!(
            b.get_list(lists, &e).unwrap(),
            vec![bytes::Bytes::from_static(b"x")]
        );

        // Open again: the cached writes reach RocksDB with the next write-back.
        b.write_back_cache().unwrap();
        assert_eq!(in_rocks(&b, &f).as_deref(), Some(&b"during"[..]));
    }
}
