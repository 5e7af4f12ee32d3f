//! `fault_order.*`: touching a placed mapping costs the number of minor faults
//! the rule model predicts (docs/RULES.md F1, F2; 6.1: one per VMA), with the
//! model's cheap touch pattern that tells every installation apart.

use guest_tests::ensure;
use guest_tests::fixture::Fixture;
use guest_tests::model::{FaultPlan, FirstTouch, Order, PAGE, PMD, PUD};
use guest_tests::register_bar::Args;
use guest_tests::stop::TestResult;
use protocol::regs::{tag, Command};

use super::check::{advise_huge, expect_plan, expect_plan_touching, place, plan_of};
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
const PUD_ALIGNED: Case = Case {
    offset: PUD - PMD - 2 * PAGE,
    len: 2 * PUD + 2 * PMD + 3 * PAGE,
    modulus: PUD,
    shift: 0,
};

/// [`PUD_ALIGNED`], every block first touched at its first page.
pub fn pud_aligned(fx: &Fixture) -> TestResult {
    run(fx, PUD_ALIGNED, FirstTouch::Start)
}

/// [`PUD_ALIGNED`] (both huge orders), every PUD and PMD block first touched
/// at an interior page, where the fault address is not the block's: the same
/// entries, one fault each, mapping the right BAR offsets.
pub fn first_touch_interior(fx: &Fixture) -> TestResult {
    run(fx, PUD_ALIGNED, FirstTouch::Interior)
}

/// [`PUD_ALIGNED`], every PUD and PMD block first touched at its last page.
pub fn first_touch_last(fx: &Fixture) -> TestResult {
    run(fx, PUD_ALIGNED, FirstTouch::Last)
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
        FirstTouch::Start,
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
        FirstTouch::Start,
    )
}

fn run(fx: &Fixture, case: Case, first: FirstTouch) -> TestResult {
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
    if first == FirstTouch::Start {
        expect_plan(&map, &plan, &what)?;
        return Ok(());
    }
    let pattern = plan.touch_pattern_first(first);
    let checked = first_touches(&plan, first, map.start());
    let seed = fx.seed ^ 0xf1_7c4;
    for &at in &checked {
        regs.run_ok(Command::Fill, &word(bar.index, case.offset + at, seed))?;
    }
    let what = format!("{what}, huge blocks first touched at {first:?}");
    expect_plan_touching(&map, &plan, &pattern, &what)?;
    expect_tags(&map, bar.index, case.offset, seed, &checked)
}

/// Offsets in the mapping (at `va`) of the first-touched page of every huge
/// entry of `plan` and of the entry's start.
fn first_touches(plan: &FaultPlan, first: FirstTouch, va: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for r in plan.runs.iter().filter(|r| r.order != Order::Pte) {
        let size = r.order.size();
        for i in 0..r.count {
            let start = r.start + i * size;
            out.extend([start - va, first.page(start, size) - va]);
        }
    }
    out
}

/// The register-BAR arguments of one tagged word at BAR `offset`.
fn word(bar: u32, offset: u64, seed: u64) -> Args {
    Args {
        bar,
        offset,
        length: 8,
        stride: 8,
        seed,
    }
}

/// Every offset `at` of `map` reads the tag the device wrote at BAR offset
/// `offset + at`: the entry a first touch installed maps the block it covers.
fn expect_tags(
    map: &guest_tests::mapping::Mapping,
    bar: u32,
    offset: u64,
    seed: u64,
    at: &[u64],
) -> TestResult {
    let wrong: Vec<String> = at
        .iter()
        .filter_map(|&a| {
            let (want, got) = (tag(seed, bar, offset + a), map.read_u64(a));
            (got != want).then(|| {
                format!(
                    "BAR offset {:#x}: read {got:#x}, want {want:#x}",
                    offset + a
                )
            })
        })
        .take(8)
        .collect();
    ensure!(
        wrong.is_empty(),
        "after first touches inside the blocks, the mapping reads the wrong BAR words: {}",
        wrong.join("; ")
    );
    guest_tests::isolate::diag(&format!(
        "{} device-tagged words (each huge block's start and first-touched page) \
         read back at their BAR offsets",
        at.len()
    ));
    Ok(())
}
