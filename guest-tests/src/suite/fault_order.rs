//! `fault_order.*`: touching a placed mapping costs the number of minor faults
//! the rule model predicts (docs/RULES.md F1, F2; 6.1: one per VMA), with the
//! model's cheap touch pattern that tells every installation apart.

use anyhow::{ensure, Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::harness::Outcome;
use guest_tests::isolate::diag;
use guest_tests::mapping::Mapping;
use guest_tests::model::{self, Placement, PAGE, PMD, PUD};
use nix::sys::mman::MmapAdvise;

use super::check::touch_plan;
use super::{bigbar_regs, largest_bar, DiscardOnDrop};

/// Where a case maps and how it places the VMA.
struct Case {
    /// Offset inside the BAR.
    offset: u64,
    /// Length of the mapping.
    len: u64,
    /// The VMA start satisfies `s ≡ phys(s) + shift (mod modulus)`.
    modulus: u64,
    shift: u64,
}

/// `s ≡ off (mod 1 GiB)` over more than 2 GiB, with partial blocks at both ends:
/// 2 PTE, 1 PMD, 2 PUD, 1 PMD, 1 PTE.
pub fn pud_aligned(fx: &Fixture) -> Result<Outcome> {
    run(
        fx,
        Case {
            offset: PUD - PMD - 2 * PAGE,
            len: 2 * PUD + 2 * PMD + 3 * PAGE,
            modulus: PUD,
            shift: 0,
        },
    )
}

/// `s ≡ off (mod 2 MiB)` but `s ≡ off + 2 MiB (mod 1 GiB)` over a range that holds
/// a whole virtual GiB: PMD entries only (and PTE at the cut ends).
pub fn pmd_aligned(fx: &Fixture) -> Result<Outcome> {
    run(
        fx,
        Case {
            offset: PUD - 3 * PMD - 2 * PAGE,
            len: PUD + 8 * PMD + 4 * PAGE,
            modulus: PUD,
            shift: PMD,
        },
    )
}

/// `s ≡ off + 4 KiB (mod 2 MiB)`: one fault per 4 KiB page (F5).
pub fn unaligned(fx: &Fixture) -> Result<Outcome> {
    run(
        fx,
        Case {
            offset: PUD - 16 * PMD,
            len: 32 * PMD,
            modulus: PUD,
            shift: PAGE,
        },
    )
}

fn run(fx: &Fixture, case: Case) -> Result<Outcome> {
    let regs = match bigbar_regs(fx)? {
        Ok(r) => r,
        Err(skip) => return Ok(skip),
    };
    let bar = largest_bar(fx)?;
    let end = case.offset + case.len;
    if end > bar.size() {
        return Ok(Outcome::Skip(format!(
            "needs a BAR of at least {end:#x} bytes; the largest, BAR {}, has {:#x}",
            bar.index,
            bar.size()
        )));
    }
    let residue = (bar.phys() + case.offset + case.shift) % case.modulus;
    let _discard = DiscardOnDrop {
        regs: &regs,
        bar: bar.index,
        offset: case.offset,
        len: case.len,
    };
    let map = Mapping::placed(
        fx.dev.file(),
        bar.region.offset + case.offset,
        case.len,
        case.modulus,
        residue,
    )?;
    // Needed when THP is in madvise mode; harmless otherwise.
    let madvised = match map.advise(MmapAdvise::MADV_HUGEPAGE) {
        Ok(()) => true,
        Err(e) => {
            diag(&format!("MADV_HUGEPAGE refused: {e:#}"));
            false
        }
    };
    let behaviour = match fx.caps.fault_behaviour(madvised) {
        Ok(b) => b,
        Err(reason) => return Ok(Outcome::Skip(reason)),
    };
    let placement = Placement {
        bar_base: bar.phys(),
        bar_size: bar.size(),
        offset: case.offset,
        start: map.start(),
        len: case.len,
    };
    let plan = model::plan(&placement, behaviour).context("model")?;
    diag(&format!(
        "BAR {} phys {:#x} offset {:#x} len {:#x} at VA {:#x} ({behaviour:?}): expect {plan}",
        bar.index,
        bar.phys(),
        case.offset,
        case.len,
        map.start()
    ));
    // Every page of PTE runs, two pages per 2 MiB of huge runs: any other
    // installation than the planned one changes the count (Plan::touch_pattern),
    // and 2 GiB of PUD entries cost 2048 touches (TCG TLB refills) and 8 MiB of
    // host BAR memory instead of 512 Ki touches and 2 GiB.
    let first = touch_plan(&map, &plan)?;
    let second = touch_plan(&map, &plan)?;
    diag(&format!(
        "counted {first} faults on the first pass, {second} on the second"
    ));
    ensure!(
        first == plan.faults,
        "first pass: expected {plan}, counted {first} faults"
    );
    ensure!(
        second == 0,
        "second pass over mapped pages: expected 0 faults, counted {second}"
    );
    Ok(Outcome::Pass)
}
