//! `bench.*`: measurements rather than checks, run only when asked for with
//! `--bench` (the runner's `bench` subcommand does).
//!
//! Each test prints one machine-readable diagnostic line per repetition,
//! `bench <kind> key=value ...`, which the runner's benchmark collects:
//!
//! - `bench.fault_{pud,pmd,pte}`: map a BAR range so that the kernel installs
//!   entries of one order, touch one word per entry (the fewest accesses that map
//!   the whole range), and time that pass and a second pass over the now mapped
//!   range. The PUD and PMD cases cover 16 GiB; 16 GiB at PTE order would be
//!   4 Mi faults (minutes under TCG) and 16 GiB of host memory, so the PTE case
//!   maps 256 MiB and the runner extrapolates per GiB.
//! - `bench.regs_read` / `bench.regs_write`: round trips to the trapped register
//!   BAR (each access is a vfio-user message to device-emu).
//!
//! The fault counts are still checked against the rule model, so a kernel that
//! maps at another order than the label says fails instead of reporting a
//! misleading figure.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use guest_tests::ensure;
use guest_tests::faults::{minor_faults, touch_offsets};
use guest_tests::fixture::Fixture;
use guest_tests::harness::TestCase;
use guest_tests::isolate::diag;
use guest_tests::mapping::Mapping;
use guest_tests::model::{Behaviour, Order, PAGE, PMD, PUD};
use guest_tests::stop::TestResult;
use protocol::regs;

use super::check::{advise_huge, place, plan_of};
use super::{bigbar_regs, largest_bar_of, DiscardOnDrop};

/// Measurements per test (each on a fresh mapping).
const REPS: usize = 3;
/// Bytes mapped at PUD and PMD order.
const HUGE_LEN: u64 = 16 * PUD;
/// Bytes mapped at PTE order (extrapolated per GiB by the runner).
const PTE_LEN: u64 = 256 << 20;
/// Register accesses per repetition.
const REG_ACCESSES: u32 = 2000;

/// The benchmark tests, in run order; `--bench` adds them to the catalogue.
pub fn all() -> Vec<TestCase<Fixture>> {
    vec![
        TestCase::new("bench.fault_pud", fault_pud),
        TestCase::new("bench.fault_pmd", fault_pmd),
        TestCase::new("bench.fault_pte", fault_pte),
        TestCase::new("bench.regs_read", regs_read),
        TestCase::new("bench.regs_write", regs_write),
    ]
}

/// 16 GiB mapped `s ≡ off (mod 1 GiB)`: 16 PUD entries.
pub fn fault_pud(fx: &Fixture) -> TestResult {
    fault_bench(fx, Order::Pud, HUGE_LEN, 0)
}

/// 16 GiB mapped `s ≡ off + 2 MiB (mod 1 GiB)`: 8192 PMD entries.
pub fn fault_pmd(fx: &Fixture) -> TestResult {
    fault_bench(fx, Order::Pmd, HUGE_LEN, PMD)
}

/// 256 MiB mapped `s ≡ off + 4 KiB (mod 1 GiB)`: 65536 PTEs.
pub fn fault_pte(fx: &Fixture) -> TestResult {
    fault_bench(fx, Order::Pte, PTE_LEN, PAGE)
}

/// Maps `len` bytes at offset 0 of the largest BAR with VA residue `shift`
/// against the physical address modulo 1 GiB, touches one word per `order`
/// entry, and reports time and faults, [`REPS`] times.
fn fault_bench(fx: &Fixture, order: Order, len: u64, shift: u64) -> TestResult {
    let regs = bigbar_regs(fx)?;
    let bar = largest_bar_of(fx, len)?;
    if order != Order::Pte && !fx.caps.huge_pfnmap() {
        guest_tests::skip!(
            "kernel {} has no huge pfnmap: nothing maps at {order} order",
            fx.caps.release
        );
    }
    for rep in 0..REPS {
        let _discard = DiscardOnDrop {
            regs: &regs,
            bar: bar.index,
            offset: 0,
            len,
        };
        let map = place(fx, bar, 0, len, PUD, shift)?;
        let behaviour = advise_huge(fx, &map)?;
        let plan = plan_of(bar, 0, &map, behaviour)?;
        let offsets: Vec<u64> = (0..len / order.size()).map(|i| i * order.size()).collect();
        let touches: Vec<u64> = offsets.iter().map(|o| map.start() + o).collect();
        let expected = plan.touch_faults(behaviour, &touches);
        if rep == 0 {
            diag(&format!(
                "BAR {} phys {:#x} len {len:#x} at VA {:#x} ({behaviour:?}): the plan is {plan}",
                bar.index,
                bar.phys(),
                map.start()
            ));
        }
        ensure!(
            whole_vma_or(behaviour, plan.count(order) == len / order.size()),
            "the model maps this placement as {plan}, not {} {order} entries",
            len / order.size()
        );
        let first = timed_touch(&map, &offsets)?;
        let second = timed_touch(&map, &offsets)?;
        diag(&format!(
            "bench fault order={order} len={len} touches={} faults={} expected={expected} \
             first_ns={} second_ns={}",
            offsets.len(),
            first.faults,
            first.nanos,
            second.nanos
        ));
        ensure!(
            first.faults == expected && second.faults == 0,
            "counted {} faults on the first pass and {} on the second; the model expects \
             {expected} and 0",
            first.faults,
            second.faults
        );
    }
    Ok(())
}

/// Whether a plan check applies: 6.1's whole-VMA remap maps with PTEs only.
fn whole_vma_or(behaviour: Behaviour, holds: bool) -> bool {
    behaviour == Behaviour::RemapWholeVma || holds
}

/// What one pass over a mapping cost.
struct Pass {
    faults: u64,
    nanos: u128,
}

/// Touches the word at each of `offsets` of `map` once and measures it.
fn timed_touch(map: &Mapping, offsets: &[u64]) -> Result<Pass> {
    // Bring the touching code, the clock and getrusage in before measuring.
    // SAFETY: an empty offset list reads nothing.
    black_box(unsafe { touch_offsets(map.as_ptr(), &[]) });
    black_box(offsets.iter().sum::<u64>());
    let _ = Instant::now();
    minor_faults()?;
    let before = minor_faults()?;
    let start = Instant::now();
    // SAFETY: every offset is a page of the live, readable mapping `map`
    // (offsets are multiples of the entry size below its length).
    black_box(unsafe { touch_offsets(map.as_ptr(), offsets) });
    let nanos = start.elapsed().as_nanos();
    let after = minor_faults()?;
    Ok(Pass {
        faults: after.saturating_sub(before),
        nanos,
    })
}

/// Reads the MAGIC register [`REG_ACCESSES`] times per repetition.
pub fn regs_read(fx: &Fixture) -> TestResult {
    let regs = bigbar_regs(fx)?;
    for _ in 0..REPS {
        let start = Instant::now();
        for _ in 0..REG_ACCESSES {
            let magic = regs.read32(regs::MAGIC)?;
            ensure!(
                magic == regs::MAGIC_VALUE,
                "MAGIC read {magic:#010x}, expected {:#010x}",
                regs::MAGIC_VALUE
            );
        }
        report_regs("read32", start);
    }
    Ok(())
}

/// Writes the SCRATCH register [`REG_ACCESSES`] times per repetition, then
/// reads back the last value written.
pub fn regs_write(fx: &Fixture) -> TestResult {
    let regs = bigbar_regs(fx)?;
    for _ in 0..REPS {
        let start = Instant::now();
        for i in 0..REG_ACCESSES {
            regs.write32(regs::SCRATCH, i)?;
        }
        report_regs("write32", start);
        let back = regs.read32(regs::SCRATCH)?;
        ensure!(
            back == REG_ACCESSES - 1,
            "SCRATCH read back {back}, expected {}",
            REG_ACCESSES - 1
        );
    }
    Ok(())
}

fn report_regs(op: &str, start: Instant) {
    diag(&format!(
        "bench regs op={op} count={REG_ACCESSES} ns={}",
        start.elapsed().as_nanos()
    ));
}
