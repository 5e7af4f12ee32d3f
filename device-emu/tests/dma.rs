//! The DMA engine over a real socket: copies through `DMA_READ`/`DMA_WRITE`
//! messages (a client that shares no memory, like QEMU with anonymous guest
//! RAM, answering in the specification's layout, as QEMU 11.1 does), through a sealed memory file the client
//! mapped, with a completion interrupt, and every fault as a status, never a
//! crash or a broken connection.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use device_emu::layout::BarLayout;
use device_emu::regs::{self, Command, DmaFault, DmaStatus, Status};
use device_emu::wire::{command, flags, Header, HEADER_SIZE};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rstest::rstest;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX,
};

const K: u64 = 4096;
/// The client's memory: IOVA → byte (sparse).
type Memory = BTreeMap<u64, u8>;

/// A raw client that serves the server's DMA requests from [`Memory`].
struct DmaClient {
    sock: UnixStream,
    memory: Memory,
    next_id: u16,
    /// Answer DMA requests with this errno instead of data.
    refuse: Option<u32>,
    requests: usize,
}

impl DmaClient {
    fn connect(running: &Running, max_xfer: u32) -> Self {
        let sock = UnixStream::connect(&running.path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Self {
            sock,
            memory: Memory::new(),
            next_id: 1,
            refuse: None,
            requests: 0,
        };
        let json = format!("{{\"capabilities\":{{\"max_data_xfer_size\":{max_xfer}}}}}\0");
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(json.as_bytes());
        c.call(command::VERSION, &p).unwrap();
        c
    }

    fn send(&mut self, header: Header, payload: &[u8]) {
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        self.sock.write_all(&bytes).unwrap();
    }

    /// Sends a command and returns its reply's payload (or errno), serving
    /// the server's DMA requests that arrive first.
    fn call(&mut self, cmd: u16, payload: &[u8]) -> Result<Vec<u8>, u32> {
        let id = self.next_id;
        self.next_id += 1;
        let size = (HEADER_SIZE + payload.len()) as u32;
        let header = Header {
            id,
            command: cmd,
            size,
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        self.send(header, payload);
        loop {
            let (h, p) = self.receive();
            if h.kind() == flags::TYPE_COMMAND {
                self.serve(h, &p);
                continue;
            }
            assert_eq!(h.id, id);
            return if h.flags & flags::ERROR != 0 {
                Err(h.error)
            } else {
                Ok(p)
            };
        }
    }

    fn receive(&mut self) -> (Header, Vec<u8>) {
        let mut head = [0; HEADER_SIZE];
        self.sock.read_exact(&mut head).unwrap();
        let h = Header::parse(&head);
        let mut p = vec![0; h.size as usize - HEADER_SIZE];
        self.sock.read_exact(&mut p).unwrap();
        (h, p)
    }

    /// Answers a DMA request as the specification lays it out (address and
    /// count of 8 bytes each, then the data).
    fn serve(&mut self, h: Header, p: &[u8]) {
        self.requests += 1;
        let address = u64::from_ne_bytes(p[..8].try_into().unwrap());
        let count = u64::from_ne_bytes(p[8..16].try_into().unwrap());
        let reply = |size: usize, error: u32| Header {
            size: (HEADER_SIZE + size) as u32,
            flags: flags::TYPE_REPLY | if error != 0 { flags::ERROR } else { 0 },
            error,
            ..h
        };
        if let Some(errno) = self.refuse {
            return self.send(reply(0, errno), &[]);
        }
        match h.command {
            command::DMA_READ => {
                assert_eq!(p.len(), 16, "address and a 64-bit count");
                let mut out = p[..16].to_vec();
                out.extend(
                    (0..count).map(|i| self.memory.get(&(address + i)).copied().unwrap_or(0)),
                );
                self.send(reply(out.len(), 0), &out);
            }
            command::DMA_WRITE => {
                assert_eq!(p.len() as u64, 16 + count);
                for (i, &b) in p[16..].iter().enumerate() {
                    self.memory.insert(address + i as u64, b);
                }
                self.send(reply(0, 0), &[]);
            }
            other => panic!("unexpected request {other}"),
        }
    }

    fn map(&mut self, address: u64, size: u64, prot: u32) {
        let mut p = Vec::new();
        for v in [32u32, prot] {
            p.extend(v.to_ne_bytes());
        }
        for v in [0u64, address, size] {
            p.extend(v.to_ne_bytes());
        }
        self.call(command::DMA_MAP, &p).unwrap();
    }

    fn write_reg(&mut self, offset: u64, data: &[u8]) {
        let mut p = offset.to_ne_bytes().to_vec();
        p.extend(0u32.to_ne_bytes());
        p.extend((data.len() as u32).to_ne_bytes());
        p.extend(data);
        self.call(command::REGION_WRITE, &p).unwrap();
    }

    fn read32(&mut self, offset: u64) -> u32 {
        let mut p = offset.to_ne_bytes().to_vec();
        p.extend(0u32.to_ne_bytes());
        p.extend(4u32.to_ne_bytes());
        let reply = self.call(command::REGION_READ, &p).unwrap();
        u32::from_le_bytes(reply[16..20].try_into().unwrap())
    }

    /// Starts a copy and polls DMA_STATUS (serving requests) until it ends.
    fn copy(&mut self, src: u64, dst: u64, len: u64) -> (DmaStatus, DmaFault) {
        self.write_reg(regs::DMA_SRC, &src.to_le_bytes());
        self.write_reg(regs::DMA_DST, &dst.to_le_bytes());
        self.write_reg(regs::DMA_LEN, &len.to_le_bytes());
        self.write_reg(regs::COMMAND, &(Command::DmaCopy as u32).to_le_bytes());
        assert_eq!(self.read32(regs::STATUS), Status::Ok as u32);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = DmaStatus::from_u32(self.read32(regs::DMA_STATUS)).unwrap();
            if status != DmaStatus::Busy {
                let fault = DmaFault::from_u32(self.read32(regs::DMA_ERROR)).unwrap();
                return (status, fault);
            }
            assert!(Instant::now() < deadline, "the copy never ended");
        }
    }
}

fn pattern(i: u64) -> u8 {
    (i * 7 + 3) as u8
}

#[rstest]
#[case::one_request(1 << 20, 40_000)]
#[case::chunked_by_max_xfer(4096, 40_000)]
#[case::one_byte(1 << 20, 1)]
#[case::largest(1 << 20, regs::DMA_MAX_LEN)]
fn copies_through_messages(#[case] max_xfer: u32, #[case] len: u64) {
    let running = Running::start(BarLayout::default());
    let mut c = DmaClient::connect(&running, max_xfer);
    let (src, dst) = (0x1000_0000, 0x2000_0000);
    // Page by page, as QEMU maps behind a vIOMMU.
    for page in 0..regs::DMA_MAX_LEN.div_ceil(K) + 1 {
        c.map(src + page * K, K, 1);
        c.map(dst + page * K, K, 2);
    }
    c.memory = (0..len + 16).map(|i| (src + i, pattern(i))).collect();
    assert_eq!(
        c.copy(src + 8, dst + 16, len),
        (DmaStatus::Done, DmaFault::None)
    );
    let copied: Vec<u8> = (0..len).map(|i| c.memory[&(dst + 16 + i)]).collect();
    let expect: Vec<u8> = (0..len).map(|i| pattern(i + 8)).collect();
    assert!(copied == expect, "destination differs");
    assert!(!c.memory.contains_key(&(dst + 15)), "nothing before it");
    assert!(
        !c.memory.contains_key(&(dst + 16 + len)),
        "nothing after it"
    );
    let per = u64::from(max_xfer).min(device_emu::session::DMA_MESSAGE_CHUNK as u64);
    assert_eq!(
        c.requests as u64,
        2 * len.div_ceil(per),
        "contiguous pages merged"
    );
    assert_eq!(c.read32(regs::DMA_COPIES), 1);
}

#[rstest]
#[case::unmapped_src(0x3000_0000, 0x2000_0000, 64, DmaFault::Unmapped)]
#[case::unmapped_dst(0x1000_0000, 0x3000_0000, 64, DmaFault::Unmapped)]
#[case::src_runs_past_its_mapping(0x1000_0000 + 15 * K, 0x2000_0000, 2 * K, DmaFault::Unmapped)]
#[case::read_only_dst(0x1000_0000, 0x1000_0000 + 8 * K, 64, DmaFault::Permission)]
#[case::write_only_src(0x2000_0000, 0x2000_0000 + 8 * K, 64, DmaFault::Permission)]
#[case::too_long(0x1000_0000, 0x2000_0000, regs::DMA_MAX_LEN + 1, DmaFault::BadLength)]
#[case::zero(0x1000_0000, 0x2000_0000, 0, DmaFault::BadLength)]
#[case::wraps(u64::MAX - 8, 0x2000_0000, 64, DmaFault::BadLength)]
#[case::overlap(0x1000_0000, 0x1000_0000 + 8, 64, DmaFault::Overlap)]
fn faults_are_statuses(
    #[case] src: u64,
    #[case] dst: u64,
    #[case] len: u64,
    #[case] fault: DmaFault,
) {
    let running = Running::start(BarLayout::default());
    let mut c = DmaClient::connect(&running, 1 << 20);
    c.map(0x1000_0000, 16 * K, 1);
    c.map(0x2000_0000, 16 * K, 2);
    assert_eq!(c.copy(src, dst, len), (DmaStatus::Error, fault));
    assert_eq!(c.requests, 0, "refused before any transfer");
    assert_eq!(c.read32(regs::MAGIC), regs::MAGIC_VALUE, "still served");
}

#[test]
fn a_refused_transfer_is_an_error_status() {
    let running = Running::start(BarLayout::default());
    let mut c = DmaClient::connect(&running, 1 << 20);
    c.map(0x1000_0000, 16 * K, 3);
    c.map(0x2000_0000, 16 * K, 3);
    c.refuse = Some(nix::errno::Errno::EFAULT as u32);
    assert_eq!(
        c.copy(0x1000_0000, 0x2000_0000, 64),
        (DmaStatus::Error, DmaFault::Transfer)
    );
    c.refuse = None;
    assert_eq!(
        c.copy(0x1000_0000, 0x2000_0000, 64),
        (DmaStatus::Done, DmaFault::None)
    );
}

/// A memfd sealed against shrinking, as QEMU's memory-backend-memfd makes.
fn sealed_memfd(len: u64) -> std::fs::File {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create("guest-ram", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, len as i64).unwrap();
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    fd.into()
}

/// Shared memory: the engine copies in the client's file, no messages, and
/// raises the completion interrupt.
#[test]
fn copies_in_shared_memory_and_raises_the_completion_interrupt() {
    let running = Running::start(BarLayout::default());
    let mut client = running.client();
    let ram = sealed_memfd(256 * K);
    // IOVA 0x4000_0000 is file offset 64 KiB.
    client
        .dma_map(16 * K, 0x4000_0000, 128 * K, ram.as_raw_fd())
        .unwrap();
    let data: Vec<u8> = (0..10_000).map(pattern).collect();
    ram.write_all_at(&data, 16 * K + 100).unwrap();
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    let irq = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    client
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            irq,
            1,
            1,
            &[efd.as_fd().as_raw_fd()],
        )
        .unwrap();
    write64(&mut client, REGS, regs::DMA_SRC, 0x4000_0000 + 100);
    write64(&mut client, REGS, regs::DMA_DST, 0x4000_0000 + 64 * K);
    write64(&mut client, REGS, regs::DMA_LEN, data.len() as u64);
    write32(
        &mut client,
        REGS,
        regs::DMA_IRQ,
        regs::dma_irq(regs::IRQ_INDEX_MSIX, 1),
    );
    write32(&mut client, REGS, regs::COMMAND, Command::DmaCopy as u32);
    // The copy ran before the server read this request.
    assert_eq!(
        read32(&mut client, REGS, regs::DMA_STATUS),
        DmaStatus::Done as u32
    );
    assert_eq!(efd.read().unwrap(), 1, "completion interrupt");
    let mut got = vec![0; data.len()];
    ram.read_exact_at(&mut got, 16 * K + 64 * K).unwrap();
    assert!(got == data);
}
