//! (crate being written)
