//! # `cairn_cli`: backend selection and formatting shared by cairn's programs
//!
//! The `cairn` binary (package `cairn-cli`) is the operator tool; this library
//! holds the parts of it that other programs of the workspace reuse:
//!
//! - [`backend`]: the closed set of backends a job can run on (`--backend
//!   heap|fs|rocks`), the checkpoint storage that goes with each, and a
//!   visitor that runs generic code with the concrete backend chosen;
//! - [`human`]: formatting for people (byte sizes, timestamps, error messages);
//! - [`process`]: what every cairn binary does at its edges (logs on stderr,
//!   one-line errors, exit status 2 for bad input).
//!
//! # Place in the workspace
//! `state-core <- backend-* <- executor <- cli`: this crate is the one place
//! that picks concrete backends and storages. The benchmark harness
//! (`cairn-bench` in `benches/`) and the cross-crate tests may depend on it;
//! nothing below it in the graph does. The RocksDB backend is behind the
//! `rocks` feature (on by default).
//!
//! ```
//! use cairn_cli::human;
//!
//! assert_eq!(human::size(1536), "1.5 KiB");
//! ```
// Denied, not forbidden: `allocator` makes the one FFI call to set a
// mimalloc option (its only `unsafe`, allowed there).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allocator;
pub mod backend;
pub mod human;
pub mod job_args;
pub mod process;
