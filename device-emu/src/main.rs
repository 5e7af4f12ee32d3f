//! The `device-emu` binary (placeholder until the server lands).
fn main() {}
