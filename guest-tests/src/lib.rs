//! bigbar's guest tests and the rule model they check against.
//!
//! The host-testable parts ([`model`], [`glob`], [`ktap`], [`harness`], [`isolate`],
//! [`kernel`]) need no device; the rest talks to vfio-pci and the emulated device.

pub mod glob;
pub mod harness;
pub mod isolate;
pub mod ktap;
pub mod model;
