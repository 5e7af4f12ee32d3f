//! Client lifecycle and the socket file: a client dying mid-message, a second
//! client while one is served, device reset through the protocol, and where
//! and how the socket is created and removed.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use device_emu::layout::BarLayout;
use device_emu::regs;
use device_emu::server::{EmuServer, ServerError};
use device_emu::wire::{command, flags, Header, HEADER_SIZE};
use nix::errno::Errno;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::Client;

const M: u64 = 1 << 20;

fn start() -> Running {
    Running::start(BarLayout::default())
}

/// A raw VERSION command.
fn version_message(id: u16) -> Vec<u8> {
    let json = b"{}\0";
    let header = Header {
        id,
        command: command::VERSION,
        size: (HEADER_SIZE + 4 + json.len()) as u32,
        flags: 0,
        error: 0,
    };
    let mut m = header.encode().to_vec();
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(json);
    m
}

fn read_header(stream: &mut UnixStream) -> Option<Header> {
    let mut head = [0; HEADER_SIZE];
    stream.read_exact(&mut head).ok()?;
    Some(Header::parse(&head))
}

#[test]
fn a_second_client_is_refused_with_ebusy_while_the_first_is_served() {
    let running = start();
    let mut first = Client::new(&running.path).unwrap();
    write64(&mut first, REGS, regs::SCRATCH, 7);

    let mut second = UnixStream::connect(&running.path).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    second.write_all(&version_message(5)).unwrap();
    let reply = read_header(&mut second).expect("an error reply");
    assert_eq!(reply.id, 5);
    assert_eq!(reply.flags, flags::TYPE_REPLY | flags::ERROR);
    assert_eq!(Errno::from_raw(reply.error as i32), Errno::EBUSY);
    assert!(
        read_header(&mut second).is_none(),
        "then the connection closes"
    );

    // The first client did not notice.
    assert_eq!(read64(&mut first, REGS, regs::SCRATCH), 7);
    drop(first);
    // Once it is gone, the next client is served, with a fresh device.
    let mut third = Client::new(&running.path).unwrap();
    assert_eq!(read64(&mut third, REGS, regs::SCRATCH), 0);
}

#[test]
fn a_client_killed_mid_message_is_replaced_by_a_fresh_one() {
    let running = start();
    let mut first = Client::new(&running.path).unwrap();
    write64(&mut first, REGS, regs::SCRATCH, 42);
    let cmd = Cmd {
        bar: 4,
        offset: 0,
        length: M,
        stride: 8,
        seed: 1,
    };
    assert_eq!(run(&mut first, regs::Command::Fill, cmd), regs::Status::Ok);
    // It holds DMA memory and an interrupt eventfd, as QEMU does.
    let memory = tempfile::tempfile().unwrap();
    memory.set_len(M).unwrap();
    first
        .dma_map(0, 0x1_0000_0000, M, memory.as_raw_fd())
        .unwrap();
    let eventfd = nix::sys::eventfd::EventFd::new().unwrap();
    first
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &[eventfd.as_raw_fd()],
        )
        .unwrap();

    // A second connection sends half a message and dies, like a killed QEMU.
    drop(first);
    let mut dying = UnixStream::connect(&running.path).unwrap();
    dying.write_all(&version_message(1)[..10]).unwrap();
    drop(dying);

    let mut next = Client::new(&running.path).unwrap();
    assert_eq!(read64(&mut next, REGS, regs::SCRATCH), 0, "registers reset");
    assert_eq!(allocated(&region_file(&next, 4)), 0, "BAR memory released");
    // The old DMA mapping is gone: the same range maps again.
    next.dma_map(0, 0x1_0000_0000, M, memory.as_raw_fd())
        .unwrap();
    assert_eq!(read32(&mut next, REGS, regs::MAGIC), regs::MAGIC_VALUE);
}

/// Every readable register and config space dword.
fn snapshot(client: &mut Client) -> Vec<(u32, u64, Option<u32>)> {
    let mut values = Vec::new();
    for (region, size) in [(CONFIG, 4096), (REGS, 4096)] {
        for offset in (0..size).step_by(4) {
            let mut b = [0; 4];
            let value = client
                .region_read(region, offset, &mut b)
                .ok()
                .map(|()| u32::from_le_bytes(b));
            values.push((region, offset, value));
        }
    }
    values
}

#[test]
fn device_reset_restores_every_register_and_config_dword() {
    let running = start();
    let mut client = Client::new(&running.path).unwrap();
    let initial = snapshot(&mut client);
    assert!(initial.iter().filter(|(_, _, v)| v.is_some()).count() > 1024);

    // Change what a guest would: BARs, command register, MSI-X control,
    // registers, a command and its results, the MSI-X table.
    for offset in (0x10..0x28).step_by(4) {
        write32(&mut client, CONFIG, offset, 0x8000_0000);
    }
    write32(&mut client, CONFIG, 4, 0x7);
    let mut at = u64::from(config8(&mut client, 0x34));
    while at != 0 {
        write32(&mut client, CONFIG, at, 0xffff_ffff);
        at = u64::from(config8(&mut client, at + 1));
    }
    write64(&mut client, REGS, regs::SCRATCH, 0x1234);
    let cmd = Cmd {
        bar: 1,
        offset: 0,
        length: 4096,
        stride: 8,
        seed: 9,
    };
    assert_eq!(
        run(&mut client, regs::Command::Verify, cmd),
        regs::Status::Mismatch
    );
    write32(&mut client, 1, 2 * M, 0xfee0_0000);
    let changed = snapshot(&mut client);
    let differences = initial.iter().zip(&changed).filter(|(a, b)| a != b).count();
    assert!(differences > 10, "only {differences} dwords changed");

    client.reset().unwrap();
    assert_eq!(snapshot(&mut client), initial);
    let mut b = [0; 4];
    client.region_read(1, 2 * M, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0, "MSI-X table reset");
}

fn bind(path: &Path) -> Result<EmuServer, ServerError> {
    EmuServer::bind(path, BarLayout::default())
}

#[test]
fn the_socket_is_private_and_removed_only_while_it_is_ours() {
    let dir = private_dir();
    let path = dir.path().join("d.sock");
    let server = bind(&path).unwrap();
    let meta = path.symlink_metadata().unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(server);
    assert!(path.symlink_metadata().is_err(), "removed on drop");

    // Someone replaced the socket: the server leaves the new file alone.
    let server = bind(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"other").unwrap();
    drop(server);
    assert_eq!(std::fs::read(&path).unwrap(), b"other");
}

/// A directory of `mode` in `base` (set after creation, so the umask does not
/// interfere).
fn dir_with_mode(base: &Path, name: &str, mode: u32) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

#[test]
fn unsafe_socket_directories_are_refused() {
    let base = private_dir();
    let base = base.path();
    let private = dir_with_mode(base, "private", 0o700);
    let link = base.join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let foreign = dir_with_mode(base, "foreign", 0o700);
    let me = nix::unistd::geteuid();
    let other = nix::unistd::Uid::from_raw(if me.is_root() { 65534 } else { 0 });
    // Only root can give a directory away; others test the check through /.
    let foreign = if me.is_root() {
        nix::unistd::chown(&foreign, Some(other), None).unwrap();
        foreign
    } else {
        PathBuf::from("/")
    };
    let cases = [
        (
            dir_with_mode(base, "shared", 0o777),
            "mode 0777: other users can write",
        ),
        (
            dir_with_mode(base, "group", 0o770),
            "mode 0770: other users can write",
        ),
        (
            dir_with_mode(base, "world-readable", 0o755),
            "mode 0755: other users can enter",
        ),
        (
            dir_with_mode(base, "group-enter", 0o750),
            "mode 0750: other users can enter",
        ),
        (
            dir_with_mode(base, "others-search", 0o701),
            "mode 0701: other users can enter",
        ),
        (
            dir_with_mode(base, "group-list", 0o740),
            "mode 0740: other users can enter",
        ),
        (
            dir_with_mode(base, "sticky-tmp", 0o1777),
            "mode 1777: other users can write",
        ),
        (link, "symbolic link"),
        (foreign, "owned by uid"),
    ];
    for (dir, reason) in &cases {
        match bind(&dir.join("d.sock")) {
            Err(e @ ServerError::UnsafeDirectory { .. }) => {
                let text = e.to_string();
                assert!(text.contains(reason), "{text}");
                assert!(text.contains(&dir.display().to_string()), "{text}");
            }
            Err(e) => panic!("{}: unexpected error {e}", dir.display()),
            Ok(_) => panic!("{}: bound in an unsafe directory", dir.display()),
        }
        assert!(dir.join("d.sock").symlink_metadata().is_err());
    }
    // The same directory, closed to others, is accepted.
    let server = bind(&private.join("d.sock")).unwrap();
    assert!(private.join("d.sock").exists());
    drop(server);
}

#[test]
fn existing_paths_are_never_followed_or_replaced() {
    let dir = private_dir();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let to_file = dir.path().join("to-file");
    std::os::unix::fs::symlink(&target, &to_file).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let to_dir = dir.path().join("to-dir");
    std::os::unix::fs::symlink(dir.path(), &to_dir).unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for path in [&target, &to_file, &dangling, &to_dir, &stale] {
        let before = path.symlink_metadata().unwrap();
        match bind(path) {
            Err(ServerError::SocketExists(p)) => assert_eq!(&p, path),
            Err(e) => panic!("{}: unexpected error {e}", path.display()),
            Ok(_) => panic!("{}: bound over an existing path", path.display()),
        }
        let after = path.symlink_metadata().unwrap();
        assert_eq!(
            (before.file_type(), before.len()),
            (after.file_type(), after.len()),
            "{}",
            path.display()
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(dir.path().join("nowhere").symlink_metadata().is_err());
}
