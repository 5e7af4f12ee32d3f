//! `content.*`: what the guest reads and writes through a mapping is what the
//! device holds at the same BAR offset.

use guest_tests::device::Args;
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::mapping::Mapping;
use guest_tests::model::PAGE;
use guest_tests::stop::TestResult;
use guest_tests::{bail, ensure};
use protocol::regs::{tag, Command, Status};

use super::{bigbar_regs, largest_bar, DiscardOnDrop, Rng};

/// Bytes checked: enough to cross a 1 GiB boundary of a large BAR.
const RANGE: u64 = 64 << 20;
/// Pages of the window whose every word is tagged.
const WINDOW_PAGES: u64 = 2;

/// Device-written tags read back through a mapping at every page (and every word
/// of a random window); guest-written tags verified by the device; a corrupted
/// word reported by the device.
pub fn offset_tags(fx: &Fixture) -> TestResult {
    let regs = bigbar_regs(fx)?;
    let bar = largest_bar(fx)?;
    let len = RANGE.min(bar.size() / 2).max(PAGE * WINDOW_PAGES);
    ensure!(
        len <= bar.size(),
        "BAR {} of {:#x} bytes is too small",
        bar.index,
        bar.size()
    );
    // Centred in the BAR, so a 16 GiB BAR's range straddles the 8 GiB boundary.
    let offset = (bar.size() / 2).saturating_sub(len / 2) / PAGE * PAGE;
    let mut rng = Rng::new(fx.seed);
    let seed = rng.next();
    let args = |length, stride, seed, at| Args {
        bar: bar.index,
        offset: at,
        length,
        stride,
        seed,
    };
    diag(&format!("BAR {} range [{offset:#x}, +{len:#x})", bar.index));

    let _discard = DiscardOnDrop {
        regs: &regs,
        bar: bar.index,
        offset,
        len,
    };
    let map = Mapping::anywhere(fx.dev.file(), bar.region.offset + offset, len)?;

    // Device writes, guest reads.
    regs.run_ok(Command::Fill, &args(len, PAGE, seed, offset))?;
    let window = rng.below(len / PAGE - WINDOW_PAGES + 1) * PAGE;
    regs.run_ok(
        Command::Fill,
        &args(WINDOW_PAGES * PAGE, 8, seed, offset + window),
    )?;
    let mut wrong = Vec::new();
    let mut check = |at: u64| {
        let want = tag(seed, bar.index, offset + at);
        let got = map.read_u64(at);
        if got != want && wrong.len() < 8 {
            wrong.push(format!(
                "offset {:#x}: read {got:#018x}, device wrote {want:#018x}",
                offset + at
            ));
        }
    };
    (0..len).step_by(PAGE as usize).for_each(&mut check);
    (window..window + WINDOW_PAGES * PAGE)
        .step_by(8)
        .for_each(&mut check);
    if !wrong.is_empty() {
        bail!("guest reads differ from device fill: {}", wrong.join("; "));
    }

    // Guest writes, device verifies.
    let seed2 = rng.next();
    for at in (0..len).step_by(PAGE as usize) {
        map.write_u64(at, tag(seed2, bar.index, offset + at));
    }
    let v = regs.verify(&args(len, PAGE, seed2, offset))?;
    ensure!(
        v.status == Status::Ok && v.mismatches == 0,
        "device found {} mismatches (status {:?}, first at {:#x}: {:#018x}) in guest-written tags",
        v.mismatches,
        v.status,
        v.first_offset,
        v.first_value
    );

    // A corrupted word must be caught, or the check above proves nothing.
    let bad_at = rng.below(len / PAGE) * PAGE;
    let bad = tag(seed2, bar.index, offset + bad_at) ^ 1;
    map.write_u64(bad_at, bad);
    let v = regs.verify(&args(len, PAGE, seed2, offset))?;
    ensure!(
        v.status == Status::Mismatch
            && v.mismatches == 1
            && v.first_offset == offset + bad_at
            && v.first_value == bad,
        "corrupted word at {:#x} ({bad:#018x}) not reported: status {:?}, {} mismatches, first at {:#x}: {:#018x}",
        offset + bad_at,
        v.status,
        v.mismatches,
        v.first_offset,
        v.first_value
    );

    // Discard reads back as zeros through the still-live mapping.
    regs.discard(bar.index, offset, len)?;
    for at in [0, bad_at, window, len - PAGE] {
        let got = map.read_u64(at);
        ensure!(
            got == 0,
            "offset {:#x} reads {got:#018x} after Discard",
            offset + at
        );
    }
    Ok(())
}
