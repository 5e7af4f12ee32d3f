//! bigbar's emulated PCI device: a vfio-user server with large, sparse,
//! memfd-backed BARs, a trapped register BAR and MSI-X.
//!
//! Without the `server` feature only [`regs`] (the register ABI) and [`layout`]
//! (the BAR layout syntax) are built; they depend on `std` alone so that the
//! static guest binary can share them.

pub mod layout;
pub mod regs;

#[cfg(feature = "server")]
pub mod bar_memory;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config_space;
#[cfg(feature = "server")]
pub mod device;
#[cfg(feature = "server")]
pub mod dma;
#[cfg(feature = "server")]
pub mod msix;
#[cfg(feature = "server")]
pub mod registers;
#[cfg(feature = "server")]
pub mod server;

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
