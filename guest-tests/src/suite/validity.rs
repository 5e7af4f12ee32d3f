//! F9: which mmap requests vfio-pci refuses (EINVAL), per the model.

use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::mapping::{MapError, Mapping};
use guest_tests::model::{mmap_refusal, PAGE};
use guest_tests::stop::TestResult;
use guest_tests::{ensure, skip};
use nix::errno::Errno;
use nix::sys::mman::MapFlags;

/// Tries one request and compares with the model; returns a problem, if any.
fn attempt(
    fx: &Fixture,
    index: u32,
    size: u64,
    region: u64,
    shared: bool,
    offset: u64,
    len: u64,
) -> Option<String> {
    // MAP_NORESERVE: without it a large private writable request fails the
    // commit accounting (ENOMEM) before vfio-pci is asked.
    let flags = if shared {
        MapFlags::MAP_SHARED
    } else {
        MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE
    };
    let want = mmap_refusal(shared, size, offset, len);
    let got = Mapping::with_flags(fx.dev.file(), region + offset, len, None, flags);
    let what = format!(
        "BAR {index} {} [{offset:#x}, +{len:#x})",
        if shared { "shared" } else { "private" }
    );
    match (want, got) {
        (None, Ok(map)) => {
            // A page of it must be readable (the fault path agrees with mmap).
            let _ = map.read_u64(0);
            None
        }
        (
            Some(_),
            Err(MapError::Sys {
                source: Errno::EINVAL,
                ..
            }),
        ) => None,
        (None, Err(e)) => Some(format!("{what}: must work, failed: {e}")),
        (Some(why), Err(e)) => Some(format!("{what}: expected EINVAL ({why}), got {e}")),
        (Some(why), Ok(_)) => Some(format!("{what}: must fail ({why}), was mapped")),
    }
}

/// Runs `cases(size)` on every mappable BAR.
fn run(fx: &Fixture, cases: impl Fn(u64) -> Vec<(bool, u64, u64)>) -> TestResult {
    let mut problems = Vec::new();
    let mut n = 0;
    for bar in fx.mappable_bars() {
        for (shared, offset, len) in cases(bar.size()) {
            n += 1;
            problems.extend(attempt(
                fx,
                bar.index,
                bar.size(),
                bar.region.offset,
                shared,
                offset,
                len,
            ));
        }
    }
    if n == 0 {
        skip!("the device has no mmap-able BAR");
    }
    diag(&format!("{n} requests"));
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// f9.map_private_einval: MAP_PRIVATE (with MAP_NORESERVE, so that accounting
/// does not refuse first) is refused with EINVAL; the same range shared works.
pub fn map_private(fx: &Fixture) -> TestResult {
    run(fx, |size| {
        vec![(false, 0, PAGE), (false, 0, size), (true, 0, PAGE)]
    })
}

/// f9.out_of_range_einval: ranges past the page-aligned BAR end are refused; the
/// last page works.
pub fn out_of_range(fx: &Fixture) -> TestResult {
    run(fx, |size| {
        let last = size.div_ceil(PAGE) * PAGE - PAGE;
        vec![
            (true, last, PAGE),
            (true, last, 2 * PAGE),
            (true, last + PAGE, PAGE),
            (true, 0, size.div_ceil(PAGE) * PAGE + PAGE),
        ]
    })
}
