//! Helpers shared by the integration tests: register and config-space access
//! through the `vfio_user` crate's client.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs::File;
use std::path::PathBuf;

use device_emu::layout::BarLayout;
use device_emu::regs::{self, Command, Status};
use device_emu::server::EmuServer;
use tempfile::TempDir;
use vfio_user::Client;

/// A server thread serving clients on a socket in its own private temp dir.
pub struct Running {
    _dir: TempDir,
    /// The socket.
    pub path: PathBuf,
}

impl Running {
    /// Starts serving `layout`.
    pub fn start(layout: BarLayout) -> Self {
        Self::start_with(layout, |_| {})
    }

    /// Starts serving `layout` after `configure` (e.g. shorter limits) has run.
    pub fn start_with(layout: BarLayout, configure: impl FnOnce(&mut EmuServer)) -> Self {
        // Server logs show with `cargo test -- --nocapture` and RUST_LOG.
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = private_dir();
        let path = dir.path().join("device.sock");
        let mut server = EmuServer::bind(&path, layout).unwrap();
        configure(&mut server);
        // The thread outlives the test's use of it and ends with the process.
        std::thread::spawn(move || server.serve_forever());
        Self { _dir: dir, path }
    }

    /// A `vfio_user` client connected to it.
    pub fn client(&self) -> Client {
        Client::new(&self.path).unwrap()
    }
}

/// A new temp dir only this user can enter (mode 0700), as device-emu wants
/// for its socket: tempfile's default follows the umask (0755 under 022).
pub fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("device-emu-test-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

/// vfio-pci region index of the config space.
pub const CONFIG: u32 = 7;
/// Region index of the register BAR.
pub const REGS: u32 = 0;

/// Reads a 4-byte little-endian value from a region.
pub fn read32(client: &mut Client, region: u32, offset: u64) -> u32 {
    let mut b = [0; 4];
    client.region_read(region, offset, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Reads an 8-byte little-endian value from a region.
pub fn read64(client: &mut Client, region: u32, offset: u64) -> u64 {
    let mut b = [0; 8];
    client.region_read(region, offset, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Writes a 4-byte little-endian value to a region.
pub fn write32(client: &mut Client, region: u32, offset: u64, value: u32) {
    client
        .region_write(region, offset, &value.to_le_bytes())
        .unwrap();
}

/// Writes an 8-byte little-endian value to a region.
pub fn write64(client: &mut Client, region: u32, offset: u64, value: u64) {
    client
        .region_write(region, offset, &value.to_le_bytes())
        .unwrap();
}

/// Reads one config space byte.
pub fn config8(client: &mut Client, offset: u64) -> u8 {
    let mut b = [0; 1];
    client.region_read(CONFIG, offset, &mut b).unwrap();
    b[0]
}

/// Reads a 2-byte config space value.
pub fn config16(client: &mut Client, offset: u64) -> u16 {
    let mut b = [0; 2];
    client.region_read(CONFIG, offset, &mut b).unwrap();
    u16::from_le_bytes(b)
}

/// The register arguments of a command.
#[derive(Clone, Copy, Debug)]
pub struct Cmd {
    pub bar: u32,
    pub offset: u64,
    pub length: u64,
    pub stride: u64,
    pub seed: u64,
}

/// Programs the argument registers (64-bit ones as two halves when `halves`)
/// and runs `command`; returns the status.
pub fn run(client: &mut Client, command: Command, cmd: Cmd) -> Status {
    write32(client, REGS, regs::ARG_BAR, cmd.bar);
    write64(client, REGS, regs::ARG_OFFSET, cmd.offset);
    write64(client, REGS, regs::ARG_LENGTH, cmd.length);
    // The stride as two 4-byte halves, as a 32-bit guest would write it.
    write32(client, REGS, regs::ARG_STRIDE, cmd.stride as u32);
    write32(
        client,
        REGS,
        regs::ARG_STRIDE + 4,
        (cmd.stride >> 32) as u32,
    );
    write64(client, REGS, regs::ARG_SEED, cmd.seed);
    write32(client, REGS, regs::COMMAND, command as u32);
    Status::from_u32(read32(client, REGS, regs::STATUS)).expect("a known status")
}

/// A duplicate of the memfd of a region, as handed to the client.
pub fn region_file(client: &Client, region: u32) -> File {
    client
        .region(region)
        .and_then(|r| r.file_offset.as_ref())
        .expect("the region has an mmap fd")
        .file()
        .try_clone()
        .unwrap()
}

/// Host memory allocated to a memfd, in bytes.
pub fn allocated(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().unwrap().blocks() * 512
}
