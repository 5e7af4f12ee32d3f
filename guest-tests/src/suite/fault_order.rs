//! `fault_order.*`: touching a placed mapping costs the number of minor faults
//! the rule model predicts (docs/RULES.md F1, F2; 6.1: one per VMA), with the
//! model's cheap touch pattern that tells every installation apart.

use guest_tests::fixture::Fixture;
use guest_tests::model::{PAGE, PMD, PUD};
use guest_tests::stop::TestResult;

use super::check::{advise_huge, expect_plan, place, plan_of};
use super::{bigbar_regs, largest_bar_of, DiscardOnDrop};

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
pub fn pud_aligned(fx: &Fixture) -> TestResult {
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
pub fn pmd_aligned(fx: &Fixture) -> TestResult {
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
pub fn unaligned(fx: &Fixture) -> TestResult {
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

fn run(fx: &Fixture, case: Case) -> TestResult {
    let regs = bigbar_regs(fx)?;
    let bar = largest_bar_of(fx, case.offset + case.len)?;
    let _discard = DiscardOnDrop {
        regs: &regs,
        bar: bar.index,
        offset: case.offset,
        len: case.len,
    };
    let map = place(fx, bar, case.offset, case.len, case.modulus, case.shift)?;
    let behaviour = advise_huge(fx, &map)?;
    let plan = plan_of(bar, case.offset, &map, behaviour)?;
    // The plan's touch pattern: every page of PTE runs, two pages per 2 MiB of
    // huge runs. Any other installation than the planned one changes the count
    // (Plan::touch_pattern), and 2 GiB of PUD entries cost 2048 touches (TCG TLB
    // refills) and 8 MiB of host BAR memory instead of 512 Ki touches and 2 GiB.
    let what = format!(
        "BAR {} phys {:#x} offset {:#x} ({behaviour:?})",
        bar.index,
        bar.phys(),
        case.offset
    );
    expect_plan(&map, &plan, &what)?;
    Ok(())
}
