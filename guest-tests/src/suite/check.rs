//! What most catalogue tests do: place a mapping, predict with the model, count
//! faults, and prove with the device's pattern commands that accesses landed at
//! the right BAR offsets.

use anyhow::{Context, Result};
use guest_tests::faults::{count_offset_faults, count_touch_faults};
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::isolate::diag;
use guest_tests::layout;
use guest_tests::mapping::Mapping;
use guest_tests::model::{self, Behaviour, FaultPlan, Placement, PAGE};
use guest_tests::register_bar::{Args, Regs};
use guest_tests::remap::{self, Entry};
use guest_tests::stop::{OrSkip, Stop, TestResult};
use guest_tests::{bail, ensure, skip};
use nix::sys::mman::MmapAdvise;
use protocol::regs::{tag, Command, Status};

use super::Rng;

/// Words sampled per data check: enough to hit every block of a small range,
/// few enough to stay cheap under TCG.
const SAMPLES: u64 = 64;

/// Skips a test that needs the huge fault handler on a kernel without it.
pub fn need_huge(fx: &Fixture) -> TestResult {
    if !fx.caps.huge_pfnmap() {
        skip!(
            "no {} in /proc/kallsyms: no huge pfnmap on this kernel (its one-fault-per-VMA \
             behaviour is checked by f1.*/f2.*)",
            guest_tests::kernel::HUGE_FAULT_SYMBOL
        );
    }
    Ok(())
}

/// The smallest mmap-able BAR of at least `size` bytes, or a skip naming what
/// the device has (PUD tests on a device without a 1 GiB BAR, for example).
pub fn bar_of(fx: &Fixture, size: u64) -> TestResult<&Bar> {
    fx.smallest_bar_of(size).or_skip_with(|| {
        let have: Vec<String> = fx
            .mappable_bars()
            .iter()
            .map(|b| format!("BAR {} {:#x}", b.index, b.size()))
            .collect();
        format!(
            "needs an mmap-able BAR of at least {size:#x} bytes; the device has {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    })
}

/// Maps `[offset, offset + len)` of `bar` at `s ≡ phys + shift (mod modulus)`.
pub fn place(
    fx: &Fixture,
    bar: &Bar,
    offset: u64,
    len: u64,
    modulus: u64,
    shift: u64,
) -> Result<Mapping> {
    let residue = (bar.phys() + offset + shift) % modulus;
    Mapping::placed(
        fx.dev.file(),
        bar.region.offset + offset,
        len,
        modulus,
        residue,
    )
    .with_context(|| format!("placing BAR {} [{offset:#x}, +{len:#x})", bar.index))
}

/// Applies MADV_HUGEPAGE (needed when THP is in madvise mode) and returns the
/// behaviour the model must assume, or a skip.
pub fn advise_huge(fx: &Fixture, map: &Mapping) -> TestResult<Behaviour> {
    let madvised = match map.advise(MmapAdvise::MADV_HUGEPAGE) {
        Ok(()) => true,
        Err(e) => {
            diag(&format!("MADV_HUGEPAGE refused: {e:#}"));
            false
        }
    };
    fx.caps.fault_behaviour(madvised).map_err(Stop::Skip)
}

/// [`advise_huge`] in a test that passed [`need_predictable`] already: a skip
/// now would hide that the policy changed under it, so it fails.
pub fn predicted(fx: &Fixture, map: &Mapping) -> Result<Behaviour> {
    advise_huge(fx, map).map_err(|stop| stop.into_failure().context("cannot predict"))
}

/// Skips on a kernel whose THP policy makes counts unpredictable here.
pub fn need_predictable(fx: &Fixture) -> TestResult {
    fx.caps.fault_behaviour(true).map_err(Stop::Skip)?;
    Ok(())
}

/// The model's placement of `map` (a mapping of `bar` at BAR offset `offset`).
pub fn placement(bar: &Bar, offset: u64, map: &Mapping) -> Placement {
    Placement {
        bar_base: bar.phys(),
        bar_size: bar.size(),
        offset,
        start: map.start(),
        len: map.len(),
    }
}

/// The model's plan for `map`.
pub fn plan_of(bar: &Bar, offset: u64, map: &Mapping, behaviour: Behaviour) -> Result<FaultPlan> {
    model::plan(&placement(bar, offset, map), behaviour).context("model")
}

/// Minor faults for touching every page of `map` once.
pub fn touch(map: &Mapping) -> Result<u64> {
    // SAFETY: `map` is a live readable mapping of `map.len()` bytes.
    unsafe { count_touch_faults(map.as_ptr(), map.len()) }.context("counting faults")
}

/// Minor faults for touching every page of `[start, start + len)`, part of a
/// live mapping.
pub fn touch_range(map: &Mapping, from: u64, len: u64) -> Result<u64> {
    ensure!(
        from + len <= map.len(),
        "range [{from:#x}, +{len:#x}) outside the mapping"
    );
    let p = map.as_ptr().wrapping_add(from as usize);
    // SAFETY: the range lies inside the live readable mapping `map`.
    unsafe { count_touch_faults(p, len) }.context("counting faults")
}

/// Minor faults for touching `plan`'s pattern (see `Plan::touch_pattern`) in
/// `map`, which the plan describes.
pub fn touch_plan(map: &Mapping, plan: &FaultPlan) -> Result<u64> {
    let offsets: Vec<u64> = plan
        .touch_pattern()
        .into_iter()
        .map(|va| va - map.start())
        .collect();
    ensure!(
        offsets.iter().all(|&o| o < map.len()),
        "plan outside the mapping"
    );
    // SAFETY: every offset is a page inside the live readable mapping `map`.
    unsafe { count_offset_faults(map.as_ptr(), &offsets) }.context("counting faults")
}

/// Touches `touches[i]` (addresses of `map`, in address order) for each run
/// `i` of a plan, one run after the other, and returns the faults of each.
fn touch_runs(map: &Mapping, touches: &[Vec<u64>]) -> Result<Vec<u64>> {
    touches
        .iter()
        .map(|t| {
            let offsets: Vec<u64> = t.iter().map(|va| va - map.start()).collect();
            ensure!(
                offsets.iter().all(|&o| o < map.len()),
                "plan outside the mapping"
            );
            // SAFETY: every offset is a page inside the live readable mapping `map`.
            unsafe { count_offset_faults(map.as_ptr(), &offsets) }.context("counting faults")
        })
        .collect()
}

/// Touches `map` run by run of `plan` (at `touches`, see [`touch_runs`]),
/// writes the `# layout:` diagnostic of what each run cost (with the runs a
/// rule-keeping placement would get when `placed` by the kernel) and returns
/// the total. Counting per run costs nothing more and tells which entry size
/// each run got, which one total cannot.
fn measure_layout(
    map: &Mapping,
    plan: &FaultPlan,
    touches: &[Vec<u64>],
    what: &str,
    placed: bool,
) -> Result<u64> {
    let counted = touch_runs(map, touches)?;
    let mut l = layout::layout(what, map.file_offset(), plan, touches, &counted);
    if placed {
        l.rule = layout::rule_runs(plan);
    }
    diag(&l.render());
    Ok(counted.iter().sum())
}

/// Touches every page of `map`, a mapping whose address the kernel chose,
/// once, and returns the faults; writes its layout (see [`measure_layout`]).
/// It lists one address per page, which suits the MiB-sized A3 areas it is
/// made for; GiB mappings use [`expect_plan`]'s sparse pattern.
pub fn touch_placed(map: &Mapping, plan: &FaultPlan, what: &str) -> Result<u64> {
    let touches: Vec<Vec<u64>> = plan
        .runs
        .iter()
        .map(|r| {
            (0..r.end().saturating_sub(r.start) / PAGE)
                .map(|i| r.start + i * PAGE)
                .collect()
        })
        .collect();
    measure_layout(map, plan, &touches, what, true)
}

/// Touches a fresh mapping's pattern twice: the first pass must cost what the
/// model predicts, the second nothing. The first pass writes the layout.
pub fn expect_plan(map: &Mapping, plan: &FaultPlan, what: &str) -> Result<()> {
    expect_plan_touching(map, plan, &plan.touch_pattern(), what)
}

/// [`expect_plan`] with the first pass touching `pattern` (in its order), a
/// reordering of the plan's pattern such as [`FaultPlan::touch_pattern_first`].
pub fn expect_plan_touching(
    map: &Mapping,
    plan: &FaultPlan,
    pattern: &[u64],
    what: &str,
) -> Result<()> {
    let touches: Vec<Vec<u64>> = plan
        .runs
        .iter()
        .map(|r| layout::touches_in(pattern, r))
        .collect();
    let first = measure_layout(map, plan, &touches, what, false)?;
    let second = touch_plan(map, plan)?;
    diag(&format!(
        "{what}: VA {:#x} len {:#x}: expect {plan}; counted {first}, then {second}",
        map.start(),
        map.len()
    ));
    ensure!(
        first == plan.faults,
        "{what}: expected {plan}, counted {first} faults"
    );
    ensure!(
        second == 0,
        "{what}: second pass over mapped pages took {second} faults"
    );
    Ok(())
}

/// Touches, entry by entry, what the `fresh` plans (VMAs inside `map`) would
/// install while the entries `present` are still there; each entry must cost 0
/// faults if a present entry covers it and 1 otherwise. Returns the total and
/// fails naming the entries that differ.
pub fn expect_refaults(
    map: &Mapping,
    fresh: &[FaultPlan],
    present: &[Entry],
    what: &str,
) -> Result<u64> {
    let want_total = remap::refaults(present, fresh)?;
    let mut got_total = 0;
    let mut wrong = Vec::new();
    for plan in fresh {
        for e in remap::entries(plan) {
            let one = FaultPlan {
                runs: vec![model::FaultRun {
                    start: e.start,
                    order: e.order,
                    count: 1,
                }],
                faults: 1,
                placement: plan.placement,
            };
            let covered = present
                .iter()
                .any(|p| p.start <= e.start && e.end() <= p.end());
            let want = u64::from(!covered);
            let got = touch_plan(map, &one)?;
            got_total += got;
            if got != want && wrong.len() < 8 {
                wrong.push(format!(
                    "{} at +{:#x}: {got} faults, expected {want}",
                    e.order,
                    e.start - map.start()
                ));
            }
        }
    }
    diag(&format!(
        "{what}: expected {want_total} refaults, counted {got_total}"
    ));
    ensure!(
        wrong.is_empty() && got_total == want_total,
        "{what}: expected {want_total} refaults, counted {got_total}: {}",
        wrong.join("; ")
    );
    Ok(got_total)
}

/// BAR offset of the page holding `bar`'s MSI-X table, per the expected layout:
/// QEMU traps it, so it is not device memory and data checks avoid it.
pub fn msix_page(fx: &Fixture, bar: &Bar) -> Option<u64> {
    fx.expected
        .as_ref()
        .and_then(|l| l.msix_bar())
        .filter(|spec| u32::from(spec.index()) == bar.index)
        .and_then(|spec| spec.msix_offset())
        .map(|o| o / PAGE * PAGE)
}

/// Checks that a mapping's reads and writes reach the BAR offsets it maps, and
/// gives the host memory back when dropped. A device without bigbar's register
/// interface gets no data check (said once in the diagnostics).
pub struct Data<'a> {
    regs: Option<Regs<'a>>,
    /// BAR offset of the MSI-X table page, which QEMU traps: not device memory.
    msix: Option<u64>,
    bar: u32,
    offset: u64,
    len: u64,
    rng: Rng,
}

impl<'a> Data<'a> {
    /// The data checker for `[offset, offset + len)` of `bar`; discards that range
    /// when dropped (declare it before the mappings so they go first).
    pub fn new(fx: &'a Fixture, bar: &Bar, offset: u64, len: u64) -> Result<Self> {
        let regs = if fx.is_bigbar {
            Some(fx.regs()?)
        } else {
            diag("not bigbar's device: data checks skipped");
            None
        };
        let msix = msix_page(fx, bar);
        Ok(Data {
            regs,
            msix,
            bar: bar.index,
            offset,
            len,
            rng: Rng::new(fx.seed ^ offset.rotate_left(7) ^ u64::from(bar.index)),
        })
    }

    /// Device-filled tags read through `map` (which maps BAR offset `map_offset`
    /// at its start) at sampled words, then guest-written tags verified by the
    /// device. `map`'s pages should already be mapped (faults were counted).
    pub fn check(&mut self, map: &Mapping, map_offset: u64) -> Result<()> {
        self.check_window(map, 0, map_offset, map.len())
    }

    /// As [`Data::check`] for `len` bytes at byte `from` of `map`, which hold BAR
    /// offset `bar_offset`.
    pub fn check_window(
        &mut self,
        map: &Mapping,
        from: u64,
        bar_offset: u64,
        len: u64,
    ) -> Result<()> {
        if self.regs.is_none() || len == 0 {
            return Ok(());
        }
        if let Some(page) = self
            .msix
            .filter(|&p| bar_offset < p + PAGE && p < bar_offset + len)
        {
            // Check around the trapped MSI-X page.
            let head = page.saturating_sub(bar_offset);
            let tail_start = (page + PAGE).max(bar_offset);
            let tail = (bar_offset + len).saturating_sub(tail_start);
            self.check_window(map, from, bar_offset, head)?;
            return self.check_window(map, from + (tail_start - bar_offset), tail_start, tail);
        }
        let Some(regs) = &self.regs else {
            return Ok(());
        };
        let stride = (len / SAMPLES).max(PAGE).next_power_of_two();
        let words = len.div_ceil(stride);
        let args = |seed| Args {
            bar: self.bar,
            offset: bar_offset,
            length: (words - 1) * stride + 8,
            stride,
            seed,
        };
        let seed = self.rng.next();
        regs.run_ok(Command::Fill, &args(seed))?;
        let mut wrong = Vec::new();
        for k in 0..words {
            let at = k * stride;
            let want = tag(seed, self.bar, bar_offset + at);
            let got = map.read_u64(from + at);
            if got != want && wrong.len() < 4 {
                wrong.push(format!(
                    "BAR offset {:#x} (VA {:#x}): read {got:#018x}, device wrote {want:#018x}",
                    bar_offset + at,
                    map.start() + from + at
                ));
            }
        }
        if !wrong.is_empty() {
            bail!("reads through the mapping differ: {}", wrong.join("; "));
        }
        let seed2 = self.rng.next();
        for k in 0..words {
            let at = k * stride;
            map.write_u64(from + at, tag(seed2, self.bar, bar_offset + at));
        }
        let v = regs.verify(&args(seed2))?;
        ensure!(
            v.status == Status::Ok && v.mismatches == 0,
            "device found {} of {words} guest-written words wrong (first at BAR offset {:#x}: {:#018x})",
            v.mismatches,
            v.first_offset,
            v.first_value
        );
        Ok(())
    }
}

impl Drop for Data<'_> {
    fn drop(&mut self) {
        let Some(regs) = &self.regs else { return };
        if let Err(e) = regs.discard(self.bar, self.offset, self.len) {
            diag(&format!(
                "discarding BAR {} [{:#x}, +{:#x}) failed: {e:#}",
                self.bar, self.offset, self.len
            ));
        }
    }
}

/// A mapping of part of a BAR, touched once, with its plan.
pub struct Mapped<'a> {
    /// The BAR.
    pub bar: &'a Bar,
    /// Offset of the mapping in the BAR.
    pub offset: u64,
    /// The mapping.
    pub map: Mapping,
    /// How the kernel installs entries for it.
    pub behaviour: Behaviour,
    /// What the model predicted for it.
    pub plan: FaultPlan,
}

impl<'a> Mapped<'a> {
    /// The data checker of the whole mapping (see [`Data::new`]).
    pub fn data(&self, fx: &'a Fixture) -> Result<Data<'a>> {
        Data::new(fx, self.bar, self.offset, self.map.len())
    }
}

/// Maps `[offset, offset + len)` of `bar` 1 GiB congruent and checks the first
/// touch (`what` names it in the diagnostics).
pub fn mapped_at<'a>(
    fx: &Fixture,
    bar: &'a Bar,
    offset: u64,
    len: u64,
    what: &str,
) -> TestResult<Mapped<'a>> {
    let map = place(fx, bar, offset, len, model::PUD, 0)?;
    let behaviour = advise_huge(fx, &map)?;
    let plan = plan_of(bar, offset, &map, behaviour)?;
    expect_plan(&map, &plan, what)?;
    Ok(Mapped {
        bar,
        offset,
        map,
        behaviour,
        plan,
    })
}

/// Maps a range of the largest BAR holding every order it allows (PUD, PMD and
/// PTE on a BAR of 2 GiB or more, PMD and PTE otherwise), 1 GiB congruent, and
/// checks the first touch.
pub fn mapped_mixed(fx: &Fixture) -> TestResult<Mapped<'_>> {
    let bar = mixed_bar(fx)?;
    let (offset, len) = mixed_range(bar);
    mapped_at(fx, bar, offset, len, "first touch")
}

/// The BAR [`mapped_mixed`] uses: the largest, if any has room for 4 MiB.
pub fn mixed_bar(fx: &Fixture) -> TestResult<&Bar> {
    bar_of(fx, 4 * model::PMD)?;
    Ok(fx.largest_bar().context("no BAR")?)
}

/// The range [`mapped_mixed`] uses on `bar`.
pub fn mixed_range(bar: &Bar) -> (u64, u64) {
    use model::{PMD, PUD};
    if bar.size() >= 2 * PUD {
        (PUD - PMD - 2 * PAGE, PUD + 2 * PMD + 4 * PAGE)
    } else {
        (PMD - 2 * PAGE, 2 * PMD + 4 * PAGE)
    }
}

/// Maps, predicts, counts twice and checks the data: the core of f1/f5 cases.
pub fn run_case(
    fx: &Fixture,
    bar: &Bar,
    offset: u64,
    len: u64,
    modulus: u64,
    shift: u64,
) -> Result<()> {
    let mut data = Data::new(fx, bar, offset, len)?;
    let map = place(fx, bar, offset, len, modulus, shift)?;
    let plan = plan_of(bar, offset, &map, predicted(fx, &map)?)?;
    let what = format!(
        "BAR {} [{offset:#x}, +{len:#x}) at s ≡ phys + {shift:#x} (mod {modulus:#x})",
        bar.index
    );
    expect_plan(&map, &plan, &what)?;
    data.check(&map, offset)
}
