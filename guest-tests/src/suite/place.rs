//! A1, A2, A4, A5: where `mmap` without MAP_FIXED puts a BAR mapping, and the
//! capability verdict shared by all A tests.
//!
//! Whether the kernel implements offset-aware placement is detected, never
//! inferred from its version: a VFIO placement hook in kallsyms (a symbol with
//! `mapping_order` or `get_unmapped_area` in a vfio module; unless a
//! `mapping_order_policy` parameter says `off`) or, failing that, a
//! probe: [`PROBES`] mmap(NULL) calls of `[4 KiB, S - 8 KiB)` of the largest BAR
//! (a length that is no multiple of 2 MiB, so 6.12's THP accident does not apply,
//! and an end off any 2 MiB boundary, so a top-down search below an aligned free
//! top does not land congruent by accident) all landing at `s ≡ phys (mod 2 MiB)`.

use anyhow::Result;
use guest_tests::fixture::{Bar, Fixture};
use guest_tests::isolate::diag;
use guest_tests::mapping::{reserve_congruent, unmap_range, Mapping};
use guest_tests::model::{Orders, PAGE, PMD, PUD};
use guest_tests::placement::{Histogram, Request};
use guest_tests::stop::{Stop, TestResult};
use guest_tests::{bail, skip};
use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
use std::num::NonZeroUsize;

use super::Rng;

/// mmap(NULL) calls of the capability probe.
pub const PROBES: usize = 4;
/// mmap(NULL) calls per request of an A test.
const REPEATS: usize = 8;

/// Whether the kernel implements offset-aware placement, and how that was seen.
#[derive(Clone, Debug)]
pub struct Capability {
    /// It does.
    pub implements: bool,
    /// How the verdict was reached (for the diagnostics).
    pub how: String,
}

/// Detects the capability (see the module documentation).
pub fn capability(fx: &Fixture) -> Result<Capability> {
    if let Some(sym) = fx.caps.placement_symbols.first() {
        // A hook switched off at run time places like a kernel without it.
        let off = fx.caps.placement_policy.as_deref() == Some("off");
        let policy = match &fx.caps.placement_policy {
            Some(p) => format!(", /{} is `{p}`", guest_tests::kernel::PLACEMENT_POLICY),
            None => String::new(),
        };
        return Ok(Capability {
            implements: !off,
            how: format!("kallsyms has the VFIO placement hook {sym}{policy}"),
        });
    }
    let Some(bar) = fx.largest_bar().filter(|b| b.size() >= 2 * PMD) else {
        return Ok(Capability {
            implements: false,
            how: "no placement hook in kallsyms and no BAR of 4 MiB to probe".into(),
        });
    };
    // [4 KiB, S - 8 KiB): neither end on a 2 MiB boundary. A request ending on
    // one would be fooled by a top-down search below a 2 MiB-aligned free top:
    // `s = top - len` is then ≡ the offset by accident (seen on the stock build).
    let req = Request {
        bar_base: bar.phys(),
        bar_size: bar.size(),
        offset: PAGE,
        len: bar.size() - 3 * PAGE,
    };
    // All probes stay mapped until the count is made: an unmapped probe hands
    // its hole to the next, and four probes would then be one sample.
    let probes = (0..PROBES)
        .map(|_| Mapping::anywhere(fx.dev.file(), bar.region.offset + PAGE, req.len))
        .collect::<Result<Vec<_>, _>>()?;
    let hits = probes
        .iter()
        .filter(|m| m.start() % PMD == req.phys() % PMD)
        .count();
    Ok(Capability {
        implements: hits == PROBES,
        how: format!(
            "no placement hook in kallsyms; probe: {hits} of {PROBES} mmap(NULL) of BAR {} \
             [4 KiB, end - 8 KiB) landed 2 MiB-congruent",
            bar.index
        ),
    })
}

/// The verdict of an A test from its failed checks.
pub fn verdict(fx: &Fixture, failures: Vec<String>, measured: &Histogram) -> TestResult {
    diag(&format!("measured: {measured}"));
    if measured.total() == 0 && failures.is_empty() {
        // Nothing placed is nothing checked: not a pass.
        skip!("no request of this test fits a BAR of the device");
    }
    let cap = capability(fx)?;
    if failures.is_empty() {
        if cap.implements || fx.require_placement {
            return Ok(());
        }
        // Kept by accident (6.12's THP branch places some lengths 2 MiB
        // congruent): kselftest calls that an unexpected pass.
        return Err(Stop::Xpass(format!(
            "kernel without offset-aware placement, yet every placement keeps the \
             rule: measured {measured}; {}",
            cap.how
        )));
    }
    let summary = format!(
        "{} of the placements break the rule (first: {}); measured {measured}; {}",
        failures.len(),
        failures[0],
        cap.how
    );
    for f in failures.iter().take(8) {
        diag(f);
    }
    if cap.implements || fx.require_placement {
        bail!(
            "{summary}{}",
            if cap.implements {
                ""
            } else {
                " (--require-placement)"
            }
        );
    }
    Err(Stop::Xfail(format!(
        "kernel without offset-aware placement: {summary}"
    )))
}

/// Maps `req` with mmap(NULL) [`REPEATS`] times (all at once, so the kernel
/// cannot hand back the same hole) and checks each address.
fn sample(
    fx: &Fixture,
    bar: &Bar,
    req: &Request,
    h: &mut Histogram,
    failures: &mut Vec<String>,
) -> Result<()> {
    let mut maps = Vec::new();
    for _ in 0..REPEATS {
        let map = Mapping::anywhere(fx.dev.file(), bar.region.offset + req.offset, req.len)?;
        let s = map.start();
        h.add(req.congruence(s));
        if !req.placement_ok(Orders::ALL_HUGE, s) {
            let b = req.required_block(Orders::ALL_HUGE).unwrap_or(PAGE);
            failures.push(format!(
                "BAR {} [{:#x}, +{:#x}): s = {s:#x}, s mod {b:#x} = {:#x}, phys mod {b:#x} = {:#x}",
                bar.index,
                req.offset,
                req.len,
                s % b,
                req.phys() % b
            ));
        }
        maps.push(map);
    }
    Ok(())
}

fn request(bar: &Bar, offset: u64, len: u64) -> Request {
    Request {
        bar_base: bar.phys(),
        bar_size: bar.size(),
        offset,
        len,
    }
}

/// a1.whole_bar: a whole BAR is placed so that its largest usable block maps
/// huge (`s ≡ phys (mod min(S, 1 GiB))`, functionally: modulo the largest block
/// that fits).
pub fn whole_bar(fx: &Fixture) -> TestResult {
    let mut h = Histogram::default();
    let mut failures = Vec::new();
    for bar in fx.mappable_bars() {
        let mut one = Histogram::default();
        sample(
            fx,
            bar,
            &request(bar, 0, bar.size()),
            &mut one,
            &mut failures,
        )?;
        diag(&format!(
            "BAR {} (size {:#x}): {one}",
            bar.index,
            bar.size()
        ));
        h.merge(&one);
    }
    verdict(fx, failures, &h)
}

/// a2.offset_ranges: partial ranges at offsets (aligned and not, lengths that are
/// and are not multiples of 2 MiB / 1 GiB, plus seeded draws) are placed
/// congruent to their physical address.
pub fn offset_ranges(fx: &Fixture) -> TestResult {
    let mut rng = Rng::new(fx.seed ^ 0xa2);
    let mut h = Histogram::default();
    let mut failures = Vec::new();
    for bar in fx.mappable_bars() {
        let size = bar.size();
        let mut reqs: Vec<(u64, u64)> = vec![
            (PAGE, size - PAGE),
            (PMD + PAGE, 4 * PMD),
            (PMD, 3 * PMD),
            (3 * PMD / 2, 2 * PMD + 5 * PAGE),
            (PUD - PAGE, PUD + 2 * PAGE),
            (PUD + PMD, PUD),
        ];
        for _ in 0..2 {
            let off = rng.below(size / PAGE) * PAGE;
            let len = (1 + rng.below((size - off) / PAGE)) * PAGE;
            reqs.push((off, len));
        }
        let mut one = Histogram::default();
        for (off, len) in reqs.into_iter().filter(|(o, l)| o + l <= size) {
            let req = request(bar, off, len);
            if req.required_block(Orders::ALL_HUGE).is_none() {
                continue;
            }
            sample(fx, bar, &req, &mut one, &mut failures)?;
        }
        diag(&format!("BAR {}: {one}", bar.index));
        h.merge(&one);
    }
    verdict(fx, failures, &h)
}

/// Fills every free gap of the address space with PROT_NONE reservations, from
/// the largest size down; returns them (address, length) for release.
fn fill_address_space(out: &mut Vec<(u64, u64)>) {
    let mut size: u64 = 1 << 46;
    while size >= PAGE {
        let Some(n) = NonZeroUsize::new(size as usize) else {
            break;
        };
        // SAFETY: a new anonymous PROT_NONE reservation replaces nothing.
        let r = unsafe {
            mmap_anonymous(
                None,
                n,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        };
        match r {
            Ok(p) if out.len() < out.capacity() => out.push((p.as_ptr() as u64, size)),
            Ok(p) => {
                // No room to record it: give it back and stop filling.
                // SAFETY: just mapped by us.
                let _ = unsafe { nix::sys::mman::munmap(p, size as usize) };
                return;
            }
            Err(_) => size /= 2,
        }
    }
}

/// a4.fallback_fragmented: with the address space full except one exact-size
/// hole at a misaligned address, mmap(NULL) of a BAR must still succeed there
/// (placement is best effort, never a reason to fail).
pub fn fallback_fragmented(fx: &Fixture) -> TestResult {
    let Some(bar) = fx.mappable_bars().into_iter().find(|b| b.size() >= 2 * PMD) else {
        skip!("needs a BAR of at least 4 MiB");
    };
    let len = bar.size().min(PUD);
    let phys = bar.phys();
    // A hole with the wrong residue for every block size.
    let hole = reserve_congruent(len, PUD, (phys + PMD + PAGE) % PUD)?;
    let mut fillers: Vec<(u64, u64)> = Vec::with_capacity(4096);
    fill_address_space(&mut fillers);
    // SAFETY: the hole is our own reservation, unused.
    unsafe { unmap_range(hole, len) }?;
    // Nothing below allocates until the fillers are released.
    let got = Mapping::anywhere(fx.dev.file(), bar.region.offset, len);
    let got = got.map(|m| m.into_raw());
    for &(a, l) in &fillers {
        // SAFETY: our own reservations.
        let _ = unsafe { unmap_range(a, l) };
    }
    diag(&format!(
        "{} reservations filled the address space",
        fillers.len()
    ));
    let (start, mapped_len) = match got {
        Ok(r) => r,
        Err(e) => bail!(
            "mmap(NULL) of BAR {} [0, {len:#x}) with only a misaligned hole left: {e}",
            bar.index
        ),
    };
    // SAFETY: the mapping we just took over.
    let _map = unsafe { Mapping::from_raw(start, mapped_len, bar.region.offset) }?;
    if start != hole {
        bail!("mapped at {start:#x}, not in the only hole {hole:#x}: the fill left other room");
    }
    diag(&format!("mapped in the misaligned hole at {hole:#x}"));
    Ok(())
}

/// a5.free_hint_kept: a free, page-aligned hint without MAP_FIXED is returned
/// unchanged, even when it is not congruent to the physical address.
pub fn free_hint_kept(fx: &Fixture) -> TestResult {
    let mut problems = Vec::new();
    let mut n = 0;
    for bar in fx.mappable_bars() {
        for shift in [0, PAGE, PMD + PAGE] {
            let len = bar.size().min(PUD);
            let hint = reserve_congruent(len, PUD, (bar.phys() + shift) % PUD)?;
            // SAFETY: our own reservation, released so the hint is free.
            unsafe { unmap_range(hint, len) }?;
            let r = Mapping::with_flags(
                fx.dev.file(),
                bar.region.offset,
                len,
                Some(hint),
                MapFlags::MAP_SHARED,
            );
            n += 1;
            match r {
                Ok(m) if m.start() == hint => {}
                Ok(m) => problems.push(format!(
                    "BAR {} hint {hint:#x} (phys + {shift:#x}): mapped at {:#x}",
                    bar.index,
                    m.start()
                )),
                Err(e) => problems.push(format!("BAR {} hint {hint:#x}: {e}", bar.index)),
            }
        }
    }
    if n == 0 {
        skip!("the device has no mmap-able BAR");
    }
    diag(&format!("{n} hinted mappings"));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("free hints not kept: {}", problems.join("; "))
    }
}
