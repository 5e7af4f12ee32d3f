//! F4: after a zap (device reset, memory decode switched off) accesses fault
//! again at the same orders; while memory decode is off they get SIGBUS.

use std::time::Duration;

use anyhow::Context;
use guest_tests::fixture::Fixture;
use guest_tests::isolate::{self, diag, End};
use guest_tests::model::PAGE;
use guest_tests::stop::TestResult;
use guest_tests::vfio::PCI_COMMAND_MEMORY;
use guest_tests::{bail, ensure, skip};
use nix::sys::signal::Signal;

use super::check::{expect_plan, mapped_mixed, Mapped};

/// f4.refault_after_reset: VFIO_DEVICE_RESET zaps the mapping; the next touches
/// fault at the same orders.
pub fn refault_after_reset(fx: &Fixture) -> TestResult {
    if !fx.dev.can_reset() {
        skip!(
            "{} does not support VFIO_DEVICE_RESET (device flags {:#x})",
            fx.pci.bdf(),
            fx.dev.flags()
        );
    }
    let m = mapped_mixed(fx)?;
    let mut data = m.data(fx)?;
    let Mapped {
        offset, map, plan, ..
    } = m;
    fx.dev.reset().context("reset")?;
    if fx.dev.enable_memory_decode()? {
        diag("memory decode was off after the reset; switched back on");
    }
    expect_plan(&map, &plan, "after VFIO_DEVICE_RESET")?;
    data.check(&map, offset)?;
    Ok(())
}

/// Switches memory decode back on when dropped.
struct MemoryOn<'a>(&'a Fixture);

impl Drop for MemoryOn<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.dev.enable_memory_decode() {
            diag(&format!("re-enabling memory decode failed: {e:#}"));
        }
    }
}

/// f4.sigbus_memory_disabled: clearing PCI_COMMAND_MEMORY zaps the mapping, an
/// access then gets SIGBUS (seen in a forked child); after setting it again the
/// touches fault at the same orders.
pub fn sigbus_memory_disabled(fx: &Fixture) -> TestResult {
    let m = mapped_mixed(fx)?;
    let cmd = fx.dev.command()?;
    ensure!(
        cmd & PCI_COMMAND_MEMORY != 0,
        "memory decode is off before the test ({cmd:#06x})"
    );
    let restore = MemoryOn(fx);
    fx.dev.set_command(cmd & !PCI_COMMAND_MEMORY)?;
    for at in [0, m.map.len() / 2 / PAGE * PAGE, m.map.len() - PAGE] {
        let f = isolate::run(Duration::from_secs(60), || {
            let v = m.map.read_u64(at);
            isolate::message(&format!("read {v:#x} with memory decode off"));
            0
        })?;
        match f.end {
            End::Signaled(Signal::SIGBUS) => {}
            other => bail!(
                "access at +{at:#x} with memory decode off: expected SIGBUS, child ended {other:?} ({:?})",
                f.records
            ),
        }
    }
    diag("SIGBUS at the first, middle and last page while memory decode is off");
    drop(restore);
    let mut data = m.data(fx)?;
    expect_plan(&m.map, &m.plan, "after memory decode is back on")?;
    data.check(&m.map, m.offset)?;
    Ok(())
}
