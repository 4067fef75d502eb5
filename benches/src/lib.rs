//! Workload generators shared by cairn's criterion benches: deterministic keys,
//! values and access orders, so every backend and its baseline see the same
//! operations in the same order.
#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::Bytes;
use state_core::{
    BackendContext, EntryKey, KeyedStateBackend, MaxParallelism, OperatorId, StateDescriptor,
    StateId, StateKind, SystemClock,
};

/// How many accesses a bench cycles through (a power of two).
pub const ORDER_LEN: usize = 1 << 20;

/// The keys, values and access order of a state-operation bench:
/// `CAIRN_BENCH_KEYS` keys (default 1,000,000), 64 distinct values of
/// `CAIRN_BENCH_VALUE_SIZE` bytes (default 100), max parallelism 128.
#[derive(Debug)]
pub struct Workload {
    /// The keys, `key-0000000`….
    pub keys: Vec<Vec<u8>>,
    /// Values to write, cycled.
    pub values: Vec<Bytes>,
    /// The order in which keys are visited.
    pub order: Vec<u64>,
    /// The job's number of key groups.
    pub max: MaxParallelism,
}

impl Workload {
    /// The workload the environment asks for.
    pub fn from_env() -> Self {
        let n: u64 = env_or("CAIRN_BENCH_KEYS", 1_000_000);
        let size: usize = env_or("CAIRN_BENCH_VALUE_SIZE", 100);
        Workload {
            keys: (0..n).map(key).collect(),
            values: (0..64).map(|i| Bytes::from(value(i, size))).collect(),
            order: access_order(ORDER_LEN, n, 0x5eed),
            max: MaxParallelism::default_for(1),
        }
    }

    /// The size of every value.
    pub fn value_size(&self) -> usize {
        self.values.first().map_or(0, Bytes::len)
    }

    /// The address of key `i` in the default namespace.
    pub fn entry(&self, i: u64) -> EntryKey<'_> {
        let key = self.keys.get(i as usize).map_or(&[][..], Vec::as_slice);
        EntryKey {
            key_group: self.max.key_group_of(key),
            key,
            namespace: &[],
        }
    }

    /// The context of the one subtask the benches run.
    pub fn context(&self) -> BackendContext {
        BackendContext {
            operator_id: OperatorId("bench".into()),
            subtask: 0,
            parallelism: 1,
            max_parallelism: self.max,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The states every state-operation bench registers.
#[derive(Debug, Clone, Copy)]
pub struct States {
    /// A value state.
    pub value: StateId,
    /// A list state.
    pub list: StateId,
    /// A map state.
    pub map: StateId,
}

impl States {
    /// Registers the value, list and map states in `backend`.
    pub fn register<B: KeyedStateBackend>(backend: &mut B) -> state_core::Result<Self> {
        Ok(States {
            value: backend.register_state(&StateDescriptor::new("value", StateKind::Value))?,
            list: backend.register_state(&StateDescriptor::new("list", StateKind::List))?,
            map: backend.register_state(&StateDescriptor::new("map", StateKind::Map))?,
        })
    }
}

/// The environment variable `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The reference workloads' key for index `i`: `key-0000042`.
pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:07}").into_bytes()
}

/// SplitMix64: the deterministic generator of all bench choices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `size` incompressible bytes derived from `seed`.
pub fn value(seed: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 8);
    let mut s = seed;
    while out.len() < size {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// `n` pseudo-random indexes in `0..keys`, the order in which benches visit keys.
pub fn access_order(n: usize, keys: u64, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| splitmix64(seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d)) % keys.max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic() {
        assert_eq!(key(42), b"key-0000042".to_vec());
        assert_eq!(value(7, 100), value(7, 100));
        assert_ne!(value(7, 100), value(8, 100));
        assert_eq!(value(1, 13).len(), 13);
        let order = access_order(1000, 10, 3);
        assert!(order.iter().all(|&k| k < 10));
        assert_eq!(order, access_order(1000, 10, 3));
    }
}
