//! The backend conformance suite: every backend runs it with one macro call.
//!
//! ```
//! use std::sync::Arc;
//! use state_core::MemoryCheckpointStorage;
//! use state_testkit::{ModelBackendFactory, Setup};
//!
//! // In a backend crate's tests/conformance.rs, with that crate's factory:
//! fn setup() -> Setup<ModelBackendFactory> {
//!     Setup::new(ModelBackendFactory, Arc::new(MemoryCheckpointStorage::default()))
//! }
//! state_testkit::conformance_tests!(setup);
//! # fn main() {}
//! ```
//!
//! The macro expands to a `mod conformance` with one `#[test]` per pub test
//! function of this module (each on a fresh [`Setup`](crate::Setup)) plus the proptest model
//! test ([`crate::sequences`]). The tests go through the typed layer and
//! the byte-level traits only, so they hold for any backend and storage.
//! Every snapshot asks for [`Setup::mode`](crate::Setup::mode): a backend with incremental
//! snapshots runs the suite once per mode
//! (`Setup::new(..).with_mode(SnapshotMode::Incremental)`); the two tests
//! about full snapshots only (`corrupt_bytes_never_panic_or_half_restore`,
//! `ttl_expired_entries_dropped_by_full_snapshot`) check the incremental
//! counterpart of their claim.

mod fixture;
mod snapshots;
mod state_ops;
mod timers;
mod ttl;
mod types;

pub use fixture::{MAX_PARALLELISM, create_subtask, keys_in_range, restore_subtask, snapshot_all};
pub use snapshots::{
    corrupt_bytes_never_panic_or_half_restore, corrupt_stream_restore_fails_and_leaves_empty,
    empty_backend_snapshot_restores_empty, rescale_4_to_3_and_5, restore_replaces_existing_state,
    restore_round_trip_all_kinds, snapshot_isolation,
};
pub use state_ops::{
    aggregating_state_operations, key_outside_range_is_invalid, keys_in_many_key_groups,
    keys_iteration, list_state_operations, map_state_operations, namespaces_are_isolated,
    operations_without_current_key_are_invalid, reducing_state_operations,
    register_same_name_other_kind_fails, value_state_operations, value_update_in_place,
};
pub use timers::timers_survive_snapshot_and_restore;
pub use ttl::{
    ttl_expired_entries_dropped_by_full_snapshot, ttl_list_and_map_elements,
    ttl_value_each_update_type_and_visibility,
};
pub use types::state_types_are_recorded_checked_and_migrated;

/// Expands to `mod conformance` with one `#[test]` per conformance test,
/// each calling `$setup()` for a fresh [`Setup`](crate::Setup), plus the model test.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__conformance_test_fns!(
                $setup;
                value_state_operations,
                value_update_in_place,
                list_state_operations,
                map_state_operations,
                reducing_state_operations,
                aggregating_state_operations,
                namespaces_are_isolated,
                keys_in_many_key_groups,
                key_outside_range_is_invalid,
                operations_without_current_key_are_invalid,
                register_same_name_other_kind_fails,
                keys_iteration,
                snapshot_isolation,
                restore_round_trip_all_kinds,
                restore_replaces_existing_state,
                empty_backend_snapshot_restores_empty,
                corrupt_stream_restore_fails_and_leaves_empty,
                corrupt_bytes_never_panic_or_half_restore,
                rescale_4_to_3_and_5,
                ttl_value_each_update_type_and_visibility,
                ttl_list_and_map_elements,
                ttl_expired_entries_dropped_by_full_snapshot,
                timers_survive_snapshot_and_restore,
                state_types_are_recorded_checked_and_migrated,
            );

            #[test]
            fn model_sequences() {
                $crate::sequences::check_model(|| $setup());
            }
        }
    };
}

/// Implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ($setup:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name($setup());
            }
        )*
    };
}
