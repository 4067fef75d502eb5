//! Time-to-live for state entries, configured per state descriptor.
//!
//! A state with TTL stores each value (each list element, each map entry)
//! prefixed by the 8-byte little-endian timestamp of its last access, in
//! milliseconds from the backend's [`crate::Clock`]. The typed layer writes and
//! checks the prefix; backends use [`TtlConfig::is_expired`] to drop expired
//! entries when they write a full snapshot (and, for RocksDB, in compaction),
//! so the encoding is defined once, here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, StateError};

/// When the last-access timestamp of an entry is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TtlUpdateType {
    /// On creation and on every write (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// On creation, every write and every read.
    OnReadAndWrite,
}

/// Whether an expired entry that is still stored may be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TtlVisibility {
    /// Never return an expired entry (Flink's default).
    #[default]
    NeverReturnExpired,
    /// Return an expired entry if it has not been cleaned up yet.
    ReturnExpiredIfNotCleanedUp,
}

/// Time-to-live of a state's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TtlConfig {
    /// How long an entry lives after its last access, in milliseconds.
    pub ttl_millis: u64,
    /// When the last access is refreshed.
    pub update_type: TtlUpdateType,
    /// Whether expired, not yet cleaned-up entries are visible.
    pub visibility: TtlVisibility,
    /// Drop expired entries when a full snapshot is written (on by default;
    /// Flink makes this opt-in, but it costs nothing extra here because the
    /// snapshot already visits every entry).
    pub cleanup_in_full_snapshot: bool,
}

/// Length of the timestamp prefix of a TTL-wrapped value.
pub const TTL_PREFIX_LEN: usize = 8;

impl TtlConfig {
    /// A TTL of `ttl` with Flink's defaults: update on create and write, never
    /// return expired entries, cleanup in full snapshots.
    pub fn new(ttl: Duration) -> Result<Self> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_millis == 0 {
            return Err(StateError::invalid("state TTL must be at least 1 ms"));
        }
        Ok(TtlConfig {
            ttl_millis,
            update_type: TtlUpdateType::default(),
            visibility: TtlVisibility::default(),
            cleanup_in_full_snapshot: true,
        })
    }

    /// The same config with another update type.
    pub fn with_update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }

    /// The same config with another visibility.
    pub fn with_visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// The same config with cleanup in full snapshots on or off.
    pub fn with_cleanup_in_full_snapshot(mut self, on: bool) -> Self {
        self.cleanup_in_full_snapshot = on;
        self
    }

    /// Whether an entry last accessed at `last_access_millis` has expired at `now_millis`.
    pub fn expired_at(&self, last_access_millis: u64, now_millis: u64) -> bool {
        last_access_millis.saturating_add(self.ttl_millis) <= now_millis
    }

    /// Whether a TTL-wrapped value has expired at `now_millis`. A value too
    /// short to hold the prefix counts as expired (it cannot be returned).
    pub fn is_expired(&self, wrapped: &[u8], now_millis: u64) -> bool {
        match unwrap_ttl(wrapped) {
            Some((ts, _)) => self.expired_at(ts, now_millis),
            None => true,
        }
    }
}

/// Prefixes `payload` with `last_access_millis`.
pub fn wrap_ttl(last_access_millis: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TTL_PREFIX_LEN + payload.len());
    out.extend_from_slice(&last_access_millis.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a TTL-wrapped value into its timestamp and payload.
pub fn unwrap_ttl(wrapped: &[u8]) -> Option<(u64, &[u8])> {
    let (ts, payload) = wrapped.split_first_chunk::<TTL_PREFIX_LEN>()?;
    Some((u64::from_le_bytes(*ts), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_expiry() {
        let cfg = TtlConfig::new(Duration::from_millis(100)).unwrap();
        let v = wrap_ttl(1_000, b"payload");
        assert_eq!(unwrap_ttl(&v), Some((1_000, &b"payload"[..])));
        assert!(!cfg.is_expired(&v, 1_099));
        assert!(cfg.is_expired(&v, 1_100));
        assert!(cfg.is_expired(b"short", 0));
        assert!(TtlConfig::new(Duration::ZERO).is_err());
    }
}
