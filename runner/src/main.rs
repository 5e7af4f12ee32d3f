//! bigbar runner (placeholder).
fn main() {}
