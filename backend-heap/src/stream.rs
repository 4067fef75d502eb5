//! What the heap backend's full snapshots and incremental chains share:
//! the backend's name in their handles, and writing one table's key group
//! into a key-group stream.

use state_core::Result;
use state_core::backend_support::KeyGroupStreamWriter;

use crate::table::Table;

/// The name heap snapshots carry in their handles.
pub(crate) const BACKEND_NAME: &str = "heap";

/// Writes every entry of key-group offset `off` of `table`, as state
/// `state` of the stream.
pub(crate) fn write_key_group(
    writer: &mut KeyGroupStreamWriter,
    state: u32,
    table: &Table,
    off: usize,
) -> Result<()> {
    match table {
        Table::Value(maps) => {
            for (k, v) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_value(state, k.key(), k.namespace(), v)?;
            }
        }
        Table::List(maps) => {
            for (k, list) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_list(state, k.key(), k.namespace(), list.iter().map(|e| &e[..]))?;
            }
        }
        Table::Map(maps) => {
            for (k, entries) in maps.get(off).iter().flat_map(|m| m.iter()) {
                writer.write_map(
                    state,
                    k.key(),
                    k.namespace(),
                    entries.iter().map(|(uk, v)| (&uk[..], &v[..])),
                )?;
            }
        }
    }
    Ok(())
}
