//! `dma.*`: the device's DMA engine copies between two buffers of this
//! process mapped for DMA with `VFIO_IOMMU_MAP_DMA` (type1), through QEMU's
//! vIOMMU and vfio-user DMA, and reports faults as a status.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::register_bar::Regs;
use guest_tests::stop::TestResult;
use guest_tests::vfio::{IommuType, VfioDevice};
use guest_tests::{bail, ensure, skip};
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use protocol::regs::{self, Command, DmaFault, DmaStatus, Status};
use vfio_bindings::bindings::vfio as sys;

use super::irq::{enable_bus_master, regs_v2, Trigger};

/// Bytes per buffer.
const LEN: usize = 256 << 10;
/// IOVAs of the two buffers, and one nothing is mapped at.
const IOVA_SRC: u64 = 0x1000_0000;
const IOVA_DST: u64 = 0x2000_0000;
const IOVA_NONE: u64 = 0x3000_0000;
/// How long a copy may take (TCG; message DMA crosses QEMU's main loop).
const COPY_DEADLINE: Duration = Duration::from_secs(20);

/// Anonymous memory of this process mapped for the device's DMA; unmapped
/// from the IOMMU, then from the process, when dropped.
struct DmaBuffer<'a> {
    dev: &'a VfioDevice,
    base: NonNull<u8>,
    iova: u64,
}

impl<'a> DmaBuffer<'a> {
    fn new(dev: &'a VfioDevice, iova: u64) -> Result<Self> {
        let len = NonZeroUsize::new(LEN).expect("non-zero");
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new private anonymous mapping overlaps no Rust object.
        let base = unsafe { mmap_anonymous(None, len, prot, MapFlags::MAP_PRIVATE) }?.cast();
        let buffer = Self { dev, base, iova };
        buffer.fill(|_| 0);
        dev.map_dma(base.as_ptr() as u64, iova, LEN as u64)?;
        Ok(buffer)
    }

    /// Writes byte `f(i)` at every offset `i`.
    fn fill(&self, f: impl Fn(usize) -> u8) {
        let bytes: Vec<u8> = (0..LEN).map(f).collect();
        // SAFETY: the mapping is LEN bytes, owned by this value; the device
        // only writes it while a copy runs, and copies are waited for.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr(), LEN) };
    }

    /// A copy of the contents.
    fn contents(&self) -> Vec<u8> {
        let mut out = vec![0; LEN];
        // SAFETY: as in `fill`, reading instead.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr(), out.as_mut_ptr(), LEN) };
        out
    }
}

impl Drop for DmaBuffer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.dev.unmap_dma(self.iova, LEN as u64) {
            diag(&format!("unmapping IOVA {:#x}: {e:#}", self.iova));
            return; // still pinned: leave the pages mapped
        }
        // SAFETY: the mapping was created by `new`, is no longer mapped for
        // DMA, and no reference into it outlives `fill`/`contents`.
        if let Err(e) = unsafe { munmap(self.base.cast(), LEN) } {
            diag(&format!("munmap of a DMA buffer: {e}"));
        }
    }
}

/// Runs one copy and waits for its end; returns the status and fault.
fn copy(regs: &Regs<'_>, src: u64, dst: u64, len: u64, irq: u32) -> Result<(DmaStatus, DmaFault)> {
    regs.write64(regs::DMA_SRC, src)?;
    regs.write64(regs::DMA_DST, dst)?;
    regs.write64(regs::DMA_LEN, len)?;
    regs.write32(regs::DMA_IRQ, irq)?;
    regs.write32(regs::COMMAND, Command::DmaCopy as u32)?;
    let accepted = regs.read32(regs::STATUS)?;
    ensure!(
        accepted == Status::Ok as u32,
        "DmaCopy refused: status {accepted}"
    );
    let began = Instant::now();
    loop {
        let raw = regs.read32(regs::DMA_STATUS)?;
        let status = DmaStatus::from_u32(raw).with_context(|| format!("DMA_STATUS {raw}"))?;
        if status != DmaStatus::Busy {
            let raw = regs.read32(regs::DMA_ERROR)?;
            let fault = DmaFault::from_u32(raw).with_context(|| format!("DMA_ERROR {raw}"))?;
            diag(&format!(
                "copy of {len} bytes: {status:?}/{fault:?} after {:?}",
                began.elapsed()
            ));
            return Ok((status, fault));
        }
        if began.elapsed() > COPY_DEADLINE {
            bail!("the copy did not end within {COPY_DEADLINE:?}");
        }
    }
}

/// The register BAR, with bus mastering on, where DMA can be mapped.
fn dma_ready<'f>(fx: &'f Fixture) -> TestResult<Regs<'f>> {
    let regs = regs_v2(fx)?;
    if fx.dev.iommu() == IommuType::NoIommu {
        skip!("no-IOMMU mode: VFIO_IOMMU_MAP_DMA is not offered (nothing translates IOVAs)");
    }
    enable_bus_master(&fx.dev)?;
    Ok(regs)
}

/// dma.copy: fills one buffer, has the device copy it (at odd offsets) to
/// the other, checks every byte; then a copy from an unmapped IOVA must end
/// with `Unmapped`.
pub fn copy_test(fx: &Fixture) -> TestResult {
    let regs = dma_ready(fx)?;
    let src = DmaBuffer::new(&fx.dev, IOVA_SRC)?;
    let dst = DmaBuffer::new(&fx.dev, IOVA_DST)?;
    let seed = fx.seed as usize;
    src.fill(|i| (i.wrapping_mul(31) ^ seed) as u8);
    let len = LEN - 32;
    let result = copy(&regs, IOVA_SRC + 8, IOVA_DST + 16, len as u64, 0)?;
    ensure!(
        result == (DmaStatus::Done, DmaFault::None),
        "copy ended {result:?}"
    );
    let (s, d) = (src.contents(), dst.contents());
    let wrong: Vec<usize> = (0..len).filter(|&i| d[16 + i] != s[8 + i]).collect();
    if let Some(&i) = wrong.first() {
        let shown: Vec<String> = wrong.iter().take(24).map(|i| i.to_string()).collect();
        bail!(
            "{} destination bytes differ, first {i} ({:#x}, source {:#x}); at {}",
            wrong.len(),
            d[16 + i],
            s[8 + i],
            shown.join(" ")
        );
    }
    ensure!(
        d[..16].iter().all(|&b| b == 0),
        "bytes before the destination changed"
    );
    ensure!(
        d[16 + len..].iter().all(|&b| b == 0),
        "bytes after the destination changed"
    );

    let fault = copy(&regs, IOVA_NONE, IOVA_DST, 4096, 0)?;
    ensure!(
        fault == (DmaStatus::Error, DmaFault::Unmapped),
        "unmapped source: {fault:?}"
    );
    Ok(())
}

/// dma.completion_irq: a copy asking for MSI-X vector 1 at completion raises
/// it (skipped, saying why, where the vector cannot be had).
pub fn completion_irq(fx: &Fixture) -> TestResult {
    let regs = dma_ready(fx)?;
    let trigger = Trigger::new(&fx.dev, sys::VFIO_PCI_MSIX_IRQ_INDEX, 1)?;
    let _src = DmaBuffer::new(&fx.dev, IOVA_SRC)?;
    let _dst = DmaBuffer::new(&fx.dev, IOVA_DST)?;
    let irq = regs::dma_irq(regs::IRQ_INDEX_MSIX, 1);
    let result = copy(&regs, IOVA_SRC, IOVA_DST, 4096, irq)?;
    ensure!(
        result.0 == DmaStatus::Done,
        "copy with interrupt ended {result:?}"
    );
    ensure!(
        trigger.wait(Duration::from_secs(5))? >= 1,
        "no completion interrupt"
    );
    Ok(())
}
