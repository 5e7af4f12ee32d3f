//! F2 under concurrency: two threads, pinned to two vCPUs, fault the first and
//! the last page of the same huge block at the same time; exactly the expected
//! entry results.
//!
//! That they raced is measured, not assumed: each thread reports the CPU it
//! ran on and the clock right around its touch, and a round whose two touches
//! did not overlap in time is run again (a round that never overlaps fails the
//! test). A guest with one CPU cannot race them: the tests skip saying so.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use guest_tests::faults::{count_offset_faults_timed, TimedTouch};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::mapping::Mapping;
use guest_tests::model::{Order, PMD, PUD};
use guest_tests::register_bar::Args;
use guest_tests::stop::TestResult;
use guest_tests::{bail, ensure, skip};
use protocol::regs::{tag, Command};

use super::check::{
    advise_huge, bar_of, msix_page, need_huge, place, plan_of, touch_plan, touch_range,
};
use super::Rng;
use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Rounds per block size: each maps afresh and races once.
const ROUNDS: usize = 16;
/// Tries of a round whose touches did not overlap in time before the test
/// fails for never having raced. Under TCG a vCPU is a host thread, and on a
/// loaded host the two are seldom on a core at once: measured on 2 busy
/// cores, 1 try in 2 to 1 in 8 overlapped (a try costs milliseconds).
const TRIES: usize = 256;
/// The CPUs the two racers are pinned to.
const CPUS: [usize; 2] = [0, 1];
/// How long a racer waits at the gate for the other before giving up.
const GATE_WAIT: Duration = Duration::from_secs(10);

/// Releases the racers at once: each spins (on its own vCPU) until both have
/// arrived, so neither waits for a wake-up the other's start would not.
struct Gate(AtomicU32);

impl Gate {
    /// Arrives and spins until the other racer has too; `false` after
    /// [`GATE_WAIT`] without it.
    fn arrive_and_wait(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + GATE_WAIT;
        while self.0.load(Ordering::SeqCst) < 2 {
            if Instant::now() > deadline {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }
}

/// What one racer saw.
struct Raced {
    touch: TimedTouch,
    /// The word read at its page (afterwards, outside the counted window).
    word: u64,
    /// The CPU it ran on before and after its touch.
    cpus: (usize, usize),
    /// Whether the other racer arrived at the gate.
    met: bool,
}

/// Pins this thread to `cpu`, then touches the page at `at` of `map` as soon
/// as the other racer is at `gate`.
fn racer(map: &Mapping, at: u64, cpu: usize, gate: &Gate) -> Result<Raced> {
    let mut set = CpuSet::new();
    set.set(cpu).context("CPU set")?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))?;
    let before = sched_getcpu().context("sched_getcpu")?;
    let mut met = false;
    // SAFETY: `at` is a page start inside the live readable mapping `map`.
    let touch =
        unsafe { count_offset_faults_timed(map.as_ptr(), &[at], || met = gate.arrive_and_wait()) }?;
    let after = sched_getcpu().context("sched_getcpu")?;
    Ok(Raced {
        touch,
        word: map.read_u64(at),
        cpus: (before, after),
        met,
    })
}

/// How long the two touches overlapped in time; `None` when one ended before
/// the other began.
fn overlap(a: &TimedTouch, b: &TimedTouch) -> Option<Duration> {
    let start = a.started.max(b.started);
    let end = a.ended.min(b.ended);
    (end > start).then(|| end - start)
}

/// CPUs this process may run on.
fn usable_cpus() -> Result<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .count())
}

fn race(fx: &Fixture, block: u64) -> TestResult {
    need_huge(fx)?;
    let cpus = usable_cpus()?;
    if cpus < 2 {
        skip!(
            "the guest has {cpus} CPU: two threads cannot fault one block at the same time \
             (bigbar boots guests with --smp 2 unless told otherwise)"
        );
    }
    let bar = bar_of(fx, block)?;
    let regs = if fx.is_bigbar { Some(fx.regs()?) } else { None };
    let mut overlaps = Vec::new();
    let mut retries = 0;
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
        let mut tries = 0;
        let (total, overlapped) = loop {
            tries += 1;
            let offset = usable[rng.below(usable.len() as u64) as usize];
            let seed = rng.next();
            let raced = race_once(fx, bar, block, offset, seed, regs.as_ref(), round)?;
            if let Some(d) = raced.1 {
                break (raced.0, d);
            }
            ensure!(
                tries < TRIES,
                "round {round}: in {TRIES} tries the two touches never overlapped in time \
                 (on CPUs {CPUS:?}): the threads did not race"
            );
            retries += 1;
        };
        totals[total as usize] += 1;
        overlaps.push(overlapped);
    }
    overlaps.sort();
    diag(&format!(
        "{ROUNDS} rounds on CPUs {} and {}, every one with the two touches overlapping in \
         time (overlap median {:.1} us, least {:.1} us; {retries} tries without overlap \
         run again): {} with one fault, {} with two",
        CPUS[0],
        CPUS[1],
        overlaps[overlaps.len() / 2].as_secs_f64() * 1e6,
        overlaps[0].as_secs_f64() * 1e6,
        totals[1],
        totals[2]
    ));
    Ok(())
}

/// One try of a round: maps `block` at BAR `offset` afresh, races the two
/// touches and checks what they installed. Returns the faults of the two
/// touches and how long they overlapped (`None`: they did not, so this try
/// raced nothing, though what it installed was still checked).
fn race_once(
    fx: &Fixture,
    bar: &guest_tests::fixture::Bar,
    block: u64,
    offset: u64,
    seed: u64,
    regs: Option<&guest_tests::register_bar::Regs<'_>>,
    round: usize,
) -> TestResult<(u64, Option<Duration>)> {
    let last = block - 8;
    if let Some(r) = regs {
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
    let gate = Gate(AtomicU32::new(0));
    let (first, second) = std::thread::scope(|s| {
        let a = s.spawn(|| racer(&map, 0, CPUS[0], &gate));
        let b = s.spawn(|| racer(&map, last, CPUS[1], &gate));
        (a.join(), b.join())
    });
    let (Ok(first), Ok(second)) = (first, second) else {
        bail!("round {round}: a racing thread panicked");
    };
    let (a, b) = (first.context("first page")?, second.context("last page")?);
    ensure!(
        a.met && b.met,
        "round {round}: a racer never met the other at the gate"
    );
    for (r, cpu) in [(&a, CPUS[0]), (&b, CPUS[1])] {
        ensure!(
            r.cpus == (cpu, cpu),
            "round {round}: a racer pinned to CPU {cpu} ran on CPUs {:?}",
            r.cpus
        );
    }
    let total = a.touch.faults + b.touch.faults;
    ensure!(
        (1..=2).contains(&total),
        "round {round}: the two first touches took {total} faults ({} + {}); one entry \
         means 1 (or 2 when the second thread faulted on the entry the first installed)",
        a.touch.faults,
        b.touch.faults
    );
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
            a.word == w0 && b.word == w1,
            "round {round}: read {:#x}/{:#x}, device wrote {w0:#x}/{w1:#x}",
            a.word,
            b.word
        );
    }
    drop(map);
    if let Some(r) = regs {
        r.discard(bar.index, offset, block)?;
    }
    let o = overlap(&a.touch, &b.touch);
    if o.is_none() {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let skew = if a.touch.started > b.touch.started {
            a.touch.started - b.touch.started
        } else {
            b.touch.started - a.touch.started
        };
        diag(&format!(
            "round {round}: no overlap: starts {:.1} us apart, touches took {:.1} us \
             ({} fault) and {:.1} us ({} fault)",
            us(skew),
            us(a.touch.ended - a.touch.started),
            a.touch.faults,
            us(b.touch.ended - b.touch.started),
            b.touch.faults
        ));
    }
    Ok((total, o))
}

/// f2.race_pmd: first and last page of one PMD block at once.
pub fn race_pmd(fx: &Fixture) -> TestResult {
    race(fx, PMD)
}

/// f2.race_pud: first and last page of one PUD block at once.
pub fn race_pud(fx: &Fixture) -> TestResult {
    race(fx, PUD)
}
