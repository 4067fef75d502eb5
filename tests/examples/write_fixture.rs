//! Writes the format-v1 fixture checkpoint: `write_fixture <base-dir>`.
#![allow(clippy::print_stderr)] // A developer tool; it reports where it wrote.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: write_fixture <base-dir>")?;
    cairn_tests::fixture::write(std::path::Path::new(&dir))?;
    eprintln!("wrote {dir}/{}", cairn_tests::fixture::JOB);
    Ok(())
}
