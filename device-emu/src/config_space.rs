//! PCI configuration space of the emulated device.
//!
//! Written here rather than with the `vfio_user` example's PCI helper because that
//! helper rejects 64-bit BARs that end above 4 GiB. Every byte has a write mask:
//! a write changes only the masked bits, which gives BAR sizing for free (the
//! address bits below the BAR size are read-only zeros, so writing all-ones reads
//! back the size mask) and keeps read-only registers read-only.

use crate::layout::{BarLayout, BarSpec, MSIX_PBA_DISTANCE, REGISTER_BAR_SIZE};
use crate::regs::{DEVICE_ID, VENDOR_ID};

/// Size of the (PCI Express) configuration space.
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Class code: processing accelerator (base class 0x12, sub-class 0, interface 0).
pub const CLASS_CODE: u32 = 0x12_0000;
/// Revision ID.
pub const REVISION: u8 = 1;
/// Offset of the PCI Express capability.
pub const PCIE_CAP_OFFSET: usize = 0x40;
/// Length of a version 2 PCI Express capability of an endpoint.
pub const PCIE_CAP_LEN: usize = 0x3c;
/// Offset of the MSI-X capability (present when the layout has an MSI-X BAR).
pub const MSIX_CAP_OFFSET: usize = 0x80;
/// Number of MSI-X vectors.
pub const MSIX_VECTORS: u16 = 8;
/// Offset of the MSI capability (always present).
pub const MSI_CAP_OFFSET: usize = 0x90;
/// Number of MSI vectors (Multiple Message Capable 0: one; x86 Linux
/// allocates more than one MSI vector only behind interrupt remapping).
pub const MSI_VECTORS: u16 = 1;
/// Message Control bit of MSI: 64-bit message address capable.
pub const MSI_FLAGS_64BIT: u16 = 1 << 7;
/// Message Control bit of MSI: MSI enable.
pub const MSI_FLAGS_ENABLE: u16 = 1;

/// Standard register offsets (PCI Local Bus spec, type 0 header).
mod reg {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_PROG_IF: usize = 0x09;
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const CAPABILITIES_POINTER: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register bits the guest may change: I/O and memory space, bus
/// master, parity error response, SERR# enable, interrupt disable.
pub const COMMAND_WRITABLE: u16 = 0x0547;
/// Status register bit: the capabilities list is present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// BAR bit: 64-bit memory BAR (type 10b in bits 2:1).
pub const BAR_64BIT: u32 = 0b100;
/// BAR bit: prefetchable.
pub const BAR_PREFETCHABLE: u32 = 0b1000;
/// Capability ID of PCI Express.
pub const CAP_ID_PCIE: u8 = 0x10;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Capability ID of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Offset of Device Capabilities inside the PCI Express capability.
pub const PCIE_DEVCAP: usize = 0x04;
/// Offset of Device Control inside the PCI Express capability.
pub const PCIE_DEVCTL: usize = 0x08;
/// Device Capabilities bit: Function Level Reset capable.
pub const PCIE_DEVCAP_FLR: u32 = 1 << 28;
/// Device Control bit: Initiate Function Level Reset (always reads 0).
pub const PCIE_DEVCTL_BCR_FLR: u16 = 1 << 15;

/// What a config space write asks of the device besides changing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a function level reset must reset the device"]
pub enum WriteEffect {
    /// Nothing more.
    None,
    /// Device Control's "Initiate FLR" was written as 1: the device must
    /// return to its reset state (see [`crate::device::Device::reset_state`]).
    FunctionLevelReset,
}

/// Configuration space contents plus the per-byte write masks.
#[derive(Clone)]
pub struct ConfigSpace {
    data: Box<[u8; CONFIG_SPACE_SIZE]>,
    wmask: Box<[u8; CONFIG_SPACE_SIZE]>,
}

/// A config space access outside the 4 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
}

impl ConfigSpace {
    /// Builds the power-on configuration space for `layout`.
    pub fn new(layout: &BarLayout) -> Self {
        let mut cs = Self {
            data: Box::new([0; CONFIG_SPACE_SIZE]),
            wmask: Box::new([0; CONFIG_SPACE_SIZE]),
        };
        cs.set16(reg::VENDOR_ID, VENDOR_ID, 0);
        cs.set16(reg::DEVICE_ID, DEVICE_ID, 0);
        cs.set16(reg::COMMAND, 0, COMMAND_WRITABLE);
        cs.set16(reg::STATUS, STATUS_CAP_LIST, 0);
        cs.data[reg::REVISION] = REVISION;
        cs.data[reg::CLASS_PROG_IF..reg::CLASS_PROG_IF + 3]
            .copy_from_slice(&CLASS_CODE.to_le_bytes()[..3]);
        cs.wmask[reg::CACHE_LINE_SIZE] = 0xff;
        cs.data[reg::HEADER_TYPE] = 0;
        cs.set16(reg::SUBSYSTEM_VENDOR_ID, VENDOR_ID, 0);
        cs.set16(reg::SUBSYSTEM_ID, DEVICE_ID, 0);
        cs.wmask[reg::INTERRUPT_LINE] = 0xff;
        cs.data[reg::INTERRUPT_PIN] = 1; // INTA#

        // BAR 0: the 4 KiB register BAR, 32-bit, non-prefetchable.
        cs.set32(reg::BAR0, 0, !(REGISTER_BAR_SIZE as u32 - 1));
        for bar in layout.bars() {
            cs.add_bar(bar);
        }

        // PCI Express, then MSI-X (when there is an MSI-X BAR), then MSI.
        cs.data[reg::CAPABILITIES_POINTER] = PCIE_CAP_OFFSET as u8;
        match layout.msix_bar() {
            Some(bar) => {
                cs.add_pcie_cap(MSIX_CAP_OFFSET as u8);
                cs.add_msix_cap(bar, MSI_CAP_OFFSET as u8);
            }
            None => cs.add_pcie_cap(MSI_CAP_OFFSET as u8),
        }
        cs.add_msi_cap();
        cs
    }

    fn set16(&mut self, offset: usize, value: u16, wmask: u16) {
        self.data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        self.wmask[offset..offset + 2].copy_from_slice(&wmask.to_le_bytes());
    }

    fn set32(&mut self, offset: usize, value: u32, wmask: u32) {
        self.data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        self.wmask[offset..offset + 4].copy_from_slice(&wmask.to_le_bytes());
    }

    /// A memory BAR: type bits are read-only, address bits below the size too.
    fn add_bar(&mut self, bar: &BarSpec) {
        let offset = reg::BAR0 + 4 * usize::from(bar.index());
        let mut flags = 0;
        if bar.is_64bit() {
            flags |= BAR_64BIT;
        }
        if bar.prefetchable() {
            flags |= BAR_PREFETCHABLE;
        }
        let address_mask = !(bar.size() - 1);
        self.set32(offset, flags, address_mask as u32 & !0xf);
        if bar.is_64bit() {
            self.set32(offset + 4, 0, (address_mask >> 32) as u32);
        }
    }

    /// PCI Express capability, version 2, of an endpoint on a 2.5 GT/s x1 link.
    fn add_pcie_cap(&mut self, next: u8) {
        let c = PCIE_CAP_OFFSET;
        self.data[c] = CAP_ID_PCIE;
        self.data[c + 1] = next;
        // Capabilities register: version 2, device/port type 0 (endpoint).
        self.set16(c + 0x02, 0x0002, 0);
        // Device capabilities: 128-byte max payload, FLR capable. Linux (and so
        // vfio-pci in the guest) offers VFIO_DEVICE_RESET only when it finds a
        // reset method; for a function on QEMU's root bus FLR is the only one.
        self.set32(c + PCIE_DEVCAP, PCIE_DEVCAP_FLR, 0);
        // Device control: error reporting, relaxed ordering, payload and read
        // request sizes, extended tags, no snoop. "Initiate FLR" (bit 15) is
        // not in the mask: writing 1 triggers the reset, and it reads back 0.
        self.set16(c + PCIE_DEVCTL, 0x2810, !PCIE_DEVCTL_BCR_FLR);
        // Link capabilities: 2.5 GT/s, x1.
        self.set32(c + 0x0c, 0x0000_0011, 0);
        // Link control: ASPM, RCB, common clock, extended synch.
        self.set16(c + 0x10, 0, 0x00cb);
        // Link status: 2.5 GT/s, x1.
        self.set16(c + 0x12, 0x0011, 0);
        // Link capabilities 2: 2.5 GT/s supported.
        self.set32(c + 0x2c, 0x0000_0002, 0);
        // Link control 2: target link speed 2.5 GT/s.
        self.set16(c + 0x30, 0x0001, 0x000f);
    }

    /// MSI-X capability: table and PBA in `bar`; enable and function mask writable.
    fn add_msix_cap(&mut self, bar: &BarSpec, next: u8) {
        let c = MSIX_CAP_OFFSET;
        let table = bar
            .msix_offset()
            .expect("the MSI-X BAR has an MSI-X offset");
        self.data[c] = CAP_ID_MSIX;
        self.data[c + 1] = next;
        self.set16(c + 2, MSIX_VECTORS - 1, 0xc000);
        let bir = u32::from(bar.index());
        self.set32(c + 4, table as u32 | bir, 0);
        self.set32(c + 8, (table + MSIX_PBA_DISTANCE) as u32 | bir, 0);
    }

    /// MSI capability, 64-bit, [`MSI_VECTORS`] vector, no per-vector masks:
    /// enable, address and data writable (the last in the list).
    fn add_msi_cap(&mut self) {
        let c = MSI_CAP_OFFSET;
        self.data[c] = CAP_ID_MSI;
        self.data[c + 1] = 0;
        self.set16(c + 2, MSI_FLAGS_64BIT, MSI_FLAGS_ENABLE);
        self.set32(c + 4, 0, 0xffff_fffc);
        self.set32(c + 8, 0, 0xffff_ffff);
        self.set16(c + 12, 0, 0xffff);
    }

    fn range(&self, offset: u64, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        let start = usize::try_from(offset).ok();
        start
            .and_then(|s| Some(s..s.checked_add(len)?))
            .filter(|r| r.end <= CONFIG_SPACE_SIZE)
            .ok_or(OutOfRange { offset, len })
    }

    /// Reads `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        let range = self.range(offset, data.len())?;
        data.copy_from_slice(&self.data[range]);
        Ok(())
    }

    /// Writes `data` at `offset`; bits outside the write mask keep their
    /// value. Says whether the write initiated a function level reset, which
    /// the caller carries out (it concerns more than config space).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<WriteEffect, OutOfRange> {
        let range = self.range(offset, data.len())?;
        // The high byte of Device Control holds "Initiate FLR" in its bit 7.
        let flr_byte = PCIE_CAP_OFFSET + PCIE_DEVCTL + 1;
        let flr_bit = (PCIE_DEVCTL_BCR_FLR >> 8) as u8;
        let mut effect = WriteEffect::None;
        for (i, &new) in range.zip(data) {
            let mask = self.wmask[i];
            self.data[i] = (self.data[i] & !mask) | (new & mask);
            if i == flr_byte && new & flr_bit != 0 {
                effect = WriteEffect::FunctionLevelReset;
            }
        }
        Ok(effect)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.data[reg::COMMAND], self.data[reg::COMMAND + 1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn read32(cs: &ConfigSpace, offset: usize) -> u32 {
        let mut b = [0; 4];
        cs.read(offset as u64, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn size_bar(cs: &mut ConfigSpace, offset: usize) -> u32 {
        let effect = cs.write(offset as u64, &u32::MAX.to_le_bytes()).unwrap();
        assert_eq!(effect, WriteEffect::None);
        read32(cs, offset)
    }

    #[rstest]
    #[case::register_bar(0x10, 0xffff_f000)]
    #[case::bar1_64m_32bit_prefetch(0x14, 0xfc00_0008)]
    #[case::bar2_16g_low(0x18, 0x0000_000c)]
    #[case::bar2_16g_high(0x1c, 0xffff_fffc)]
    #[case::bar4_1g_low(0x20, 0xc000_000c)]
    #[case::bar4_1g_high(0x24, 0xffff_ffff)]
    #[case::rom_absent(0x30, 0)]
    fn bar_sizing_reads_back_the_mask(#[case] offset: usize, #[case] mask: u32) {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        assert_eq!(size_bar(&mut cs, offset), mask);
    }

    #[test]
    fn huge_and_non_prefetchable_bars() {
        let layout: BarLayout = "1=4K:32:np,2=512G".parse().unwrap();
        let mut cs = ConfigSpace::new(&layout);
        assert_eq!(size_bar(&mut cs, 0x14), 0xffff_f000);
        assert_eq!(size_bar(&mut cs, 0x18), 0x0000_000c);
        assert_eq!(size_bar(&mut cs, 0x1c), 0xffff_ff80);
        // A real address sticks.
        let _ = cs.write(0x1c, &0x80u32.to_le_bytes()).unwrap();
        assert_eq!(read32(&cs, 0x1c), 0x80);
        // No MSI-X BAR, no MSI-X capability: MSI follows PCI Express.
        assert_eq!(
            capabilities(&cs),
            [(CAP_ID_PCIE, PCIE_CAP_OFFSET), (CAP_ID_MSI, MSI_CAP_OFFSET)]
        );
    }

    #[test]
    fn read_only_registers_stay_read_only() {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        let before = read32(&cs, 0);
        let _ = cs.write(0, &[0; 4]).unwrap();
        assert_eq!(read32(&cs, 0), before);
        let _ = cs.write(0x04, &0xffff_ffffu32.to_le_bytes()).unwrap();
        assert_eq!(cs.command(), COMMAND_WRITABLE);
        assert_eq!(read32(&cs, 0x04) >> 16, u32::from(STATUS_CAP_LIST));
        // The MSI-X table offset cannot be moved, its enable bit can be set.
        let _ = cs
            .write(MSIX_CAP_OFFSET as u64, &u32::MAX.to_le_bytes())
            .unwrap();
        let _ = cs.write(MSIX_CAP_OFFSET as u64 + 4, &[0; 4]).unwrap();
        assert_eq!(read32(&cs, MSIX_CAP_OFFSET) >> 16, 0xc007);
        assert_eq!(read32(&cs, MSIX_CAP_OFFSET + 4), 0x20_0001);
        assert_eq!(read32(&cs, MSIX_CAP_OFFSET + 8), 0x20_0801);
    }

    #[rstest]
    #[case(4096, 1)]
    #[case(4093, 4)]
    #[case(u64::MAX, 1)]
    fn accesses_past_the_end_fail(#[case] offset: u64, #[case] len: usize) {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        assert_eq!(
            cs.read(offset, &mut vec![0; len]),
            Err(OutOfRange { offset, len })
        );
        assert_eq!(
            cs.write(offset, &vec![0; len]),
            Err(OutOfRange { offset, len })
        );
    }

    fn read16(cs: &ConfigSpace, offset: usize) -> u16 {
        let mut b = [0; 2];
        cs.read(offset as u64, &mut b).unwrap();
        u16::from_le_bytes(b)
    }

    /// Walks the capability list: (id, offset) of each capability.
    fn capabilities(cs: &ConfigSpace) -> Vec<(u8, usize)> {
        let mut caps = Vec::new();
        let mut at = usize::from(cs.data[reg::CAPABILITIES_POINTER]);
        while at != 0 {
            caps.push((cs.data[at], at));
            at = usize::from(cs.data[at + 1]);
        }
        caps
    }

    #[test]
    fn pcie_capability_advertises_flr_and_keeps_its_layout() {
        let cs = ConfigSpace::new(&BarLayout::default());
        assert_eq!(
            capabilities(&cs),
            [
                (CAP_ID_PCIE, PCIE_CAP_OFFSET),
                (CAP_ID_MSIX, MSIX_CAP_OFFSET),
                (CAP_ID_MSI, MSI_CAP_OFFSET)
            ]
        );
        let c = PCIE_CAP_OFFSET;
        // Version 2 endpoint, 128-byte payload, FLR capable and nothing else.
        assert_eq!(read16(&cs, c + 2), 0x0002);
        assert_eq!(read32(&cs, c + PCIE_DEVCAP), PCIE_DEVCAP_FLR);
        assert_eq!(read16(&cs, c + PCIE_DEVCTL), 0x2810);
        // The capability fits before MSI-X, MSI-X (12 bytes) before MSI.
        assert!(c + PCIE_CAP_LEN <= MSIX_CAP_OFFSET);
        const { assert!(MSIX_CAP_OFFSET + 12 <= MSI_CAP_OFFSET) };
    }

    #[rstest]
    #[case::control(MSI_CAP_OFFSET + 2, 0xffff, u32::from(MSI_FLAGS_64BIT | MSI_FLAGS_ENABLE))]
    #[case::address_low(MSI_CAP_OFFSET + 4, 0xffff_ffff, 0xffff_fffc)]
    #[case::address_high(MSI_CAP_OFFSET + 8, 0xffff_ffff, 0xffff_ffff)]
    #[case::data(MSI_CAP_OFFSET + 12, 0xffff, 0xffff)]
    fn msi_capability_takes_enable_address_and_data(
        #[case] offset: usize,
        #[case] value: u32,
        #[case] reads: u32,
    ) {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        let len = if value > 0xffff { 4 } else { 2 };
        let _ = cs
            .write(offset as u64, &value.to_le_bytes()[..len])
            .unwrap();
        let mut b = [0; 4];
        cs.read(offset as u64, &mut b[..len]).unwrap();
        assert_eq!(u32::from_le_bytes(b), reads);
    }

    #[rstest]
    #[case::word(PCIE_CAP_OFFSET + PCIE_DEVCTL, vec![0x10, 0xa8])]
    #[case::high_byte(PCIE_CAP_OFFSET + PCIE_DEVCTL + 1, vec![0x80])]
    #[case::dword_with_status(PCIE_CAP_OFFSET + PCIE_DEVCTL, vec![0x10, 0x80, 0xff, 0xff])]
    #[case::from_devcap(PCIE_CAP_OFFSET + PCIE_DEVCAP, vec![0, 0, 0, 0, 0x10, 0x80])]
    fn writing_initiate_flr_asks_for_a_reset(#[case] offset: usize, #[case] data: Vec<u8>) {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        assert_eq!(
            cs.write(offset as u64, &data).unwrap(),
            WriteEffect::FunctionLevelReset
        );
        // The bit itself is never stored; the other Device Control bits are.
        let devctl = read16(&cs, PCIE_CAP_OFFSET + PCIE_DEVCTL);
        assert_eq!(devctl & PCIE_DEVCTL_BCR_FLR, 0, "{devctl:#06x}");
        // Device Capabilities stays read-only.
        assert_eq!(read32(&cs, PCIE_CAP_OFFSET + PCIE_DEVCAP), PCIE_DEVCAP_FLR);
    }

    #[rstest]
    #[case::devctl_other_bits(PCIE_CAP_OFFSET + PCIE_DEVCTL, vec![0xff, 0x7f])]
    #[case::devsta(PCIE_CAP_OFFSET + PCIE_DEVCTL + 2, vec![0xff, 0xff])]
    #[case::devcap(PCIE_CAP_OFFSET + PCIE_DEVCAP, vec![0xff; 4])]
    #[case::command(0x04, vec![0xff, 0xff])]
    fn other_writes_do_not_reset(#[case] offset: usize, #[case] data: Vec<u8>) {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        assert_eq!(cs.write(offset as u64, &data).unwrap(), WriteEffect::None);
    }

    #[test]
    fn device_control_round_trips_without_the_flr_bit() {
        let mut cs = ConfigSpace::new(&BarLayout::default());
        let at = PCIE_CAP_OFFSET + PCIE_DEVCTL;
        let _ = cs.write(at as u64, &0x5a5au16.to_le_bytes()).unwrap();
        assert_eq!(read16(&cs, at), 0x5a5a);
        let _ = cs.write(at as u64, &0xffffu16.to_le_bytes()).unwrap();
        assert_eq!(read16(&cs, at), 0x7fff);
    }
}
