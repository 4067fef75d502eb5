//! [`RocksBackend`]: keyed state in a RocksDB database, one column family per state.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use state_core::backend_support::{StateCatalog, file_name_part};
use state_core::{
    BackendContext, Clock, EntryKey, KeyGroupRange, MaxParallelism, OperatorId, Result,
    StateDescriptor, StateError, StateId, StateLayout,
};

use crate::db::{LIST_MERGE_OPERATOR, OpenDb, State, cf_of};
use crate::key_codec::{self, encode_key};
use crate::native_checkpoint::WriteGate;
use crate::options::{RocksBackendOptions, SharedMemoryRef, cf_options, db_options};
use crate::ttl_filter::ttl_compaction_filter;
use crate::uploads::UploadTracker;
use crate::value_cache::ValueCache;
use crate::{RestoreStats, rocks_error};

/// Keyed state of one subtask in RocksDB (Flink's EmbeddedRocksDBStateBackend).
///
/// See the crate docs for the key layout, checkpoints and local recovery.
/// Writes go to the memtable without a write-ahead log: state becomes
/// durable through checkpoints, as in Flink.
pub struct RocksBackend {
    pub(crate) operator: OperatorId,
    pub(crate) subtask: u32,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: Arc<RocksBackendOptions>,
    pub(crate) memory: SharedMemoryRef,
    /// Unique id of this instance; names its local directory and its files in storage.
    pub(crate) backend_id: String,
    /// `<local_dir>/<backend_id>`: working databases and local checkpoint copies.
    pub(crate) instance_dir: PathBuf,
    /// The open database; `None` only after a failed reopen. Shared with
    /// the thread taking a native checkpoint while `gate` is closed, the
    /// backend's own otherwise.
    pub(crate) db: Option<Arc<OpenDb>>,
    /// Closed while a native checkpoint is taken off the task thread:
    /// writes that must reach RocksDB wait for it (see
    /// [`crate::native_checkpoint`]).
    pub(crate) gate: Arc<WriteGate>,
    /// Number of the current working database directory (`db-<n>`).
    pub(crate) db_generation: u32,
    pub(crate) states: StateCatalog<State>,
    pub(crate) write_options: WriteOptions,
    /// Reused buffer for encoding RocksDB keys on the get/put paths.
    pub(crate) scratch: RefCell<Vec<u8>>,
    /// Reused buffer for list-append merge operands.
    pub(crate) operand: Vec<u8>,
    /// Shared SST files of finished and confirmed incremental snapshots.
    pub(crate) uploads: Arc<Mutex<UploadTracker>>,
    /// Local directories of other instances whose checkpoint copies this
    /// instance restored from and now prunes as checkpoints are subsumed.
    pub(crate) adopted_local: Vec<Adopted>,
    /// The OS lock on `<instance_dir>/_lock`, held for the instance's life:
    /// how a sweep of the local directory tells it is alive.
    _instance_lock: File,
    pub(crate) last_restore: Option<RestoreStats>,
    /// Write-back cache of value-layout entries (see [`crate::value_cache`]).
    pub(crate) cache: RefCell<ValueCache>,
}

impl fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksBackend")
            .field("operator", &self.operator)
            .field("subtask", &self.subtask)
            .field("range", &self.range)
            .field("backend_id", &self.backend_id)
            .field("states", &self.states.len())
            .finish_non_exhaustive()
    }
}

/// Another (dead) instance's directory whose local copies a backend
/// restored from, with that directory's lock while the backend could take it.
#[derive(Debug)]
pub(crate) struct Adopted {
    pub(crate) dir: PathBuf,
    _lock: Option<File>,
}

impl Adopted {
    /// Adopts `dir`, taking its lock when no live instance holds it.
    pub(crate) fn new(dir: PathBuf) -> Self {
        let lock = crate::local_dir::try_adopt(&dir);
        Adopted { dir, _lock: lock }
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl RocksBackend {
    /// An empty backend for the subtask described by `context`, with its own
    /// block cache of `options.memory_budget` bytes. Backends created by one
    /// [`crate::RocksBackendFactory`] share theirs instead.
    pub fn new(context: &BackendContext, options: RocksBackendOptions) -> Result<Self> {
        options.validate()?;
        let memory = Arc::new(crate::options::SharedMemory::new(&options));
        Self::with_memory(context, Arc::new(options), memory)
    }

    pub(crate) fn with_memory(
        context: &BackendContext,
        options: Arc<RocksBackendOptions>,
        memory: SharedMemoryRef,
    ) -> Result<Self> {
        let range = context.key_group_range()?;
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let backend_id = format!(
            "{}-{}-{:x}{:x}{n:x}",
            file_name_part(&context.operator_id.0, 80, false),
            context.subtask,
            context.clock.now_millis(),
            std::process::id(),
        );
        let instance_dir = options.local_dir.join(&backend_id);
        let instance_lock = crate::local_dir::lock_instance_dir(&instance_dir)?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        let cache = RefCell::new(ValueCache::new(
            Arc::clone(&memory.value_pool),
            options.value_cache_max_dirty,
        ));
        let mut backend = RocksBackend {
            operator: context.operator_id.clone(),
            subtask: context.subtask,
            range,
            max_parallelism: context.max_parallelism,
            clock: Arc::clone(&context.clock),
            options,
            memory,
            backend_id,
            instance_dir,
            db: None,
            gate: Arc::default(),
            db_generation: 0,
            states: StateCatalog::new("rocks"),
            write_options,
            scratch: RefCell::new(Vec::with_capacity(64)),
            operand: Vec::new(),
            uploads: Arc::new(Mutex::new(UploadTracker::default())),
            adopted_local: Vec::new(),
            _instance_lock: instance_lock,
            last_restore: None,
            cache,
        };
        let (db, path) = backend.open_fresh_db(&[])?;
        backend.db = Some(Arc::new(db));
        tracing::debug!(
            operator = %context.operator_id,
            subtask = context.subtask,
            %range,
            dir = %path.display(),
            "rocks backend created"
        );
        Ok(backend)
    }

    /// The unique id of this instance (in its incremental handles and the
    /// name of its local directory).
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The directory of this instance's working database and local checkpoint copies.
    pub fn instance_dir(&self) -> &Path {
        &self.instance_dir
    }

    /// The options the backend was created with.
    pub fn options(&self) -> &RocksBackendOptions {
        &self.options
    }

    /// Bytes the shared block cache and the memtables charged to it use now
    /// (every backend of the factory together; the value caches are
    /// [`RocksBackend::value_caches_usage`]).
    pub fn memory_usage(&self) -> usize {
        self.memory.usage()
    }

    /// Bytes the memtables of every backend of the factory use now (part of
    /// [`RocksBackend::memory_usage`]).
    pub fn write_buffer_usage(&self) -> usize {
        self.memory.write_buffer_usage()
    }

    /// Bytes the value caches of every backend of the factory hold now,
    /// against their shared [`RocksBackendOptions::value_cache_bytes`].
    pub fn value_caches_usage(&self) -> usize {
        self.memory.value_pool.used()
    }

    /// Time writes have waited so far for native checkpoints taken off the
    /// task thread (writes RocksDB must take itself: list and map states, a
    /// full value cache; see the crate docs). A keyed aggregation's stays 0.
    pub fn checkpoint_write_wait(&self) -> std::time::Duration {
        self.gate.waited()
    }

    /// What the last restore read from local copies and from storage.
    pub fn last_restore_stats(&self) -> Option<&RestoreStats> {
        self.last_restore.as_ref()
    }

    /// Bytes the value cache accounts for now (see
    /// [`RocksBackendOptions::value_cache_bytes`]).
    pub fn value_cache_usage(&self) -> usize {
        self.cache.try_borrow().map_or(0, |c| c.bytes())
    }

    /// Writes the value cache's dirty entries to RocksDB in one batch
    /// (after any native checkpoint being taken).
    pub fn write_back_cache(&self) -> Result<()> {
        let mut cache = self.borrow_cache()?;
        self.write_back(&mut cache)
    }

    pub(crate) fn borrow_cache(&self) -> Result<std::cell::RefMut<'_, ValueCache>> {
        self.cache
            .try_borrow_mut()
            .map_err(|_| StateError::invalid("rocks backend value cache is already in use"))
    }

    /// Writes `cache`'s dirty entries to RocksDB in one batch, after any
    /// native checkpoint being taken; they stay dirty if the write fails.
    pub(crate) fn write_back(&self, cache: &mut ValueCache) -> Result<()> {
        self.gate.wait();
        let db = self.db()?;
        cache.write_back(|dirty| {
            let mut batch = WriteBatch::default();
            for (state, key, value) in dirty {
                let s = self.states.get(state as usize).ok_or_else(|| {
                    StateError::invalid(format!("value cache holds unknown state {state}"))
                })?;
                let cf = cf_of(db, s)?;
                match value {
                    Some(v) => batch.put_cf(cf, key, v),
                    None => batch.delete_cf(cf, key),
                }
            }
            db.write_opt(batch, &self.write_options)
                .map_err(|e| self.err(e))
        })
    }

    /// Writes back and evicts when the cache passed its bounds. While a
    /// native checkpoint is being taken the dirty entries stay in the cache
    /// up to its budget (clean ones are evicted for them first); past it
    /// the write-back waits for the checkpoint.
    pub(crate) fn maintain_cache(&self, cache: &mut ValueCache) -> Result<()> {
        if cache.wants_write_back() {
            if self.gate.is_closed() {
                if !cache.over_budget() {
                    return Ok(());
                }
                cache.evict();
                if !cache.over_budget() {
                    return Ok(());
                }
            }
            self.write_back(cache)?;
            if cache.over_budget() {
                cache.evict();
            }
        }
        Ok(())
    }

    /// Flushes memtables and compacts every state's column family fully, so
    /// the TTL compaction filter sees every entry (for tests and tools).
    pub fn compact_all(&mut self) -> Result<()> {
        self.write_back_cache()?;
        let db = self.db()?;
        for s in &self.states {
            let cf = cf_of(db, s)?;
            db.flush_cf(cf)
                .map_err(|e| rocks_error(&self.instance_dir, e))?;
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    pub(crate) fn db(&self) -> Result<&DB> {
        self.db
            .as_deref()
            .map(|db| &**db)
            .ok_or(StateError::Closed("rocks backend database"))
    }

    /// The database to change (a new column family, a reopen), once no
    /// native checkpoint thread holds it.
    pub(crate) fn db_mut(&mut self) -> Result<&mut OpenDb> {
        self.gate.wait();
        match self.db.as_mut() {
            Some(db) => Arc::get_mut(db).ok_or_else(|| {
                StateError::invalid("the rocks database is still held by a native checkpoint")
            }),
            None => Err(StateError::Closed("rocks backend database")),
        }
    }

    /// The directory of working database generation `n`.
    pub(crate) fn db_dir(&self, n: u32) -> PathBuf {
        self.instance_dir.join(format!("db-{n}"))
    }

    /// The column-family options of a state: merge operator for lists, and
    /// the TTL compaction filter.
    pub(crate) fn state_cf_options(&self, state: &State) -> rocksdb::Options {
        let mut cf = cf_options(&self.options, &self.memory);
        if state.layout() == StateLayout::List {
            cf.set_merge_operator_associative(LIST_MERGE_OPERATOR, key_codec::concat_merge);
        }
        cf.set_compaction_filter(
            "cairn-ttl",
            ttl_compaction_filter(
                state.layout(),
                Arc::clone(&state.ttl),
                Arc::clone(&self.clock),
            ),
        );
        cf
    }

    /// Opens (creating) a database at `path` with a column family for each
    /// of `states` and of `extra`.
    pub(crate) fn open_db_at(&self, path: &Path, states: &[State]) -> Result<OpenDb> {
        let db_opts = db_options(&self.options, &self.memory);
        let cfs: Vec<ColumnFamilyDescriptor> = states
            .iter()
            .map(|s| ColumnFamilyDescriptor::new(s.cf_name.clone(), self.state_cf_options(s)))
            .collect();
        DB::open_cf_descriptors(&db_opts, path, cfs)
            .map(OpenDb::new)
            .map_err(|e| rocks_error(path, e))
    }

    /// Opens an empty database in the next generation directory with column
    /// families for the registered states and `extra`.
    pub(crate) fn open_fresh_db(&mut self, extra: &[State]) -> Result<(OpenDb, PathBuf)> {
        self.db_generation += 1;
        let path = self.db_dir(self.db_generation);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| StateError::io(&path, e))?;
        }
        let mut all = self.states.to_vec();
        all.extend(extra.iter().cloned());
        let db = self.open_db_at(&path, &all)?;
        Ok((db, path))
    }

    pub(crate) fn state(&self, state: StateId, layout: StateLayout) -> Result<&State> {
        let s = self.states.get(state.index()).ok_or_else(|| {
            StateError::invalid(format!(
                "state id {} is not registered with rocks backend {} subtask {}",
                state.0, self.operator, self.subtask
            ))
        })?;
        if s.layout() != layout {
            return Err(StateError::invalid(format!(
                "state {:?} has layout {:?}, not {layout:?}",
                s.descriptor.name,
                s.layout()
            )));
        }
        Ok(s)
    }

    pub(crate) fn check_key(&self, key: &EntryKey<'_>) -> Result<()> {
        if self.range.contains(key.key_group) {
            Ok(())
        } else {
            Err(StateError::invalid(format!(
                "key group {} is outside the range {} of rocks backend {} subtask {}",
                key.key_group, self.range, self.operator, self.subtask
            )))
        }
    }

    /// The database and column family of `state` after checking `key` and the layout.
    pub(crate) fn target(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        layout: StateLayout,
    ) -> Result<(&DB, &ColumnFamily)> {
        self.check_key(key)?;
        let s = self.state(state, layout)?;
        let db = self.db()?;
        Ok((db, cf_of(db, s)?))
    }

    /// [`Self::target`] for a write RocksDB must take itself: after any
    /// native checkpoint being taken.
    pub(crate) fn target_for_write(
        &self,
        state: StateId,
        key: &EntryKey<'_>,
        layout: StateLayout,
    ) -> Result<(&DB, &ColumnFamily)> {
        self.gate.wait();
        self.target(state, key, layout)
    }

    /// Runs `f` with the RocksDB key of `key` (+ `suffix`) in the scratch buffer.
    pub(crate) fn with_key<R>(
        &self,
        key: &EntryKey<'_>,
        suffix: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        match self.scratch.try_borrow_mut() {
            Ok(mut buf) => {
                encode_key(&mut buf, key.key_group, key.key, key.namespace);
                buf.extend_from_slice(suffix);
                f(&buf)
            }
            Err(_) => {
                let mut buf = Vec::new();
                encode_key(&mut buf, key.key_group, key.key, key.namespace);
                buf.extend_from_slice(suffix);
                f(&buf)
            }
        }
    }

    pub(crate) fn err(&self, e: rocksdb::Error) -> StateError {
        rocks_error(&self.instance_dir, e)
    }

    /// Registers `descriptor` in `states` without touching the database;
    /// returns its id and whether it is new.
    pub(crate) fn register_in(
        states: &mut StateCatalog<State>,
        descriptor: &StateDescriptor,
    ) -> Result<(StateId, bool)> {
        states.register(descriptor, |d| State::new(d.clone()))
    }

    /// Whether no state holds any entry (after writing the cache back).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        self.write_back_cache()?;
        let db = self.db()?;
        for s in &self.states {
            let mut it = db.raw_iterator_cf(cf_of(db, s)?);
            it.seek_to_first();
            if it.valid() {
                return Ok(false);
            }
            it.status().map_err(|e| self.err(e))?;
        }
        Ok(true)
    }
}

impl Drop for RocksBackend {
    fn drop(&mut self) {
        // A native checkpoint being taken finishes with the database first.
        self.gate.wait();
        drop(self.db.take());
        // The working databases go; local checkpoint copies stay for a
        // restore after a failure when local recovery is on (and the
        // directory with its released lock, so a sweep can tell it is dead).
        let result = if self.options.local_recovery {
            (1..=self.db_generation)
                .map(|n| self.db_dir(n))
                .filter(|p| p.exists())
                .try_for_each(std::fs::remove_dir_all)
                .and_then(|()| {
                    if crate::local_dir::holds_only_its_lock(&self.instance_dir) {
                        std::fs::remove_dir_all(&self.instance_dir)
                    } else {
                        Ok(())
                    }
                })
        } else {
            std::fs::remove_dir_all(&self.instance_dir)
        };
        if let Err(e) = result {
            tracing::debug!(dir = %self.instance_dir.display(), error = %e, "could not remove rocks backend directory");
        }
    }
}
