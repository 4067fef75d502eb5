//! # cairn state-testkit
//!
//! What a backend's or a storage's tests need to prove it behaves like every
//! other cairn backend, kept out of the production crates:
//!
//! - [`conformance_tests!`]: the backend conformance suite ([`conformance`]),
//!   one `#[test]` per behaviour, plus the proptest model test
//!   ([`sequences`]), from one macro call in the backend's `tests/`.
//! - [`ModelBackend`]: a simple, obviously correct backend over `BTreeMap`s,
//!   the reference the others are compared with.
//! - [`FaultyFs`]: an [`Fs`](state_core::backend_support::Fs) that fails or
//!   "crashes" at a chosen write, fsync or rename, for crash-consistency tests
//!   of checkpoint storage.
//! - [`InterceptStorage`]: a checkpoint storage over another one whose stream
//!   opens and reads a test can hold, slow down or alter.
//! - [`s3`]: moto's and SeaweedFS's S3 servers on loopback for the object
//!   storage's tests, and a fault-injecting HTTP proxy.
//!
//! # Example
//!
//! The whole suite on the model backend over in-memory checkpoint storage; a
//! backend crate writes the same in its `tests/conformance.rs` with its own
//! factory.
//!
//! ```
//! use std::sync::Arc;
//! use state_core::MemoryCheckpointStorage;
//! use state_testkit::{ModelBackendFactory, Setup};
//!
//! fn setup() -> Setup<ModelBackendFactory> {
//!     Setup::new(ModelBackendFactory, Arc::new(MemoryCheckpointStorage::default()))
//! }
//! state_testkit::conformance_tests!(setup);
//!
//! // One of the tests, called directly:
//! state_testkit::conformance::value_state_operations(setup());
//! ```
//!
//! # Place in the workspace
//! `state-core <- state-testkit`, a dev-dependency of the backends,
//! `backend-fs` and `tests/`. It depends on `state-core` only, so any crate
//! may use it in its tests; no production crate depends on it.
#![forbid(unsafe_code)]
// Test support: a failed check panics, which fails the calling test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
mod faulty_fs;
mod intercept;
mod model;
pub mod s3;
pub mod sequences;
mod setup;

pub use faulty_fs::{FaultMode, FaultyFs, FsOp};
pub use intercept::{Intercept, InterceptStorage};
pub use model::{MODEL_BACKEND_NAME, ModelBackend, ModelBackendFactory, test_context};
pub use setup::Setup;
