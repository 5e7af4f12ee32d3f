//! The static guest test binary (placeholder).
fn main() {}
