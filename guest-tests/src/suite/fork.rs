//! F7: fork copies the page tables of a BAR mapping (huge entries included),
//! MADV_DONTFORK hides it from the child, and the madvise calls that would
//! drop or populate pages are refused.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::time::Duration;

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::{self, diag, End, RecordKind};
use guest_tests::kernel::MADVISE;
use guest_tests::mapping::MapError;
use guest_tests::model::PAGE;
use guest_tests::stop::{skip_if, TestResult};
use guest_tests::{bail, ensure};
use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, MapFlags, MmapAdvise, ProtFlags};

use super::check::{mapped_mixed, touch_plan, Mapped};

/// Deadline of a forked child of a test.
const CHILD: Duration = Duration::from_secs(120);

/// Runs `body` in a forked child and fails unless it exits 0; its diagnostics
/// and message become ours.
fn in_child(what: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    let f = isolate::run(CHILD, || match body() {
        Ok(()) => 0,
        Err(e) => {
            isolate::message(&format!("{e:#}"));
            1
        }
    })?;
    let mut message = Vec::new();
    for r in &f.records {
        match r.kind {
            RecordKind::Diag => diag(&format!("{what}: {}", r.text)),
            RecordKind::Message => message.push(r.text.clone()),
        }
    }
    match f.end {
        End::Exited(0) => Ok(()),
        other => bail!("{what}: ended {other:?}: {}", message.join("; ")),
    }
}

/// f7.fork_copies_entries: a child touching the whole parent-mapped range takes
/// no fault (huge entries included) and reads what the device holds; on a
/// kernel without huge pfnmap (6.1) it takes the one whole-VMA fault.
pub fn fork_copies_entries(fx: &Fixture) -> TestResult {
    let m = mapped_mixed(fx)?;
    let mut data = m.data(fx)?;
    let Mapped {
        offset, map, plan, ..
    } = m;
    // 6.1's `vfio_pci_mmap_open` zaps the child's copy so that its VMA gets
    // tracked: the child then remaps it with one fault (RemapWholeVma).
    let want = u64::from(!fx.caps.huge_pfnmap());
    in_child("child", || {
        let got = touch_plan(&map, &plan)?;
        diag(&format!(
            "touching the inherited mapping took {got} faults (expected {want})"
        ));
        ensure!(got == want, "the child took {got} faults, expected {want}");
        Ok(())
    })?;
    data.check(&map, offset)?;
    Ok(())
}

/// Whether `[start, start + len)` is free in this process: a MAP_FIXED_NOREPLACE
/// mapping of its first page succeeds.
fn is_free(start: u64) -> Result<bool> {
    let at = NonZeroUsize::new(start as usize);
    let one = NonZeroUsize::new(PAGE as usize).context("page")?;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let r = unsafe {
        mmap_anonymous(
            at,
            one,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    };
    match r {
        Ok(p) => {
            // SAFETY: the page we just mapped.
            unsafe { nix::sys::mman::munmap(p, PAGE as usize) }.context("munmap probe")?;
            Ok(p.as_ptr() as u64 == start)
        }
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e).context("MAP_FIXED_NOREPLACE probe"),
    }
}

/// f7.dontfork_hides_vma: after MADV_DONTFORK the child has no mapping there;
/// MADV_DOFORK cannot undo it on a VM_IO/VM_PFNMAP mapping (EINVAL).
pub fn dontfork_hides_vma(fx: &Fixture) -> TestResult {
    skip_if(fx.caps.need(&MADVISE))?;
    let m = mapped_mixed(fx)?;
    let mut data = m.data(fx)?;
    let Mapped { offset, map, .. } = m;
    map.advise(MmapAdvise::MADV_DONTFORK)?;
    let start = map.start();
    in_child("child after MADV_DONTFORK", || {
        ensure!(
            is_free(start)?,
            "the child still has a mapping at {start:#x}"
        );
        Ok(())
    })?;
    let r = map.advise(MmapAdvise::MADV_DOFORK);
    ensure!(
        matches!(
            &r,
            Err(MapError::Sys {
                source: Errno::EINVAL,
                ..
            })
        ),
        "MADV_DOFORK on a BAR mapping: expected EINVAL (VM_SPECIAL), got {r:?}"
    );
    in_child("child after the refused MADV_DOFORK", || {
        ensure!(is_free(start)?, "the child has a mapping at {start:#x}");
        Ok(())
    })?;
    data.check(&map, offset)?;
    Ok(())
}

/// Advice that must be refused with EINVAL on a BAR mapping (docs/RULES.md F7).
const REFUSED: [(&str, i32); 6] = [
    ("MADV_DONTNEED", libc::MADV_DONTNEED),
    ("MADV_FREE", libc::MADV_FREE),
    ("MADV_COLD", libc::MADV_COLD),
    ("MADV_PAGEOUT", libc::MADV_PAGEOUT),
    ("MADV_POPULATE_READ", libc::MADV_POPULATE_READ),
    ("MADV_POPULATE_WRITE", libc::MADV_POPULATE_WRITE),
];

/// f7.madvise_refused: DONTNEED, FREE, COLD, PAGEOUT and POPULATE_* fail with
/// EINVAL and leave the installed entries alone.
pub fn madvise_refused(fx: &Fixture) -> TestResult {
    skip_if(fx.caps.need(&MADVISE))?;
    let m = mapped_mixed(fx)?;
    let mut data = m.data(fx)?;
    let Mapped {
        offset, map, plan, ..
    } = m;
    let p = NonNull::new(map.as_ptr().cast::<c_void>()).context("null")?;
    let mut wrong = Vec::new();
    for (name, advice) in REFUSED {
        // SAFETY: advice on our own mapping; a refused call changes nothing and
        // an accepted one at worst unmaps pages we only touch through `map`.
        let r = unsafe { libc::madvise(p.as_ptr(), map.len() as usize, advice) };
        let e = Errno::last();
        if r != -1 || e != Errno::EINVAL {
            wrong.push(format!("{name}: returned {r} ({e})"));
        }
    }
    ensure!(wrong.is_empty(), "expected EINVAL: {}", wrong.join("; "));
    let got = touch_plan(&map, &plan)?;
    ensure!(got == 0, "the refused advice cost {got} faults afterwards");
    data.check(&map, offset)?;
    Ok(())
}
