//! Incremental checkpoints of the heap backend: a chain of one base and
//! deltas.
//!
//! Flink's heap backend writes every entry on every checkpoint; its
//! changelog backend logs each state change and materializes the state now
//! and then. cairn keeps the idea and leaves out the log: while the job
//! checkpoints incrementally the backend remembers which (state, key,
//! namespace) entries changed since each snapshot ([`Tracker`]), and a
//! snapshot writes only the current entries of those keys (a *delta*), or a
//! removal where the key is gone. A checkpoint's handle lists the chain its
//! state is made of: the *base* (a full key-group stream) and the deltas
//! after it, each a key-group stream in [`StateScope::Shared`] that later
//! checkpoints reference again, so the shared-state registry deletes a file
//! when the last retained checkpoint using it goes. A restore reads the
//! base, then each delta in order, each replacing or removing the entries it
//! names: the result equals a full snapshot of the same moment.
//!
//! The chain is compacted before it grows past a bound: when the deltas
//! written since the base, plus the estimated size of the next one, would
//! exceed [`crate::HeapBackendOptions::delta_budget_percent`] of the base
//! (default 100), the next checkpoint writes a new base instead, so a
//! retained checkpoint's storage stays within about twice its full size. A
//! delta estimated at more than half the base is written as a base too: it
//! would cost nearly as much and lengthen every restore. (The estimate is
//! the changed entries times the base's bytes per entry.)
//! The new base is written by the checkpoint's asynchronous part, off the
//! task thread, like every heap snapshot.
//!
//! # Which snapshots a delta may build on
//! A delta is relative to the chain of the newest *confirmed* incremental
//! snapshot (its checkpoint completed), never to a pending one: a pending
//! checkpoint may still be aborted and its files deleted. It therefore holds
//! every change since that snapshot, including the changes before the
//! pending ones. While a pending snapshot is a new base, the next snapshot
//! is a base too: the base's completion subsumes the old chain and the
//! registry deletes its files, which a delta on the old chain would still
//! reference. (The RocksDB backend's incremental snapshots follow the same
//! rule; see its `UploadTracker`.)
//!
//! # Stream layout
//! Every link is a [`KeyGroupStreamWriter`] stream. A delta's stream header
//! names the backend's states plus one last list state,
//! [`REMOVALS_STATE`]: a record of it for (key, namespace) lists, as 4-byte
//! little-endian state indices, the states whose entry for that key was
//! removed. A (state, key group) whose changed keys grew past half of its
//! entries is written whole and listed as a *reset*: a restore empties it
//! before applying the delta. The handle's `meta` stream
//! ([`CHAIN_MAGIC`], version, postcard [`ChainMeta`], CRC-32) records the
//! links in order with their key-group offsets, record counts and resets.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use state_core::backend_support::{KeyGroupStreamWriter, output_error};
use state_core::{
    CheckpointId, CheckpointStorage, IncrementalHandle, KeyGroupRange, KeyGroupsHandle,
    MaxParallelism, Result, SharedFile, StateDescriptor, StateError, StateKind, StateScope,
};

use crate::table::{FastMap, Lookup, OwnedKey, Table};

/// The first bytes of a heap chain's meta stream.
pub(crate) const CHAIN_MAGIC: &[u8; 8] = b"CAIRNHCH";
/// The chain meta format this build writes and reads.
pub(crate) const CHAIN_VERSION: u16 = 1;
/// Name of the pseudo-state of a delta stream that lists removed entries.
pub(crate) const REMOVALS_STATE: &str = "\u{0}cairn.removed";

/// A (state, key group) whose changed keys reach this many and half its
/// entries is written whole instead of key by key: the set stops growing,
/// which bounds the tracking memory to about half the keys.
const WHOLE_KEY_GROUP_MIN: usize = 64;

/// Aborted snapshots since the last confirmed one after which the tracker
/// forgets the chain and the next snapshot is a base.
const MAX_ABORTED: usize = 4;

/// What changed in one state's key group since a snapshot.
#[derive(Clone, Default)]
pub(crate) enum Changed {
    /// These (key, namespace) entries were written or removed.
    Keys(hashbrown::HashSet<OwnedKey, foldhash::fast::RandomState>),
    /// So much changed that the key group is written whole.
    #[default]
    All,
}

impl Changed {
    fn empty() -> Self {
        Changed::Keys(Default::default())
    }

    fn is_empty(&self) -> bool {
        matches!(self, Changed::Keys(k) if k.is_empty())
    }
}

/// The changes made between two snapshots: per state, per key-group offset.
#[derive(Default)]
pub(crate) struct Changes {
    states: Vec<Vec<Changed>>,
}

impl Changes {
    /// Records that (key, namespace) of `state` in key-group offset `off`
    /// changed; `entries` is the size of that key group's map afterwards.
    pub(crate) fn mark(
        &mut self,
        key_groups: usize,
        state: usize,
        off: usize,
        key: &Lookup<'_>,
        entries: usize,
    ) {
        if self.states.len() <= state {
            self.states.resize_with(state + 1, Vec::new);
        }
        let Some(groups) = self.states.get_mut(state) else {
            return;
        };
        if groups.is_empty() {
            groups.resize_with(key_groups, Changed::empty);
        }
        let Some(changed) = groups.get_mut(off) else {
            return;
        };
        if let Changed::Keys(keys) = changed {
            keys.get_or_insert_with(key, |l| OwnedKey::new(l.key, l.namespace));
            if keys.len() >= WHOLE_KEY_GROUP_MIN && keys.len() * 2 > entries {
                *changed = Changed::All;
            }
        }
    }

    /// What changed in `state`'s key-group offset `off`.
    fn get(&self, state: usize, off: usize) -> Option<&Changed> {
        self.states.get(state).and_then(|g| g.get(off))
    }

    /// Whether nothing changed.
    fn is_empty(&self) -> bool {
        self.states.iter().flatten().all(Changed::is_empty)
    }

    /// The number of changed entries, counting a whole key group as its
    /// entries in `tables`.
    fn count(&self, tables: &[Table]) -> u64 {
        let mut n = 0u64;
        for (state, groups) in self.states.iter().enumerate() {
            for (off, changed) in groups.iter().enumerate() {
                n += match changed {
                    Changed::Keys(k) => k.len() as u64,
                    Changed::All => tables.get(state).map_or(0, |t| t.len_at(off) as u64),
                };
            }
        }
        n
    }
}

/// One stream of a chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub(crate) file: SharedFile,
    pub(crate) meta: LinkMeta,
}

/// What the meta stream records of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LinkMeta {
    /// The shared file's name in the handle.
    pub(crate) name: String,
    /// Block offsets of the stream, one per key group of the handle's range.
    pub(crate) key_group_offsets: Vec<u64>,
    /// Records in the stream (for the size estimate of the next delta).
    pub(crate) records: u64,
    /// `None` for the base; for a delta, what restoring it must undo first.
    pub(crate) delta: Option<DeltaMeta>,
}

/// The parts of a delta beyond its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaMeta {
    /// Index of the [`REMOVALS_STATE`] in the stream's descriptors.
    pub(crate) removals: u32,
    /// (state index in the stream, key group) written whole: a restore
    /// empties them before applying the delta.
    pub(crate) resets: Vec<(u32, u16)>,
}

/// The content of a chain's meta stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainMeta {
    pub(crate) max_parallelism: u32,
    /// Every registered state as of the snapshot.
    pub(crate) descriptors: Vec<StateDescriptor>,
    pub(crate) links: Vec<LinkMeta>,
}

/// The streams a snapshot's state is made of, base first.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Chain {
    pub(crate) links: Vec<Link>,
}

impl Chain {
    /// Bytes of the base (0 when the chain has none).
    fn base_bytes(&self) -> u64 {
        self.links
            .first()
            .filter(|l| l.meta.delta.is_none())
            .map_or(0, |l| l.file.handle.size)
    }

    /// Bytes of the deltas.
    fn delta_bytes(&self) -> u64 {
        self.links
            .iter()
            .filter(|l| l.meta.delta.is_some())
            .map(|l| l.file.handle.size)
            .sum()
    }

    /// Whether a delta of `changed` entries is worth writing: estimated at
    /// no more than half the base (a larger one costs nearly a base and
    /// lengthens every restore), and keeping the deltas within
    /// `budget_percent` of the base.
    fn has_room_for(&self, changed: u64, budget_percent: u32) -> bool {
        let base = self.base_bytes();
        let Some(first) = self.links.first().filter(|_| base > 0) else {
            return false;
        };
        let per_record = base / first.meta.records.max(1);
        let estimate = changed.saturating_mul(per_record.max(1));
        let budget = base.saturating_mul(u64::from(budget_percent)) / 100;
        estimate.saturating_mul(2) <= base && self.delta_bytes().saturating_add(estimate) <= budget
    }
}

/// An incremental snapshot taken since the newest confirmed one.
struct Pending {
    id: CheckpointId,
    /// The changes made before it (since the previous incremental snapshot).
    changes: Arc<Changes>,
    /// It writes a new base.
    base: bool,
    /// Its checkpoint was aborted: it builds nothing, but its changes
    /// still have to reach the next delta.
    aborted: bool,
    /// Its chain, once written.
    written: Arc<OnceLock<Chain>>,
}

/// What a backend checkpointing incrementally remembers between snapshots.
#[derive(Default)]
pub(crate) struct Tracker {
    /// Changes since the last incremental snapshot.
    pub(crate) current: Changes,
    pending: Vec<Pending>,
    /// The chain of the newest confirmed incremental snapshot; `None` makes
    /// the next snapshot a base.
    confirmed: Option<Chain>,
}

/// What an incremental snapshot writes.
pub(crate) enum Plan {
    /// A new base: every entry.
    Base,
    /// The entries `changes` name, on top of `on`.
    Delta {
        on: Chain,
        changes: Vec<Arc<Changes>>,
    },
}

impl Tracker {
    /// A tracker whose next snapshot builds on `chain` (a restore of it).
    pub(crate) fn on(chain: Chain) -> Self {
        Tracker {
            confirmed: Some(chain),
            ..Tracker::default()
        }
    }

    /// Starts incremental snapshot `id` of `tables`: decides base or delta,
    /// and returns the plan and the cell its chain is to be written to.
    pub(crate) fn begin(
        &mut self,
        id: CheckpointId,
        tables: &[Table],
        budget_percent: u32,
    ) -> (Plan, Arc<OnceLock<Chain>>) {
        let changes = Arc::new(std::mem::take(&mut self.current));
        let base_pending = self.pending.iter().any(|p| p.base && !p.aborted);
        let mut since: Vec<Arc<Changes>> = self.pending.iter().map(|p| p.changes.clone()).collect();
        since.push(Arc::clone(&changes));
        let plan = match &self.confirmed {
            Some(chain) if !base_pending => {
                let changed = since.iter().map(|c| c.count(tables)).sum();
                if chain.has_room_for(changed, budget_percent) {
                    Plan::Delta {
                        on: chain.clone(),
                        changes: since,
                    }
                } else {
                    Plan::Base
                }
            }
            _ => Plan::Base,
        };
        let written = Arc::new(OnceLock::new());
        self.pending.push(Pending {
            id,
            changes,
            base: matches!(plan, Plan::Base),
            aborted: false,
            written: Arc::clone(&written),
        });
        (plan, written)
    }

    /// Checkpoint `id` completed: its chain (when it is one of ours) is what
    /// the next delta builds on.
    pub(crate) fn confirm(&mut self, id: CheckpointId) {
        let Some(p) = self.pending.iter().find(|p| p.id == id && !p.aborted) else {
            return;
        };
        // A completed checkpoint's write finished; without a chain the next
        // snapshot is a base, which is always safe.
        self.confirmed = p.written.get().cloned();
        self.pending.retain(|p| p.id > id);
    }

    /// Checkpoint `id` was aborted. Its changes stay for the next delta;
    /// after [`MAX_ABORTED`] aborts in a row the tracker starts over (the
    /// next snapshot is a base), so failing checkpoints cannot pile up
    /// change sets without bound.
    pub(crate) fn abort(&mut self, id: CheckpointId) {
        for p in self.pending.iter_mut().filter(|p| p.id == id) {
            p.aborted = true;
        }
        if self.pending.iter().filter(|p| p.aborted).count() >= MAX_ABORTED {
            tracing::debug!(
                checkpoint_id = id.get(),
                "{MAX_ABORTED} incremental heap snapshots aborted since the last completed one; \
                 the next one is a base"
            );
            *self = Tracker::default();
        }
    }
}

/// What is reused and written of a chain, and how a delta's keys are found.
pub(crate) struct ChainWrite<'a> {
    pub(crate) checkpoint: CheckpointId,
    pub(crate) backend_id: &'a str,
    pub(crate) stream_name: &'a str,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    pub(crate) descriptors: &'a [StateDescriptor],
    pub(crate) tables: &'a [Table],
    pub(crate) now_millis: u64,
    pub(crate) compression_level: i32,
}

impl ChainWrite<'_> {
    fn writer(
        &self,
        storage: &dyn CheckpointStorage,
        name: &str,
        delta: bool,
    ) -> Result<KeyGroupStreamWriter> {
        let out = storage.create_output(self.checkpoint, StateScope::Shared, name)?;
        let mut descriptors = self.descriptors.to_vec();
        if delta {
            descriptors.push(StateDescriptor::new(REMOVALS_STATE, StateKind::List));
        }
        let mut writer = KeyGroupStreamWriter::new(
            out,
            name,
            crate::stream::BACKEND_NAME,
            self.max_parallelism,
            self.range,
            &descriptors,
            self.now_millis,
        )?;
        writer.set_compression_level(self.compression_level)?;
        Ok(writer)
    }

    fn link(
        &self,
        kind: &str,
        written: KeyGroupsHandle,
        records: u64,
        delta: Option<DeltaMeta>,
    ) -> Link {
        let name = format!("{kind}-{}", self.checkpoint.get());
        Link {
            file: SharedFile {
                name: name.clone(),
                handle: written.stream,
                uploaded_by: self.checkpoint,
            },
            meta: LinkMeta {
                name,
                key_group_offsets: written.key_group_offsets,
                records,
                delta,
            },
        }
    }

    /// Writes a base: every entry, as a full snapshot does.
    pub(crate) fn write_base(&self, storage: &dyn CheckpointStorage) -> Result<Chain> {
        let name = format!("{}-{}-base", self.backend_id, self.checkpoint.get());
        let mut writer = self.writer(storage, &name, false)?;
        for (off, kg) in self.range.iter().enumerate() {
            writer.begin_key_group(kg)?;
            for (index, table) in self.tables.iter().enumerate() {
                crate::stream::write_key_group(&mut writer, state_index(index)?, table, off)?;
            }
        }
        let records = writer.records();
        let handle = writer.finish()?;
        Ok(Chain {
            links: vec![self.link("base", handle, records, None)],
        })
    }

    /// Writes a delta of `changes` on top of `on`; with nothing changed, the
    /// chain is `on` itself.
    pub(crate) fn write_delta(
        &self,
        storage: &dyn CheckpointStorage,
        on: Chain,
        changes: &[Arc<Changes>],
    ) -> Result<Chain> {
        if changes.iter().all(|c| c.is_empty()) {
            return Ok(on);
        }
        let name = format!("{}-{}-delta", self.backend_id, self.checkpoint.get());
        let mut writer = self.writer(storage, &name, true)?;
        let removals = state_index(self.tables.len())?;
        let mut resets = Vec::new();
        for (off, kg) in self.range.iter().enumerate() {
            writer.begin_key_group(kg)?;
            for (index, table) in self.tables.iter().enumerate() {
                let state = state_index(index)?;
                let found: Vec<&Changed> =
                    changes.iter().filter_map(|c| c.get(index, off)).collect();
                if found.iter().any(|c| matches!(c, Changed::All)) {
                    crate::stream::write_key_group(&mut writer, state, table, off)?;
                    resets.push((state, kg.0));
                    continue;
                }
                let mut keys: Vec<&OwnedKey> = found
                    .iter()
                    .filter_map(|c| match c {
                        Changed::Keys(k) => Some(k.iter()),
                        Changed::All => None,
                    })
                    .flatten()
                    .collect();
                if found.len() > 1 {
                    let mut seen =
                        FastMap::with_capacity_and_hasher(keys.len(), Default::default());
                    keys.retain(|k| seen.insert(*k, ()).is_none());
                }
                for key in keys {
                    if !write_entry(&mut writer, state, table, off, key)? {
                        let index = state.to_le_bytes();
                        writer.write_list(removals, key.key(), key.namespace(), [&index[..]])?;
                    }
                }
            }
        }
        let records = writer.records();
        let handle = writer.finish()?;
        let mut chain = on;
        chain.links.push(self.link(
            "delta",
            handle,
            records,
            Some(DeltaMeta { removals, resets }),
        ));
        Ok(chain)
    }

    /// The handle of `chain`: its links as shared files and a new meta stream.
    pub(crate) fn handle(
        &self,
        storage: &dyn CheckpointStorage,
        chain: &Chain,
    ) -> Result<IncrementalHandle> {
        let meta = ChainMeta {
            max_parallelism: self.max_parallelism.get(),
            descriptors: self.descriptors.to_vec(),
            links: chain.links.iter().map(|l| l.meta.clone()).collect(),
        };
        let name = format!("{}-chain", self.stream_name);
        let mut out = storage.create_output(self.checkpoint, StateScope::Exclusive, &name)?;
        out.write_all(&encode_meta(&meta)?)
            .map_err(|e| output_error(e, &name))?;
        let meta = out.close()?;
        Ok(IncrementalHandle {
            backend: crate::stream::BACKEND_NAME.to_owned(),
            backend_id: self.backend_id.to_owned(),
            range: self.range,
            checkpoint_id: self.checkpoint,
            shared: chain.links.iter().map(|l| l.file.clone()).collect(),
            private: Vec::new(),
            meta,
        })
    }
}

fn state_index(index: usize) -> Result<u32> {
    u32::try_from(index).map_err(|_| StateError::invalid("more than 2^32 states"))
}

/// Writes `key`'s current entry of `table`; false when it has none (or
/// every part of it expired), which the delta records as a removal.
fn write_entry(
    writer: &mut KeyGroupStreamWriter,
    state: u32,
    table: &Table,
    off: usize,
    key: &OwnedKey,
) -> Result<bool> {
    let (k, ns) = (key.key(), key.namespace());
    match table {
        Table::Value(maps) => match maps.get(off).and_then(|m| m.get(key)) {
            Some(v) => writer.write_value(state, k, ns, v),
            None => Ok(false),
        },
        Table::List(maps) => match maps.get(off).and_then(|m| m.get(key)) {
            Some(list) => writer.write_list(state, k, ns, list.iter().map(|e| &e[..])),
            None => Ok(false),
        },
        Table::Map(maps) => match maps.get(off).and_then(|m| m.get(key)) {
            Some(entries) => writer.write_map(
                state,
                k,
                ns,
                entries.iter().map(|(uk, v)| (&uk[..], &v[..])),
            ),
            None => Ok(false),
        },
    }
}

/// The meta stream's bytes.
fn encode_meta(meta: &ChainMeta) -> Result<Bytes> {
    let body = postcard::to_stdvec(meta)
        .map_err(|e| StateError::invalid(format!("heap chain meta does not encode: {e}")))?;
    let mut out = BytesMut::with_capacity(body.len() + 14);
    out.put_slice(CHAIN_MAGIC);
    out.put_u16_le(CHAIN_VERSION);
    out.put_slice(&body);
    let crc = crc32fast::hash(&out);
    out.put_u32_le(crc);
    Ok(out.freeze())
}

/// Decodes a meta stream (`what` names it in errors).
pub(crate) fn decode_meta(bytes: &[u8], what: &str) -> Result<ChainMeta> {
    let corrupted = |detail: String| StateError::corrupted(what, detail);
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(StateError::incompatible(
            what,
            "not a heap chain meta stream",
        ));
    };
    if magic != CHAIN_MAGIC {
        return Err(StateError::incompatible(
            what,
            "not a heap chain meta stream",
        ));
    }
    let Some((version, rest)) = rest.split_first_chunk::<2>() else {
        return Err(corrupted("truncated header".into()));
    };
    let version = u16::from_le_bytes(*version);
    if version != CHAIN_VERSION {
        return Err(StateError::incompatible(
            what,
            format!("heap chain meta version {version}; this build reads {CHAIN_VERSION}"),
        ));
    }
    let Some((body, crc)) = rest.split_last_chunk::<4>() else {
        return Err(corrupted("truncated".into()));
    };
    let covered = bytes.len() - 4;
    if crc32fast::hash(&bytes[..covered]) != u32::from_le_bytes(*crc) {
        return Err(corrupted("CRC-32 mismatch".into()));
    }
    postcard::from_bytes(body).map_err(|e| corrupted(format!("undecodable: {e}")))
}

/// The chain of `h` described by `meta`, after checking the two agree.
pub(crate) fn chain_of(h: &IncrementalHandle, meta: &ChainMeta) -> Result<Chain> {
    let what = h.meta.describe();
    let wrong = |detail: String| StateError::corrupted(&what, detail);
    if meta.links.len() != h.shared.len() || !h.private.is_empty() {
        return Err(wrong(format!(
            "the chain lists {} streams, the handle {} shared and {} private files",
            meta.links.len(),
            h.shared.len(),
            h.private.len()
        )));
    }
    let mut links = Vec::with_capacity(meta.links.len());
    for (i, (m, file)) in meta.links.iter().zip(&h.shared).enumerate() {
        if m.name != file.name {
            return Err(wrong(format!(
                "stream {i} of the chain is {:?}, the handle's is {:?}",
                m.name, file.name
            )));
        }
        if i > 0 && m.delta.is_none() {
            return Err(wrong(format!("stream {:?} is a second base", m.name)));
        }
        if m.key_group_offsets.len() != h.range.len() {
            return Err(wrong(format!(
                "stream {:?} has {} key-group offsets for {} key groups",
                m.name,
                m.key_group_offsets.len(),
                h.range.len()
            )));
        }
        links.push(Link {
            file: file.clone(),
            meta: m.clone(),
        });
    }
    Ok(Chain { links })
}

/// The key-group stream handle of `link` in a chain of key groups `range`.
pub(crate) fn stream_handle(link: &Link, range: KeyGroupRange) -> KeyGroupsHandle {
    KeyGroupsHandle {
        backend: crate::stream::BACKEND_NAME.to_owned(),
        range,
        stream: link.file.handle.clone(),
        key_group_offsets: link.meta.key_group_offsets.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_core::{StateLayout, StreamHandle, StreamLocation};

    fn chain(name: &str, records: u64, size: u64) -> Chain {
        Chain {
            links: vec![Link {
                file: SharedFile {
                    name: name.into(),
                    handle: StreamHandle {
                        location: StreamLocation::File(format!("shared/{name}")),
                        size,
                        crc32: 0,
                    },
                    uploaded_by: CheckpointId(1),
                },
                meta: LinkMeta {
                    name: name.into(),
                    key_group_offsets: vec![0],
                    records,
                    delta: None,
                },
            }],
        }
    }

    fn changed(t: &mut Tracker, key: &[u8]) {
        let lookup = Lookup {
            key,
            namespace: b"",
        };
        t.current.mark(1, 0, 0, &lookup, 1_000);
    }

    fn is_delta(plan: &Plan) -> bool {
        matches!(plan, Plan::Delta { .. })
    }

    #[test]
    fn deltas_build_on_confirmed_chains_and_aborts_pile_up_only_so_far() {
        let tables = vec![Table::new(StateLayout::Value, 1)];
        let mut t = Tracker::default();
        let (plan, written) = t.begin(CheckpointId(1), &tables, 100);
        assert!(!is_delta(&plan), "nothing confirmed: a base");
        written.set(chain("base-1", 1_000, 10_000)).unwrap();
        t.confirm(CheckpointId(1));
        for id in 2..2 + MAX_ABORTED as u64 - 1 {
            changed(&mut t, format!("k{id}").as_bytes());
            let (plan, _) = t.begin(CheckpointId(id), &tables, 100);
            let Plan::Delta { changes, .. } = plan else {
                panic!("checkpoint {id} is a delta on base-1");
            };
            // Every change since the confirmed one, aborted ones included.
            assert_eq!(changes.len() as u64, id - 1);
            t.abort(CheckpointId(id));
        }
        let (plan, _) = t.begin(CheckpointId(10), &tables, 100);
        assert!(is_delta(&plan));
        t.abort(CheckpointId(10));
        let (plan, _) = t.begin(CheckpointId(11), &tables, 100);
        assert!(!is_delta(&plan), "after {MAX_ABORTED} aborts: a base");
    }

    #[test]
    fn a_delta_over_the_budget_is_a_base() {
        let tables = vec![Table::new(StateLayout::Value, 1)];
        let mut t = Tracker::on(chain("base-1", 100, 1_000));
        for i in 0..40 {
            changed(&mut t, format!("k{i}").as_bytes());
        }
        // 40 of 100 records at 10 bytes each: within 50% of the base.
        assert!(is_delta(&t.begin(CheckpointId(2), &tables, 50).0));
        let mut t = Tracker::on(chain("base-1", 100, 1_000));
        for i in 0..60 {
            changed(&mut t, format!("k{i}").as_bytes());
        }
        assert!(!is_delta(&t.begin(CheckpointId(2), &tables, 50).0));
        // More than half the base changed: a base, whatever the budget.
        let mut t = Tracker::on(chain("base-1", 100, 1_000));
        for i in 0..60 {
            changed(&mut t, format!("k{i}").as_bytes());
        }
        assert!(!is_delta(&t.begin(CheckpointId(2), &tables, 1_000).0));
    }

    #[test]
    fn the_meta_stream_round_trips_and_a_flipped_byte_is_caught() {
        let meta = ChainMeta {
            max_parallelism: 128,
            descriptors: vec![StateDescriptor::new("v", StateKind::Value)],
            links: chain("base-1", 3, 30)
                .links
                .into_iter()
                .map(|l| l.meta)
                .collect(),
        };
        let bytes = encode_meta(&meta).unwrap();
        assert_eq!(decode_meta(&bytes, "meta").unwrap(), meta);
        for at in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x40;
            assert!(decode_meta(&bad, "meta").is_err(), "byte {at}");
        }
    }
}
