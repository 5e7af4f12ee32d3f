//! bigbar's guest tests and the rule model they check against.
//!
//! The host-testable parts ([`model`], [`glob`], [`ktap`], [`harness`], [`isolate`],
//! [`kernel`], [`stop`]) need no device; the rest talks to vfio-pci and the emulated device.

pub mod faults;
pub mod fixture;
pub use protocol::glob;
pub mod harness;
pub mod isolate;
pub mod kernel;
pub mod kmsg;
pub mod kselftest;
pub mod ktap;
pub mod layout;
pub mod mapping;
pub mod model;
pub mod pci;
pub mod placement;
pub mod ptdump;
pub mod register_bar;
pub mod remap;
pub mod stop;
pub mod vfio;
pub mod vfio_caps;
