//! Conformance: the type names of states go into snapshots, a restored
//! state registered with another type is refused naming both, and a
//! migration from the recorded type rewrites its entries.

use state_core::typed::{ListStateDescriptor, ValueStateDescriptor};
use state_core::{BackendFactory, CheckpointId, KeyedStateBackend};

use super::fixture::{clock, create_subtask, restore_subtask, snapshot_all};
use crate::Setup;

/// Type names survive a snapshot; another type is refused; value and list
/// migrations convert every entry once, and the new type is what the next
/// snapshot records.
pub fn state_types_are_recorded_checked_and_migrated<F: BackendFactory>(setup: Setup<F>) {
    let clock = clock();
    let mut st = create_subtask(&setup, 0, 1, &clock).unwrap();
    let count = st
        .value_state(&ValueStateDescriptor::<u32>::new("count"))
        .unwrap();
    let seen = st
        .list_state(&ListStateDescriptor::<u32>::new("seen"))
        .unwrap();
    for k in 0..30u32 {
        st.set_current_key(&k).unwrap();
        count.update(&mut st, &k).unwrap();
        seen.add(&mut st, &k).unwrap();
        seen.add(&mut st, &(k + 1)).unwrap();
    }
    let handles = snapshot_all(
        std::slice::from_mut(&mut st),
        setup.storage.as_ref(),
        CheckpointId(1),
        setup.mode,
    )
    .unwrap();

    let mut restored = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let types: Vec<(String, Option<String>)> = restored
        .backend()
        .states()
        .into_iter()
        .map(|d| (d.name, d.type_name))
        .filter(|(n, _)| n == "count" || n == "seen")
        .collect();
    assert_eq!(
        types,
        vec![
            ("count".to_owned(), Some("u32".to_owned())),
            ("seen".to_owned(), Some("u32".to_owned()))
        ]
    );
    let err = restored
        .value_state(&ValueStateDescriptor::<String>::new("count"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"count\"") && err.contains("u32") && err.contains("alloc::string::String"),
        "{err}"
    );

    let mut migrated = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let count = migrated
        .value_state(
            &ValueStateDescriptor::<u64>::new("count")
                .with_migration(|old: u32| u64::from(old) * 10),
        )
        .unwrap();
    let seen = migrated
        .list_state(
            &ListStateDescriptor::<String>::new("seen").with_migration(|old: u32| old.to_string()),
        )
        .unwrap();
    for k in 0..30u32 {
        migrated.set_current_key(&k).unwrap();
        assert_eq!(count.value(&mut migrated).unwrap(), Some(u64::from(k) * 10));
        assert_eq!(
            seen.get(&mut migrated).unwrap(),
            vec![k.to_string(), (k + 1).to_string()]
        );
    }
    // Registering again (a handle after the migration) converts nothing twice.
    let again = migrated
        .value_state(
            &ValueStateDescriptor::<u64>::new("count")
                .with_migration(|old: u32| u64::from(old) * 10),
        )
        .unwrap();
    migrated.set_current_key(&3u32).unwrap();
    assert_eq!(again.value(&mut migrated).unwrap(), Some(30));

    let handles = snapshot_all(
        std::slice::from_mut(&mut migrated),
        setup.storage.as_ref(),
        CheckpointId(2),
        setup.mode,
    )
    .unwrap();
    let mut next = restore_subtask(&setup, &handles, 0, 1, &clock).unwrap();
    let count = next
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    next.set_current_key(&7u32).unwrap();
    assert_eq!(count.value(&mut next).unwrap(), Some(70));
    assert!(
        next.value_state(&ValueStateDescriptor::<u32>::new("count"))
            .is_err(),
        "the snapshot after a migration records the new type"
    );
}
