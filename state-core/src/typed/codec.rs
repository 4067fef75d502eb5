//! Encoding of typed state into backend bytes, and the TTL checks on read.
//!
//! Everything here is private to the typed layer; the format is documented in
//! the [`crate::typed`] module docs.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::StateId;
use crate::small_bytes::SmallBytes;
use crate::ttl::{TTL_PREFIX_LEN, TtlConfig, TtlUpdateType, TtlVisibility, unwrap_ttl, wrap_ttl};
use crate::{Result, StateError};

/// What a handle knows about its state: the backend id, the name (for
/// errors) and the TTL.
#[derive(Debug, Clone)]
pub(crate) struct StateMeta {
    pub(crate) id: StateId,
    pub(crate) name: Arc<str>,
    pub(crate) ttl: Option<TtlConfig>,
}

/// The outcome of reading one stored entry (a value, list element or map value).
#[derive(Debug)]
pub(crate) enum Read<'a> {
    /// The entry is expired and must be treated as absent and removed.
    Expired,
    /// The entry is visible; `refresh` says its timestamp must be rewritten
    /// because the state refreshes on read.
    Visible { payload: &'a [u8], refresh: bool },
}

impl StateMeta {
    /// The current time if the state has a TTL (the clock is read only then).
    pub(crate) fn now(&self, clock: &dyn crate::Clock) -> Option<u64> {
        self.ttl.map(|_| clock.now_millis())
    }

    /// Serializes `value` into backend bytes, TTL-wrapped with `now` when the
    /// state has a TTL (`now` is `Some` exactly then).
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &self,
        now: Option<u64>,
        value: &T,
    ) -> Result<Bytes> {
        let buf = match now {
            Some(ts) => {
                let mut buf = Vec::with_capacity(TTL_PREFIX_LEN + 16);
                // Same bytes as `ttl::wrap_ttl(ts, payload)`, without a second copy.
                buf.extend_from_slice(&ts.to_le_bytes());
                buf
            }
            None => Vec::with_capacity(16),
        };
        postcard::to_extend(value, buf)
            .map(Bytes::from)
            .map_err(|e| self.encode_error("value", &e))
    }

    /// [`StateMeta::encode`] into a [`SmallBytes`]: a value that fits
    /// inline is serialized on the stack and never allocated (the value
    /// update path, once per record); a longer one as `encode` does.
    pub(crate) fn encode_small<T: Serialize + ?Sized>(
        &self,
        now: Option<u64>,
        value: &T,
    ) -> Result<SmallBytes> {
        let mut buf = [0u8; SmallBytes::INLINE];
        let prefix = match (now, buf.get_mut(..TTL_PREFIX_LEN)) {
            (Some(ts), Some(head)) => {
                head.copy_from_slice(&ts.to_le_bytes());
                TTL_PREFIX_LEN
            }
            _ => 0,
        };
        let Some(tail) = buf.get_mut(prefix..) else {
            return self.encode(now, value).map(SmallBytes::from_bytes);
        };
        match postcard::to_slice(value, tail) {
            Ok(written) => {
                let len = prefix + written.len();
                Ok(SmallBytes::from_slice(buf.get(..len).unwrap_or_default()))
            }
            // Longer than the inline space: the allocating path.
            Err(postcard::Error::SerializeBufferFull) => {
                self.encode(now, value).map(SmallBytes::from_bytes)
            }
            Err(e) => Err(self.encode_error("value", &e)),
        }
    }

    /// Serializes a map user key (never TTL-wrapped) into `buf`, appending.
    pub(crate) fn encode_plain_into<T: Serialize + ?Sized>(
        &self,
        what: &str,
        value: &T,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        postcard::to_extend(value, buf).map_err(|e| self.encode_error(what, &e))
    }

    fn encode_error(&self, what: &str, e: &postcard::Error) -> StateError {
        StateError::invalid(format!(
            "state '{}': {what} cannot be serialized: {e}",
            self.name
        ))
    }

    /// Deserializes a payload (already unwrapped) of this state.
    pub(crate) fn decode<T: DeserializeOwned>(&self, what: &str, payload: &[u8]) -> Result<T> {
        postcard::from_bytes(payload).map_err(|e| {
            StateError::corrupted(
                format!("state '{}'", self.name),
                format!("{what} of {} bytes does not decode: {e}", payload.len()),
            )
        })
    }

    /// Applies the state's TTL to stored bytes read at `now`.
    pub(crate) fn check<'a>(&self, stored: &'a [u8], now: Option<u64>) -> Result<Read<'a>> {
        let (Some(ttl), Some(now)) = (self.ttl, now) else {
            return Ok(Read::Visible {
                payload: stored,
                refresh: false,
            });
        };
        let Some((ts, payload)) = unwrap_ttl(stored) else {
            return Err(StateError::corrupted(
                format!("state '{}'", self.name),
                format!(
                    "TTL entry of {} bytes is shorter than its {TTL_PREFIX_LEN}-byte timestamp",
                    stored.len()
                ),
            ));
        };
        if ttl.expired_at(ts, now) && ttl.visibility == TtlVisibility::NeverReturnExpired {
            return Ok(Read::Expired);
        }
        Ok(Read::Visible {
            payload,
            refresh: ttl.update_type == TtlUpdateType::OnReadAndWrite && ts != now,
        })
    }

    /// Like [`StateMeta::check`] for a read that precedes a write of the same
    /// entry (reducing and aggregating `add`): never asks for a refresh.
    pub(crate) fn check_for_update<'a>(
        &self,
        stored: &'a [u8],
        now: Option<u64>,
    ) -> Result<Option<&'a [u8]>> {
        Ok(match self.check(stored, now)? {
            Read::Expired => None,
            Read::Visible { payload, .. } => Some(payload),
        })
    }
}

/// The stored bytes of `payload` with a fresh timestamp.
pub(crate) fn rewrap(now: Option<u64>, payload: &[u8]) -> Bytes {
    match now {
        Some(ts) => Bytes::from(wrap_ttl(ts, payload)),
        None => Bytes::copy_from_slice(payload),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn meta(ttl: Option<TtlConfig>) -> StateMeta {
        StateMeta {
            id: StateId(0),
            name: Arc::from("s"),
            ttl,
        }
    }

    #[test]
    fn ttl_encoding_is_the_ttl_module_encoding() {
        let cfg = TtlConfig::new(Duration::from_millis(10)).unwrap();
        let m = meta(Some(cfg));
        let stored = m.encode(Some(1234), &"hello").unwrap();
        let payload = postcard::to_stdvec(&"hello").unwrap();
        assert_eq!(&stored[..], &wrap_ttl(1234, &payload)[..]);
        assert!(!cfg.is_expired(&stored, 1243));
        assert!(cfg.is_expired(&stored, 1244));
        assert_eq!(rewrap(Some(1234), &payload), stored);
    }

    #[test]
    fn small_encoding_is_the_allocating_encoding_inline_or_not() {
        let cfg = TtlConfig::new(Duration::from_millis(10)).unwrap();
        let long = "x".repeat(40);
        for m in [meta(None), meta(Some(cfg))] {
            let now = m.ttl.map(|_| 99);
            for value in ["", "hello", "fourteen bytes", long.as_str()] {
                let small = m.encode_small(now, value).unwrap();
                assert_eq!(&*small, &m.encode(now, value).unwrap()[..], "{value:?}");
                assert_eq!(
                    matches!(small, SmallBytes::Inline { .. }),
                    small.len() <= SmallBytes::INLINE
                );
            }
            let count = m.encode_small(now, &12_345_i64).unwrap();
            assert!(matches!(count, SmallBytes::Inline { .. }));
        }
    }

    #[test]
    fn check_applies_visibility_and_update_type() {
        let base = TtlConfig::new(Duration::from_millis(10)).unwrap();
        let stored = meta(Some(base)).encode(Some(100), &7u32).unwrap();
        let never = meta(Some(base));
        assert!(matches!(
            never.check(&stored, Some(110)).unwrap(),
            Read::Expired
        ));
        assert!(matches!(
            never.check(&stored, Some(109)).unwrap(),
            Read::Visible { refresh: false, .. }
        ));
        let ret = meta(Some(
            base.with_visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
                .with_update_type(TtlUpdateType::OnReadAndWrite),
        ));
        match ret.check(&stored, Some(500)).unwrap() {
            Read::Visible { payload, refresh } => {
                assert!(refresh);
                assert_eq!(ret.decode::<u32>("value", payload).unwrap(), 7);
            }
            Read::Expired => panic!("expired entry must be returned"),
        }
        let err = never.check(b"short", Some(1)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
    }

    #[test]
    fn decode_failure_names_the_state() {
        let err = meta(None)
            .decode::<String>("value", &[0xff, 0xff])
            .unwrap_err();
        assert!(err.to_string().contains("state 's'"), "{err}");
    }
}
