//! (binary being written)
fn main() {}
