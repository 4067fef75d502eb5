//! Rewriting a state's entries from a recorded type to the registered one
//! (the typed layer's migrations, [`super::ValueStateDescriptor::with_migration`]).

use std::ops::ControlFlow;

use bytes::Bytes;

use super::codec::StateMeta;
use crate::Result;
use crate::StateError;
use crate::backend::{EntryKey, KeyedStateBackend, StateLayout};
use crate::key_group::KeyGroup;
use crate::ttl::{unwrap_ttl, wrap_ttl};

/// Converts one stored entry, keeping its TTL stamp when the state has one.
fn convert_stored(
    meta: &StateMeta,
    stored: &[u8],
    convert: &dyn Fn(&[u8]) -> Result<Vec<u8>>,
) -> Result<Bytes> {
    if meta.ttl.is_none() {
        return convert(stored).map(Bytes::from);
    }
    let (ts, payload) = unwrap_ttl(stored).ok_or_else(|| {
        StateError::corrupted(
            format!("state '{}'", meta.name),
            format!("TTL entry of {} bytes has no timestamp", stored.len()),
        )
    })?;
    Ok(Bytes::from(wrap_ttl(ts, &convert(payload)?)))
}

/// Rewrites every value (value layout) or every element (list layout) of
/// `meta`'s state with `convert`; returns how many keys were rewritten.
/// The addresses are collected first (the backend may not change during
/// its key visit), so this holds every key of the state in memory once.
pub(super) fn rewrite<B: KeyedStateBackend>(
    backend: &mut B,
    meta: &StateMeta,
    convert: &dyn Fn(&[u8]) -> Result<Vec<u8>>,
) -> Result<u64> {
    let layout = backend
        .states()
        .get(meta.id.index())
        .map(|d| d.kind.layout())
        .ok_or_else(|| StateError::invalid(format!("state '{}' is lost", meta.name)))?;
    let mut addresses: Vec<(KeyGroup, Vec<u8>, Vec<u8>)> = Vec::new();
    backend.keys(meta.id, &mut |e: &EntryKey<'_>| {
        addresses.push((e.key_group, e.key.to_vec(), e.namespace.to_vec()));
        ControlFlow::Continue(())
    })?;
    for (key_group, key, namespace) in &addresses {
        let entry = EntryKey {
            key_group: *key_group,
            key,
            namespace,
        };
        match layout {
            StateLayout::Value => {
                if let Some(stored) = backend.get(meta.id, &entry)? {
                    let fresh = convert_stored(meta, &stored, convert)?;
                    backend.put(meta.id, &entry, fresh)?;
                }
            }
            StateLayout::List => {
                let elements = backend
                    .get_list(meta.id, &entry)?
                    .iter()
                    .map(|e| convert_stored(meta, e, convert))
                    .collect::<Result<Vec<_>>>()?;
                backend.put_list(meta.id, &entry, elements)?;
            }
            StateLayout::Map => {
                return Err(StateError::invalid(format!(
                    "state '{}': map states do not migrate",
                    meta.name
                )));
            }
        }
    }
    Ok(addresses.len() as u64)
}
