//! Counting the minor faults taken while touching every 4 KiB page of a range.
//!
//! `getrusage(RUSAGE_THREAD)` reads the thread's `min_flt`, which the kernel bumps
//! once per `handle_mm_fault` that maps something, whatever the order installed
//! (docs/RULES.md, "Observing the order"). The touching code must take no faults of
//! its own: the whole measurement is made once over a stack buffer first, which
//! brings its code and stack pages in before the counted pass.

use std::hint::black_box;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};

use crate::model::PAGE;

/// Minor faults of the calling thread so far.
pub fn minor_faults() -> Result<u64, Errno> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD)?;
    Ok(u64::try_from(usage.minor_page_faults()).unwrap_or(0))
}

/// Reads the first word of every 4 KiB page of `[start, start + len)`.
///
/// # Safety
/// The whole range must be mapped readable (a BAR mapping counts), page aligned.
#[inline(never)]
pub unsafe fn touch_pages(start: *const u8, len: u64) -> u64 {
    let mut acc = 0u64;
    let mut off = 0u64;
    while off < len {
        let word = start.wrapping_add(off as usize).cast::<u64>();
        // SAFETY: the caller guarantees [start, start + len) is mapped and readable;
        // `off < len` keeps the 8-byte read inside it (len is page aligned).
        acc ^= unsafe { word.read_volatile() };
        off += PAGE;
    }
    acc
}

/// Runs `touch(base, arg)` between two readings of the fault counter and returns
/// the faults in between.
///
/// Everything that runs inside the window must have run before in this process,
/// or the first execution of a code page of the binary costs a minor fault of its
/// own (CI once counted one fault too many that way; a forked test child starts
/// with none of the text mapped). So each measurement is first made once over a
/// stack page ([`warm`]): the same monomorphised `measure`, the same `touch`.
///
/// # Safety
/// `touch(base, arg)` must be safe to call.
#[inline(never)]
unsafe fn measure<A: Copy>(
    touch: unsafe fn(*const u8, A) -> u64,
    base: *const u8,
    arg: A,
) -> Result<u64, Errno> {
    // SAFETY: forwarded from the caller.
    unsafe { measure_timed(touch, base, arg) }.map(|t| t.faults)
}

/// What one counted touch took, and when it ran.
#[derive(Clone, Copy, Debug)]
pub struct TimedTouch {
    /// Minor faults taken.
    pub faults: u64,
    /// Just before the touch (after the counter's first reading).
    pub started: Instant,
    /// Just after it (before the second reading).
    pub ended: Instant,
}

/// [`measure`], with the clock read right around the touch. The clock (the
/// vDSO) is read in the warm-up too, so reading it costs no fault here.
///
/// # Safety
/// As for [`measure`].
#[inline(never)]
unsafe fn measure_timed<A: Copy>(
    touch: unsafe fn(*const u8, A) -> u64,
    base: *const u8,
    arg: A,
) -> Result<TimedTouch, Errno> {
    let before = minor_faults()?;
    let started = Instant::now();
    // SAFETY: forwarded from the caller.
    black_box(unsafe { touch(black_box(base), black_box(arg)) });
    let ended = Instant::now();
    let after = minor_faults()?;
    Ok(TimedTouch {
        faults: after.saturating_sub(before),
        started,
        ended,
    })
}

/// Makes `measure(touch, page, arg)` once over a whole page of a stack buffer,
/// deeper in the stack than the real measurement will run.
///
/// # Safety
/// `touch(page, arg)` must only read the page it is given.
unsafe fn warm<A: Copy>(touch: unsafe fn(*const u8, A) -> u64, arg: A) -> Result<(), Errno> {
    let buf = [0u64; 1024];
    let buf = black_box(&buf);
    let first = (buf.as_ptr() as u64).next_multiple_of(PAGE);
    // 8 KiB of buffer always holds one whole page at `first`.
    // SAFETY: the caller's `touch` only reads that page, which lies inside `buf`.
    unsafe { measure(touch, first as *const u8, arg) }.map(drop)
}

/// Touches every page of `[start, start + len)` once and returns the minor faults
/// that cost.
///
/// # Safety
/// As for [`touch_pages`].
pub unsafe fn count_touch_faults(start: *const u8, len: u64) -> Result<u64, Errno> {
    // SAFETY: `touch_pages` over one page reads only that page.
    unsafe { warm(touch_pages, PAGE) }?;
    // SAFETY: forwarded from the caller.
    unsafe { measure(touch_pages, start, len) }
}

/// Reads the first word of the page at each of `offsets` from `base`, in order.
///
/// # Safety
/// Every `base + offset` must be the start of a mapped readable page.
#[inline(never)]
pub unsafe fn touch_offsets(base: *const u8, offsets: &[u64]) -> u64 {
    let mut acc = 0u64;
    for &off in offsets {
        let word = base.wrapping_add(off as usize).cast::<u64>();
        // SAFETY: the caller guarantees the page at `off` is mapped and readable.
        acc ^= unsafe { word.read_volatile() };
    }
    acc
}

/// Touches the pages at `offsets` from `base` once each, in order, and returns
/// the minor faults that cost. `offsets` must already be in memory (a slice the
/// caller built before), so reading it costs no fault.
///
/// # Safety
/// As for [`touch_offsets`].
pub unsafe fn count_offset_faults(base: *const u8, offsets: &[u64]) -> Result<u64, Errno> {
    // SAFETY: `touch_offsets` at offset 0 reads only the page it is given.
    unsafe { warm(touch_offsets, &[0][..]) }?;
    black_box(offsets.iter().sum::<u64>());
    // SAFETY: forwarded from the caller.
    unsafe { measure(touch_offsets, base, offsets) }
}

/// [`count_offset_faults`], calling `ready` after the warm-up and right before
/// the counted touch (e.g. to meet another thread), and timing the touch.
///
/// # Safety
/// As for [`touch_offsets`].
pub unsafe fn count_offset_faults_timed(
    base: *const u8,
    offsets: &[u64],
    ready: impl FnOnce(),
) -> Result<TimedTouch, Errno> {
    // SAFETY: `touch_offsets` at offset 0 reads only the page it is given.
    unsafe { warm(touch_offsets, &[0][..]) }?;
    black_box(offsets.iter().sum::<u64>());
    ready();
    // SAFETY: forwarded from the caller.
    unsafe { measure_timed(touch_offsets, base, offsets) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::mman::{madvise, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};
    use std::num::NonZeroUsize;

    #[test]
    fn anonymous_pages_cost_one_fault_each_then_none() {
        // Anonymous private memory without THP maps one page per read fault (the
        // zero page), so the counter must see exactly one fault per page.
        let pages = 64u64;
        let len = NonZeroUsize::new((pages * PAGE) as usize).unwrap();
        // SAFETY: a fresh anonymous mapping replaces nothing.
        let p = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE) }
            .unwrap();
        // SAFETY: advice on our own fresh mapping.
        unsafe { madvise(p, len.get(), MmapAdvise::MADV_NOHUGEPAGE) }.unwrap();
        let start = p.as_ptr() as *const u8;
        // SAFETY: the mapping is readable and `len` long.
        let first = unsafe { count_touch_faults(start, pages * PAGE) }.unwrap();
        // SAFETY: as above.
        let second = unsafe { count_touch_faults(start, pages * PAGE) }.unwrap();
        // SAFETY: our mapping, unused afterwards.
        unsafe { munmap(p, len.get()) }.unwrap();
        assert_eq!((first, second), (pages, 0));
    }

    #[test]
    fn offsets_cost_one_fault_per_new_page() {
        let pages = 16u64;
        let len = NonZeroUsize::new((pages * PAGE) as usize).unwrap();
        // SAFETY: a fresh anonymous mapping replaces nothing.
        let p = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE) }
            .unwrap();
        // SAFETY: advice on our own fresh mapping.
        unsafe { madvise(p, len.get(), MmapAdvise::MADV_NOHUGEPAGE) }.unwrap();
        let base = p.as_ptr() as *const u8;
        let offsets = [0, 3 * PAGE, 3 * PAGE, 15 * PAGE];
        // SAFETY: every offset is a page of the readable mapping.
        let got = unsafe { count_offset_faults(base, &offsets) }.unwrap();
        // SAFETY: our mapping, unused afterwards.
        unsafe { munmap(p, len.get()) }.unwrap();
        assert_eq!(got, 3);
    }
}
