//! Replays QEMU 11.1's traffic, recorded from a real run of the runner with
//! `BIGBAR_DEVICE_RECORD`, through a session: the device must accept every
//! message QEMU sent.

use device_emu::device::Device;
use device_emu::layout::BarLayout;
use device_emu::session::{End, Limits, Session};
use device_emu::transport::MemoryTransport;

const RECORDING: &[u8] = include_bytes!("data/qemu-11.1-session.rec");

#[test]
fn qemu_traffic_is_accepted_whole() {
    // Rejections are logged with their reason (RUST_LOG=warn).
    let _ = env_logger::builder().is_test(true).try_init();
    let mut device = Device::new(BarLayout::default()).unwrap();
    device.power_on().unwrap();
    let mut session = Session::new(
        &mut device,
        MemoryTransport::new(RECORDING),
        Limits::default(),
    );
    assert_eq!(session.run(), End::Closed);
    // QEMU with the emulated Intel IOMMU unmaps whole address ranges when a
    // device's IOMMU context changes, mapped or not: 58 DMA_UNMAPs of ranges
    // that hold no mapping, which the specification's exact-match rule
    // answers with ENOENT (logged by QEMU, not fatal). Everything else is
    // accepted.
    assert_eq!(session.rejected, 58);
    assert!(session.messages > 4000, "{} messages", session.messages);
    assert_eq!(session.transport().replies as u64, session.messages);
}

/// Every committed fuzz seed runs through a session as the fuzz target runs
/// it (same layout), so a seed that would crash fails `cargo test` too.
#[test]
fn fuzz_seeds_replay_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/messages");
    let mut device = Device::new("1=4M:32:msix@2M,2=4M,4=4M".parse().unwrap()).unwrap();
    let mut seeds = 0;
    let mut messages = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let input = std::fs::read(entry.unwrap().path()).unwrap();
        device.power_on().unwrap();
        let mut session =
            Session::new(&mut device, MemoryTransport::new(&input), Limits::default());
        session.run();
        seeds += 1;
        messages += session.messages;
    }
    assert!(seeds >= 20, "{seeds} seeds in {}", dir.display());
    assert!(messages > 800, "{messages} messages");
}
