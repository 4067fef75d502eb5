//! The byte formats of the topic descriptor and of partition records.

use std::ops::Range;
use std::path::Path;

use state_core::StateError;

use crate::error::{ExecutorError, Result};

/// The log format version this build writes and reads.
pub const LOG_FORMAT_VERSION: u16 = 1;
/// The largest record body accepted (16 MiB). A length field above it is
/// corruption, not a torn record.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;

const DESCRIPTOR_MAGIC: &[u8; 8] = b"CAIRNLOG";
const DESCRIPTOR_LEN: usize = 8 + 2 + 4 + 4;
/// Length and checksum in front of every record body.
pub(crate) const HEADER_LEN: usize = 8;
/// Timestamp and key length at the start of every body.
const BODY_FIXED_LEN: usize = 8 + 4;
const NO_KEY: u32 = u32::MAX;

/// The descriptor bytes for a topic of `partitions` partitions.
pub(crate) fn encode_descriptor(partitions: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(DESCRIPTOR_LEN);
    buf.extend_from_slice(DESCRIPTOR_MAGIC);
    buf.extend_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&partitions.to_le_bytes());
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// The partition count in a descriptor read from `path`.
pub(crate) fn decode_descriptor(path: &Path, bytes: &[u8]) -> Result<u32> {
    let what = path.display().to_string();
    let corrupted = |detail: &str| ExecutorError::from(StateError::corrupted(&what, detail));
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(corrupted("topic descriptor is truncated"));
    };
    if magic != DESCRIPTOR_MAGIC {
        return Err(StateError::incompatible(&what, "not a cairn log topic descriptor").into());
    }
    let Some((version, rest)) = rest.split_first_chunk::<2>() else {
        return Err(corrupted("topic descriptor is truncated"));
    };
    let version = u16::from_le_bytes(*version);
    if version != LOG_FORMAT_VERSION {
        return Err(StateError::incompatible(
            &what,
            format!("log format version {version}; this build reads version {LOG_FORMAT_VERSION}"),
        )
        .into());
    }
    let Some((partitions, rest)) = rest.split_first_chunk::<4>() else {
        return Err(corrupted("topic descriptor is truncated"));
    };
    let Some((crc, trailing)) = rest.split_first_chunk::<4>() else {
        return Err(corrupted("topic descriptor is truncated"));
    };
    if !trailing.is_empty() {
        return Err(corrupted("trailing bytes after the topic descriptor"));
    }
    let body = bytes.get(..DESCRIPTOR_LEN - 4).unwrap_or_default();
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(corrupted("topic descriptor checksum mismatch"));
    }
    let partitions = u32::from_le_bytes(*partitions);
    if partitions == 0 {
        return Err(corrupted("topic descriptor has 0 partitions"));
    }
    Ok(partitions)
}

/// Appends one encoded record to `buf`.
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    timestamp_millis: u64,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<()> {
    let key_len = key.map_or(0, <[u8]>::len);
    let body_len = BODY_FIXED_LEN + key_len + value.len();
    let len = u32::try_from(body_len)
        .ok()
        .filter(|&l| l <= MAX_RECORD_BYTES && key_len < NO_KEY as usize)
        .ok_or_else(|| {
            ExecutorError::InvalidJob(format!(
                "log record of {body_len} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes"
            ))
        })?;
    let start = buf.len();
    buf.reserve(HEADER_LEN + body_len);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&timestamp_millis.to_le_bytes());
    match key {
        Some(k) => {
            buf.extend_from_slice(&(key_len as u32).to_le_bytes());
            buf.extend_from_slice(k);
        }
        None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    buf.extend_from_slice(value);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(buf.get(start + HEADER_LEN..).unwrap_or_default());
    let crc = hasher.finalize();
    if let Some(slot) = buf.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// A record parsed from the front of a byte slice; ranges index the slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    /// Bytes the record takes, header included.
    pub(crate) total: usize,
    pub(crate) timestamp_millis: u64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Range<usize>,
}

/// What the front of a byte slice holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parse {
    /// A whole, valid record.
    Record(RawRecord),
    /// Fewer bytes than the record needs (the end, or a torn record).
    Incomplete,
    /// A whole record whose checksum does not match; `total` bytes long.
    BadChecksum {
        /// Bytes the record claims, header included.
        total: usize,
    },
    /// Bytes that cannot be a record (length field or body layout wrong).
    Invalid(String),
}

/// Parses the record at the front of `buf`.
pub(crate) fn parse_record(buf: &[u8]) -> Parse {
    let Some((len, rest)) = buf.split_first_chunk::<4>() else {
        return Parse::Incomplete;
    };
    let Some((crc, rest)) = rest.split_first_chunk::<4>() else {
        return Parse::Incomplete;
    };
    let len_value = u32::from_le_bytes(*len);
    if len_value > MAX_RECORD_BYTES || (len_value as usize) < BODY_FIXED_LEN {
        return Parse::Invalid(format!("record length {len_value} is out of range"));
    }
    let body_len = len_value as usize;
    let Some(body) = rest.get(..body_len) else {
        return Parse::Incomplete;
    };
    let total = HEADER_LEN + body_len;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(body);
    if hasher.finalize() != u32::from_le_bytes(*crc) {
        return Parse::BadChecksum { total };
    }
    let Some((ts, after_ts)) = body.split_first_chunk::<8>() else {
        return Parse::Invalid("record body is too short".into());
    };
    let Some((key_len, _)) = after_ts.split_first_chunk::<4>() else {
        return Parse::Invalid("record body is too short".into());
    };
    let key_len = u32::from_le_bytes(*key_len);
    let key_start = HEADER_LEN + BODY_FIXED_LEN;
    let (key, value_start) = if key_len == NO_KEY {
        (None, key_start)
    } else {
        let key_end = key_start + key_len as usize;
        if key_end > total {
            return Parse::Invalid(format!(
                "key length {key_len} exceeds the record body of {body_len} bytes"
            ));
        }
        (Some(key_start..key_end), key_end)
    };
    Parse::Record(RawRecord {
        total,
        timestamp_millis: u64::from_le_bytes(*ts),
        key,
        value: value_start..total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_prefix_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, Some(b"k"), b"value").unwrap();
        encode_record(&mut buf, 43, None, b"").unwrap();
        let Parse::Record(r) = parse_record(&buf) else {
            panic!("not a record")
        };
        assert_eq!(r.timestamp_millis, 42);
        assert_eq!(&buf[r.key.clone().unwrap()], b"k");
        assert_eq!(&buf[r.value.clone()], b"value");
        let Parse::Record(r2) = parse_record(&buf[r.total..]) else {
            panic!("not a record")
        };
        assert_eq!((r2.timestamp_millis, r2.key, r2.value.len()), (43, None, 0));
        for cut in 0..r.total {
            assert_eq!(parse_record(&buf[..cut]), Parse::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn flipped_bytes_never_parse_as_the_record() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, Some(b"key"), b"some value").unwrap();
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x01;
            assert!(
                !matches!(parse_record(&b), Parse::Record(_)),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn descriptor_round_trip_and_corruption() {
        let path = Path::new("t/topic.meta");
        let d = encode_descriptor(3);
        assert_eq!(decode_descriptor(path, &d).unwrap(), 3);
        for i in 0..d.len() {
            let mut b = d.clone();
            b[i] ^= 0x04;
            let err = decode_descriptor(path, &b).unwrap_err().to_string();
            assert!(err.contains("topic.meta"), "{err}");
        }
        assert!(decode_descriptor(path, &d[..5]).is_err());
    }
}
