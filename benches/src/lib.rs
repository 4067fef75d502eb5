//! Workload generators shared by cairn's criterion benches: deterministic keys,
//! values and access orders, so every backend and its baseline see the same
//! operations in the same order.
#![forbid(unsafe_code)]

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
