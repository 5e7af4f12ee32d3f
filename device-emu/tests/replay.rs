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
    let mut device = Device::new(BarLayout::default()).unwrap();
    device.power_on().unwrap();
    let mut session = Session::new(
        &mut device,
        MemoryTransport::new(RECORDING),
        Limits::default(),
    );
    assert_eq!(session.run(), End::Closed);
    assert_eq!(session.rejected, 0);
    assert!(session.messages > 4000, "{} messages", session.messages);
    assert_eq!(session.transport().replies as u64, session.messages);
}
