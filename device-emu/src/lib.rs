//! bigbar's emulated PCI device: a vfio-user server with large, sparse,
//! memfd-backed BARs, a trapped register BAR and MSI-X.

pub mod regs;
