//! bigbar's emulated PCI device: a vfio-user server with large, sparse,
//! memfd-backed BARs, a trapped register BAR and MSI-X.
//!
//! Without the `server` feature only [`regs`] (the register ABI) and [`layout`]
//! (the BAR layout syntax) are built; they depend on `std` alone so that the
//! static guest binary can share them.
//!
//! # The device
//!
//! - BAR 0: the register BAR ([`regs`]), 4 KiB, trapped.
//! - Memory BARs per [`layout::BarLayout`]: each a sparse memfd offered for mmap,
//!   except the 4 KiB page holding the MSI-X table and PBA, which is trapped.
//! - Config space: type 0 header, PCI Express (v2 endpoint, FLR capable), MSI-X
//!   ([`config_space::MSIX_VECTORS`] vectors) and MSI
//!   ([`config_space::MSI_VECTORS`] vector) capabilities.
//! - Interrupts ([`irqs`]): INTx, MSI, MSI-X, error and request eventfds. The
//!   device raises MSI and MSI-X vectors on the register command `RaiseIrq`
//!   and at the end of a DMA copy; MSI-X (and INTx) can be masked, a masked
//!   trigger waits in the PBA until unmasked.
//! - A DMA engine ([`regs::Command::DmaCopy`], [`dma`]): copies up to 1 MiB
//!   between IOVAs the client mapped, in sealed shared memory files or
//!   through `DMA_READ`/`DMA_WRITE` messages; faults are statuses.
//! - Device reset, by vfio-user `DEVICE_RESET` or by a function level reset
//!   (the PCI Express capability advertises FLR; writing Device Control's
//!   "Initiate FLR" bit triggers it, and the bit reads back 0), restores config
//!   space, registers and MSI-X table; BAR memory keeps its contents.
//! - A new client connection gets a powered-on device: reset state and BAR
//!   memory released (reads as zeros).
//!
//! # The protocol
//!
//! [`session`] reads each vfio-user message whole, bounded by
//! [`session::MAX_MESSAGE`], checks it and answers it from the device; it
//! replaces the `vfio_user` crate's server loop, which trusts its peer (the
//! module says where). A malformed message gets an error reply with an errno,
//! or the connection is closed when its framing cannot be trusted; the server
//! goes on serving the next client. One client is served at a time: another
//! one connecting meanwhile gets an `EBUSY` reply and is disconnected. The
//! socket is created with mode 0600, never over an existing path, in a
//! directory that belongs to the user, is not a symbolic link and that no one
//! else can enter, list or write (mode 0700: no group or other bits).
//!
//! # Running it
//!
//! `device-emu --socket PATH [--bars SPEC] [--log-level FILTER] [--ready-fd FD]`
//! prints `device-emu: listening on PATH` to stderr and writes one byte to `FD`
//! (then closes it) once clients can connect; SIGTERM or SIGINT removes the
//! socket and exits with status 0. With `BIGBAR_DEVICE_RECORD=DIR` in the
//! environment, every message each client sends is recorded to a file in
//! `DIR` (the format of [`transport`]; `fuzz/make_seeds.py` turns a recording
//! into fuzz seeds).
//!
//! # Fuzzing
//!
//! `fuzz/run.sh [SECONDS]` runs the `messages` target of `fuzz/` (its own
//! workspace, nightly and `cargo-fuzz`) from the seed corpus recorded from
//! QEMU 11.1.

pub use protocol::{layout, regs};

#[cfg(feature = "server")]
pub mod bar_memory;
#[cfg(feature = "server")]
pub mod capabilities;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config_space;
#[cfg(feature = "server")]
pub mod device;
#[cfg(feature = "server")]
pub mod dma;
#[cfg(feature = "server")]
pub mod irqs;
#[cfg(feature = "server")]
pub mod msix;
#[cfg(feature = "server")]
pub mod register_file;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod transport;
#[cfg(feature = "server")]
pub mod wire;

/// Formats an error with all of its sources, for logs.
#[cfg(feature = "server")]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
