//! Restore: from incremental handles (local copy or storage) and full
//! key-group streams, at any parallelism.
//!
//! The incremental handle overlapping this backend's key groups most becomes
//! the base: its files are placed in a new working directory (hard links
//! from the local copy when it is intact, else read from storage and
//! checked, `transfer_threads` files at once: a filesystem storage on the
//! same filesystem hard-links its SST files too, since neither side ever
//! writes to one, and the link is read once to check its CRC-32), the
//! database is opened and everything outside the range is clipped with
//! `delete_range`. The key groups of every other overlapping handle are then
//! copied in: incremental ones are opened read-only in a temporary directory
//! and iterated, full ones are read from their key-group stream.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rocksdb::{DB, WriteBatch};
use state_core::backend_support::{
    KeyGroupStreamReader, RecordEntry, StateCatalog, read_verified, write_verified_copy,
};
use state_core::{
    CheckpointStorage, IncrementalHandle, KeyGroup, KeyGroupsHandle, KeyedStateHandle, Result,
    StateDescriptor, StateError, StateId, StreamHandle,
};

use crate::backend::RocksBackend;
use crate::db::{OpenDb, State, cf_of, open_read_only};
use crate::key_codec::{encode_key, encode_list, key_group_prefix};
use crate::local_copy::{local_files_match, remove_dir_logged};
use crate::meta::{LOCAL_META_FILE, RocksMeta};
use crate::uploads::{UploadTracker, transfer_each};
use crate::verified::VerifiedFiles;
use crate::{RestoreStats, rocks_error};

/// Write batches are written once they hold this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// The states being restored, before they replace the backend's.
struct Restoring {
    states: StateCatalog<State>,
}

impl Restoring {
    /// Registers a state found in a snapshot; `what` names the snapshot.
    fn register(&mut self, d: &StateDescriptor, what: &str) -> Result<StateId> {
        RocksBackend::register_in(&mut self.states, d)
            .map(|(id, _)| id)
            .map_err(|e| StateError::incompatible(what, format!("state in snapshot: {e}")))
    }
}

/// A file name from a handle, checked to be a plain name in one directory.
fn plain_name<'a>(name: &'a str, what: &str) -> Result<&'a str> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name != LOCAL_META_FILE;
    if ok {
        Ok(name)
    } else {
        Err(StateError::corrupted(
            what,
            format!("file name {name:?} is not a plain file name"),
        ))
    }
}

/// Every (local name, stream) of an incremental handle.
fn files(h: &IncrementalHandle) -> impl Iterator<Item = (&str, &StreamHandle)> {
    h.shared
        .iter()
        .map(|f| (f.name.as_str(), &f.handle))
        .chain(h.private.iter().map(|f| (f.name.as_str(), &f.handle)))
}

impl RocksBackend {
    /// The local copy of `h`'s checkpoint, if it is present and every file
    /// matches the handle's length and CRC-32; counts the files trusted
    /// without reading them (see `verified`) into `trusted_files`.
    fn intact_local_copy(
        &self,
        h: &IncrementalHandle,
        trusted_files: &mut usize,
    ) -> Option<PathBuf> {
        if !self.options.local_recovery {
            return None;
        }
        let dir = self
            .options
            .local_dir
            .join(&h.backend_id)
            .join(h.checkpoint_id.dir_name());
        if !dir.is_dir() || plain_name(&h.backend_id, "backend id").is_err() {
            return None;
        }
        // Files this process checksummed before and that have not changed
        // since are trusted; the others are read and checksummed now.
        let verified = &self.memory.verified;
        let (trusted, unchecked): (Vec<_>, Vec<_>) = files(h)
            .chain(std::iter::once((LOCAL_META_FILE, &h.meta)))
            .map(|(name, stream)| (dir.join(name), stream))
            .partition(|(path, stream)| verified.trusted(path, stream.size, stream.crc32));
        let readings: Vec<_> = unchecked
            .iter()
            .map(|(path, _)| VerifiedFiles::before_read(path))
            .collect();
        match local_files_match(&unchecked) {
            Ok(()) => {
                for ((path, stream), reading) in unchecked.iter().zip(readings) {
                    verified.note(path, reading, stream.crc32);
                }
                *trusted_files += trusted.len();
                Some(dir)
            }
            Err(detail) => {
                tracing::info!(
                    checkpoint_id = h.checkpoint_id.get(),
                    %detail,
                    "local copy of the checkpoint is damaged; restoring from checkpoint storage"
                );
                None
            }
        }
    }

    /// Places the files of `h` in `target` and returns its meta.
    fn materialize(
        &mut self,
        h: &IncrementalHandle,
        target: &Path,
        storage: &dyn CheckpointStorage,
        stats: &mut RestoreStats,
    ) -> Result<RocksMeta> {
        let what = h.meta.describe();
        if target.exists() {
            std::fs::remove_dir_all(target).map_err(|e| StateError::io(target, e))?;
        }
        std::fs::create_dir_all(target).map_err(|e| StateError::io(target, e))?;
        if let Some(local) = self.intact_local_copy(h, &mut stats.local_files_trusted) {
            for (name, stream) in files(h) {
                let name = plain_name(name, &what)?;
                let (src, dst) = (local.join(name), target.join(name));
                // SST files are immutable: link them. The rest RocksDB may rewrite.
                let linked = name.ends_with(".sst") && std::fs::hard_link(&src, &dst).is_ok();
                if !linked {
                    std::fs::copy(&src, &dst).map_err(|e| StateError::io(&dst, e))?;
                }
                stats.files_from_local += 1;
                stats.bytes_from_local += stream.size;
            }
            let meta_path = local.join(LOCAL_META_FILE);
            let bytes = std::fs::read(&meta_path).map_err(|e| StateError::io(&meta_path, e))?;
            tracing::info!(checkpoint_id = h.checkpoint_id.get(), dir = %local.display(), "restoring from the local copy");
            if let Some(parent) = local.parent()
                && !self.adopted_local.iter().any(|a| a.dir == parent)
                && parent != self.instance_dir
            {
                self.adopted_local
                    .push(crate::backend::Adopted::new(parent.to_path_buf()));
            }
            return RocksMeta::decode(&bytes, &what);
        }
        let downloads = files(h)
            .map(|(name, stream)| Ok((target.join(plain_name(name, &what)?), stream)))
            .collect::<Result<Vec<_>>>()?;
        // `transfer_threads` files at once; the first failure in handle
        // order is returned (the caller removes `target`).
        let outcomes = transfer_each(
            &downloads,
            self.options.transfer_threads,
            |(dst, stream)| {
                if dst.extension().is_some_and(|e| e == "sst") {
                    // RocksDB never writes to an SST file: a filesystem
                    // storage may link its own file here.
                    storage.place_read_only(stream, dst)
                } else {
                    write_verified_copy(storage, stream, dst)
                }
            },
        );
        for (outcome, (_, stream)) in outcomes.into_iter().zip(&downloads) {
            match outcome {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                // Never reached: items are taken in order, so a failed one
                // comes before any that was not started.
                None => return Err(StateError::corrupted(&what, "a download was not run")),
            }
            stats.files_from_storage += 1;
            stats.bytes_from_storage += stream.size;
        }
        let bytes = read_verified(storage, &h.meta)?;
        stats.bytes_from_storage += h.meta.size;
        tracing::info!(checkpoint_id = h.checkpoint_id.get(), storage = %storage.describe(), "restoring from checkpoint storage");
        RocksMeta::decode(&bytes, &what)
    }

    /// Checks a snapshot's max parallelism against this job's.
    fn check_max_parallelism(&self, found: u32, what: &str) -> Result<()> {
        if found == self.max_parallelism.get() {
            Ok(())
        } else {
            Err(StateError::incompatible(
                what,
                format!(
                    "snapshot has max parallelism {found}, this job {}; a job's max parallelism cannot change",
                    self.max_parallelism
                ),
            ))
        }
    }

    /// Creates the column family of every state of `r` the database lacks.
    fn ensure_cfs(&self, db: &mut OpenDb, r: &Restoring) -> Result<()> {
        for s in &r.states {
            if db.cf_handle(&s.cf_name).is_none() {
                let opts = self.state_cf_options(s);
                db.create_cf(&s.cf_name, opts)
                    .map_err(|e| rocks_error(&self.instance_dir, e))?;
            }
        }
        Ok(())
    }

    /// Deletes every key outside this backend's key groups from the states in `meta`.
    fn clip(&self, db: &DB, r: &Restoring, meta: &RocksMeta) -> Result<()> {
        let start = key_group_prefix(self.range.start());
        let end_exclusive = self
            .range
            .end()
            .map_or(u32::from(self.range.start().0), |e| e.get() + 1);
        let end_exclusive = u16::try_from(end_exclusive)
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        for m in &meta.states {
            let Some(s) = r.states.iter().find(|s| s.cf_name == m.cf_name) else {
                continue;
            };
            let cf = cf_of(db, s)?;
            let err = |e: rocksdb::Error| rocks_error(&self.instance_dir, e);
            if start != [0, 0] {
                db.delete_range_cf(cf, [0u8, 0].as_slice(), start.as_slice())
                    .map_err(err)?;
            }
            db.delete_range_cf(cf, end_exclusive.as_slice(), [0xffu8; 3].as_slice())
                .map_err(err)?;
        }
        Ok(())
    }

    /// Copies this backend's key groups of an incremental handle into `db`.
    fn import_incremental(
        &mut self,
        db: &mut OpenDb,
        r: &mut Restoring,
        h: &IncrementalHandle,
        storage: &dyn CheckpointStorage,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let tmp = self.instance_dir.join(crate::local_dir::RESTORE_IMPORT_DIR);
        let meta = self.materialize(h, &tmp, storage, stats)?;
        let what = h.meta.describe();
        self.check_max_parallelism(meta.max_parallelism, &what)?;
        let mut pairs = Vec::new();
        for m in &meta.states {
            let id = r.register(&m.descriptor, &what)?;
            let source = State {
                cf_name: m.cf_name.clone(),
                ..State::new(m.descriptor.clone())
            };
            pairs.push((source, id));
        }
        self.ensure_cfs(db, r)?;
        let sources: Vec<State> = pairs.iter().map(|(s, _)| s.clone()).collect();
        let result = (|| -> Result<()> {
            let src = open_read_only(&self.options, &self.memory, &tmp, &sources)?;
            let lower = key_group_prefix(self.range.start());
            for (source, id) in &pairs {
                let target = r
                    .states
                    .get(id.index())
                    .ok_or_else(|| StateError::invalid("restored state lost"))?;
                let (src_cf, dst_cf) = (cf_of(&src, source)?, cf_of(db, target)?);
                let mut it = src.raw_iterator_cf(src_cf);
                it.seek(lower);
                let mut batch = WriteBatch::default();
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    let kg = k
                        .first_chunk::<2>()
                        .map(|b| KeyGroup(u16::from_be_bytes(*b)));
                    if !kg.is_some_and(|kg| self.range.contains(kg)) {
                        break;
                    }
                    batch.put_cf(dst_cf, k, v);
                    if batch.size_in_bytes() >= BATCH_BYTES {
                        db.write_opt(std::mem::take(&mut batch), &self.write_options)
                            .map_err(|e| rocks_error(&self.instance_dir, e))?;
                    }
                    it.next();
                }
                it.status().map_err(|e| rocks_error(&tmp, e))?;
                db.write_opt(batch, &self.write_options)
                    .map_err(|e| rocks_error(&self.instance_dir, e))?;
            }
            Ok(())
        })();
        remove_dir_logged(&tmp);
        result
    }

    /// Copies this backend's key groups of a full key-group stream into `db`.
    fn import_key_groups(
        &self,
        db: &mut OpenDb,
        r: &mut Restoring,
        h: &KeyGroupsHandle,
        storage: &dyn CheckpointStorage,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let what = h.stream.describe();
        let bytes: Bytes = storage.read(&h.stream)?;
        stats.files_from_storage += 1;
        stats.bytes_from_storage += h.stream.size;
        let reader = KeyGroupStreamReader::open(bytes, h)?;
        self.check_max_parallelism(reader.max_parallelism().get(), &what)?;
        let ids = reader
            .states()
            .iter()
            .map(|d| r.register(d, &what))
            .collect::<Result<Vec<StateId>>>()?;
        self.ensure_cfs(db, r)?;
        let mut batch = WriteBatch::default();
        let mut key = Vec::new();
        reader.read(self.range, &mut |record| {
            let target = ids
                .get(record.state as usize)
                .and_then(|id| r.states.get(id.index()))
                .ok_or_else(|| StateError::corrupted(&what, "record of an unknown state"))?;
            let cf = cf_of(db, target)?;
            encode_key(&mut key, record.key_group, record.key, record.namespace);
            match record.entry {
                RecordEntry::Value(v) => batch.put_cf(cf, &key, v),
                RecordEntry::List(list) => {
                    batch.put_cf(cf, &key, encode_list(list.iter().copied()))
                }
                RecordEntry::Map(entries) => {
                    let prefix_len = key.len();
                    for (uk, v) in entries {
                        key.truncate(prefix_len);
                        key.extend_from_slice(uk);
                        batch.put_cf(cf, &key, v);
                    }
                }
            }
            if batch.size_in_bytes() >= BATCH_BYTES
                && let Err(e) = db.write_opt(std::mem::take(&mut batch), &self.write_options)
            {
                return Err(rocks_error(&self.instance_dir, e));
            }
            Ok(())
        })?;
        db.write_opt(batch, &self.write_options)
            .map_err(|e| rocks_error(&self.instance_dir, e))
    }

    /// Builds the restored database in a new working directory.
    fn build_restored(
        &mut self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
        stats: &mut RestoreStats,
    ) -> Result<(OpenDb, Restoring, Option<UploadTracker>)> {
        if let Some(h) = handles.iter().find_map(|h| match h {
            KeyedStateHandle::Incremental(h) if h.backend != crate::BACKEND_NAME => Some(h),
            _ => None,
        }) {
            return Err(StateError::incompatible(
                h.meta.describe(),
                format!(
                    "the RocksDB backend restores its own incremental snapshots and full \
                     key-group snapshots; this is an incremental snapshot of backend {:?} (move \
                     state between backends with a canonical savepoint)",
                    h.backend
                ),
            ));
        }
        let mut r = Restoring {
            states: self.states.map(|s| State::new(s.descriptor.clone())),
        };
        let range = self.range;
        let overlap = |h: &KeyedStateHandle| h.key_groups().intersect(&range).len();
        let relevant: Vec<&KeyedStateHandle> = handles.iter().filter(|h| overlap(h) > 0).collect();
        let base = relevant
            .iter()
            .enumerate()
            .filter(|(_, h)| matches!(h, KeyedStateHandle::Incremental(_)))
            .max_by_key(|(_, h)| overlap(h))
            .map(|(i, _)| i);
        self.db_generation += 1;
        let path = self.db_dir(self.db_generation);
        let mut tracker = None;
        let mut db = match base.and_then(|i| relevant.get(i)) {
            Some(KeyedStateHandle::Incremental(h)) => {
                let meta = self.materialize(h, &path, storage, stats)?;
                let what = h.meta.describe();
                self.check_max_parallelism(meta.max_parallelism, &what)?;
                for m in &meta.states {
                    let id = r.register(&m.descriptor, &what)?;
                    if r.states
                        .get(id.index())
                        .is_some_and(|s| s.cf_name != m.cf_name)
                    {
                        return Err(StateError::corrupted(
                            &what,
                            "column family does not match its state",
                        ));
                    }
                }
                let db = self.open_db_at(&path, &r.states)?;
                if h.range.intersect(&range) != h.range {
                    self.clip(&db, &r, &meta)?;
                } else if relevant.len() == 1 {
                    // Same key groups, one handle: later snapshots build on its files.
                    tracker = Some(UploadTracker::seeded(h.checkpoint_id, &h.shared));
                }
                db
            }
            _ => {
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(|e| StateError::io(&path, e))?;
                }
                self.open_db_at(&path, &r.states)?
            }
        };
        for (i, h) in relevant.iter().enumerate() {
            if Some(i) == base {
                continue;
            }
            match h {
                KeyedStateHandle::Incremental(h) => {
                    self.import_incremental(&mut db, &mut r, h, storage, stats)?;
                }
                KeyedStateHandle::KeyGroups(h) => {
                    self.import_key_groups(&mut db, &mut r, h, storage, stats)?;
                }
            }
        }
        self.ensure_cfs(&mut db, &r)?;
        stats.handles = relevant.len();
        Ok((db, r, tracker))
    }

    /// [`state_core::Checkpointable::restore`] for the RocksDB backend.
    pub(crate) fn restore_handles(
        &mut self,
        handles: &[KeyedStateHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<()> {
        let span = tracing::info_span!(
            "restore",
            backend = crate::BACKEND_NAME,
            operator = %self.operator,
            subtask = self.subtask,
            handles = handles.len(),
            bytes = tracing::field::Empty
        );
        let _entered = span.enter();
        // A native checkpoint being taken finishes with the old database first.
        self.gate.wait();
        // The restored state replaces everything, unwritten cache entries too.
        self.cache.get_mut().clear();
        let old_generation = self.db_generation;
        drop(self.db.take());
        remove_dir_logged(&self.db_dir(old_generation));
        let mut stats = RestoreStats::default();
        match self.build_restored(handles, storage, &mut stats) {
            Ok((db, r, tracker)) => {
                self.db = Some(std::sync::Arc::new(db));
                self.states = r.states;
                self.uploads =
                    std::sync::Arc::new(std::sync::Mutex::new(tracker.unwrap_or_default()));
                span.record("bytes", stats.bytes_from_storage + stats.bytes_from_local);
                tracing::info!(
                    source = ?stats.source(),
                    files_from_local = stats.files_from_local,
                    files_from_storage = stats.files_from_storage,
                    bytes_from_storage = stats.bytes_from_storage,
                    "rocks backend restored"
                );
                self.last_restore = Some(stats);
                Ok(())
            }
            Err(e) => {
                let failed = self.db_generation;
                remove_dir_logged(&self.db_dir(failed));
                self.states = self.states.map(|s| State::new(s.descriptor.clone()));
                self.uploads = std::sync::Arc::new(std::sync::Mutex::new(UploadTracker::default()));
                match self.open_fresh_db(&[]) {
                    Ok((db, _)) => self.db = Some(std::sync::Arc::new(db)),
                    Err(reopen) => {
                        tracing::warn!(error = %reopen, "could not reopen an empty database after a failed restore");
                    }
                }
                tracing::info!(error = %e, "rocks backend restore failed; backend left empty");
                self.last_restore = Some(stats);
                Err(e)
            }
        }
    }
}
