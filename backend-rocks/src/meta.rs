//! The meta stream of an incremental handle: which states the checkpointed
//! database holds and in which column families.
//!
//! Layout: magic `CAIRNRKM` (8 bytes), format version (u16 LE), then the
//! postcard encoding of [`RocksMeta`]. Its length and CRC-32 are in the
//! handle, so a damaged stream is caught before it is decoded.
//!
//! Version 2 records each state's type name in its descriptor; version 1
//! (no type names, [`LegacyStateDescriptor`]) is still read, its states
//! taking the type their job registers.

use serde::{Deserialize, Serialize};
use state_core::backend_support::LegacyStateDescriptor;
use state_core::{KeyGroupRange, Result, StateDescriptor, StateError};

/// The first bytes of every meta stream.
pub(crate) const META_MAGIC: &[u8; 8] = b"CAIRNRKM";
/// The meta format version this build writes; it reads [`META_VERSION_V1`] too.
pub(crate) const META_VERSION: u16 = 2;
/// The first meta format version: descriptors without type names.
pub(crate) const META_VERSION_V1: u16 = 1;
/// The meta stream's file name inside a local checkpoint copy.
pub(crate) const LOCAL_META_FILE: &str = "_cairn_meta";

/// What an incremental snapshot's database holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RocksMeta {
    /// The job's number of key groups.
    pub(crate) max_parallelism: u32,
    /// The key groups the database holds.
    pub(crate) range: KeyGroupRange,
    /// Every state, with its column family.
    pub(crate) states: Vec<MetaState>,
}

/// One state of a checkpointed database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetaState {
    pub(crate) descriptor: StateDescriptor,
    pub(crate) cf_name: String,
}

/// [`RocksMeta`] as version 1 stored it.
#[derive(Deserialize)]
struct RocksMetaV1 {
    max_parallelism: u32,
    range: KeyGroupRange,
    states: Vec<MetaStateV1>,
}

/// [`MetaState`] as version 1 stored it.
#[derive(Deserialize)]
struct MetaStateV1 {
    descriptor: LegacyStateDescriptor,
    cf_name: String,
}

impl From<RocksMetaV1> for RocksMeta {
    fn from(old: RocksMetaV1) -> Self {
        RocksMeta {
            max_parallelism: old.max_parallelism,
            range: old.range,
            states: old
                .states
                .into_iter()
                .map(|s| MetaState {
                    descriptor: s.descriptor.into(),
                    cf_name: s.cf_name,
                })
                .collect(),
        }
    }
}

impl RocksMeta {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let body = postcard::to_stdvec(self).map_err(|e| {
            StateError::invalid(format!("rocks snapshot meta cannot be encoded: {e}"))
        })?;
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&META_VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a meta stream; `what` names it in errors.
    pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(StateError::incompatible(
                what,
                "not a rocks snapshot meta stream",
            ));
        };
        if magic != META_MAGIC {
            return Err(StateError::incompatible(
                what,
                "not a rocks snapshot meta stream (wrong magic bytes)",
            ));
        }
        let Some((version, body)) = rest.split_first_chunk::<2>() else {
            return Err(StateError::corrupted(what, "truncated meta header"));
        };
        let version = u16::from_le_bytes(*version);
        let bad = |e: postcard::Error| {
            StateError::corrupted(what, format!("rocks meta does not decode: {e}"))
        };
        match version {
            META_VERSION => postcard::from_bytes(body).map_err(bad),
            META_VERSION_V1 => postcard::from_bytes::<RocksMetaV1>(body)
                .map(RocksMeta::from)
                .map_err(bad),
            _ => Err(StateError::incompatible(
                what,
                format!(
                    "rocks meta version {version}; this build reads versions \
                     {META_VERSION_V1} to {META_VERSION}"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use state_core::{KeyGroup, StateKind};

    use super::*;

    #[test]
    fn round_trip_and_bad_input() {
        let meta = RocksMeta {
            max_parallelism: 128,
            range: KeyGroupRange::new(KeyGroup(0), KeyGroup(63)),
            states: vec![MetaState {
                descriptor: StateDescriptor::new("count", StateKind::Value),
                cf_name: "s:count".into(),
            }],
        };
        let bytes = meta.encode().unwrap();
        assert_eq!(RocksMeta::decode(&bytes, "m").unwrap(), meta);
        assert_eq!(
            RocksMeta::decode(b"nope", "m").unwrap_err().kind(),
            state_core::ErrorKind::IncompatibleFormat
        );
        for len in 0..bytes.len() {
            assert!(RocksMeta::decode(&bytes[..len], "m").is_err());
        }
    }

    #[test]
    fn type_names_are_kept_and_version_1_reads_without_them() {
        let typed = StateDescriptor::new("count", StateKind::Value).with_type_name("u64");
        let meta = RocksMeta {
            max_parallelism: 128,
            range: KeyGroupRange::new(KeyGroup(0), KeyGroup(63)),
            states: vec![MetaState {
                descriptor: typed.clone(),
                cf_name: "s:count".into(),
            }],
        };
        let bytes = meta.encode().unwrap();
        assert_eq!(RocksMeta::decode(&bytes, "m").unwrap(), meta);
        // Version 1: the same fields without the type name.
        let old_state = (
            ("count", StateKind::Value, None::<state_core::TtlConfig>),
            "s:count",
        );
        let body = postcard::to_stdvec(&(128u32, meta.range, vec![old_state])).unwrap();
        let mut v1 = META_MAGIC.to_vec();
        v1.extend_from_slice(&META_VERSION_V1.to_le_bytes());
        v1.extend_from_slice(&body);
        let read = RocksMeta::decode(&v1, "m").unwrap();
        assert_eq!(
            read.states[0].descriptor,
            StateDescriptor::new("count", StateKind::Value)
        );
        assert_eq!(read.states[0].cf_name, "s:count");
    }
}
