//! The RocksDB side of the backend's states: one column family per state
//! ([`State`], [`cf_name`], [`cf_of`]), the open database that keeps its
//! column families' options alive ([`OpenDb`]), and opening a checkpointed
//! database read-only.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB};
use state_core::backend_support::CatalogEntry;
use state_core::{Result, StateDescriptor, StateError, StateLayout, TtlConfig};

use crate::key_codec;
use crate::options::{RocksBackendOptions, SharedMemoryRef, cf_options, db_options};
use crate::rocks_error;
use crate::ttl_filter::TtlCell;

/// The merge operator name of list states.
pub(crate) const LIST_MERGE_OPERATOR: &str = "cairn-list-concat";

/// One registered state.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) descriptor: StateDescriptor,
    /// Its column family (`s:<name>`: state names are unique per operator).
    pub(crate) cf_name: String,
    /// Its TTL, shared with the column family's compaction filter.
    pub(crate) ttl: Arc<TtlCell>,
}

impl State {
    pub(crate) fn new(descriptor: StateDescriptor) -> Self {
        State {
            cf_name: cf_name(&descriptor.name),
            ttl: Arc::new(Mutex::new(descriptor.ttl)),
            descriptor,
        }
    }

    pub(crate) fn layout(&self) -> StateLayout {
        self.descriptor.kind.layout()
    }
}

/// The column family name of the state called `name`.
pub(crate) fn cf_name(name: &str) -> String {
    format!("s:{name}")
}

/// An open database and the options of the column families created on it
/// after opening: RocksDB keeps a raw pointer to their compaction filters,
/// which the rocksdb crate frees with the options, so they live as long as
/// the database (fields drop in order: the database first).
pub(crate) struct OpenDb {
    db: DB,
    created_cf_options: Vec<rocksdb::Options>,
}

impl OpenDb {
    pub(crate) fn new(db: DB) -> Self {
        OpenDb {
            db,
            created_cf_options: Vec::new(),
        }
    }

    /// Creates a column family, keeping its options alive.
    pub(crate) fn create_cf(
        &mut self,
        name: &str,
        opts: rocksdb::Options,
    ) -> std::result::Result<(), rocksdb::Error> {
        self.db.create_cf(name, &opts)?;
        self.created_cf_options.push(opts);
        Ok(())
    }
}

impl std::ops::Deref for OpenDb {
    type Target = DB;
    fn deref(&self) -> &DB {
        &self.db
    }
}

impl CatalogEntry for State {
    fn descriptor(&self) -> &StateDescriptor {
        &self.descriptor
    }

    /// Also updates the TTL the column family's compaction filter reads.
    fn set_ttl(&mut self, ttl: Option<TtlConfig>) {
        self.descriptor.ttl = ttl;
        set_ttl(&self.ttl, ttl);
    }

    fn set_type_name(&mut self, type_name: Option<String>) {
        self.descriptor.type_name = type_name;
    }
}

pub(crate) fn set_ttl(cell: &TtlCell, ttl: Option<TtlConfig>) {
    match cell.lock() {
        Ok(mut g) => *g = ttl,
        Err(poisoned) => *poisoned.into_inner() = ttl,
    }
}

/// The column family of `state` in `db`.
pub(crate) fn cf_of<'a>(db: &'a DB, state: &State) -> Result<&'a ColumnFamily> {
    db.cf_handle(&state.cf_name).ok_or_else(|| {
        StateError::invalid(format!(
            "state {:?} has no column family {:?}",
            state.descriptor.name, state.cf_name
        ))
    })
}

/// Opens a checkpointed database read-only with the column families of `states`.
pub(crate) fn open_read_only(
    options: &RocksBackendOptions,
    memory: &SharedMemoryRef,
    dir: &Path,
    states: &[State],
) -> Result<DB> {
    let db_opts = db_options(options, memory);
    let cfs: Vec<ColumnFamilyDescriptor> = states
        .iter()
        .map(|s| {
            let mut cf = cf_options(options, memory);
            if s.layout() == StateLayout::List {
                cf.set_merge_operator_associative(LIST_MERGE_OPERATOR, key_codec::concat_merge);
            }
            ColumnFamilyDescriptor::new(s.cf_name.clone(), cf)
        })
        .collect();
    DB::open_cf_descriptors_read_only(&db_opts, dir, cfs, false).map_err(|e| rocks_error(dir, e))
}
