//! F2 under concurrency: two threads fault the first and the last page of the
//! same huge block at the same time; exactly the expected entry results.

use std::sync::Barrier;

use anyhow::{Context, Result};
use guest_tests::device::Args;
use guest_tests::faults::count_offset_faults;
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::mapping::Mapping;
use guest_tests::model::{Order, PMD, PUD};
use guest_tests::stop::TestResult;
use guest_tests::{bail, ensure, skip};
use protocol::regs::{tag, Command};

use super::check::{
    advise_huge, bar_of, msix_page, need_huge, place, plan_of, touch_plan, touch_range,
};
use super::Rng;

/// Rounds per block size: each maps afresh and races once.
const ROUNDS: usize = 16;

/// Touches the page at `at` of `map` in this thread, after meeting the other
/// thread at `barrier`, and returns the minor faults that cost and the word read
/// there (read afterwards, outside the counted window).
fn racer(map: &Mapping, at: u64, barrier: &Barrier) -> Result<(u64, u64)> {
    barrier.wait();
    // The counting warms its own code and this thread's fresh stack up first.
    // SAFETY: `at` is a page start inside the live readable mapping `map`.
    let faults = unsafe { count_offset_faults(map.as_ptr(), &[at]) }?;
    Ok((map.read_u64(at), faults))
}

fn race(fx: &Fixture, block: u64) -> TestResult {
    need_huge(fx)?;
    let bar = bar_of(fx, block)?;
    let regs = if fx.is_bigbar { Some(fx.regs()?) } else { None };
    diag("the guest has one vCPU under TCG: the threads interleave on it rather than run in parallel");
    let mut rng = Rng::new(fx.seed ^ block);
    let mut totals = [0u64; 3];
    let blocks = (bar.size() / block).min(16);
    let msix = msix_page(fx, bar);
    let usable: Vec<u64> = (0..blocks)
        .map(|b| b * block)
        .filter(|&o| msix.is_none_or(|p| p < o || p >= o + block))
        .collect();
    if usable.is_empty() {
        skip!("no block of the BAR is free of the MSI-X page");
    }
    for round in 0..ROUNDS {
        let offset = usable[rng.below(usable.len() as u64) as usize];
        let last = block - 8;
        let seed = rng.next();
        if let Some(r) = &regs {
            let args = Args {
                bar: bar.index,
                offset,
                length: block,
                stride: last,
                seed,
            };
            r.run_ok(Command::Fill, &args)?;
        }
        let map = place(fx, bar, offset, block, PUD, 0)?;
        let behaviour = advise_huge(fx, &map)?;
        let plan = plan_of(bar, offset, &map, behaviour)?;
        let order = if block == PUD { Order::Pud } else { Order::Pmd };
        ensure!(
            plan.faults == 1 && plan.count(order) == 1,
            "model expects {plan} for one aligned block"
        );
        let barrier = Barrier::new(2);
        let (first, second) = std::thread::scope(|s| {
            let a = s.spawn(|| racer(&map, 0, &barrier));
            let b = s.spawn(|| racer(&map, last, &barrier));
            (a.join(), b.join())
        });
        let (Ok(first), Ok(second)) = (first, second) else {
            bail!("round {round}: a racing thread panicked");
        };
        let ((v0, f0), (v1, f1)) = (first.context("first page")?, second.context("last page")?);
        let total = f0 + f1;
        ensure!(
            (1..=2).contains(&total),
            "round {round}: the two first touches took {total} faults ({f0} + {f1}); one entry \
             means 1 (or 2 when the second thread faulted on the entry the first installed)"
        );
        totals[total as usize] += 1;
        // The plan's pattern finds missing PMD windows of a PUD; touching every
        // page of the PMD windows the racers hit finds 4 KiB entries installed
        // for just their two pages (the pattern alone touches those same pages).
        let rest = touch_plan(&map, &plan)?
            + touch_range(&map, 0, PMD)?
            + touch_range(&map, block - PMD, PMD)?;
        ensure!(
            rest == 0,
            "round {round}: {rest} more faults after the race: not one {order} entry"
        );
        if regs.is_some() {
            let (w0, w1) = (
                tag(seed, bar.index, offset),
                tag(seed, bar.index, offset + last),
            );
            ensure!(
                v0 == w0 && v1 == w1,
                "round {round}: read {v0:#x}/{v1:#x}, device wrote {w0:#x}/{w1:#x}"
            );
        }
        drop(map);
        if let Some(r) = &regs {
            r.discard(bar.index, offset, block)?;
        }
    }
    diag(&format!(
        "{ROUNDS} rounds: {} with one fault, {} with two",
        totals[1], totals[2]
    ));
    Ok(())
}

/// f2.race_pmd: first and last page of one PMD block at once.
pub fn race_pmd(fx: &Fixture) -> TestResult {
    race(fx, PMD)
}

/// f2.race_pud: first and last page of one PUD block at once.
pub fn race_pud(fx: &Fixture) -> TestResult {
    race(fx, PUD)
}
