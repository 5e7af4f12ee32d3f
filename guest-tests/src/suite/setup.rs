//! `setup.*`: the device is bound to vfio-pci and looks as expected.

use guest_tests::bail;
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::pci::VFIO_PCI;
use guest_tests::stop::{Stop, TestResult};
use protocol::layout::BarLayout;
use protocol::regs;

use super::bigbar_regs;

/// The device is bound to vfio-pci, its BARs have the expected sizes and types,
/// and the register BAR answers with the right MAGIC and VERSION.
pub fn bind_vfio(fx: &Fixture) -> TestResult {
    let mut problems = Vec::new();
    let driver = fx.pci.driver()?;
    if driver.as_deref() != Some(VFIO_PCI) {
        problems.push(format!("bound to {driver:?}, not {VFIO_PCI}"));
    }
    match &fx.expected {
        Some(layout) => problems.extend(layout_problems(fx, layout)),
        None => diag("no expected layout (--bars none): BARs reported only"),
    }
    for b in &fx.bars {
        // The model's notation (docs/RULES.md) assumes natural alignment: Bp % S == 0.
        if b.size().is_power_of_two() && b.phys() % b.size() != 0 {
            problems.push(format!(
                "BAR {} at {:#x} is not aligned to its size {:#x}",
                b.index,
                b.phys(),
                b.size()
            ));
        }
    }
    match bigbar_regs(fx) {
        Ok(r) => {
            let magic = r.read32(regs::MAGIC)?;
            let version = r.read32(regs::VERSION)?;
            if magic != regs::MAGIC_VALUE {
                problems.push(format!(
                    "MAGIC {magic:#010x}, expected {:#010x}",
                    regs::MAGIC_VALUE
                ));
            }
            if version != regs::ABI_VERSION {
                problems.push(format!("VERSION {version}, expected {}", regs::ABI_VERSION));
            }
            if let Some(layout) = &fx.expected {
                let mask = r.read32(regs::BAR_MASK)?;
                if mask != layout.memory_bar_mask() {
                    problems.push(format!(
                        "BAR_MASK {mask:#x}, expected {:#x}",
                        layout.memory_bar_mask()
                    ));
                }
            }
        }
        Err(Stop::Skip(why)) => diag(&format!("register checks skipped: {why}")),
        Err(other) => return Err(other),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// Differences between the device's BARs and `layout`.
fn layout_problems(fx: &Fixture, layout: &BarLayout) -> Vec<String> {
    let mut problems = Vec::new();
    match fx.bar(regs::REGS_BAR) {
        Some(b) if b.size() == regs::REGS_SIZE => {}
        other => problems.push(format!(
            "register BAR {}: size {:#x}, expected {:#x}",
            regs::REGS_BAR,
            other.map_or(0, |b| b.size()),
            regs::REGS_SIZE
        )),
    }
    for spec in layout.bars() {
        let index = u32::from(spec.index());
        let Some(bar) = fx.bar(index) else {
            problems.push(format!("BAR {index} missing, expected {spec}"));
            continue;
        };
        if bar.size() != spec.size() {
            problems.push(format!(
                "BAR {index}: size {:#x}, expected {:#x}",
                bar.size(),
                spec.size()
            ));
        }
        if !bar.region.mmappable() {
            problems.push(format!(
                "BAR {index}: region is not mmap-able (flags {:#x})",
                bar.region.flags
            ));
        }
        if bar.resource.is_64bit() != spec.is_64bit() {
            problems.push(format!(
                "BAR {index}: 64-bit is {}, expected {}",
                bar.resource.is_64bit(),
                spec.is_64bit()
            ));
        }
        if bar.resource.prefetchable() != spec.prefetchable() {
            problems.push(format!(
                "BAR {index}: prefetchable is {}, expected {}",
                bar.resource.prefetchable(),
                spec.prefetchable()
            ));
        }
    }
    // Every implemented BAR must be the register BAR or one the layout names.
    for b in &fx.bars {
        let known = b.index == regs::REGS_BAR
            || layout
                .bars()
                .iter()
                .any(|s| u32::from(s.index()) == b.index);
        if !known {
            problems.push(format!(
                "BAR {} (size {:#x}) is not in the layout",
                b.index,
                b.size()
            ));
        }
    }
    problems
}
