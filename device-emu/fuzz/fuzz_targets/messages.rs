//! Feeds arbitrary vfio-user traffic to one device-emu session.
//!
//! The input is a recording (see `device_emu::transport`): chunks of bytes,
//! each with the kinds of descriptors that arrive with it, replayed through an
//! in-memory transport. Every reply is checked for a consistent header as it
//! is sent. The seed corpus (`seeds/messages`) holds QEMU's own traffic.

#![no_main]

use std::sync::{Mutex, OnceLock};

use device_emu::device::Device;
use device_emu::session::{Limits, Session};
use device_emu::transport::MemoryTransport;
use libfuzzer_sys::fuzz_target;

/// The default layout's BAR slots and MSI-X placement with small BARs, so
/// that the device's own fill and verify commands stay cheap.
const LAYOUT: &str = "1=4M:32:msix@2M,2=4M,4=4M";

fn device() -> &'static Mutex<Device> {
    static DEVICE: OnceLock<Mutex<Device>> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let layout = LAYOUT.parse().expect("a valid layout");
        Mutex::new(Device::new(layout).expect("creating the device"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut device = device().lock().unwrap_or_else(|e| e.into_inner());
    device.power_on().expect("resetting the device");
    let mut session = Session::new(&mut device, MemoryTransport::new(data), Limits::default());
    session.run();
    assert!(session.transport().replies as u64 <= session.messages);
});
