//! The device as a vfio-user client sees it: an in-process server on a socket in
//! a private temp dir, driven by the `vfio_user` crate's own client.

mod common;

use std::os::unix::fs::FileExt;

use common::*;
use device_emu::config_space::{CAP_ID_MSIX, CAP_ID_PCIE, CLASS_CODE};
use device_emu::layout::BarLayout;
use device_emu::regs::{self, Command, Status};
use device_emu::server::{EmuServer, ServerError};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::Client;

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn default_device() -> (Running, Client) {
    let running = Running::start(BarLayout::default());
    let client = running.client();
    (running, client)
}

#[test]
fn regions_describe_the_layout() {
    let (_running, client) = default_device();
    let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    let expect = [
        (0, 4096, rw, false),
        (1, 64 * M, rw | VFIO_REGION_INFO_FLAG_MMAP, true),
        (2, 16 * G, rw | VFIO_REGION_INFO_FLAG_MMAP, true),
        (3, 0, rw, false),
        (4, G, rw | VFIO_REGION_INFO_FLAG_MMAP, true),
        (5, 0, rw, false),
        (6, 0, rw, false),
        (7, 4096, rw, false),
        (8, 0, rw, false),
    ];
    for (index, size, flags, has_fd) in expect {
        let region = client.region(index).unwrap();
        assert_eq!(region.size, size, "region {index}");
        // The crate adds the CAPS flag to regions with a sparse mmap list.
        assert_eq!(region.flags & 7, flags, "region {index}");
        assert_eq!(region.file_offset.is_some(), has_fd, "region {index}");
        if has_fd {
            assert_eq!(region_file(&client, index).metadata().unwrap().len(), size);
            assert_eq!(allocated(&region_file(&client, index)), 0);
        }
    }
    let areas = |index| -> Vec<(u64, u64)> {
        client
            .region(index)
            .unwrap()
            .sparse_areas
            .iter()
            .map(|a| (a.offset, a.size))
            .collect()
    };
    assert_eq!(areas(1), [(0, 2 * M), (2 * M + 4096, 62 * M - 4096)]);
    assert_eq!(areas(2), [(0, 16 * G)]);
    assert_eq!(areas(4), [(0, G)]);
}

#[test]
fn irq_info_and_eventfds() {
    let (_running, mut client) = default_device();
    assert_eq!(
        client.get_irq_info(VFIO_PCI_INTX_IRQ_INDEX).unwrap().count,
        1
    );
    assert_eq!(
        client.get_irq_info(VFIO_PCI_MSI_IRQ_INDEX).unwrap().count,
        1
    );
    assert_eq!(
        client.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap().count,
        8
    );
    let fd = tempfile::tempfile().unwrap();
    use std::os::fd::AsRawFd;
    client
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &[fd.as_raw_fd()],
        )
        .unwrap();
    // The connection still works after the interrupt set-up.
    assert_eq!(read32(&mut client, REGS, regs::MAGIC), regs::MAGIC_VALUE);
}

#[test]
fn config_space_identifies_the_device_and_chains_capabilities() {
    let (_running, mut client) = default_device();
    assert_eq!(config16(&mut client, 0), regs::VENDOR_ID);
    assert_eq!(config16(&mut client, 2), regs::DEVICE_ID);
    assert_eq!(read32(&mut client, CONFIG, 8) >> 8, CLASS_CODE);
    assert_eq!(config8(&mut client, 0x0e), 0, "type 0 header");
    assert_ne!(config16(&mut client, 6) & 0x10, 0, "capabilities list");
    // Walk the chain.
    let mut found = Vec::new();
    let mut at = config8(&mut client, 0x34);
    while at != 0 && found.len() < 48 {
        found.push((config8(&mut client, at.into()), at));
        at = config8(&mut client, u64::from(at) + 1);
    }
    let find = |id| {
        found
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, at)| u64::from(*at))
    };
    let pcie = find(CAP_ID_PCIE).expect("PCI Express capability");
    let msix = find(CAP_ID_MSIX).expect("MSI-X capability");
    let pcie_caps = config16(&mut client, pcie + 2);
    assert_eq!(pcie_caps & 0xf, 2, "capability version 2");
    assert_eq!((pcie_caps >> 4) & 0xf, 0, "endpoint");
    assert_eq!(config16(&mut client, msix + 2) & 0x7ff, 7, "8 vectors");
    assert_eq!(read32(&mut client, CONFIG, msix + 4), (2 * M) as u32 | 1);
    assert_eq!(
        read32(&mut client, CONFIG, msix + 8),
        (2 * M + 2048) as u32 | 1
    );
    // No extended capabilities.
    assert_eq!(read32(&mut client, CONFIG, 0x100), 0);
}

#[test]
fn bar_sizing() {
    let (_running, mut client) = default_device();
    let mut size = |offset| {
        write32(&mut client, CONFIG, offset, u32::MAX);
        read32(&mut client, CONFIG, offset)
    };
    assert_eq!(size(0x10), 0xffff_f000, "BAR0 4K 32-bit");
    assert_eq!(size(0x14), 0xfc00_0008, "BAR1 64M 32-bit prefetchable");
    assert_eq!(size(0x18), 0x0000_000c, "BAR2 16G 64-bit prefetchable");
    assert_eq!(size(0x1c), 0xffff_fffc, "BAR2 upper half");
    assert_eq!(size(0x20), 0xc000_000c, "BAR4 1G");
    assert_eq!(size(0x24), 0xffff_ffff, "BAR4 upper half");
    // Command register: memory enable and bus master stick.
    write32(&mut client, CONFIG, 4, 0x6);
    assert_eq!(config16(&mut client, 4), 0x6);
}

#[test]
fn fill_verify_and_detect_corruption_through_the_memfd() {
    let (_running, mut client) = default_device();
    let cmd = Cmd {
        bar: 2,
        offset: 15 * G,
        length: 4 * M,
        stride: 8,
        seed: 0x5eed,
    };
    assert_eq!(run(&mut client, Command::Fill, cmd), Status::Ok);
    assert_eq!(run(&mut client, Command::Verify, cmd), Status::Ok);
    assert_eq!(read64(&mut client, REGS, regs::MISMATCHES), 0);
    let file = region_file(&client, 2);
    let mut word = [0; 8];
    file.read_exact_at(&mut word, 15 * G + 64).unwrap();
    assert_eq!(u64::from_le_bytes(word), regs::tag(0x5eed, 2, 15 * G + 64));
    let used = allocated(&file);
    assert!((4 * M..=6 * M).contains(&used), "{used} bytes allocated");

    // Corrupt two words behind the device's back, as a mapping would.
    file.write_all_at(&7u64.to_le_bytes(), 15 * G + 3 * 4096 + 8)
        .unwrap();
    file.write_all_at(&9u64.to_le_bytes(), 15 * G + M).unwrap();
    assert_eq!(run(&mut client, Command::Verify, cmd), Status::Mismatch);
    assert_eq!(read64(&mut client, REGS, regs::MISMATCHES), 2);
    assert_eq!(
        read64(&mut client, REGS, regs::FIRST_MISMATCH_OFFSET),
        15 * G + 3 * 4096 + 8
    );
    assert_eq!(read64(&mut client, REGS, regs::FIRST_MISMATCH_VALUE), 7);

    // Discard frees the memory and zeroes the range.
    let discard = Cmd { stride: 0, ..cmd };
    assert_eq!(run(&mut client, Command::Discard, discard), Status::Ok);
    assert_eq!(allocated(&file), 0);
    assert_eq!(run(&mut client, Command::Verify, cmd), Status::Mismatch);
    assert_eq!(read64(&mut client, REGS, regs::MISMATCHES), 4 * M / 8);
    assert_eq!(
        read64(&mut client, REGS, regs::FIRST_MISMATCH_OFFSET),
        15 * G
    );
    assert_eq!(read64(&mut client, REGS, regs::FIRST_MISMATCH_VALUE), 0);
    assert_eq!(read64(&mut client, REGS, regs::COMMANDS_DONE), 5);
}

#[test]
fn bad_command_arguments() {
    let (_running, mut client) = default_device();
    let ok = Cmd {
        bar: 4,
        offset: 0,
        length: 4096,
        stride: 8,
        seed: 1,
    };
    let cases = [
        (Command::Fill, Cmd { bar: 0, ..ok }, Status::BadBar),
        (Command::Fill, Cmd { bar: 3, ..ok }, Status::BadBar),
        (
            Command::Fill,
            Cmd {
                offset: G - 8,
                length: 16,
                ..ok
            },
            Status::BadRange,
        ),
        (
            Command::Verify,
            Cmd {
                offset: u64::MAX - 7,
                ..ok
            },
            Status::BadRange,
        ),
        (Command::Verify, Cmd { stride: 4, ..ok }, Status::BadRange),
        (Command::Discard, Cmd { offset: 8, ..ok }, Status::BadRange),
        (
            Command::Discard,
            Cmd {
                length: u64::MAX - 4095,
                offset: 4096,
                ..ok
            },
            Status::BadRange,
        ),
        (Command::Fill, ok, Status::Ok),
    ];
    for (command, cmd, status) in cases {
        assert_eq!(
            run(&mut client, command, cmd),
            status,
            "{command:?} {cmd:?}"
        );
    }
    write32(&mut client, REGS, regs::COMMAND, 99);
    assert_eq!(
        read32(&mut client, REGS, regs::STATUS),
        Status::BadCommand as u32
    );
}

#[test]
fn msix_table_is_trapped_and_reset_restores_state_but_not_memory() {
    let (_running, mut client) = default_device();
    // Change config space, registers and the MSI-X table.
    write32(&mut client, CONFIG, 0x18, 0x8000_0000);
    write32(&mut client, CONFIG, 0x1c, 0xf8);
    write32(&mut client, CONFIG, 4, 0x6);
    write64(&mut client, REGS, regs::SCRATCH, 0xdead_beef_cafe);
    write32(&mut client, 1, 2 * M + 12, 0);
    assert_eq!(read32(&mut client, 1, 2 * M + 12), 0);
    let cmd = Cmd {
        bar: 1,
        offset: 0,
        length: 2 * M,
        stride: 64,
        seed: 3,
    };
    assert_eq!(run(&mut client, Command::Fill, cmd), Status::Ok);

    client.reset().unwrap();

    assert_eq!(read32(&mut client, CONFIG, 0x18), 0xc);
    assert_eq!(read32(&mut client, CONFIG, 0x1c), 0);
    assert_eq!(config16(&mut client, 4), 0);
    assert_eq!(read64(&mut client, REGS, regs::SCRATCH), 0);
    assert_eq!(read64(&mut client, REGS, regs::COMMANDS_DONE), 0);
    assert_eq!(read32(&mut client, 1, 2 * M + 12), 1, "vector masked again");
    assert_eq!(
        run(&mut client, Command::Verify, cmd),
        Status::Ok,
        "memory kept"
    );
}

#[test]
fn a_reconnecting_client_gets_a_fresh_device() {
    let running = Running::start(BarLayout::default());
    let mut first = running.client();
    write64(&mut first, REGS, regs::SCRATCH, 42);
    let cmd = Cmd {
        bar: 4,
        offset: 0,
        length: M,
        stride: 8,
        seed: 1,
    };
    assert_eq!(run(&mut first, Command::Fill, cmd), Status::Ok);
    drop(first);

    let mut second = running.client();
    assert_eq!(read64(&mut second, REGS, regs::SCRATCH), 0);
    assert_eq!(read64(&mut second, REGS, regs::COMMANDS_DONE), 0);
    assert_eq!(allocated(&region_file(&second, 4)), 0);
    assert_eq!(run(&mut second, Command::Verify, cmd), Status::Mismatch);
    assert_eq!(read64(&mut second, REGS, regs::MISMATCHES), M / 8);
}

#[test]
fn dma_mappings_are_accepted() {
    let (_running, mut client) = default_device();
    let memory = tempfile::tempfile().unwrap();
    memory.set_len(M).unwrap();
    use std::os::fd::AsRawFd;
    client
        .dma_map(0, 0x1_0000_0000, M, memory.as_raw_fd())
        .unwrap();
    client.dma_unmap(0x1_0000_0000, M).unwrap();
    assert_eq!(read32(&mut client, REGS, regs::MAGIC), regs::MAGIC_VALUE);
}

#[test]
fn an_existing_socket_path_is_refused() {
    let dir = private_dir();
    let path = dir.path().join("taken");
    std::fs::write(&path, b"").unwrap();
    match EmuServer::bind(&path, BarLayout::default()) {
        Err(ServerError::SocketExists(p)) => assert_eq!(p, path),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("bound over an existing file"),
    }
}

/// Sends a raw VERSION command, as QEMU does, and checks what QEMU's client
/// insists on: major 0, minor not above its own (1), at most 16 fds per message.
#[test]
fn version_negotiation_reply_suits_qemu() {
    use std::io::{Read, Write};
    let running = Running::start(BarLayout::default());
    let mut stream = std::os::unix::net::UnixStream::connect(&running.path).unwrap();
    let json = b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}\0";
    let mut msg = Vec::new();
    msg.extend_from_slice(&7u16.to_le_bytes()); // message id
    msg.extend_from_slice(&1u16.to_le_bytes()); // VFIO_USER_VERSION
    msg.extend_from_slice(&((20 + json.len()) as u32).to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes()); // flags: command
    msg.extend_from_slice(&0u32.to_le_bytes()); // error
    msg.extend_from_slice(&0u16.to_le_bytes()); // major
    msg.extend_from_slice(&1u16.to_le_bytes()); // minor
    msg.extend_from_slice(json);
    stream.write_all(&msg).unwrap();

    let mut head = [0; 20];
    stream.read_exact(&mut head).unwrap();
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    assert_eq!(u16_at(0), 7, "message id echoed");
    assert_eq!(u16_at(2), 1, "VERSION reply");
    assert_eq!(u32_at(8) & 0xf, 1, "reply flag");
    assert_eq!(u32_at(8) & 0x20, 0, "no error flag");
    assert_eq!(u16_at(16), 0, "major");
    assert!(u16_at(18) <= 1, "minor {}", u16_at(18));
    let mut caps = vec![0; u32_at(4) as usize - 20];
    stream.read_exact(&mut caps).unwrap();
    let caps = String::from_utf8(caps).unwrap();
    let fds: u32 = caps
        .split("\"max_msg_fds\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max_msg_fds in {caps}"));
    assert!((1..=16).contains(&fds), "{caps}");
}
