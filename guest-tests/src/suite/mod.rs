//! The registered tests. Each group lives in its own module; add a test by
//! writing a `fn(&Fixture) -> TestResult` and listing it in [`all`].
//!
//! A test skips with `?` on a step that returns a skip (`bigbar_regs(fx)?`,
//! `need_huge(fx)?`, `bar_of(fx, size)?`) or with `skip!`, and fails with `?` on
//! any error or with the `bail!`/`ensure!` of [`guest_tests::stop`].

pub mod bench;
mod check;
mod content;
mod dma;
mod fault_order;
mod fork;
pub mod inject;
mod irq;
mod kprobe;
mod msix;
mod orders;
mod pagetables;
mod place;
mod race;
mod setup;
mod split;
mod thp;
mod validity;
mod zap;

use anyhow::Result;
use guest_tests::bail;
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::harness::TestCase;
use guest_tests::isolate::diag;
use guest_tests::register_bar::Regs;
use guest_tests::stop::TestResult;

/// Deadline of the risky tests: they take well under a second when the kernel
/// survives (0.07 s under TCG); when it oopses, the child never returns and the
/// whole deadline is spent waiting, so it is kept short (the oops itself is on
/// the console at once).
const RISKY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every test, in run order.
pub fn all() -> Vec<TestCase<Fixture>> {
    vec![
        TestCase::new("setup.bind_vfio", setup::bind_vfio),
        TestCase::new("content.offset_tags", content::offset_tags),
        TestCase::new("fault_order.pud_aligned", fault_order::pud_aligned)
            .with_rules(&["F1", "F2"]),
        TestCase::new("fault_order.pmd_aligned", fault_order::pmd_aligned)
            .with_rules(&["F1", "F2"]),
        TestCase::new("fault_order.unaligned", fault_order::unaligned).with_rules(&["F1", "F2"]),
        TestCase::new("f1.first_touch_interior", fault_order::first_touch_interior)
            .with_rules(&["F1", "F2"]),
        TestCase::new("f1.first_touch_last", fault_order::first_touch_last)
            .with_rules(&["F1", "F2"]),
        TestCase::new("f1.case_table", orders::case_table),
        TestCase::new("f1.random", orders::random),
        TestCase::new("f1.kprobe_orders", kprobe::kprobe_orders),
        TestCase::new("f1.ptdump_orders", pagetables::ptdump_orders),
        TestCase::new("f2.one_entry_per_fault", orders::one_entry_per_fault),
        TestCase::new("f2.race_pmd", race::race_pmd),
        TestCase::new("f2.race_pud", race::race_pud),
        TestCase::new("f3.madv_nohugepage", thp::madv_nohugepage),
        TestCase::new("f3.madv_hugepage", thp::madv_hugepage),
        TestCase::new("f3.prctl_thp_disable", thp::prctl_thp_disable),
        TestCase::new("f3.sysfs_enabled", thp::sysfs_enabled).with_teardown(thp::restore_thp_mode),
        TestCase::new("f4.refault_after_reset", zap::refault_after_reset),
        TestCase::new("f4.sigbus_memory_disabled", zap::sigbus_memory_disabled),
        TestCase::new("f5.map_fixed", orders::map_fixed),
        TestCase::new("f6.munmap_pmd_cut", split::munmap_pmd_cut),
        TestCase::new("f6.mprotect_pmd_cut", split::mprotect_pmd_cut),
        TestCase::new("f6.mremap_shrink_cut", split::mremap_shrink_cut),
        TestCase::new("f6.munmap_pud_pmd_boundary", split::munmap_pud_pmd_boundary),
        TestCase::new(
            "f6.mprotect_pud_pmd_boundary",
            split::mprotect_pud_pmd_boundary,
        ),
        TestCase::new("f7.fork_copies_entries", fork::fork_copies_entries),
        TestCase::new("f7.dontfork_hides_vma", fork::dontfork_hides_vma),
        TestCase::new("f7.madvise_refused", fork::madvise_refused),
        TestCase::new("f8.mremap_grow_fails", split::mremap_grow_fails),
        TestCase::new("f8.mremap_shrink_keeps", split::mremap_shrink_keeps),
        TestCase::new("f8.mremap_move_congruent", split::mremap_move_congruent),
        TestCase::new(
            "f8.mremap_move_pmd_congruent",
            split::mremap_move_pmd_congruent,
        ),
        TestCase::new("f8.mremap_move_incongruent", split::mremap_move_incongruent),
        TestCase::new(
            "f8.mremap_move_pud_congruent",
            split::mremap_move_pud_congruent,
        ),
        TestCase::new("f9.map_private_einval", validity::map_private),
        TestCase::new("f9.out_of_range_einval", validity::out_of_range),
        TestCase::new("a1.whole_bar", place::whole_bar),
        TestCase::new("a2.offset_ranges", place::offset_ranges),
        TestCase::new("a3.msix_hole", msix::msix_hole),
        TestCase::new("a3.qemu_strategy", msix::qemu_strategy),
        TestCase::new("a3.dpdk_strategy", msix::dpdk_strategy),
        TestCase::new("a3.selftests_strategy", msix::selftests_strategy),
        TestCase::new("a4.fallback_fragmented", place::fallback_fragmented),
        TestCase::new("a5.free_hint_kept", place::free_hint_kept),
        TestCase::new("irq.msix_device_raised", irq::msix_device_raised),
        TestCase::new("irq.msi_device_raised", irq::msi_device_raised),
        TestCase::new("irq.msix_masked", irq::msix_masked),
        TestCase::new("irq.msi_masked", irq::msi_masked),
        TestCase::new("dma.copy", dma::copy_test),
        TestCase::new("dma.completion_irq", dma::completion_irq),
        // Risky last: they oops kernels without the fixes (docs/RULES.md F6, F8).
        TestCase::new(
            "f8.mremap_move_pud_incongruent",
            split::mremap_move_pud_incongruent,
        )
        .with_timeout(RISKY_TIMEOUT),
        // The one seen to oops Debian's 7.2 kernel comes last but for its siblings.
        TestCase::new("f6.munmap_pud_unaligned", split::munmap_pud_unaligned)
            .with_timeout(RISKY_TIMEOUT),
        // The same split through mprotect and mremap: skipped after an oops above.
        TestCase::new("f6.mprotect_pud_unaligned", split::mprotect_pud_unaligned)
            .with_timeout(RISKY_TIMEOUT),
        TestCase::new(
            "f6.mremap_shrink_pud_unaligned",
            split::mremap_shrink_pud_unaligned,
        )
        .with_timeout(RISKY_TIMEOUT),
    ]
}

/// The register interface, or a skip for a device that is not bigbar's.
fn bigbar_regs(fx: &Fixture) -> TestResult<Regs<'_>> {
    if !fx.is_bigbar {
        guest_tests::skip!(
            "{} is not bigbar's device: no register interface",
            fx.pci.bdf()
        );
    }
    Ok(fx.regs()?)
}

/// The largest mmap-able BAR, or an error naming what the device has.
fn largest_bar(fx: &Fixture) -> Result<&Bar> {
    match fx.largest_bar() {
        Some(b) => Ok(b),
        None => bail!("the device has no mmap-able BAR"),
    }
}

/// The largest mmap-able BAR if it holds `len` bytes from its start, else a
/// skip naming its size (an error if the device has no mmap-able BAR).
fn largest_bar_of(fx: &Fixture, len: u64) -> TestResult<&Bar> {
    let bar = largest_bar(fx)?;
    if bar.size() < len {
        guest_tests::skip!(
            "needs a BAR of at least {len:#x} bytes; the largest, BAR {}, has {:#x}",
            bar.index,
            bar.size()
        );
    }
    Ok(bar)
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
