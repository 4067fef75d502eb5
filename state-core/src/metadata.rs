//! The checkpoint metadata (`_metadata`): what a completed checkpoint holds.
//!
//! Binary layout (all integers little-endian):
//!
//! ```text
//! magic   8 bytes  "CAIRNCKP"
//! version u16      METADATA_VERSION
//! length  u64      length of body
//! body    length   postcard encoding of CheckpointMetadata
//! crc32   u32      CRC-32 of magic, version, length and body
//! ```
//!
//! A file that does not start with the magic is a foreign file
//! ([`StateError::IncompatibleFormat`]); a newer version is refused the same way;
//! a bad length, checksum or body is [`StateError::Corrupted`]. Format changes
//! bump `METADATA_VERSION` and keep a reader for every older version.

use serde::{Deserialize, Serialize};

use crate::checkpoint_id::CheckpointId;
use crate::handle::{StreamHandle, StreamLocation};
use crate::ids::{JobId, OperatorId};
use crate::key_group::KeyGroupRange;
use crate::{Result, StateError};

/// The file name of checkpoint metadata inside `chk-<n>/`.
pub const METADATA_FILE_NAME: &str = "_metadata";
/// The first bytes of every metadata file.
pub const METADATA_MAGIC: &[u8; 8] = b"CAIRNCKP";
/// The metadata format version this build writes.
pub const METADATA_VERSION: u16 = 1;

const HEADER_LEN: usize = 8 + 2 + 8;

/// Whether a checkpoint's keyed state was written whole or as a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Every entry written by this checkpoint.
    Full,
    /// Only what changed since the last confirmed checkpoint; the rest is
    /// referenced from shared files.
    Incremental,
}

/// Everything needed to restore a job from one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint.
    pub checkpoint_id: CheckpointId,
    /// The job that took it.
    pub job_id: JobId,
    /// When it was triggered, milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
    /// Full or incremental.
    pub kind: SnapshotKind,
    /// The state of every stateful operator, by uid.
    pub operators: Vec<OperatorSnapshot>,
}

/// The state of one operator across its subtasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's stable uid.
    pub operator_id: OperatorId,
    /// The parallelism it ran at.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: u32,
    /// One entry per subtask that had state.
    pub subtasks: Vec<SubtaskSnapshot>,
}

/// The state of one subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    /// The subtask index.
    pub subtask: u32,
    /// Keyed state, by key-group range.
    pub keyed: Vec<KeyedStateHandle>,
    /// Operator (non-keyed) state, such as source offsets.
    pub operator: Option<OperatorStateHandle>,
}

/// A snapshot of keyed state covering a key-group range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyedStateHandle {
    /// A full snapshot in cairn's key-group stream format.
    KeyGroups(KeyGroupsHandle),
    /// An incremental snapshot made of files, some shared with earlier checkpoints.
    Incremental(IncrementalHandle),
}

impl KeyedStateHandle {
    /// The key groups the handle holds.
    pub fn key_groups(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.range,
            KeyedStateHandle::Incremental(h) => h.range,
        }
    }

    /// Every stream the handle references.
    pub fn streams(&self) -> Vec<&StreamHandle> {
        match self {
            KeyedStateHandle::KeyGroups(h) => vec![&h.stream],
            KeyedStateHandle::Incremental(h) => {
                let mut v: Vec<&StreamHandle> = h.shared.iter().map(|f| &f.handle).collect();
                v.extend(h.private.iter().map(|f| &f.handle));
                v.push(&h.meta);
                v
            }
        }
    }

    /// The bytes of state the handle represents (the whole state, shared files included).
    pub fn state_size(&self) -> u64 {
        sum_sizes(self.streams().into_iter())
    }

    /// The bytes that the checkpoint `id` wrote for this handle (excludes
    /// shared files uploaded by earlier checkpoints).
    pub fn checkpointed_size(&self, id: CheckpointId) -> u64 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.stream.size,
            KeyedStateHandle::Incremental(h) => sum_sizes(
                h.shared
                    .iter()
                    .filter(|f| f.uploaded_by == id)
                    .map(|f| &f.handle)
                    .chain(h.private.iter().map(|f| &f.handle))
                    .chain(std::iter::once(&h.meta)),
            ),
        }
    }
}

/// A full snapshot of a key-group range in one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyGroupsHandle {
    /// The backend that wrote it (`heap`, `rocks`), for tools.
    pub backend: String,
    /// The key groups in the stream.
    pub range: KeyGroupRange,
    /// The stream.
    pub stream: StreamHandle,
    /// For each key group of `range` in order, the offset of its block in
    /// the stream, so a restore at another parallelism reads only its own.
    pub key_group_offsets: Vec<u64>,
}

/// An incremental snapshot: native backend files, some shared across checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalHandle {
    /// The backend that wrote it.
    pub backend: String,
    /// A unique id of the backend instance, so restores can tell whose files they are.
    pub backend_id: String,
    /// The key groups the files hold.
    pub range: KeyGroupRange,
    /// The checkpoint that produced the handle.
    pub checkpoint_id: CheckpointId,
    /// Immutable files in `shared/`, possibly uploaded by an earlier checkpoint.
    pub shared: Vec<SharedFile>,
    /// Files that belong to this checkpoint only (MANIFEST, CURRENT, OPTIONS).
    pub private: Vec<NamedStream>,
    /// The backend's own metadata (registered states and their descriptors).
    pub meta: StreamHandle,
}

/// A shared, immutable file referenced by an incremental handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    /// The file's name in the backend's local directory (for example `000042.sst`).
    pub name: String,
    /// Where it is stored.
    pub handle: StreamHandle,
    /// The checkpoint that uploaded it.
    pub uploaded_by: CheckpointId,
}

/// A named private stream of an incremental handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedStream {
    /// The file's name in the backend's local directory (for example `MANIFEST-000005`).
    pub name: String,
    /// Where it is stored.
    pub handle: StreamHandle,
}

/// How a list of operator state is redistributed when parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperatorStateMode {
    /// The elements of all subtasks are pooled and split across the new subtasks.
    Split,
    /// Every new subtask gets all elements of all old subtasks.
    Union,
}

/// Operator (non-keyed) state of one subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    /// The stream holding the elements.
    pub stream: StreamHandle,
    /// The states in the stream, with their modes and element counts.
    pub states: Vec<OperatorStateInfo>,
}

/// Describes one operator list state in an [`OperatorStateHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateInfo {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: OperatorStateMode,
    /// How many elements it holds.
    pub elements: u64,
}

/// One operator subtask's part of a checkpoint, as its task acknowledges it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubtaskPart {
    /// The operator's uid.
    pub operator: OperatorId,
    /// The parallelism it runs at.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: u32,
    /// The subtask's state.
    pub snapshot: SubtaskSnapshot,
}

impl CheckpointMetadata {
    /// The metadata of checkpoint `id` of `job_id`, triggered at
    /// `timestamp_millis`, from every subtask's part: grouped by operator
    /// (operators in the order of `operator_rank`, subtasks by index), and
    /// [`SnapshotKind::Incremental`] when any keyed handle is incremental.
    /// What a checkpoint coordinator writes once every task acknowledged.
    pub fn from_parts<R: Ord>(
        id: CheckpointId,
        job_id: JobId,
        timestamp_millis: u64,
        parts: impl IntoIterator<Item = SubtaskPart>,
        mut operator_rank: impl FnMut(&OperatorId) -> R,
    ) -> Self {
        let mut operators: Vec<OperatorSnapshot> = Vec::new();
        let mut incremental = false;
        for part in parts {
            incremental |= part
                .snapshot
                .keyed
                .iter()
                .any(|h| matches!(h, KeyedStateHandle::Incremental(_)));
            match operators
                .iter_mut()
                .find(|o| o.operator_id == part.operator)
            {
                Some(op) => op.subtasks.push(part.snapshot),
                None => operators.push(OperatorSnapshot {
                    operator_id: part.operator,
                    parallelism: part.parallelism,
                    max_parallelism: part.max_parallelism,
                    subtasks: vec![part.snapshot],
                }),
            }
        }
        operators.sort_by_cached_key(|o| operator_rank(&o.operator_id));
        for op in &mut operators {
            op.subtasks.sort_by_key(|s| s.subtask);
        }
        CheckpointMetadata {
            checkpoint_id: id,
            job_id,
            timestamp_millis,
            kind: if incremental {
                SnapshotKind::Incremental
            } else {
                SnapshotKind::Full
            },
            operators,
        }
    }

    /// Every stream referenced by the checkpoint, keyed and operator state.
    pub fn streams(&self) -> Vec<&StreamHandle> {
        let mut out = Vec::new();
        for op in &self.operators {
            for st in &op.subtasks {
                for k in &st.keyed {
                    out.extend(k.streams());
                }
                if let Some(o) = &st.operator {
                    out.push(&o.stream);
                }
            }
        }
        out
    }

    /// The full size of the checkpoint's state in bytes.
    pub fn state_size(&self) -> u64 {
        sum_sizes(self.streams().into_iter())
    }

    /// The bytes this checkpoint wrote (its state size minus shared files it reused).
    pub fn checkpointed_size(&self) -> u64 {
        let mut total: u64 = 0;
        for op in &self.operators {
            for st in &op.subtasks {
                for k in &st.keyed {
                    total = total.saturating_add(k.checkpointed_size(self.checkpoint_id));
                }
                total = total.saturating_add(st.operator.as_ref().map_or(0, |o| o.stream.size));
            }
        }
        total
    }

    /// Encodes the metadata in the versioned, checksummed binary format.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = postcard::to_stdvec(self).map_err(|e| {
            StateError::invalid(format!(
                "checkpoint {} metadata cannot be encoded: {e}",
                self.checkpoint_id
            ))
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 4);
        out.extend_from_slice(METADATA_MAGIC);
        out.extend_from_slice(&METADATA_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes metadata written by [`CheckpointMetadata::encode`]. `what`
    /// names the source (a path) in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(StateError::incompatible(
                what,
                format!(
                    "not a cairn checkpoint metadata file ({} bytes)",
                    bytes.len()
                ),
            ));
        };
        if magic != METADATA_MAGIC {
            return Err(StateError::incompatible(
                what,
                "not a cairn checkpoint metadata file (wrong magic bytes)",
            ));
        }
        let Some((version, rest)) = rest.split_first_chunk::<2>() else {
            return Err(StateError::corrupted(what, "truncated header"));
        };
        let version = u16::from_le_bytes(*version);
        if version != METADATA_VERSION {
            return Err(StateError::incompatible(
                what,
                format!("metadata version {version}; this build reads version {METADATA_VERSION}"),
            ));
        }
        let Some((len, rest)) = rest.split_first_chunk::<8>() else {
            return Err(StateError::corrupted(what, "truncated header"));
        };
        let len = u64::from_le_bytes(*len);
        if rest.len() as u64 != len.saturating_add(4) {
            return Err(StateError::corrupted(
                what,
                format!(
                    "body length says {len} bytes + 4 checksum bytes, file has {}",
                    rest.len()
                ),
            ));
        }
        let (body, crc) = rest.split_at(rest.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let actual = crc32fast::hash(&bytes[..bytes.len() - 4]);
        if stored != actual {
            return Err(StateError::corrupted(
                what,
                format!("checksum mismatch: stored crc32 {stored:08x}, computed {actual:08x}"),
            ));
        }
        let metadata: CheckpointMetadata = postcard::from_bytes(body).map_err(|e| {
            StateError::corrupted(what, format!("metadata body does not decode: {e}"))
        })?;
        metadata.validate(what)?;
        Ok(metadata)
    }

    /// Checks that the metadata describes state that can exist, as
    /// [`CheckpointMetadata::decode`] does for every metadata file it reads
    /// (a valid CRC says the bytes are as written, not that what was
    /// written is sound): per operator, a max parallelism in
    /// `1..=32768` and a parallelism up to it, distinct subtask indexes below
    /// it, non-empty well-formed key-group ranges inside `0..max` that do not
    /// overlap; per full handle, one offset per key group, non-decreasing and
    /// inside the stream; per incremental handle, plain unique file names, a
    /// `CURRENT` and a `MANIFEST-*` for RocksDB, checkpoint ids no later
    /// than this one; inline streams as long as their size; sizes that sum
    /// without overflow. A violation is [`StateError::Corrupted`] naming
    /// `what` and the place, so restore selection falls back to an older
    /// checkpoint as for a checksum mismatch.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |detail: String| StateError::corrupted(what, detail);
        let mut total: u64 = 0;
        let mut add = |stream: &StreamHandle, place: &str| -> Result<()> {
            match &stream.location {
                StreamLocation::Inline(bytes) if bytes.len() as u64 != stream.size => {
                    return Err(bad(format!(
                        "{place}: inline stream of {} bytes says {} bytes",
                        bytes.len(),
                        stream.size
                    )));
                }
                StreamLocation::File(path) if path.is_empty() => {
                    return Err(bad(format!("{place}: empty file path")));
                }
                _ => {}
            }
            total = total
                .checked_add(stream.size)
                .ok_or_else(|| bad(format!("{place}: stream sizes overflow")))?;
            Ok(())
        };
        for op in &self.operators {
            let uid = &op.operator_id;
            let max = op.max_parallelism;
            if !(1..=crate::key_group::UPPER_BOUND_MAX_PARALLELISM).contains(&max) {
                return Err(bad(format!(
                    "operator {uid}: max parallelism {max} is out of range"
                )));
            }
            if op.parallelism == 0 || op.parallelism > max {
                return Err(bad(format!(
                    "operator {uid}: parallelism {} must be between 1 and its max parallelism {max}",
                    op.parallelism
                )));
            }
            let mut indexes: Vec<u32> = op.subtasks.iter().map(|s| s.subtask).collect();
            indexes.sort_unstable();
            if indexes.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad(format!("operator {uid}: a subtask appears twice")));
            }
            if let Some(&last) = indexes.last()
                && last >= op.parallelism
            {
                return Err(bad(format!(
                    "operator {uid}: subtask {last} at parallelism {}",
                    op.parallelism
                )));
            }
            let mut ranges: Vec<(usize, usize)> = Vec::new();
            for st in &op.subtasks {
                let place = format!("operator {uid} subtask {}", st.subtask);
                // The key groups this subtask's handles span.
                let mut own: Option<(usize, usize)> = None;
                for handle in &st.keyed {
                    let range = handle.key_groups();
                    if !range.is_valid_for(max) || range.is_empty() {
                        return Err(bad(format!(
                            "{place}: key-group range {range:?} is not a non-empty range inside 0..{max}"
                        )));
                    }
                    let start = usize::from(range.start().0);
                    own = Some(match own {
                        None => (start, start + range.len()),
                        Some((a, b)) => (a.min(start), b.max(start + range.len())),
                    });
                    match handle {
                        KeyedStateHandle::KeyGroups(h) => {
                            if h.key_group_offsets.len() != range.len() {
                                return Err(bad(format!(
                                    "{place}: {} key-group offsets for {} key groups",
                                    h.key_group_offsets.len(),
                                    range.len()
                                )));
                            }
                            let sorted = h.key_group_offsets.windows(2).all(|w| w[0] <= w[1]);
                            let inside = h.key_group_offsets.iter().all(|&o| o <= h.stream.size);
                            if !sorted || !inside {
                                return Err(bad(format!(
                                    "{place}: key-group offsets are not increasing inside the {}-byte stream",
                                    h.stream.size
                                )));
                            }
                            add(&h.stream, &place)?;
                        }
                        KeyedStateHandle::Incremental(h) => {
                            validate_incremental(h, self.checkpoint_id, &place).map_err(bad)?;
                            for f in &h.shared {
                                add(&f.handle, &place)?;
                            }
                            for f in &h.private {
                                add(&f.handle, &place)?;
                            }
                            add(&h.meta, &place)?;
                        }
                    }
                }
                if let Some(o) = &st.operator {
                    add(&o.stream, &place)?;
                }
                ranges.extend(own);
            }
            // Two subtasks claiming one key group would restore it twice.
            ranges.sort_unstable();
            if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
                return Err(bad(format!(
                    "operator {uid}: key-group ranges of its subtasks overlap"
                )));
            }
        }
        Ok(())
    }
}

/// The sizes of `streams` added up, saturating: sizes come from files and
/// [`CheckpointMetadata::validate`] refuses sums that overflow, but tools
/// show sizes of metadata they were asked to inspect, valid or not.
fn sum_sizes<'a>(streams: impl Iterator<Item = &'a StreamHandle>) -> u64 {
    streams.fold(0u64, |total, s| total.saturating_add(s.size))
}

/// The checks of [`CheckpointMetadata::validate`] on an incremental handle.
fn validate_incremental(
    h: &IncrementalHandle,
    checkpoint: CheckpointId,
    place: &str,
) -> std::result::Result<(), String> {
    if h.checkpoint_id > checkpoint {
        return Err(format!(
            "{place}: incremental handle of checkpoint {} in checkpoint {checkpoint}",
            h.checkpoint_id
        ));
    }
    let mut names: Vec<&str> = h
        .shared
        .iter()
        .map(|f| f.name.as_str())
        .chain(h.private.iter().map(|f| f.name.as_str()))
        .collect();
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.contains(['/', '\\', '\0']) || **n == "." || **n == "..")
    {
        return Err(format!(
            "{place}: file name {bad:?} is not a plain file name"
        ));
    }
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("{place}: file {:?} is listed twice", w[0]));
    }
    if let Some(f) = h.shared.iter().find(|f| f.uploaded_by > checkpoint) {
        return Err(format!(
            "{place}: shared file {:?} uploaded by later checkpoint {}",
            f.name, f.uploaded_by
        ));
    }
    if h.backend == "rocks" {
        let has = |p: &str| {
            h.private
                .iter()
                .any(|f| f.name == p || f.name.starts_with(&format!("{p}-")))
        };
        if h.shared.is_empty() || !has("CURRENT") || !has("MANIFEST") {
            return Err(format!(
                "{place}: a RocksDB handle needs its SST files, CURRENT and MANIFEST"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::StreamLocation;
    use crate::key_group::KeyGroup;

    fn sample() -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: CheckpointId(3),
            job_id: JobId::new("job-1").unwrap(),
            timestamp_millis: 1_700_000_000_000,
            kind: SnapshotKind::Full,
            operators: vec![OperatorSnapshot {
                operator_id: OperatorId("count".into()),
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskSnapshot {
                    subtask: 0,
                    keyed: vec![KeyedStateHandle::KeyGroups(KeyGroupsHandle {
                        backend: "heap".into(),
                        range: KeyGroupRange::new(KeyGroup(0), KeyGroup(127)),
                        stream: StreamHandle {
                            location: StreamLocation::File("chk-3/count-0".into()),
                            size: 10,
                            crc32: 7,
                        },
                        key_group_offsets: vec![0; 128],
                    })],
                    operator: None,
                }],
            }],
        }
    }

    #[test]
    fn from_parts_groups_by_operator_in_rank_order_and_sorts_subtasks() {
        let keyed = sample().operators[0].subtasks[0].keyed.clone();
        let part = |op: &str, subtask: u32, keyed: Vec<KeyedStateHandle>| SubtaskPart {
            operator: OperatorId(op.into()),
            parallelism: 2,
            max_parallelism: 128,
            snapshot: SubtaskSnapshot {
                subtask,
                keyed,
                operator: None,
            },
        };
        let parts = vec![
            part("sink", 1, Vec::new()),
            part("count", 1, keyed.clone()),
            part("sink", 0, Vec::new()),
            part("count", 0, keyed),
        ];
        let rank = |uid: &OperatorId| if uid.0 == "count" { 0 } else { 1 };
        let m = CheckpointMetadata::from_parts(
            CheckpointId(4),
            JobId::new("job-1").unwrap(),
            9,
            parts,
            rank,
        );
        assert_eq!((m.checkpoint_id, m.timestamp_millis), (CheckpointId(4), 9));
        assert_eq!(m.kind, SnapshotKind::Full);
        let layout: Vec<(&str, Vec<u32>)> = m
            .operators
            .iter()
            .map(|o| {
                let subtasks = o.subtasks.iter().map(|s| s.subtask).collect();
                (o.operator_id.0.as_str(), subtasks)
            })
            .collect();
        assert_eq!(layout, [("count", vec![0, 1]), ("sink", vec![0, 1])]);
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(CheckpointMetadata::decode(&bytes, "x").unwrap(), m);
        assert_eq!(m.state_size(), 10);
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(CheckpointMetadata::decode(&b, "m").is_err(), "flip at {i}");
        }
        for len in 0..bytes.len() {
            let err = CheckpointMetadata::decode(&bytes[..len], "chk-3/_metadata").unwrap_err();
            assert!(err.to_string().contains("chk-3/_metadata"), "{err}");
        }
    }

    #[test]
    fn foreign_file_is_incompatible() {
        let err = CheckpointMetadata::decode(b"hello world, not ours", "f").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::IncompatibleFormat);
    }
}
