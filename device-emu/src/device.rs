//! The emulated device: the vfio-user view (regions and interrupts) and the
//! [`ServerBackend`] that serves the client's requests.
//!
//! Regions follow the vfio-pci numbering: BAR 0 to 5, ROM (absent), config
//! space, VGA (absent). BAR 0 is trapped. Every memory BAR offers its memfd for
//! mmap through a sparse mmap capability; the 4 KiB page with the MSI-X table
//! and PBA is left out of the areas, so its accesses reach the server.

use std::fs::File;
use std::io;
use std::ops::Range;

use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_AUTOMASKED,
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE,
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_PCI_REQ_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};

use crate::bar_memory::{BarMemory, MemoryError};
use crate::config_space::{ConfigSpace, WriteEffect, CONFIG_SPACE_SIZE, MSIX_VECTORS, MSI_VECTORS};
use crate::dma::DmaMappings;
use crate::irqs::{Delivery, Interrupts};
use crate::layout::{BarLayout, MSIX_PAGE_SIZE, REGISTER_BAR_INDEX, REGISTER_BAR_SIZE};
use crate::msix::MsixPage;
use crate::registers::{DmaJob, Effect, RegisterFile};
use crate::regs::{self, DmaFault, Status};

/// An access the device rejects; returned to the client as an error reply.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The region does not exist or has no contents (ROM, VGA, unused BAR).
    #[error("region {0} has no contents")]
    NoSuchRegion(u32),
    /// The access does not fit in the region.
    #[error(
        "access of {len} bytes at offset {offset:#x} is outside region {region} ({size:#x} bytes)"
    )]
    OutOfRange {
        /// Region index.
        region: u32,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// Region size.
        size: u64,
    },
    /// A register BAR access of the wrong size or alignment.
    #[error(transparent)]
    Register(#[from] crate::registers::BadAccess),
    /// A rejected DMA request.
    #[error(transparent)]
    Dma(#[from] crate::dma::DmaError),
    /// Unsupported DMA unmap flags.
    #[error("unsupported DMA unmap flags {0:#x}")]
    UnmapFlags(u32),
    /// Interrupt index or vector range the device does not have.
    #[error("interrupt index {index} has {count} vectors; vectors {start}..{start}+{requested} do not exist")]
    IrqRange {
        /// Interrupt index.
        index: u32,
        /// Vectors of that index.
        count: u32,
        /// First vector of the request.
        start: u32,
        /// Vectors requested.
        requested: u32,
    },
    /// Masking asked of an index that does not report `VFIO_IRQ_INFO_MASKABLE`.
    #[error("interrupt index {0} is not maskable")]
    NotMaskable(u32),
    /// Mask or unmask with no vectors, which addresses nothing.
    #[error("mask or unmask of interrupt index {0} with a count of 0")]
    NoVectors(u32),
    /// Mask or unmask eventfds (the device never masks by itself).
    #[error("mask and unmask eventfds are not supported")]
    MaskEventfd,
}

impl AccessError {
    /// The errno a vfio-user error reply carries for this refusal (those of
    /// the kernel's VFIO type1 driver for DMA).
    pub fn errno(&self) -> nix::errno::Errno {
        use crate::dma::DmaError;
        use nix::errno::Errno;
        match self {
            Self::Dma(DmaError::Overlap { .. }) => Errno::EEXIST,
            Self::Dma(DmaError::TooMany { .. }) => Errno::ENOSPC,
            // As libvfio-user answers an unmap that matches no mapping.
            Self::Dma(DmaError::NotMapped { .. }) => Errno::ENOENT,
            Self::UnmapFlags(_) | Self::MaskEventfd => Errno::ENOTSUP,
            _ => Errno::EINVAL,
        }
    }
}

impl From<AccessError> for io::Error {
    fn from(e: AccessError) -> Self {
        // The session logs the rejection with the message it answers.
        log::debug!("rejected: {e}");
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// The device state a client sees.
pub struct Device {
    layout: BarLayout,
    bars: Vec<BarMemory>,
    config: ConfigSpace,
    registers: RegisterFile,
    msix: MsixPage,
    interrupts: Interrupts,
    dma: DmaMappings,
    /// A copy the register BAR started, for the session to run once the
    /// write that started it has been answered.
    dma_job: Option<DmaJob>,
}

impl Device {
    /// Creates the device with one sparse memfd per memory BAR of `layout`.
    pub fn new(layout: BarLayout) -> Result<Self, MemoryError> {
        let bars = layout
            .bars()
            .iter()
            .map(|b| BarMemory::new(b.index(), b.size()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config: ConfigSpace::new(&layout),
            registers: RegisterFile::new(layout.memory_bar_mask()),
            msix: MsixPage::new(),
            interrupts: Interrupts::default(),
            dma: DmaMappings::default(),
            dma_job: None,
            bars,
            layout,
        })
    }

    /// The BAR layout.
    pub fn layout(&self) -> &BarLayout {
        &self.layout
    }

    /// The memory of BAR `index`, if it is a memory BAR.
    pub fn bar_memory(&self, index: u8) -> Option<&BarMemory> {
        self.bars.iter().find(|b| b.index() == index)
    }

    /// Number of live DMA mappings.
    pub fn dma_mappings(&self) -> usize {
        self.dma.len()
    }

    /// Number of eventfds the client has registered.
    pub fn irq_fds(&self) -> usize {
        self.interrupts.eventfds()
    }

    /// The DMA mappings.
    pub fn dma(&self) -> &DmaMappings {
        &self.dma
    }

    /// Takes the copy the register BAR started, if any.
    pub fn take_dma_job(&mut self) -> Option<DmaJob> {
        self.dma_job.take()
    }

    /// Records the end of `job` in the DMA registers and raises its
    /// completion interrupt, if it asked for one.
    pub fn finish_dma(&mut self, job: &DmaJob, result: Result<(), DmaFault>) {
        log::debug!("DMA {job:?}: {result:?}");
        self.registers.dma_finished(result);
        if let Some((index, vector)) = regs::dma_irq_target(job.irq) {
            let status = self.raise(index, vector);
            if status != Status::Ok {
                log::warn!("DMA completion interrupt {index}/{vector}: {status:?}");
            }
        }
    }

    /// Raises MSI or MSI-X `vector` of `index` as the device itself (the
    /// `RaiseIrq` command and DMA completion); the status says what came of it.
    pub fn raise(&mut self, index: u32, vector: u32) -> Status {
        let msi = index == regs::IRQ_INDEX_MSI || index == regs::IRQ_INDEX_MSIX;
        let exists = self
            .irqs()
            .get(index as usize)
            .is_some_and(|irq| vector < irq.count);
        if !msi || !exists {
            return Status::BadIrq;
        }
        let status = match self.interrupts.trigger((index, vector)) {
            Ok(Delivery::Signalled | Delivery::Pending) => Status::Ok,
            Ok(Delivery::NoEventfd) => Status::IrqUnset,
            Err(e) => {
                log::error!("signalling interrupt {index}/{vector}: {e}");
                Status::HostError
            }
        };
        self.sync_pba();
        status
    }

    /// Mirrors the pending MSI-X triggers into the PBA, which QEMU reads
    /// from the device ("the server maintains the device's pending
    /// interrupts").
    fn sync_pba(&mut self) {
        for v in 0..u32::from(MSIX_VECTORS) {
            let pending = self.interrupts.is_pending((regs::IRQ_INDEX_MSIX, v));
            self.msix.set_pending(v, pending);
        }
    }

    fn register_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let effect = self
            .registers
            .write(offset, data, &self.bars)
            .map_err(AccessError::from)?;
        match effect {
            Effect::None => {}
            Effect::RaiseIrq(index, vector) => {
                let status = self.raise(index, vector);
                log::debug!("raise interrupt {index}/{vector}: {status:?}");
                self.registers.irq_raised(status);
            }
            Effect::StartDma(job) => self.dma_job = Some(job),
        }
        Ok(())
    }

    /// The device reset, for both ways a client can ask for one: vfio-user's
    /// `DEVICE_RESET` and a function level reset (Device Control's "Initiate
    /// FLR" written through config space, what the guest kernel's vfio-pci
    /// does for `VFIO_DEVICE_RESET`). Config space, registers and MSI-X table
    /// return to their power-on values. BAR memory keeps its contents (like
    /// the memory of a real device across a function reset); interrupt and DMA
    /// set-up is kept.
    ///
    /// Config space returns to power-on values whole, although the PCI Express
    /// specification lets a function keep a few fields across an FLR (such as
    /// Max_Payload_Size and the Link Control bits): Linux saves and restores
    /// the whole config state around any reset, so a guest cannot tell.
    pub fn reset_state(&mut self) {
        self.config = ConfigSpace::new(&self.layout);
        self.registers = RegisterFile::new(self.layout.memory_bar_mask());
        self.msix = MsixPage::new();
        self.dma_job = None;
        self.sync_pba();
    }

    /// State for a new client: the reset state, BAR memory released (all zeros)
    /// and the previous client's eventfds and DMA mappings dropped.
    pub fn power_on(&mut self) -> io::Result<()> {
        self.interrupts.clear();
        self.reset_state();
        self.dma.clear();
        self.bars.iter().try_for_each(BarMemory::wipe)
    }

    /// The regions to announce, indexed like vfio-pci's.
    pub fn regions(&self) -> Vec<ServerRegion> {
        (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| self.region(index))
            .collect()
    }

    fn region(&self, index: u32) -> ServerRegion {
        let info = |size, flags| vfio_region_info {
            argsz: std::mem::size_of::<vfio_region_info>() as u32,
            flags,
            index,
            size,
            ..Default::default()
        };
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        let trapped = |size| ServerRegion {
            region_info: info(size, rw),
            sparse_areas: Vec::new(),
            mmap_fd: None,
        };
        if index == u32::from(REGISTER_BAR_INDEX) {
            return trapped(REGISTER_BAR_SIZE);
        }
        if index == VFIO_PCI_CONFIG_REGION_INDEX {
            return trapped(CONFIG_SPACE_SIZE as u64);
        }
        let Some(bar) = u8::try_from(index).ok().and_then(|i| self.bar_memory(i)) else {
            return trapped(0);
        };
        let areas = self.mmap_areas(bar.index());
        if areas.is_empty() {
            return trapped(bar.size());
        }
        ServerRegion {
            region_info: info(bar.size(), rw | VFIO_REGION_INFO_FLAG_MMAP),
            sparse_areas: areas
                .into_iter()
                .map(|r| SparseArea {
                    area: vfio_region_sparse_mmap_area {
                        offset: r.start,
                        size: r.end - r.start,
                    },
                })
                .collect(),
            mmap_fd: Some(bar.raw_fd()),
        }
    }

    /// The trapped MSI-X page of BAR `index`, if it holds one.
    fn msix_page(&self, index: u8) -> Option<Range<u64>> {
        let offset = self.layout.bar(index)?.msix_offset()?;
        Some(offset..offset + MSIX_PAGE_SIZE)
    }

    /// The mmap-able parts of memory BAR `index`: all of it but the MSI-X page.
    pub fn mmap_areas(&self, index: u8) -> Vec<Range<u64>> {
        let Some(size) = self.layout.bar(index).map(|b| b.size()) else {
            return Vec::new();
        };
        match self.msix_page(index) {
            None => std::iter::once(0..size).collect(),
            Some(page) => [0..page.start, page.end..size]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }

    /// The interrupts to announce: INTx, MSI, MSI-X, error and request.
    /// Masking is reported where [`Interrupts::maskable`] accepts it.
    pub fn irqs(&self) -> Vec<IrqInfo> {
        let msix = if self.layout.msix_bar().is_some() {
            u32::from(MSIX_VECTORS)
        } else {
            0
        };
        let msi_flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE;
        [
            (
                VFIO_PCI_INTX_IRQ_INDEX,
                VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED,
                1,
            ),
            (VFIO_PCI_MSI_IRQ_INDEX, msi_flags, u32::from(MSI_VECTORS)),
            (
                VFIO_PCI_MSIX_IRQ_INDEX,
                msi_flags | VFIO_IRQ_INFO_MASKABLE,
                msix,
            ),
            (VFIO_PCI_ERR_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD, 1),
            (VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD, 1),
        ]
        .into_iter()
        .map(|(index, flags, count)| IrqInfo {
            index,
            flags,
            count,
        })
        .collect()
    }

    /// Reads from a memory BAR: the MSI-X page from the table, the rest from
    /// the memfd (accesses arrive here only if the client does not map it).
    fn bar_read(&self, bar: &BarMemory, offset: u64, data: &mut [u8]) -> io::Result<()> {
        for (piece, range) in split(offset, data.len(), self.msix_page(bar.index())) {
            let buf = &mut data[range];
            match piece {
                Piece::Memory(at) => bar.read_at(at, buf)?,
                Piece::Msix(at) => self.msix.read(at, buf),
            }
        }
        Ok(())
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) -> io::Result<()> {
        let page = self.msix_page(index);
        for (piece, range) in split(offset, data.len(), page) {
            let buf = &data[range];
            match piece {
                Piece::Memory(at) => self
                    .bar_memory(index)
                    .expect("caller checked the BAR")
                    .write_at(at, buf)?,
                Piece::Msix(at) => self.msix.write(at, buf),
            }
        }
        Ok(())
    }
}

/// Checks that an access of `len` bytes at `offset` fits in a region of `size`.
fn check_range(region: u32, offset: u64, len: usize, size: u64) -> Result<(), AccessError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(AccessError::OutOfRange {
            region,
            offset,
            len,
            size,
        }),
    }
}

/// Where part of a BAR access goes: BAR memory at an offset, or the MSI-X page
/// at an offset inside the page.
enum Piece {
    Memory(u64),
    Msix(u64),
}

/// Cuts the access `[offset, offset + len)` at the MSI-X page boundaries;
/// yields each piece with its range inside the access buffer.
fn split(offset: u64, len: usize, page: Option<Range<u64>>) -> Vec<(Piece, Range<usize>)> {
    let end = offset + len as u64;
    let mut cuts = vec![offset];
    if let Some(page) = &page {
        cuts.extend(
            [page.start, page.end]
                .into_iter()
                .filter(|&c| c > offset && c < end),
        );
    }
    cuts.push(end);
    cuts.windows(2)
        .filter(|w| w[0] < w[1])
        .map(|w| {
            let buf = (w[0] - offset) as usize..(w[1] - offset) as usize;
            let piece = match &page {
                Some(p) if p.contains(&w[0]) => Piece::Msix(w[0] - p.start),
                _ => Piece::Memory(w[0]),
            };
            (piece, buf)
        })
        .collect()
}

impl ServerBackend for Device {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        log::trace!("read region {region} offset {offset:#x} len {}", data.len());
        if region == u32::from(REGISTER_BAR_INDEX) {
            return Ok(self
                .registers
                .read(offset, data)
                .map_err(AccessError::from)?);
        }
        if region == VFIO_PCI_CONFIG_REGION_INDEX {
            check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
            self.config.read(offset, data).expect("range checked");
            return Ok(());
        }
        let bar = u8::try_from(region)
            .ok()
            .and_then(|i| self.bar_memory(i))
            .ok_or(AccessError::NoSuchRegion(region))?;
        check_range(region, offset, data.len(), bar.size())?;
        self.bar_read(bar, offset, data)
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        log::trace!(
            "write region {region} offset {offset:#x} len {}",
            data.len()
        );
        if region == u32::from(REGISTER_BAR_INDEX) {
            return self.register_write(offset, data);
        }
        if region == VFIO_PCI_CONFIG_REGION_INDEX {
            check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
            match self.config.write(offset, data).expect("range checked") {
                WriteEffect::None => {}
                WriteEffect::FunctionLevelReset => {
                    log::info!("function level reset");
                    self.reset_state();
                }
            }
            return Ok(());
        }
        let (index, size) = u8::try_from(region)
            .ok()
            .and_then(|i| self.bar_memory(i))
            .map(|b| (b.index(), b.size()))
            .ok_or(AccessError::NoSuchRegion(region))?;
        check_range(region, offset, data.len(), size)?;
        self.bar_write(index, offset, data)
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        log::debug!("DMA map {address:#x}+{size:#x} offset {offset:#x} flags {flags:?}");
        Ok(self
            .dma
            .map(address, size, offset, flags.bits(), fd)
            .map_err(AccessError::from)?)
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        log::debug!("DMA unmap {address:#x}+{size:#x} flags {flags:?}");
        if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            self.dma.clear();
            return Ok(());
        }
        if !flags.is_empty() {
            return Err(AccessError::UnmapFlags(flags.bits()).into());
        }
        let removed = self.dma.unmap(address, size).map_err(AccessError::from)?;
        log::debug!("DMA unmap removed {removed} mappings");
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        log::info!("device reset");
        self.reset_state();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        log::debug!(
            "set irqs index {index} flags {flags:#x} start {start} count {count} fds {}",
            fds.len()
        );
        let vectors = self.irqs().get(index as usize).map_or(0, |irq| irq.count);
        if start.checked_add(count).is_none_or(|end| end > vectors) {
            return Err(AccessError::IrqRange {
                index,
                count: vectors,
                start,
                requested: count,
            }
            .into());
        }
        let eventfd = flags & VFIO_IRQ_SET_DATA_EVENTFD != 0;
        let result = match flags & VFIO_IRQ_SET_ACTION_TYPE_MASK {
            VFIO_IRQ_SET_ACTION_TRIGGER => self.set_triggers(index, start, count, eventfd, fds),
            action => self.set_masks(index, start, count, eventfd, action),
        };
        self.sync_pba();
        result
    }
}

impl Device {
    /// `ACTION_TRIGGER`: eventfds replace the vectors' eventfds (none remove
    /// them); `DATA_NONE` signals the vectors, or with a count of 0 disables
    /// every vector of the index (the semantics of `VFIO_DEVICE_SET_IRQS`).
    fn set_triggers(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        eventfd: bool,
        fds: Vec<File>,
    ) -> io::Result<()> {
        if eventfd {
            self.interrupts.set_eventfds(index, start, count, fds);
        } else if count == 0 {
            self.interrupts.disable(index);
        } else {
            for vector in start..start + count {
                self.interrupts.trigger((index, vector))?;
            }
        }
        Ok(())
    }

    /// `ACTION_MASK` and `ACTION_UNMASK` with `DATA_NONE`, on maskable
    /// indices only.
    fn set_masks(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        eventfd: bool,
        action: u32,
    ) -> io::Result<()> {
        if !Interrupts::maskable(index) {
            return Err(AccessError::NotMaskable(index).into());
        }
        if eventfd {
            return Err(AccessError::MaskEventfd.into());
        }
        if count == 0 {
            return Err(AccessError::NoVectors(index).into());
        }
        match action {
            VFIO_IRQ_SET_ACTION_MASK => self.interrupts.mask(index, start, count),
            VFIO_IRQ_SET_ACTION_UNMASK => self.interrupts.unmask(index, start, count)?,
            other => unreachable!("the session checked the action {other:#x}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MSIX_PBA_DISTANCE;

    const M: u64 = 1 << 20;

    fn device() -> Device {
        Device::new(BarLayout::default()).unwrap()
    }

    #[test]
    fn regions_follow_the_layout() {
        let d = device();
        let regions = d.regions();
        assert_eq!(regions.len(), 9);
        let sizes: Vec<u64> = regions.iter().map(|r| r.region_info.size).collect();
        assert_eq!(sizes, [4096, 64 * M, 16 << 30, 0, 1 << 30, 0, 0, 4096, 0]);
        let areas: Vec<(u64, u64)> = regions[1]
            .sparse_areas
            .iter()
            .map(|a| (a.area.offset, a.area.size))
            .collect();
        assert_eq!(areas, [(0, 2 * M), (2 * M + 4096, 62 * M - 4096)]);
        assert!(regions[0].mmap_fd.is_none());
        assert!(regions[2].mmap_fd.is_some());
        assert_eq!(regions[4].sparse_areas.len(), 1);
    }

    #[test]
    fn msix_page_is_served_from_the_table_and_the_rest_from_memory() {
        let mut d = device();
        // A write straddling the start of the MSI-X page.
        let data: Vec<u8> = (1..=16).collect();
        d.region_write(1, 2 * M - 8, &data).unwrap();
        let mut out = [0; 16];
        d.region_read(1, 2 * M - 8, &mut out).unwrap();
        assert_eq!(out, *data);
        let mut mem = [0; 8];
        d.bar_memory(1).unwrap().read_at(2 * M, &mut mem).unwrap();
        assert_eq!(mem, [0; 8], "table bytes must not reach the memfd");
        let mut pba = [0xff; 8];
        d.region_read(1, 2 * M + MSIX_PBA_DISTANCE, &mut pba)
            .unwrap();
        assert_eq!(pba, [0; 8]);
        d.reset_state();
        d.region_read(1, 2 * M - 8, &mut out).unwrap();
        assert_eq!(out[..8], data[..8], "reset keeps BAR memory");
        assert_eq!(out[8..], [0; 8], "reset restores the table");
    }

    #[test]
    fn bad_accesses_are_errors() {
        let mut d = device();
        let mut b = [0; 4];
        for (region, offset) in [
            (3, 0),
            (6, 0),
            (8, 0),
            (9, 0),
            (7, 4094),
            (1, 64 * M - 2),
            (0, 2),
        ] {
            assert!(
                d.region_read(region, offset, &mut b).is_err(),
                "{region} {offset}"
            );
            assert!(
                d.region_write(region, offset, &b).is_err(),
                "{region} {offset}"
            );
        }
    }

    #[test]
    fn dma_overlap_is_rejected() {
        let mut d = device();
        d.dma_map(DmaMapFlags::READ_WRITE, 0, 0x1000, 0x2000, None)
            .unwrap();
        assert!(d
            .dma_map(DmaMapFlags::READ_WRITE, 0, 0x2000, 0x1000, None)
            .is_err());
        assert!(d
            .dma_map(DmaMapFlags::READ_WRITE, 0, u64::MAX, 2, None)
            .is_err());
        assert!(d.dma_unmap(DmaUnmapFlags::empty(), 0x1000, 0x1000).is_err());
        d.dma_unmap(DmaUnmapFlags::empty(), 0x1000, 0x2000).unwrap();
        assert_eq!(d.dma_mappings(), 0);
    }

    #[test]
    fn irq_eventfds_are_kept_and_ranges_checked() {
        let mut d = device();
        let fds = || (0..2).map(|_| tempfile::tempfile().unwrap()).collect();
        let trigger_eventfd = VFIO_IRQ_SET_DATA_EVENTFD | 32;
        d.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, trigger_eventfd, 6, 2, fds())
            .unwrap();
        assert_eq!(d.irq_fds(), 2);
        assert!(d
            .set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, trigger_eventfd, 7, 2, fds())
            .is_err());
        assert!(d
            .set_irqs(VFIO_PCI_MSI_IRQ_INDEX, trigger_eventfd, 0, 2, fds())
            .is_err());
        assert!(d.set_irqs(9, trigger_eventfd, 0, 1, fds()).is_err());
        // DATA_NONE | TRIGGER with a count of 0 disables them.
        d.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1 | 32, 0, 0, Vec::new())
            .unwrap();
        assert_eq!(d.irq_fds(), 0);
    }

    #[rstest::rstest]
    #[case::msix_mask(VFIO_PCI_MSIX_IRQ_INDEX, 1 | 8, 0, 1, true)]
    #[case::msix_unmask(VFIO_PCI_MSIX_IRQ_INDEX, 1 | 16, 7, 1, true)]
    #[case::intx_mask(VFIO_PCI_INTX_IRQ_INDEX, 1 | 8, 0, 1, true)]
    #[case::msi_mask(VFIO_PCI_MSI_IRQ_INDEX, 1 | 8, 0, 1, false)]
    #[case::err_unmask(VFIO_PCI_ERR_IRQ_INDEX, 1 | 16, 0, 1, false)]
    #[case::mask_no_vectors(VFIO_PCI_MSIX_IRQ_INDEX, 1 | 8, 0, 0, false)]
    #[case::mask_eventfd(VFIO_PCI_MSIX_IRQ_INDEX, 4 | 8, 0, 1, false)]
    fn masking_is_accepted_where_it_is_advertised(
        #[case] index: u32,
        #[case] flags: u32,
        #[case] start: u32,
        #[case] count: u32,
        #[case] accepted: bool,
    ) {
        let mut d = device();
        let maskable = d.irqs()[index as usize].flags & VFIO_IRQ_INFO_MASKABLE != 0;
        let result = d.set_irqs(index, flags, start, count, Vec::new());
        assert_eq!(result.is_ok(), accepted, "{result:?}");
        if count == 1 && flags & 4 == 0 {
            assert_eq!(maskable, accepted, "advertised and accepted agree");
        }
    }

    #[test]
    fn raise_reports_unset_and_bad_vectors() {
        let mut d = device();
        assert_eq!(d.raise(regs::IRQ_INDEX_MSIX, 0), Status::IrqUnset);
        assert_eq!(d.raise(regs::IRQ_INDEX_MSIX, 8), Status::BadIrq);
        assert_eq!(d.raise(regs::IRQ_INDEX_MSI, 1), Status::BadIrq);
        assert_eq!(d.raise(VFIO_PCI_INTX_IRQ_INDEX, 0), Status::BadIrq);
        let fd = tempfile::tempfile().unwrap();
        d.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 4 | 32, 3, 1, vec![fd])
            .unwrap();
        d.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1 | 8, 3, 1, Vec::new())
            .unwrap();
        assert_eq!(d.raise(regs::IRQ_INDEX_MSIX, 3), Status::Ok);
        let mut pba = [0; 8];
        d.region_read(1, 2 * M + MSIX_PBA_DISTANCE, &mut pba)
            .unwrap();
        assert_eq!(u64::from_le_bytes(pba), 1 << 3, "held in the PBA");
    }

    #[test]
    fn function_level_reset_restores_registers_and_config_but_keeps_memory() {
        use crate::config_space::{PCIE_CAP_OFFSET, PCIE_DEVCTL};
        use crate::regs;
        let mut d = device();
        let config = VFIO_PCI_CONFIG_REGION_INDEX;
        let read_config = |d: &mut Device, offset: u64| {
            let mut b = [0; 4];
            d.region_read(config, offset, &mut b).unwrap();
            u32::from_le_bytes(b)
        };
        let initial: Vec<u32> = (0..4096)
            .step_by(4)
            .map(|o| read_config(&mut d, o))
            .collect();
        // What a guest driver changes: command register, a BAR, Device
        // Control, MSI-X enable, a register, the MSI-X table; and BAR memory.
        d.region_write(config, 0x04, &0x0006u16.to_le_bytes())
            .unwrap();
        d.region_write(config, 0x18, &0xe000_0000u32.to_le_bytes())
            .unwrap();
        let devctl = (PCIE_CAP_OFFSET + PCIE_DEVCTL) as u64;
        d.region_write(config, devctl, &0x2830u16.to_le_bytes())
            .unwrap();
        d.region_write(config, 0x82, &0x8000u16.to_le_bytes())
            .unwrap();
        d.region_write(0, regs::SCRATCH, &0x1234u64.to_le_bytes())
            .unwrap();
        d.region_write(1, 2 * M, &0xfee0_0000u32.to_le_bytes())
            .unwrap();
        d.region_write(4, 8 * M, b"kept").unwrap();
        assert_eq!(read_config(&mut d, 0x04) & 0xffff, 0x0006);

        // The guest kernel's pcie_flr(): Device Control read, bit 15 set, written.
        d.region_write(config, devctl, &0xa830u16.to_le_bytes())
            .unwrap();

        let now: Vec<u32> = (0..4096)
            .step_by(4)
            .map(|o| read_config(&mut d, o))
            .collect();
        assert_eq!(now, initial, "config space back to power-on values");
        assert_eq!(read_config(&mut d, 0x04) & 0xffff, 0, "command register");
        let mut b = [0xff; 8];
        d.region_read(0, regs::SCRATCH, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0, "registers reset");
        d.region_read(1, 2 * M, &mut b[..4]).unwrap();
        assert_eq!(b[..4], [0; 4], "MSI-X table reset");
        let mut kept = [0; 4];
        d.region_read(4, 8 * M, &mut kept).unwrap();
        assert_eq!(&kept, b"kept", "BAR memory survives the FLR");
    }
}
