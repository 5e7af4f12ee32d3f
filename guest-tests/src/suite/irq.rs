//! `irq.*`: the device raises MSI-X or MSI vector N itself (the `RaiseIrq`
//! register command). The interrupt goes device-emu → QEMU (the eventfd QEMU
//! gave with SET_IRQS) → the guest's vfio-pci → the eventfd this test
//! registered with `VFIO_DEVICE_SET_IRQS`, whose counter must move.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::register_bar::Regs;
use guest_tests::stop::TestResult;
use guest_tests::vfio::{VfioDevice, VfioError};
use guest_tests::{bail, ensure, skip};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use protocol::regs::{self, Command, Status};
use vfio_bindings::bindings::vfio as sys;

use super::bigbar_regs;

/// How long an interrupt may take to arrive (TCG, three hops).
const IRQ_DEADLINE: Duration = Duration::from_secs(5);
/// How long a masked vector is watched for a signal it must not give.
const MASKED_WATCH: Duration = Duration::from_millis(300);

/// The register interface if the device has ABI 2 (RaiseIrq, DmaCopy).
pub(super) fn regs_v2(fx: &Fixture) -> TestResult<Regs<'_>> {
    let regs = bigbar_regs(fx)?;
    let version = regs.read32(regs::VERSION)?;
    if version < 2 {
        skip!("device register ABI {version} has no RaiseIrq/DmaCopy (needs 2)");
    }
    Ok(regs)
}

/// Bus master enable of the command register.
const PCI_COMMAND_MASTER: u16 = 0x4;

/// Turns on bus mastering, as a driver does before DMA: QEMU drops a
/// device's DMA, and its MSI and MSI-X messages (memory writes too), while
/// it is off (a DMA read then fails with ENODEV).
pub(super) fn enable_bus_master(dev: &VfioDevice) -> Result<()> {
    let command = dev.command()?;
    if command & PCI_COMMAND_MASTER == 0 {
        dev.set_command(command | PCI_COMMAND_MASTER)?;
    }
    ensure!(
        dev.command()? & PCI_COMMAND_MASTER != 0,
        "bus master enable does not stick"
    );
    Ok(())
}

/// An eventfd registered as the trigger of `index` vector `vector`;
/// disables the index when dropped.
pub(super) struct Trigger<'a> {
    dev: &'a VfioDevice,
    index: u32,
    /// The eventfd the guest's vfio-pci signals.
    pub efd: EventFd,
}

impl<'a> Trigger<'a> {
    /// Registers a new eventfd for `index` `vector`, or says why this kernel
    /// cannot: ENOSPC means it has no room for the vectors (a minimal
    /// configuration), which is no failure of the device or of the rules.
    pub(super) fn new(dev: &'a VfioDevice, index: u32, vector: u32) -> TestResult<Self> {
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        let flags = sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER;
        match dev.set_irqs(index, flags, vector, 1, &[efd.as_fd().as_raw_fd()]) {
            Ok(()) => Ok(Self { dev, index, efd }),
            Err(VfioError::Ioctl {
                source: Errno::ENOSPC,
                ..
            }) => skip!(
                "the kernel cannot allocate {} vector(s) of interrupt index {index} \
                 (VFIO_DEVICE_SET_IRQS: ENOSPC)",
                vector + 1
            ),
            Err(e) => Err(e)
                .with_context(|| format!("eventfd for interrupt index {index} vector {vector}"))?,
        }
    }

    /// Waits up to `deadline` for signals; returns the counter (0: none).
    pub(super) fn wait(&self, within: Duration) -> Result<u64> {
        let until = Instant::now() + within;
        loop {
            if let Ok(n) = self.efd.read() {
                return Ok(n);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let ms = PollTimeout::try_from(left.as_millis().max(1) as i32)?;
            let mut fds = [PollFd::new(self.efd.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, ms).context("poll on the interrupt eventfd")?;
        }
    }
}

impl Drop for Trigger<'_> {
    fn drop(&mut self) {
        let flags = sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_TRIGGER;
        if let Err(e) = self.dev.set_irqs(self.index, flags, 0, 0, &[]) {
            diag(&format!("disabling interrupt index {}: {e:#}", self.index));
        }
    }
}

/// Asks the device to raise `index` `vector`; fails unless it says Ok.
fn raise(regs: &Regs<'_>, index: u32, vector: u32) -> Result<()> {
    regs.write32(regs::IRQ_INDEX, index)?;
    regs.write32(regs::IRQ_VECTOR, vector)?;
    regs.write32(regs::COMMAND, Command::RaiseIrq as u32)?;
    let raw = regs.read32(regs::STATUS)?;
    match Status::from_u32(raw) {
        Some(Status::Ok) => Ok(()),
        Some(Status::IrqUnset) => bail!(
            "the device has no eventfd for {index}/{vector}: QEMU did not pass the guest's set-up on"
        ),
        other => bail!("RaiseIrq {index}/{vector}: status {other:?} ({raw})"),
    }
}

/// Raises the vector three times, each must arrive.
fn device_raised(fx: &Fixture, index: u32, vector: u32) -> TestResult {
    let regs = regs_v2(fx)?;
    enable_bus_master(&fx.dev)?;
    let trigger = Trigger::new(&fx.dev, index, vector)?;
    for round in 0..3 {
        let began = Instant::now();
        raise(&regs, index, vector)?;
        let got = trigger.wait(IRQ_DEADLINE)?;
        ensure!(
            got >= 1,
            "round {round}: no interrupt within {IRQ_DEADLINE:?}"
        );
        diag(&format!(
            "round {round}: {got} signal(s) after {:?}",
            began.elapsed()
        ));
    }
    Ok(())
}

/// A masked vector must not fire, and fires once unmasked. Skipped, with
/// vfio-pci's answer, where `VFIO_DEVICE_SET_IRQS` refuses `ACTION_MASK` for
/// the index (Linux's vfio-pci masks only INTx this way).
fn masked(fx: &Fixture, index: u32, vector: u32) -> TestResult {
    let regs = regs_v2(fx)?;
    enable_bus_master(&fx.dev)?;
    let trigger = Trigger::new(&fx.dev, index, vector)?;
    let mask = sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_MASK;
    if let Err(e) = fx.dev.set_irqs(index, mask, vector, 1, &[]) {
        skip!("the guest's vfio-pci refuses ACTION_MASK for index {index} ({e:#})");
    }
    raise(&regs, index, vector)?;
    let leaked = trigger.wait(MASKED_WATCH)?;
    let unmask = sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_UNMASK;
    fx.dev.set_irqs(index, unmask, vector, 1, &[])?;
    ensure!(leaked == 0, "a masked vector fired ({leaked} signals)");
    ensure!(
        trigger.wait(IRQ_DEADLINE)? >= 1,
        "the pending interrupt was lost on unmask"
    );
    Ok(())
}

/// irq.msix_device_raised: MSI-X vector 3.
pub fn msix_device_raised(fx: &Fixture) -> TestResult {
    device_raised(fx, sys::VFIO_PCI_MSIX_IRQ_INDEX, 3)
}

/// irq.msi_device_raised: MSI vector 0 (the device has one).
pub fn msi_device_raised(fx: &Fixture) -> TestResult {
    device_raised(fx, sys::VFIO_PCI_MSI_IRQ_INDEX, 0)
}

/// irq.msix_masked: MSI-X vector 3, masked, then unmasked.
pub fn msix_masked(fx: &Fixture) -> TestResult {
    masked(fx, sys::VFIO_PCI_MSIX_IRQ_INDEX, 3)
}

/// irq.msi_masked: MSI vector 0, masked, then unmasked.
pub fn msi_masked(fx: &Fixture) -> TestResult {
    masked(fx, sys::VFIO_PCI_MSI_IRQ_INDEX, 0)
}
