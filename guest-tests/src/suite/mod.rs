//! The registered tests. Each group lives in its own module; add a test by
//! writing a `fn(&Fixture) -> anyhow::Result<Outcome>` and listing it in [`all`].

mod content;
mod fault_order;
mod setup;

use anyhow::{bail, Result};
use guest_tests::device::Regs;
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::harness::{Outcome, TestCase};
use guest_tests::isolate::diag;

/// Every test, in run order.
pub fn all() -> Vec<TestCase<Fixture>> {
    vec![
        TestCase::new("setup.bind_vfio", setup::bind_vfio),
        TestCase::new("content.offset_tags", content::offset_tags),
        TestCase::new("fault_order.pud_aligned", fault_order::pud_aligned),
        TestCase::new("fault_order.pmd_aligned", fault_order::pmd_aligned),
        TestCase::new("fault_order.unaligned", fault_order::unaligned),
    ]
}

/// The register interface, or a skip for a device that is not bigbar's.
fn bigbar_regs(fx: &Fixture) -> Result<std::result::Result<Regs<'_>, Outcome>> {
    if !fx.is_bigbar {
        return Ok(Err(Outcome::Skip(format!(
            "{} is not bigbar's device: no register interface",
            fx.pci.bdf()
        ))));
    }
    Ok(Ok(fx.regs()?))
}

/// The largest mmap-able BAR, or an error naming what the device has.
fn largest_bar(fx: &Fixture) -> Result<&Bar> {
    match fx.largest_bar() {
        Some(b) => Ok(b),
        None => bail!("the device has no mmap-able BAR"),
    }
}

/// Releases the host memory behind a BAR range when dropped, so that a test that
/// fails half-way still gives back what it touched. Declare it before the mapping
/// so that the mapping goes first.
struct DiscardOnDrop<'a> {
    regs: &'a Regs<'a>,
    bar: u32,
    offset: u64,
    len: u64,
}

impl Drop for DiscardOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.regs.discard(self.bar, self.offset, self.len) {
            diag(&format!(
                "discarding BAR {} [{:#x}, +{:#x}) failed: {e:#}",
                self.bar, self.offset, self.len
            ));
        }
    }
}

/// splitmix64: a few lines of seeded, reproducible choices; no need for `rand`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
