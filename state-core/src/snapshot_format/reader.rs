//! The reader of the key-group snapshot format.

use std::io;

use bytes::Bytes;

use crate::backend::{StateDescriptor, StateLayout};
use crate::key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::metadata::KeyGroupsHandle;
use crate::{Result, StateError};

use super::{
    BLOCK_HEADER_LEN, FIXED_HEADER_LEN, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_V1,
    SNAPSHOT_MAGIC, decode_descriptors, take_bytes, take_varint,
};

/// The entries of one record, by the state's layout. Slices borrow the
/// decompressed block and are valid only during the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordEntry<'a> {
    /// The value of a value-layout state.
    Value(&'a [u8]),
    /// The elements of a list-layout state, oldest first (at least one).
    List(&'a [&'a [u8]]),
    /// The (user key, value) entries of a map-layout state (at least one).
    Map(&'a [(&'a [u8], &'a [u8])]),
}

impl RecordEntry<'_> {
    /// The value of a value-layout record, `None` for lists and maps.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            RecordEntry::Value(v) => Some(v),
            RecordEntry::List(_) | RecordEntry::Map(_) => None,
        }
    }
}

/// The state of one (key, namespace) of one state in a snapshot stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key group of the record's block.
    pub key_group: KeyGroup,
    /// Index into [`KeyGroupStreamReader::states`].
    pub state: u32,
    /// The serialized key.
    pub key: &'a [u8],
    /// The serialized namespace.
    pub namespace: &'a [u8],
    /// The value, list or map entries.
    pub entry: RecordEntry<'a>,
}

/// Reads the records of chosen key groups from a key-group snapshot stream.
#[derive(Debug, Clone)]
pub struct KeyGroupStreamReader {
    bytes: Bytes,
    handle: KeyGroupsHandle,
    stream: String,
    max_parallelism: MaxParallelism,
    states: Vec<StateDescriptor>,
}

impl KeyGroupStreamReader {
    /// Checks the stream's length and header against `handle` and decodes the
    /// header. `bytes` are the whole stream (for example a memory map).
    pub fn open(bytes: Bytes, handle: &KeyGroupsHandle) -> Result<Self> {
        let stream = handle.stream.describe();
        let corrupted = |detail: String| StateError::corrupted(&stream, detail);
        let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(StateError::incompatible(
                &stream,
                format!(
                    "not a cairn key-group snapshot stream ({} bytes)",
                    bytes.len()
                ),
            ));
        };
        if magic != SNAPSHOT_MAGIC {
            return Err(StateError::incompatible(
                &stream,
                "not a cairn key-group snapshot stream (wrong magic bytes)",
            ));
        }
        let Some((version, rest)) = rest.split_first_chunk::<2>() else {
            return Err(corrupted("truncated stream header".into()));
        };
        let version = u16::from_le_bytes(*version);
        if version != SNAPSHOT_FORMAT_VERSION && version != SNAPSHOT_FORMAT_VERSION_V1 {
            return Err(StateError::incompatible(
                &stream,
                format!(
                    "snapshot format version {version}; this build reads versions \
                     {SNAPSHOT_FORMAT_VERSION_V1} to {SNAPSHOT_FORMAT_VERSION}"
                ),
            ));
        }
        if bytes.len() as u64 != handle.stream.size {
            return Err(corrupted(format!(
                "expected {} bytes, found {}",
                handle.stream.size,
                bytes.len()
            )));
        }
        let Some((fixed, rest)) = rest.split_first_chunk::<{ FIXED_HEADER_LEN - 10 }>() else {
            return Err(corrupted("truncated stream header".into()));
        };
        let [m0, m1, m2, m3, s0, s1, c0, c1, c2, c3, d0, d1, d2, d3] = *fixed;
        let max_par = u32::from_le_bytes([m0, m1, m2, m3]);
        let first_kg = u16::from_le_bytes([s0, s1]);
        let kg_count = u32::from_le_bytes([c0, c1, c2, c3]);
        let desc_len = u32::from_le_bytes([d0, d1, d2, d3]) as usize;
        let Some((descriptors, rest)) = rest.split_at_checked(desc_len) else {
            return Err(corrupted(format!(
                "truncated stream header: descriptors of {desc_len} bytes"
            )));
        };
        let Some((crc, _)) = rest.split_first_chunk::<4>() else {
            return Err(corrupted("truncated stream header: no checksum".into()));
        };
        let header_len = FIXED_HEADER_LEN + desc_len;
        let computed = crc32fast::hash(bytes.get(..header_len).unwrap_or_default());
        let stored = u32::from_le_bytes(*crc);
        if stored != computed {
            return Err(corrupted(format!(
                "stream header checksum mismatch: stored crc32 {stored:08x}, computed {computed:08x}"
            )));
        }
        let max_parallelism =
            MaxParallelism::new(max_par).map_err(|e| corrupted(format!("stream header: {e}")))?;
        let header_range_matches = u32::from(first_kg) == u32::from(handle.range.start().0)
            && kg_count as usize == handle.range.len()
            || handle.range.is_empty() && kg_count == 0;
        if !header_range_matches {
            return Err(corrupted(format!(
                "stream holds {kg_count} key groups from {first_kg}, the handle says {}",
                handle.range
            )));
        }
        if let Some(end) = handle.range.end()
            && end.get() >= max_parallelism.get()
        {
            return Err(corrupted(format!(
                "key-group range {} exceeds the stream's max parallelism {max_parallelism}",
                handle.range
            )));
        }
        if handle.key_group_offsets.len() != handle.range.len() {
            return Err(corrupted(format!(
                "handle lists {} key-group offsets for the {} key groups of {}",
                handle.key_group_offsets.len(),
                handle.range.len(),
                handle.range
            )));
        }
        let states = decode_descriptors(version, descriptors)
            .map_err(|e| corrupted(format!("state descriptors do not decode: {e}")))?;
        Ok(KeyGroupStreamReader {
            bytes,
            handle: handle.clone(),
            stream,
            max_parallelism,
            states,
        })
    }

    /// The job's number of key groups when the stream was written.
    pub fn max_parallelism(&self) -> MaxParallelism {
        self.max_parallelism
    }

    /// The key groups the stream holds.
    pub fn range(&self) -> KeyGroupRange {
        self.handle.range
    }

    /// The states of the stream; [`Record::state`] indexes this.
    pub fn states(&self) -> &[StateDescriptor] {
        &self.states
    }

    /// Visits every record of the key groups in both `wanted` and the
    /// stream's range, key group by key group in ascending order. Stops at
    /// the first error, from the stream or from `visit`.
    pub fn read(
        &self,
        wanted: KeyGroupRange,
        visit: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let range = wanted.intersect(&self.handle.range);
        let mut decompressor = zstd::bulk::Decompressor::new().map_err(|e| {
            StateError::io(
                &self.stream,
                io::Error::other(format!("zstd decompressor: {e}")),
            )
        })?;
        let mut raw = Vec::new();
        for kg in range.iter() {
            self.decompress_block(kg, &mut decompressor, &mut raw)?;
            self.parse_block(kg, &raw, visit)?;
        }
        Ok(())
    }

    fn corrupted(&self, kg: KeyGroup, detail: impl std::fmt::Display) -> StateError {
        StateError::corrupted(&self.stream, format!("key group {kg}: {detail}"))
    }

    /// Checks the block of `kg` and decompresses its records into `raw`.
    fn decompress_block(
        &self,
        kg: KeyGroup,
        decompressor: &mut zstd::bulk::Decompressor<'static>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        let offset = self
            .handle
            .range
            .offset_of(kg)
            .and_then(|i| self.handle.key_group_offsets.get(i))
            .copied()
            .unwrap_or(u64::MAX);
        let block = usize::try_from(offset)
            .ok()
            .and_then(|o| self.bytes.get(o..))
            .ok_or_else(|| self.corrupted(kg, format!("block offset {offset} is past the end")))?;
        let Some((header, rest)) = block.split_first_chunk::<BLOCK_HEADER_LEN>() else {
            return Err(self.corrupted(kg, "truncated block header"));
        };
        let [k0, k1, r0, r1, r2, r3, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let block_kg = u16::from_le_bytes([k0, k1]);
        let raw_len = u32::from_le_bytes([r0, r1, r2, r3]) as usize;
        let comp_len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let Some(compressed) = rest.get(..comp_len) else {
            return Err(self.corrupted(
                kg,
                format!("block of {comp_len} bytes at offset {offset} is truncated"),
            ));
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(header.get(..10).unwrap_or_default());
        crc.update(compressed);
        let computed = crc.finalize();
        if computed != stored_crc {
            return Err(self.corrupted(
                kg,
                format!("block checksum mismatch: stored crc32 {stored_crc:08x}, computed {computed:08x}"),
            ));
        }
        if block_kg != kg.0 {
            return Err(self.corrupted(
                kg,
                format!("block at offset {offset} belongs to key group {block_kg}"),
            ));
        }
        raw.clear();
        if raw_len == 0 {
            if comp_len != 0 {
                return Err(self.corrupted(kg, "empty block with compressed bytes"));
            }
            return Ok(());
        }
        raw.reserve(raw_len);
        decompressor
            .decompress_to_buffer(compressed, raw)
            .map_err(|e| self.corrupted(kg, format!("records do not decompress: {e}")))?;
        if raw.len() != raw_len {
            return Err(self.corrupted(
                kg,
                format!(
                    "records decompress to {} bytes, the block says {raw_len}",
                    raw.len()
                ),
            ));
        }
        Ok(())
    }

    fn parse_block(
        &self,
        kg: KeyGroup,
        raw: &[u8],
        visit: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut input = raw;
        let mut elements: Vec<&[u8]> = Vec::new();
        let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
        let bad =
            |what: &str, at: usize| self.corrupted(kg, format!("bad {what} at record byte {at}"));
        while !input.is_empty() {
            let at = raw.len() - input.len();
            let state = take_varint(&mut input).ok_or_else(|| bad("state index", at))?;
            let descriptor = usize::try_from(state)
                .ok()
                .and_then(|s| self.states.get(s))
                .ok_or_else(|| {
                    self.corrupted(
                        kg,
                        format!(
                            "record at byte {at} names state {state} of {}",
                            self.states.len()
                        ),
                    )
                })?;
            let key = take_bytes(&mut input).ok_or_else(|| bad("key", at))?;
            let namespace = take_bytes(&mut input).ok_or_else(|| bad("namespace", at))?;
            let entry = match descriptor.kind.layout() {
                StateLayout::Value => {
                    RecordEntry::Value(take_bytes(&mut input).ok_or_else(|| bad("value", at))?)
                }
                StateLayout::List => {
                    let count = take_varint(&mut input).ok_or_else(|| bad("list length", at))?;
                    // Each element takes at least one byte, which bounds count.
                    if count == 0 || count > input.len() as u64 {
                        return Err(bad("list length", at));
                    }
                    elements.clear();
                    for _ in 0..count {
                        elements
                            .push(take_bytes(&mut input).ok_or_else(|| bad("list element", at))?);
                    }
                    RecordEntry::List(&elements)
                }
                StateLayout::Map => {
                    let count = take_varint(&mut input).ok_or_else(|| bad("map size", at))?;
                    if count == 0 || count > input.len() as u64 / 2 {
                        return Err(bad("map size", at));
                    }
                    entries.clear();
                    for _ in 0..count {
                        let user_key = take_bytes(&mut input).ok_or_else(|| bad("map key", at))?;
                        let value = take_bytes(&mut input).ok_or_else(|| bad("map value", at))?;
                        entries.push((user_key, value));
                    }
                    RecordEntry::Map(&entries)
                }
            };
            visit(&Record {
                key_group: kg,
                state: state as u32,
                key,
                namespace,
                entry,
            })?;
        }
        Ok(())
    }
}
