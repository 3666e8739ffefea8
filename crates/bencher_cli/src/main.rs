//! The `bencher` command-line interface.
fn main() {}
