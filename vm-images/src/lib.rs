//! Obtains, caches and assembles what a bigbar run boots.
//!
//! - [`Cache`]: the on-disk cache (atomic entries, per-entry locks).
//! - [`Fetcher`]: cache + refresh policy + Debian mirror + progress callback.
//! - [`debian`]: private apt configuration per suite, .deb download and unpacking.
//! - [`qemu`]: a QEMU with the vfio-user client (host's or Debian sid's).
//! - [`kernel`]: guest kernels (`debian:<suite>`) with the vfio modules in load order.
//! - [`busybox`]: Debian's static busybox.
//! - [`initramfs`]: the guest's initramfs (newc cpio).

pub mod busybox;
pub mod cache;
mod command;
pub mod debian;
pub mod error;
pub mod fetch;
pub mod initramfs;
pub mod kernel;
pub mod qemu;

pub use cache::Cache;
pub use error::{Error, Result};
pub use fetch::{Fetcher, Refresh};
pub use initramfs::InitramfsSpec;
pub use kernel::{Kernel, KernelSpec};
pub use qemu::Qemu;
