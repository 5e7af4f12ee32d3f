//! F6 and F8: splitting a huge-mapped range (munmap, mprotect, mremap of a
//! part) and moving it (mremap). The model in `remap` predicts which entries
//! survive and what touching the result costs.

use std::ffi::c_void;
use std::ptr::NonNull;

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::mapping::{reserve_congruent, unmap_range, Mapping};
use guest_tests::model::{self, FaultPlan, Placement, PAGE, PMD, PUD};
use guest_tests::remap::{self, Entry};
use guest_tests::stop::{Stop, TestResult};
use guest_tests::{ensure, skip};
use nix::errno::Errno;
use nix::sys::mman::{mprotect, mremap, MRemapFlags, ProtFlags};

use super::check::{bar_of, expect_refaults, mapped_at, need_huge, touch_plan, Data, Mapped};

/// How a part of the mapping is cut off or changed.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// munmap `[from, to)` (relative to the VMA start).
    Munmap(u64, u64),
    /// mprotect `[from, to)` read-only.
    Protect(u64, u64),
    /// mremap to a smaller length.
    Shrink(u64),
}

/// Maps `[offset, offset + len)` of the smallest BAR of at least `need` bytes,
/// congruent modulo 1 GiB, and touches it.
fn mapped(fx: &Fixture, need: u64, offset: u64, len: u64) -> TestResult<Mapped<'_>> {
    need_huge(fx)?;
    let bar = bar_of(fx, need)?;
    mapped_at(fx, bar, offset, len, "before the split")
}

fn placement_part(m: &Mapped, from: u64, to: u64) -> Placement {
    Placement {
        bar_base: m.bar.phys(),
        bar_size: m.bar.size(),
        offset: m.offset + from,
        start: m.map.start() + from,
        len: to - from,
    }
}

/// Applies `cut` and checks that touching what remains costs what the model
/// says; then checks the data of the remaining parts.
fn split(fx: &Fixture, need: u64, offset: u64, len: u64, cut: Cut) -> TestResult {
    let m = mapped(fx, need, offset, len)?;
    let mut data = Data::new(fx, m.bar, offset, len)?;
    let s = m.map.start();
    // The VMAs that remain (relative ranges) and the new boundaries.
    let (parts, cuts): (Vec<(u64, u64)>, Vec<u64>) = match cut {
        Cut::Munmap(a, b) => {
            // SAFETY: [s + a, s + b) is part of our own mapping; nothing uses it after.
            unsafe { unmap_range(s + a, b - a) }?;
            let parts = [(0, a), (b, len)]
                .into_iter()
                .filter(|(x, y)| x < y)
                .collect();
            (parts, vec![s + a, s + b])
        }
        Cut::Protect(a, b) => {
            let p = NonNull::new((s + a) as *mut c_void).context("null")?;
            // SAFETY: the range is part of our own mapping; read-only is only
            // read afterwards (until restored below).
            unsafe { mprotect(p, (b - a) as usize, ProtFlags::PROT_READ) }.context("mprotect")?;
            (vec![(0, a), (a, b), (b, len)], vec![s + a, s + b])
        }
        Cut::Shrink(to) => {
            let p = NonNull::new(s as *mut c_void).context("null")?;
            // SAFETY: shrinking in place keeps the start; the tail is ours.
            let q = unsafe { mremap(p, len as usize, to as usize, MRemapFlags::empty(), None) }
                .context("mremap shrink")?;
            ensure!(q.as_ptr() as u64 == s, "shrinking mremap moved the mapping");
            (vec![(0, to)], vec![s + to])
        }
    };
    let survivors = remap::after_split(&remap::entries(&m.plan), &cuts);
    let fresh: Vec<FaultPlan> = parts
        .iter()
        .map(|&(a, b)| model::plan(&placement_part(&m, a, b), m.behaviour))
        .collect::<Result<_, _>>()?;
    expect_refaults(&m.map, &fresh, &survivors, &format!("{cut:?}"))?;
    if let Cut::Protect(a, b) = cut {
        let p = NonNull::new((s + a) as *mut c_void).context("null")?;
        // SAFETY: restoring the original protection of our own mapping.
        unsafe {
            mprotect(
                p,
                (b - a) as usize,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            )
        }
        .context("mprotect back")?;
    }
    for &(a, b) in &parts {
        data.check_window(&m.map, a, offset + a, b - a)?;
    }
    Ok(())
}

/// f6.munmap_pmd_cut: munmap of the last 3 MiB of 8 MiB of PMDs clears the PMD
/// holding the cut; only its remaining half refaults, at 4 KiB.
pub fn munmap_pmd_cut(fx: &Fixture) -> TestResult {
    split(fx, 4 * PMD, 0, 4 * PMD, Cut::Munmap(5 * PMD / 2, 4 * PMD))
}

/// f6.mprotect_pmd_cut: mprotect of `[3 MiB, 5 MiB)` clears the two PMDs it cuts.
pub fn mprotect_pmd_cut(fx: &Fixture) -> TestResult {
    split(
        fx,
        4 * PMD,
        0,
        4 * PMD,
        Cut::Protect(3 * PMD / 2, 5 * PMD / 2),
    )
}

/// f6.mremap_shrink_cut: shrinking mremap to 5 MiB clears the PMD at the new end.
pub fn mremap_shrink_cut(fx: &Fixture) -> TestResult {
    split(fx, 4 * PMD, 0, 4 * PMD, Cut::Shrink(5 * PMD / 2))
}

/// f6.munmap_pud_pmd_boundary: munmap of the last 2 MiB of a PUD clears it; the
/// rest refaults as 511 PMDs.
pub fn munmap_pud_pmd_boundary(fx: &Fixture) -> TestResult {
    split(fx, PUD, 0, PUD, Cut::Munmap(PUD - PMD, PUD))
}

/// f6.mprotect_pud_pmd_boundary: mprotect of `[2 MiB, 4 MiB)` of a PUD.
pub fn mprotect_pud_pmd_boundary(fx: &Fixture) -> TestResult {
    split(fx, PUD, 0, PUD, Cut::Protect(PMD, 2 * PMD))
}

/// The reason of a risky test's skip under `--no-risky`.
const NO_RISKY: &str = "risky test switched off (--no-risky)";

/// Skips a risky test when they are switched off, or when an earlier risky
/// test of this run never came back (its marker is still there): the kernel is
/// then no longer trustworthy.
fn risky_off(fx: &Fixture) -> TestResult {
    if !fx.risky {
        return Err(Stop::Skip(NO_RISKY.into()));
    }
    let marker = risky_marker();
    if let Ok(name) = std::fs::read_to_string(&marker) {
        skip!(
            "the earlier risky test {name} did not come back (kernel oops?); the kernel state is \
             no longer trustworthy"
        );
    }
    Ok(())
}

/// The marker a risky test leaves while it runs; named after the harness
/// process (this test's parent), so that it belongs to one run.
fn risky_marker() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("bigbar-risky-{}", nix::unistd::getppid()))
}

/// Runs a risky body with the marker set; removes it if the body returns.
fn risky(name: &str, body: impl FnOnce() -> TestResult) -> TestResult {
    let marker = risky_marker();
    std::fs::write(&marker, name).context("writing the risky-test marker")?;
    let r = body();
    let _ = std::fs::remove_file(&marker);
    r
}

/// f6.munmap_pud_unaligned (risky, runs last): munmap of the last 1 MiB of a
/// PUD-mapped GiB. The VMA split looks for a PMD at the cut, and 7.2's
/// `mm_find_pmd` does not stop at a leaf PUD: it may walk device memory as a
/// page table. Expected if the kernel survives: 511 PMDs + 256 PTEs refault.
pub fn munmap_pud_unaligned(fx: &Fixture) -> TestResult {
    risky_off(fx)?;
    risky("f6.munmap_pud_unaligned", || {
        split(fx, PUD, 0, PUD, Cut::Munmap(PUD - PMD / 2, PUD))
    })
}

/// f6.mprotect_pud_unaligned (risky, after the munmap one): mprotect of
/// [1 MiB, 1 GiB - 1 MiB) of a PUD-mapped GiB: two VMA splits inside the PUD at
/// addresses that are not 2 MiB aligned, the path of f6.munmap_pud_unaligned
/// (`vma_adjust_trans_huge`) through mprotect. Expected: the PUD is cleared and
/// the three parts refault at their own orders, data intact.
pub fn mprotect_pud_unaligned(fx: &Fixture) -> TestResult {
    risky_off(fx)?;
    risky("f6.mprotect_pud_unaligned", || {
        split(fx, PUD, 0, PUD, Cut::Protect(PMD / 2, PUD - PMD / 2))
    })
}

/// f6.mremap_shrink_pud_unaligned (risky, after the munmap one): mremap shrinking
/// a PUD-mapped GiB to 1 GiB - 1 MiB, the same split through mremap. Expected:
/// 511 PMDs + 256 PTEs refault.
pub fn mremap_shrink_pud_unaligned(fx: &Fixture) -> TestResult {
    risky_off(fx)?;
    risky("f6.mremap_shrink_pud_unaligned", || {
        split(fx, PUD, 0, PUD, Cut::Shrink(PUD - PMD / 2))
    })
}

/// f8.mremap_grow_fails: growing a BAR mapping fails with EFAULT (VM_PFNMAP and
/// VM_DONTEXPAND), in place or moving, and leaves it intact.
pub fn mremap_grow_fails(fx: &Fixture) -> TestResult {
    // Needs no huge pfnmap: VM_PFNMAP alone refuses growth.
    let bar = bar_of(fx, 4 * PMD)?;
    let m = mapped_at(fx, bar, 0, 2 * PMD, "before mremap")?;
    let p = NonNull::new(m.map.start() as *mut c_void).context("null")?;
    for flags in [MRemapFlags::empty(), MRemapFlags::MREMAP_MAYMOVE] {
        // SAFETY: a failing mremap changes nothing; a succeeding one is a finding,
        // and the mapping is then released by the process exit.
        let r = unsafe { mremap(p, m.map.len() as usize, (3 * PMD) as usize, flags, None) };
        ensure!(
            r == Err(Errno::EFAULT),
            "growing mremap ({flags:?}) returned {r:?}, expected EFAULT"
        );
    }
    let again = touch_plan(&m.map, &m.plan)?;
    ensure!(
        again == 0,
        "the mapping took {again} faults after the refused mremaps"
    );
    Ok(())
}

/// f8.mremap_shrink_keeps: shrinking at a 2 MiB boundary keeps every remaining
/// entry (no refault).
pub fn mremap_shrink_keeps(fx: &Fixture) -> TestResult {
    split(fx, 4 * PMD, 0, 4 * PMD, Cut::Shrink(3 * PMD))
}

/// Moves the touched mapping by `delta` (to a reserved address) and checks the
/// refaults against the model.
fn moved(
    fx: &Fixture,
    need: u64,
    offset: u64,
    len: u64,
    delta_mod: u64,
    delta_rem: u64,
) -> TestResult {
    let m = mapped(fx, need, offset, len)?;
    let mut data = Data::new(fx, m.bar, offset, len)?;
    let s = m.map.start();
    let before = remap::entries(&m.plan);
    let target = reserve_congruent(len, delta_mod, (s + delta_rem) % delta_mod)?;
    let delta = target.wrapping_sub(s) as i64;
    if remap::move_splits_pud(&before, delta) && !fx.risky {
        // SAFETY: the reservation is ours and unused.
        unsafe { unmap_range(target, len) }?;
        return Err(Stop::Skip(NO_RISKY.into()));
    }
    let p = NonNull::new(s as *mut c_void).context("null")?;
    let t = NonNull::new(target as *mut c_void);
    let file_offset = m.bar.region.offset + m.offset;
    let (bar, behaviour) = (m.bar, m.behaviour);
    let (start, _) = m.map.into_raw();
    // SAFETY: moves our own mapping over our own reservation (MREMAP_FIXED).
    let q = unsafe {
        mremap(
            p,
            len as usize,
            len as usize,
            MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED,
            t,
        )
    };
    let q = match q {
        Ok(q) => q,
        Err(e) => {
            // SAFETY: the old range is ours.
            unsafe { unmap_range(start, len) }?;
            // SAFETY: the reservation is ours.
            unsafe { unmap_range(target, len) }?;
            Err(e).context("mremap move")?
        }
    };
    ensure!(
        q.as_ptr() as u64 == target,
        "mremap moved to {:p}, asked {target:#x}",
        q.as_ptr()
    );
    // SAFETY: the moved mapping is ours alone.
    let map = unsafe { Mapping::from_raw(target, len, file_offset) }?;
    let survivors: Vec<Entry> = remap::after_move(&before, delta);
    let fresh = model::plan(
        &Placement {
            bar_base: bar.phys(),
            bar_size: bar.size(),
            offset,
            start: target,
            len,
        },
        behaviour,
    )?;
    expect_refaults(
        &map,
        std::slice::from_ref(&fresh),
        &survivors,
        &format!("moved {len:#x} bytes by {delta:#x} (fresh plan {fresh})"),
    )?;
    data.check(&map, offset)?;
    Ok(())
}

/// f8.mremap_move_congruent: moving PMD and PTE entries by a multiple of
/// 2 MiB keeps all of them: no fault afterwards.
pub fn mremap_move_congruent(fx: &Fixture) -> TestResult {
    let (offset, len) = (PMD - 2 * PAGE, 2 * PMD + 4 * PAGE);
    moved(fx, offset + len, offset, len, PMD, 0)
}

/// f8.mremap_move_pud_congruent: moving a PUD entry (with PMD and PTE
/// neighbours) by a multiple of 1 GiB keeps it: no fault afterwards. (7.2's
/// `get_old_pud` treats the leaf PUD as a bad table entry, logs "bad pud" and
/// drops it: the PUD refaults. A kernel finding, reported as a failure.)
pub fn mremap_move_pud_congruent(fx: &Fixture) -> TestResult {
    let (offset, len) = (PUD - PMD - 2 * PAGE, PUD + 2 * PMD + 4 * PAGE);
    moved(fx, offset + len, offset, len, PUD, 0)
}

/// f8.mremap_move_pmd_congruent: PMDs moved by 2 MiB modulo 1 GiB are kept.
pub fn mremap_move_pmd_congruent(fx: &Fixture) -> TestResult {
    moved(fx, 4 * PMD, 0, 4 * PMD, PUD, PMD)
}

/// f8.mremap_move_incongruent: PMDs moved by 4 KiB modulo 2 MiB are split; the
/// moved range refaults at 4 KiB.
pub fn mremap_move_incongruent(fx: &Fixture) -> TestResult {
    moved(fx, 4 * PMD, 0, 2 * PMD, PMD, PAGE)
}

/// f8.mremap_move_pud_incongruent (risky, runs last): a PUD moved by 2 MiB
/// modulo 1 GiB; 7.2's move_page_tables then looks up a PMD under the leaf PUD.
pub fn mremap_move_pud_incongruent(fx: &Fixture) -> TestResult {
    risky_off(fx)?;
    risky("f8.mremap_move_pud_incongruent", || {
        moved(fx, PUD, 0, PUD, PUD, PMD)
    })
}
