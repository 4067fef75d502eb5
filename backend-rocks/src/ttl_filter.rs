//! TTL cleanup in compaction (Flink's `RocksDbTtlCompactFiltersManager`).
//!
//! Every state's column family has a compaction filter that drops entries
//! whose TTL timestamp ([`state_core::backend_support::wrap_ttl`]) has expired by the backend's
//! clock: a value, a map entry (each map entry is its own RocksDB key), or
//! a list whose elements have all expired. A list with some live elements is
//! kept whole: the rocksdb crate's filter can only replace a value with a
//! `'static` slice, so expired elements of a partly live list are dropped on
//! read by the typed layer and by full snapshots instead. Merge operands
//! (appends not yet merged) are not passed to filters by RocksDB; they are
//! filtered once a later compaction has merged them into a value.

use std::sync::{Arc, Mutex};

use rocksdb::compaction_filter::Decision;
use state_core::{Clock, StateLayout, TtlConfig};

use crate::key_codec::decode_list;

/// A state's TTL, shared by the backend (which may change it when the
/// state is registered again) and its column family's compaction filter.
pub(crate) type TtlCell = Mutex<Option<TtlConfig>>;

/// Whether a stored value of a state of `layout` may be dropped at `now`.
pub(crate) fn value_expired(layout: StateLayout, cfg: &TtlConfig, value: &[u8], now: u64) -> bool {
    match layout {
        StateLayout::Value | StateLayout::Map => cfg.is_expired(value, now),
        StateLayout::List => match decode_list(value) {
            Some(elements) => elements.iter().all(|e| cfg.is_expired(e, now)),
            // An undecodable list is left for the read path to report.
            None => false,
        },
    }
}

/// The compaction filter of a state of `layout`.
pub(crate) fn ttl_compaction_filter(
    layout: StateLayout,
    ttl: Arc<TtlCell>,
    clock: Arc<dyn Clock>,
) -> impl FnMut(u32, &[u8], &[u8]) -> Decision + Send + 'static {
    move |_level, _key, value| {
        let cfg = match ttl.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        match cfg {
            Some(cfg) if value_expired(layout, &cfg, value, clock.now_millis()) => Decision::Remove,
            _ => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use state_core::backend_support::wrap_ttl;

    use super::*;
    use crate::key_codec::encode_list;

    #[test]
    fn expiry_by_layout() {
        let cfg = TtlConfig::new(Duration::from_millis(10)).unwrap();
        let old = wrap_ttl(0, b"a");
        let new = wrap_ttl(100, b"b");
        assert!(value_expired(StateLayout::Value, &cfg, &old, 50));
        assert!(!value_expired(StateLayout::Map, &cfg, &new, 50));
        let all_old = encode_list([&old[..], &old[..]]);
        let mixed = encode_list([&old[..], &new[..]]);
        assert!(value_expired(StateLayout::List, &cfg, &all_old, 50));
        assert!(!value_expired(StateLayout::List, &cfg, &mixed, 50));
        assert!(!value_expired(StateLayout::List, &cfg, b"\x09", 50));
    }
}
