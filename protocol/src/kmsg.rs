//! The lines the guest test binary writes around each test, which the runner
//! reads back: markers in the kernel log, heartbeats on the KTAP stream.

/// Written to the kernel log (`bigbar: begin NAME`) before a test starts.
///
/// The console then delimits the test itself: kernel messages between the two
/// markers were printed while it ran. The KTAP stream cannot tell that, since it
/// travels on another serial port and its lines race the console's.
pub const BEGIN_MARKER: &str = "bigbar: begin ";
/// Written to the kernel log (`bigbar: end NAME`) after a test and its teardown.
pub const END_MARKER: &str = "bigbar: end ";
/// Starts the KTAP diagnostic (after `# `) the guest's parent writes while a test
/// runs: `heartbeat NAME SECONDS`, the whole seconds since the test's fork.
pub const HEARTBEAT: &str = "heartbeat ";
