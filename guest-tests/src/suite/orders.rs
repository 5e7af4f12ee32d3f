//! F1, F2, F5: the order of each entry and the number of faults, over case
//! tables and seeded random draws on every BAR they fit in.

use anyhow::Context;
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::isolate::diag;
use guest_tests::model::{Behaviour, PAGE, PMD, PUD};
use guest_tests::stop::TestResult;
use guest_tests::{ensure, skip};

use super::check::{self, advise_huge, bar_of, need_predictable, place, plan_of, run_case, Data};
use super::Rng;

/// One row of a case table: `[offset, offset + len)` of a BAR mapped at
/// `s ≡ phys + shift (mod modulus)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Row {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) modulus: u64,
    pub(super) shift: u64,
}

const fn row(offset: u64, len: u64, modulus: u64, shift: u64) -> Row {
    Row {
        offset,
        len,
        modulus,
        shift,
    }
}

/// F1/F2 cases, cheap under TCG (no case maps more than 1024 4 KiB pages).
const F1_ROWS: [Row; 8] = [
    // Two whole PMD blocks.
    row(0, 2 * PMD, PUD, 0),
    // PTE ends around two PMDs: 2 + 2 + 2 faults.
    row(PMD - 2 * PAGE, 2 * PMD + 4 * PAGE, PUD, 0),
    // Misaligned by 4 KiB: 4 KiB pages only.
    row(0, PMD, PUD, PAGE),
    // Misaligned by 1 MiB, 4 KiB only.
    row(3 * PMD, 2 * PMD, PUD, PMD / 2),
    // A whole GiB: one PUD.
    row(0, PUD, PUD, 0),
    // A GiB at s ≡ phys + 2 MiB (mod 1 GiB): 512 PMDs.
    row(PUD, PUD, PUD, PMD),
    // PMD ends around a PUD: 1 + 1 + 1.
    row(PUD - PMD, PUD + 2 * PMD, PUD, 0),
    EVERY_CUT,
];

/// A partial VMA with every kind of cut: 2 PTE, 1 PMD, 1 PUD, 1 PMD, 3 PTE.
pub(super) const EVERY_CUT: Row = row(PUD - PMD - 2 * PAGE, PUD + 2 * PMD + 5 * PAGE, PUD, 0);

/// Runs `rows` on every mappable BAR each fits in; skips if none fits anywhere.
fn run_rows(fx: &Fixture, rows: &[Row]) -> TestResult {
    need_predictable(fx)?;
    let mut ran = 0;
    for bar in fx.mappable_bars() {
        for r in rows.iter().filter(|r| r.offset + r.len <= bar.size()) {
            run_case(fx, bar, r.offset, r.len, r.modulus, r.shift)
                .with_context(|| format!("case {r:?} on BAR {}", bar.index))?;
            ran += 1;
        }
    }
    if ran == 0 {
        skip!("no case fits any BAR of the device");
    }
    diag(&format!("{ran} cases"));
    Ok(())
}

/// f1.case_table: the table above on every BAR of the device.
pub fn case_table(fx: &Fixture) -> TestResult {
    run_rows(fx, &F1_ROWS)
}

/// f1.random: seeded draws per BAR (offset, length, congruence); the seed is in
/// the fixture line of the log and `--seed` repeats a run.
pub fn random(fx: &Fixture) -> TestResult {
    let mut rng = Rng::new(fx.seed ^ 0xf1);
    let mut rows = Vec::new();
    for bar in fx.mappable_bars() {
        for _ in 0..3 {
            rows.push(draw(&mut rng, bar));
        }
    }
    diag(&format!("seed {} draws {rows:?}", fx.seed));
    run_rows_exact(fx, &rows)
}

/// Like [`run_rows`], but each row belongs to the BAR it was drawn for.
fn run_rows_exact(fx: &Fixture, rows: &[(u32, Row)]) -> TestResult {
    need_predictable(fx)?;
    for (index, r) in rows {
        let bar = fx.bar(*index).context("drawn BAR vanished")?;
        run_case(fx, bar, r.offset, r.len, r.modulus, r.shift)
            .with_context(|| format!("draw {r:?} on BAR {index}"))?;
    }
    if rows.is_empty() {
        skip!("the device has no mmap-able BAR");
    }
    Ok(())
}

/// One random case on `bar`: a page-aligned offset and length, placed 1 GiB
/// congruent, 2 MiB congruent or page-misaligned. Misaligned cases are kept to
/// 4 MiB so they cost at most 1024 faults.
fn draw(rng: &mut Rng, bar: &Bar) -> (u32, Row) {
    let pages = bar.size() / PAGE;
    let kind = rng.below(3);
    let max_len = match kind {
        0 | 1 => 2 * PUD + 8 * PMD,
        _ => 2 * PMD,
    };
    let offset = rng.below(pages) * PAGE;
    let room = (bar.size() - offset).min(max_len) / PAGE;
    let len = (1 + rng.below(room)) * PAGE;
    let (modulus, shift) = match kind {
        0 => (PUD, 0),
        1 => (PUD, (1 + rng.below(PUD / PMD - 1)) * PMD),
        _ => (PMD, (1 + rng.below(PMD / PAGE - 1)) * PAGE),
    };
    (
        bar.index,
        Row {
            offset,
            len,
            modulus,
            shift,
        },
    )
}

/// f5.map_fixed: MAP_FIXED at page residues that are not block aligned works,
/// and the orders follow F1 (4 KiB at `s ≡ off + 4 KiB (mod 2 MiB)`).
pub fn map_fixed(fx: &Fixture) -> TestResult {
    let mut rng = Rng::new(fx.seed ^ 0xf5);
    let random_shift = (1 + rng.below(PMD / PAGE - 1)) * PAGE;
    diag(&format!("seeded shift {random_shift:#x}"));
    let rows = [
        row(0, PMD, PMD, PAGE),
        row(PMD, PMD, PMD, PMD - PAGE),
        row(2 * PMD, PMD + PAGE, PMD, random_shift),
        row(PUD, PUD, PUD, PUD - PMD),
    ];
    run_rows(fx, &rows)
}

/// f2.one_entry_per_fault: one touch installs exactly one entry, no
/// fault-around: a page in the middle of a block maps the whole block, the
/// neighbouring block and neighbouring 4 KiB pages fault separately.
pub fn one_entry_per_fault(fx: &Fixture) -> TestResult {
    need_predictable(fx)?;
    let bar = bar_of(fx, 4 * PMD)?;
    // [0, 2 PMD) PMD-mapped, then 16 pages of PTE.
    let (offset, len) = (0, 2 * PMD + 16 * PAGE);
    let mut data = Data::new(fx, bar, offset, len)?;
    let map = place(fx, bar, offset, len, PMD, 0)?;
    let behaviour = advise_huge(fx, &map)?;
    let plan = plan_of(bar, offset, &map, behaviour)?;
    let steps: [(&str, &[u64]); 4] = [
        ("middle of the first block", &[PMD / 2]),
        ("rest of the first block", &[0, PAGE, PMD - PAGE]),
        ("second block", &[PMD + 5 * PAGE]),
        ("two neighbouring 4 KiB pages", &[2 * PMD, 2 * PMD + PAGE]),
    ];
    let mut touched = Vec::new();
    for (what, rel) in steps {
        let before = plan.touch_faults(behaviour, &touched);
        touched.extend(rel.iter().map(|r| map.start() + r));
        let want = plan.touch_faults(behaviour, &touched) - before;
        let mut got = 0;
        for r in rel {
            got += check::touch_range(&map, *r, PAGE)?;
        }
        diag(&format!("{what}: expected {want} faults, counted {got}"));
        ensure!(
            got == want,
            "{what}: expected {want} faults, counted {got} ({behaviour:?})"
        );
    }
    let rest = check::touch(&map)?;
    let want_rest = plan.faults - plan.touch_faults(behaviour, &touched);
    let want_rest = if behaviour == Behaviour::RemapWholeVma {
        0
    } else {
        want_rest
    };
    ensure!(
        rest == want_rest,
        "remaining pages: expected {want_rest} faults, counted {rest}"
    );
    data.check(&map, offset)?;
    Ok(())
}
