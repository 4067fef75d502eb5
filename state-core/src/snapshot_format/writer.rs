//! The streaming writer of the key-group snapshot format.

use std::io::{self, Write};

use crate::backend::{StateDescriptor, StateLayout};
use crate::key_group::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::metadata::KeyGroupsHandle;
use crate::storage::CheckpointOutput;
use crate::ttl::TtlConfig;
use crate::{Result, StateError};

use super::{
    BLOCK_HEADER_LEN, DEFAULT_COMPRESSION_LEVEL, FIXED_HEADER_LEN, SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_MAGIC, output_error, put_bytes, put_varint,
};

fn u32_len(len: usize, what: &str, stream: &str) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        StateError::invalid(format!(
            "{what} of {len} bytes in snapshot stream {stream} exceeds the format's 4 GiB limit"
        ))
    })
}

/// Streams a full key-group snapshot into a [`CheckpointOutput`].
///
/// Call [`KeyGroupStreamWriter::begin_key_group`] for key groups in ascending
/// order (key groups never begun get an empty block), write the entries of
/// each, then [`KeyGroupStreamWriter::finish`]. One key group's records are
/// buffered in memory at a time. Dropping the writer abandons the output.
pub struct KeyGroupStreamWriter {
    out: Box<dyn CheckpointOutput>,
    stream: String,
    backend: String,
    range: KeyGroupRange,
    states: Vec<StateDescriptor>,
    cleanup: Vec<Option<TtlConfig>>,
    now_millis: u64,
    /// Offset of each block written so far.
    offsets: Vec<u64>,
    /// The key group whose records `raw` holds.
    current: Option<KeyGroup>,
    written: u64,
    raw: Vec<u8>,
    compressed: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    records: u64,
    expired: u64,
}

impl std::fmt::Debug for KeyGroupStreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGroupStreamWriter")
            .field("stream", &self.stream)
            .field("range", &self.range)
            .field("written", &self.written)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl KeyGroupStreamWriter {
    /// Starts a stream on `out` and writes its header. `stream` names the
    /// stream in errors (the name given to `create_output`), `backend` goes
    /// into the handle, `states` are the registered states (record state
    /// indexes refer to them), and `now_millis` is the time TTL is checked
    /// against. Records are compressed at [`DEFAULT_COMPRESSION_LEVEL`]
    /// unless [`KeyGroupStreamWriter::set_compression_level`] says otherwise.
    pub fn new(
        out: Box<dyn CheckpointOutput>,
        stream: &str,
        backend: &str,
        max_parallelism: MaxParallelism,
        range: KeyGroupRange,
        states: &[StateDescriptor],
        now_millis: u64,
    ) -> Result<Self> {
        if let Some(end) = range.end()
            && end.get() >= max_parallelism.get()
        {
            return Err(StateError::invalid(format!(
                "key-group range {range} of snapshot stream {stream} exceeds max parallelism {max_parallelism}"
            )));
        }
        let compressor = zstd::bulk::Compressor::new(DEFAULT_COMPRESSION_LEVEL).map_err(|e| {
            StateError::io(stream, io::Error::other(format!("zstd compressor: {e}")))
        })?;
        let descriptors = postcard::to_stdvec(states).map_err(|e| {
            StateError::invalid(format!(
                "state descriptors of snapshot stream {stream} cannot be encoded: {e}"
            ))
        })?;
        let mut header = Vec::with_capacity(FIXED_HEADER_LEN + descriptors.len() + 4);
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&max_parallelism.get().to_le_bytes());
        header.extend_from_slice(&range.start().0.to_le_bytes());
        header.extend_from_slice(&(range.len() as u32).to_le_bytes());
        header.extend_from_slice(
            &u32_len(descriptors.len(), "state descriptors", stream)?.to_le_bytes(),
        );
        header.extend_from_slice(&descriptors);
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let mut writer = KeyGroupStreamWriter {
            out,
            stream: stream.to_owned(),
            backend: backend.to_owned(),
            range,
            cleanup: states
                .iter()
                .map(StateDescriptor::full_snapshot_cleanup)
                .collect(),
            states: states.to_vec(),
            now_millis,
            offsets: Vec::with_capacity(range.len()),
            current: None,
            written: 0,
            raw: Vec::new(),
            compressed: Vec::new(),
            compressor,
            records: 0,
            expired: 0,
        };
        writer.emit(&header)?;
        Ok(writer)
    }

    /// Compresses the blocks written from now on at zstd `level`.
    pub fn set_compression_level(&mut self, level: i32) -> Result<()> {
        self.compressor.set_compression_level(level).map_err(|e| {
            StateError::invalid(format!(
                "zstd compression level {level} for snapshot stream {}: {e}",
                self.stream
            ))
        })
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| output_error(e, &self.stream))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the block of `kg` from `raw` (which may be empty).
    fn write_block(&mut self, kg: KeyGroup) -> Result<()> {
        self.offsets.push(self.written);
        let raw_len = u32_len(self.raw.len(), &format!("key group {kg}"), &self.stream)?;
        self.compressed.clear();
        if !self.raw.is_empty() {
            self.compressed
                .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
            self.compressor
                .compress_to_buffer(&self.raw, &mut self.compressed)
                .map_err(|e| {
                    StateError::io(
                        &self.stream,
                        io::Error::other(format!("zstd compression of key group {kg}: {e}")),
                    )
                })?;
        }
        let comp_len = u32_len(
            self.compressed.len(),
            &format!("key group {kg}"),
            &self.stream,
        )?;
        let mut header = [0u8; BLOCK_HEADER_LEN];
        header[0..2].copy_from_slice(&kg.0.to_le_bytes());
        header[2..6].copy_from_slice(&raw_len.to_le_bytes());
        header[6..10].copy_from_slice(&comp_len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[0..10]);
        crc.update(&self.compressed);
        header[10..14].copy_from_slice(&crc.finalize().to_le_bytes());
        self.emit(&header)?;
        let compressed = std::mem::take(&mut self.compressed);
        let result = self.emit(&compressed);
        self.compressed = compressed;
        self.raw.clear();
        result
    }

    /// The key group the next block is for.
    fn next_key_group(&self) -> Option<KeyGroup> {
        (self.offsets.len() < self.range.len())
            .then(|| KeyGroup((usize::from(self.range.start().0) + self.offsets.len()) as u16))
    }

    /// Finishes the current key group's block and starts `kg`'s. Key groups
    /// must be begun in ascending order; skipped ones get empty blocks.
    pub fn begin_key_group(&mut self, kg: KeyGroup) -> Result<()> {
        if !self.range.contains(kg) {
            return Err(StateError::invalid(format!(
                "key group {kg} is outside the range {} of snapshot stream {}",
                self.range, self.stream
            )));
        }
        if let Some(cur) = self.current {
            if kg <= cur {
                return Err(StateError::invalid(format!(
                    "key group {kg} begun after key group {cur} in snapshot stream {}; key groups must ascend",
                    self.stream
                )));
            }
            self.write_block(cur)?;
        }
        while let Some(next) = self.next_key_group() {
            if next >= kg {
                break;
            }
            self.write_block(next)?;
        }
        self.current = Some(kg);
        Ok(())
    }

    /// Checks that `state` exists with `layout` and a key group is begun;
    /// returns the state's TTL cleanup config.
    fn check(&self, state: u32, layout: StateLayout) -> Result<Option<TtlConfig>> {
        let Some(descriptor) = self.states.get(state as usize) else {
            return Err(StateError::invalid(format!(
                "state index {state} is not among the {} states of snapshot stream {}",
                self.states.len(),
                self.stream
            )));
        };
        if descriptor.kind.layout() != layout {
            return Err(StateError::invalid(format!(
                "state {:?} of snapshot stream {} has layout {:?}, not {layout:?}",
                descriptor.name,
                self.stream,
                descriptor.kind.layout()
            )));
        }
        if self.current.is_none() {
            return Err(StateError::invalid(format!(
                "entry written to snapshot stream {} before any key group was begun",
                self.stream
            )));
        }
        Ok(self.cleanup.get(state as usize).copied().flatten())
    }

    fn put_record_head(&mut self, state: u32, key: &[u8], namespace: &[u8]) {
        put_varint(&mut self.raw, u64::from(state));
        put_bytes(&mut self.raw, key);
        put_bytes(&mut self.raw, namespace);
        self.records += 1;
    }

    /// Writes the value of a value-layout state for (key, namespace) in the
    /// current key group. Returns `false` when it was dropped as expired.
    pub fn write_value(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<bool> {
        if let Some(cfg) = self.check(state, StateLayout::Value)?
            && cfg.is_expired(value, self.now_millis)
        {
            self.expired += 1;
            return Ok(false);
        }
        self.put_record_head(state, key, namespace);
        put_bytes(&mut self.raw, value);
        Ok(true)
    }

    /// Writes the elements of a list-layout state for (key, namespace),
    /// oldest first. Returns `false` when nothing was written (no element, or
    /// all expired).
    pub fn write_list<'a, I>(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        elements: I,
    ) -> Result<bool>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        let cleanup = self.check(state, StateLayout::List)?;
        let now = self.now_millis;
        let alive = move |e: &&[u8]| cleanup.is_none_or(|cfg| !cfg.is_expired(e, now));
        let iter = elements.into_iter();
        let (total, count) = iter
            .clone()
            .fold((0u64, 0u64), |(t, c), e| (t + 1, c + u64::from(alive(&e))));
        self.expired += total - count;
        if count == 0 {
            return Ok(false);
        }
        self.put_record_head(state, key, namespace);
        put_varint(&mut self.raw, count);
        for element in iter.filter(alive) {
            put_bytes(&mut self.raw, element);
        }
        Ok(true)
    }

    /// Writes the (user key, value) entries of a map-layout state for (key,
    /// namespace). Returns `false` when nothing was written (no entry, or all
    /// expired).
    pub fn write_map<'a, I>(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        entries: I,
    ) -> Result<bool>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let cleanup = self.check(state, StateLayout::Map)?;
        let now = self.now_millis;
        let alive = move |e: &(&[u8], &[u8])| cleanup.is_none_or(|cfg| !cfg.is_expired(e.1, now));
        let iter = entries.into_iter();
        let (total, count) = iter
            .clone()
            .fold((0u64, 0u64), |(t, c), e| (t + 1, c + u64::from(alive(&e))));
        self.expired += total - count;
        if count == 0 {
            return Ok(false);
        }
        self.put_record_head(state, key, namespace);
        put_varint(&mut self.raw, count);
        for (user_key, value) in iter.filter(alive) {
            put_bytes(&mut self.raw, user_key);
            put_bytes(&mut self.raw, value);
        }
        Ok(true)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Values, list elements and map values dropped as expired so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Writes the last blocks, closes the output and returns the handle.
    pub fn finish(mut self) -> Result<KeyGroupsHandle> {
        if let Some(cur) = self.current.take() {
            self.write_block(cur)?;
        }
        while let Some(next) = self.next_key_group() {
            self.write_block(next)?;
        }
        let stream = self.out.close()?;
        tracing::debug!(
            stream = %self.stream,
            bytes = stream.size,
            records = self.records,
            expired = self.expired,
            "key-group snapshot stream written"
        );
        Ok(KeyGroupsHandle {
            backend: self.backend,
            range: self.range,
            stream,
            key_group_offsets: self.offsets,
        })
    }
}
