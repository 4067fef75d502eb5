//! # `cairn_benches`: the reference workload of cairn's benchmarks
//!
//! One deterministic workload (keys `key-%07d`, incompressible values,
//! SplitMix64 access orders, the keyed-count job's record keys and the keys
//! each update round touches), used by the criterion benches in `benches/`
//! and by the `cairn-bench` harness binary (`src/bin/cairn-bench/`), so every
//! figure in `benches/README.md` comes from the same operations.
//!
//! # Place in the workspace
//! At the top of the graph: benches may depend on every crate (state-core,
//! the backends, the executor, and `cairn-cli`'s library for backend
//! selection); nothing depends on benches. The RocksDB backend is behind the
//! `rocks` feature (`cargo build --release -p cairn-benches --features rocks
//! --bin cairn-bench`).
//!
//! ```
//! use cairn_benches::{key, key_text, value};
//!
//! assert_eq!(key(42), b"key-0000042");
//! let (buf, len) = key_text(42);
//! assert_eq!(&buf[..len], b"key-0000042");
//! assert_eq!(value(7, 13).len(), 13);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod workload;

pub use workload::{
    KEY_CAP, KeyName, ORDER_LEN, States, Workload, access_order, env_or, expected_counts, key,
    key_text, record_key, splitmix64, updated_key, value, value_into, value_seed,
};
