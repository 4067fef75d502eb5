//! Shared pieces of cairn's cross-crate scenarios.
//!
//! [`fixture`] writes the checked-in format-v1 checkpoint under
//! `tests/fixtures/v1/` and states what restoring it must give, so every
//! later release proves it still reads version-1 checkpoints.
#![forbid(unsafe_code)]
// Test support: a failure here is a failed test or a failed fixture write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixture;
