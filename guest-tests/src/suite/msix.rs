//! A3: the MSI-X hole of seed mail 004. `[0, 2 MiB)` and `[2 MiB + 4 KiB, 64 MiB)`
//! of the 64 MiB BAR are mapped and every page touched: offset-aware placement
//! gives 1 + 541 faults, a size-only one 1 + 15 871. Besides the kernel's own
//! placement, the three userspace strategies of docs/RULES.md place the same ranges.

use anyhow::{Context, Result};
use guest_tests::ensure;
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::isolate::diag;
use guest_tests::mapping::{reserve_congruent, Mapping};
use guest_tests::model::{Order, Orders, PAGE, PMD, PUD};
use guest_tests::placement::{Histogram, Request};
use guest_tests::stop::{OrSkip, TestResult};
use nix::sys::mman::MapFlags;

use super::check::{need_predictable, plan_of, predicted, touch_placed, Data};
use super::place::verdict;
use super::Rng;

/// The MSI-X BAR and the two areas around its table page: (offset, len) each.
fn areas(fx: &Fixture) -> TestResult<(&Bar, [(u64, u64); 2])> {
    // Like every fault-count test, skip rather than fail where the THP policy
    // leaves the orders to F3.
    need_predictable(fx)?;
    let spec = fx
        .expected
        .as_ref()
        .and_then(|l| l.msix_bar())
        .or_skip("needs the expected layout's MSI-X BAR (bigbar's device)")?;
    let hole = spec.msix_offset().unwrap_or(0);
    let bar = fx
        .bar(u32::from(spec.index()))
        .filter(|b| b.region.mmappable() && hole >= PMD && hole + PAGE < b.size())
        .or_skip_with(|| format!("MSI-X BAR {} is not usable here", spec.index()))?;
    Ok((bar, [(0, hole), (hole + PAGE, bar.size() - hole - PAGE)]))
}

/// What touching both areas gave.
struct Touched {
    faults: u64,
    expected: u64,
    tail_pmds: u64,
}

/// Touches both mapped areas, compares with the model for the addresses they
/// got (an F1/F2 check that holds whatever the placement), checks the data.
fn touch_areas(fx: &Fixture, bar: &Bar, maps: &[(Mapping, u64)], what: &str) -> Result<Touched> {
    let mut data = Data::new(fx, bar, 0, bar.size())?;
    let mut faults = 0;
    let mut expected = 0;
    let mut tail_pmds = 0;
    for (map, off) in maps {
        let plan = plan_of(bar, *off, map, predicted(fx, map)?)?;
        let got = touch_placed(map, &plan, what)?;
        diag(&format!(
            "{what}: [{off:#x}, +{:#x}) at {:#x} (≡ {:#x} mod 2 MiB): expect {plan}, counted {got}",
            map.len(),
            map.start(),
            map.start() % PMD
        ));
        ensure!(
            got == plan.faults,
            "{what}: [{off:#x}, +{:#x}) expected {plan}, counted {got}",
            map.len()
        );
        faults += got;
        expected += plan.faults;
        tail_pmds = plan.count(Order::Pmd);
        data.check(map, *off)?;
    }
    Ok(Touched {
        faults,
        expected,
        tail_pmds,
    })
}

/// a3.msix_hole: the kernel places both areas (mmap(NULL)); the tail must land
/// at `s ≡ 2 MiB + 4 KiB (mod 2 MiB)`, which makes the touch cost 1 + 541.
pub fn msix_hole(fx: &Fixture) -> TestResult {
    let (bar, areas) = areas(fx)?;
    let mut maps = Vec::new();
    let mut h = Histogram::default();
    let mut failures = Vec::new();
    for (off, len) in areas {
        let map = Mapping::anywhere(fx.dev.file(), bar.region.offset + off, len)?;
        let req = Request {
            bar_base: bar.phys(),
            bar_size: bar.size(),
            offset: off,
            len,
        };
        h.add(req.congruence(map.start()));
        if !req.placement_ok(Orders::ALL_HUGE, map.start()) {
            failures.push(format!(
                "[{off:#x}, +{len:#x}) placed at {:#x}: {:#x} mod 2 MiB, needs {:#x}",
                map.start(),
                map.start() % PMD,
                req.phys() % PMD
            ));
        }
        maps.push((map, off));
    }
    let t = touch_areas(fx, bar, &maps, "kernel placement")?;
    diag(&format!(
        "kernel placement: {} faults, tail keeps {} PMDs",
        t.faults, t.tail_pmds
    ));
    verdict(fx, failures, &h)
}

/// Reports a strategy's result; the counts already matched the model.
fn report(name: &str, t: &Touched) {
    diag(&format!(
        "{name}: {} faults (model {}), tail keeps {} PMDs: {}",
        t.faults,
        t.expected,
        t.tail_pmds,
        if t.tail_pmds > 0 {
            "PMDs kept"
        } else {
            "PMDs lost"
        }
    ));
}

/// a3.qemu_strategy: QEMU's `vfio_region_mmap` (9.2+): reserve `size + align`
/// with `align = min(1 << ctz(size), 1 GiB)`, round up, MAP_FIXED; the area's
/// offset is ignored. Reports whether the PMDs survive.
pub fn qemu_strategy(fx: &Fixture) -> TestResult {
    let (bar, areas) = areas(fx)?;
    let mut maps = Vec::new();
    for (off, len) in areas {
        let align = (1u64 << len.trailing_zeros()).min(PUD);
        let map = Mapping::placed(fx.dev.file(), bar.region.offset + off, len, align, 0)
            .context("QEMU-style placement")?;
        maps.push((map, off));
    }
    let t = touch_areas(fx, bar, &maps, "QEMU")?;
    report("QEMU size-only alignment", &t);
    Ok(())
}

/// Maps both areas DPDK's way: the BAR's span reserved with an inaccessible
/// anonymous mapping at a page-aligned base, each area mapped MAP_FIXED at
/// `base + offset` (the MSI-X page stays reserved).
fn dpdk_place(
    fx: &Fixture,
    bar: &Bar,
    areas: &[(u64, u64); 2],
    residue: u64,
) -> Result<Vec<(Mapping, u64)>> {
    let base = reserve_congruent(bar.size(), PMD, residue)?;
    let mut maps = Vec::new();
    for &(off, len) in areas {
        // SAFETY: [base, base + bar size) is the reservation just made, and the
        // two areas are disjoint parts of it.
        let map = unsafe {
            Mapping::fixed(
                fx.dev.file(),
                bar.region.offset + off,
                len,
                base + off,
                MapFlags::MAP_SHARED,
            )
        }
        .context("DPDK-style MAP_FIXED at base + offset")?;
        maps.push((map, off));
    }
    Ok(maps)
}

/// a3.dpdk_strategy: DPDK's `pci_vfio_mmap_bar`: a page-aligned base, each
/// area at `base + offset`. The areas keep their relative offsets, so the PMDs
/// survive exactly when the base is 2 MiB-congruent; both cases are run (the
/// page-aligned base with a seeded residue).
pub fn dpdk_strategy(fx: &Fixture) -> TestResult {
    let (bar, areas) = areas(fx)?;
    let mut rng = Rng::new(fx.seed ^ 0xd9d);
    let page_residue = (1 + rng.below(PMD / PAGE - 1)) * PAGE;
    for (name, residue) in [
        ("DPDK, 2 MiB-aligned base", bar.phys() % PMD),
        ("DPDK, page-aligned base", (bar.phys() + page_residue) % PMD),
    ] {
        let maps = dpdk_place(fx, bar, &areas, residue)?;
        let t = touch_areas(fx, bar, &maps, name)?;
        report(name, &t);
    }
    Ok(())
}

/// a3.selftests_strategy: the kernel selftests' `mmap_reserve` + MAP_FIXED at
/// `s ≡ off (mod min(S, 1 GiB))`, then MADV_HUGEPAGE: must give 1 + 541.
pub fn selftests_strategy(fx: &Fixture) -> TestResult {
    let (bar, areas) = areas(fx)?;
    let align = bar.size().min(PUD);
    let mut maps = Vec::new();
    for (off, len) in areas {
        let map = Mapping::placed(
            fx.dev.file(),
            bar.region.offset + off,
            len,
            align,
            (bar.phys() + off) % align,
        )?;
        maps.push((map, off));
    }
    let t = touch_areas(fx, bar, &maps, "selftests")?;
    report("selftests offset-aware reserve", &t);
    let tail = &maps[1].0;
    let want = (bar.phys() + areas[1].0) % PMD;
    ensure!(
        tail.start() % PMD == want,
        "selftests placement put the tail at {:#x}, not ≡ {want:#x} (mod 2 MiB)",
        tail.start()
    );
    if fx.caps.huge_pfnmap() {
        ensure!(
            t.tail_pmds > 0,
            "offset-aware placement must keep the tail's PMDs: {} faults",
            t.faults
        );
    }
    Ok(())
}
