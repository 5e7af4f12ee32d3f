//! What bigbar's parts agree on, in one place each, with no dependencies so that
//! the static guest binary, the device and the runner all build it:
//!
//! - [`regs`]: the register BAR's programming interface (device ↔ guest tests);
//! - [`layout`]: the BAR layout syntax of `--bars` (runner ↔ device);
//! - [`ktap`]: the KTAP directives the guest writes and the runner reads;
//! - [`kmsg`]: the kernel-log markers and the heartbeat around each test;
//! - [`glob`]: the name patterns of `--filter` and of expectations files;
//! - [`vfio_api`]: how the guest tests open the device (runner ↔ guest).

pub mod glob;
pub mod kmsg;
pub mod ktap;
pub mod layout;
pub mod regs;
pub mod vfio_api;
