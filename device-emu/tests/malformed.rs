//! Malformed vfio-user messages against a real server over its socket: each is
//! answered as `device_emu::session` specifies (an error reply with the right
//! errno, keeping the stream in step, or a closed connection), and the server
//! then serves a well-formed client.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use device_emu::layout::BarLayout;
use device_emu::regs;
use device_emu::session::{Limits, MAX_MESSAGE};
use device_emu::transport::FdKind;
use device_emu::wire::{command::*, flags, Header, HEADER_SIZE};
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use rstest::rstest;

/// How long the server waits for the rest of a started message here.
const MESSAGE_TIMEOUT: Duration = Duration::from_millis(300);
/// Safety net: a test fails rather than hangs if the server never answers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn start() -> Running {
    Running::start_with(BarLayout::default(), |server| {
        server.set_limits(Limits {
            message_timeout: MESSAGE_TIMEOUT,
            handshake_timeout: Duration::from_secs(10),
            ..Limits::default()
        })
    })
}

/// A message to send: bytes, descriptors, and whether to close our writing
/// end afterwards (a message cut short by EOF).
#[derive(Clone, Debug)]
struct Msg {
    bytes: Vec<u8>,
    fds: Vec<FdKind>,
    then_eof: bool,
}

fn raw(bytes: Vec<u8>) -> Msg {
    Msg {
        bytes,
        fds: Vec::new(),
        then_eof: false,
    }
}

const ID: u16 = 0x4242;

/// A command with a consistent header.
fn msg(command: u16, payload: &[u8]) -> Msg {
    let header = Header {
        id: ID,
        command,
        size: (HEADER_SIZE + payload.len()) as u32,
        flags: 0,
        error: 0,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    raw(bytes)
}

impl Msg {
    fn flags(mut self, f: u32) -> Self {
        self.bytes[8..12].copy_from_slice(&f.to_ne_bytes());
        self
    }
    fn size(mut self, size: u32) -> Self {
        self.bytes[4..8].copy_from_slice(&size.to_ne_bytes());
        self
    }
    fn fds(mut self, kind: FdKind, n: usize) -> Self {
        self.fds = vec![kind; n];
        self
    }
    fn truncate(mut self, len: usize) -> Self {
        self.bytes.truncate(len);
        self
    }
    fn eof(mut self) -> Self {
        self.then_eof = true;
        self
    }
}

/// Payload builder (host byte order, like the wire).
#[derive(Default)]
struct P(Vec<u8>);
impl P {
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

fn version_json(json: &[u8]) -> Msg {
    msg(VERSION, &P::default().u16(0).u16(0).bytes(json).0)
}
fn version() -> Msg {
    version_json(b"{\"capabilities\":{\"max_msg_fds\":16}}\0")
}
fn dma_map(flags: u32, offset: u64, address: u64, size: u64) -> Msg {
    msg(
        DMA_MAP,
        &P::default()
            .u32(32)
            .u32(flags)
            .u64(offset)
            .u64(address)
            .u64(size)
            .0,
    )
}
fn dma_unmap(flags: u32, address: u64, size: u64) -> Msg {
    msg(
        DMA_UNMAP,
        &P::default().u32(24).u32(flags).u64(address).u64(size).0,
    )
}
fn info(command: u16, argsz: u32, index: u32) -> Msg {
    let p = P::default().u32(argsz).u32(0).u32(index).u32(0);
    if command == DEVICE_GET_REGION_INFO {
        return msg(command, &p.u64(0).u64(0).0);
    }
    msg(command, &p.0)
}
fn set_irqs(flags: u32, index: u32, start: u32, count: u32) -> Msg {
    msg(
        DEVICE_SET_IRQS,
        &P::default()
            .u32(20)
            .u32(flags)
            .u32(index)
            .u32(start)
            .u32(count)
            .0,
    )
}
fn read(region: u32, offset: u64, count: u32) -> Msg {
    msg(
        REGION_READ,
        &P::default().u64(offset).u32(region).u32(count).0,
    )
}
fn write(region: u32, offset: u64, count: u32, data: &[u8]) -> Msg {
    msg(
        REGION_WRITE,
        &P::default()
            .u64(offset)
            .u32(region)
            .u32(count)
            .bytes(data)
            .0,
    )
}

const CONFIG_REGION: u32 = 7;
const MSIX: u32 = 2;
const EVENTFD_TRIGGER: u32 = 0x24;
const M: u64 = 1 << 20;

/// What the server must do with a message.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A successful reply.
    Ok,
    /// An error reply with this errno.
    Err(Errno),
    /// The connection closed.
    Closed,
}

/// A raw connection.
struct Conn(UnixStream);

impl Conn {
    fn open(path: &std::path::Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Self(s)
    }

    fn send(&mut self, m: &Msg) {
        let owned: Vec<OwnedFd> = m.fds.iter().map(|k| k.create().unwrap()).collect();
        let raw: Vec<RawFd> = owned.iter().map(AsRawFd::as_raw_fd).collect();
        if raw.is_empty() {
            self.0.write_all(&m.bytes).unwrap();
        } else {
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let iov = [std::io::IoSlice::new(&m.bytes)];
            let n =
                sendmsg::<()>(self.0.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
            self.0.write_all(&m.bytes[n..]).unwrap();
        }
        if m.then_eof {
            self.0.shutdown(Shutdown::Write).unwrap();
        }
    }

    /// The next reply, or `None` if the server closed the connection.
    fn reply(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut head = [0; HEADER_SIZE];
        match self.0.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return None
            }
            Err(e) => panic!("waiting for a reply: {e}"),
        }
        let h = Header::parse(&head);
        let mut payload = vec![0; h.size as usize - HEADER_SIZE];
        self.0.read_exact(&mut payload).unwrap();
        Some((h, payload))
    }

    /// Sends `m` and checks the outcome.
    fn expect(&mut self, m: &Msg, expect: Expect) {
        self.send(m);
        let got = self.reply();
        match (expect, got) {
            (Expect::Closed, None) => {}
            (Expect::Closed, Some((h, _))) => panic!("expected a closed connection, got {h:?}"),
            (_, None) => panic!("expected {expect:?}, the server closed the connection"),
            (Expect::Ok, Some((h, _))) => {
                assert_eq!(
                    h.flags,
                    flags::TYPE_REPLY,
                    "{h:?} (errno {})",
                    Errno::from_raw(h.error as i32)
                );
                assert_eq!(h.id, ID);
            }
            (Expect::Err(errno), Some((h, payload))) => {
                assert_eq!(h.flags, flags::TYPE_REPLY | flags::ERROR, "{h:?}");
                assert_eq!(Errno::from_raw(h.error as i32), errno, "{h:?}");
                assert_eq!((h.id, h.size), (ID, HEADER_SIZE as u32));
                assert!(payload.is_empty());
            }
        }
    }

    /// The stream is still in step: a register read answers with the magic.
    fn still_in_step(&mut self) {
        self.send(&read(0, regs::MAGIC, 4));
        let (h, payload) = self.reply().expect("a reply to the register read");
        assert_eq!(h.flags, flags::TYPE_REPLY, "{h:?}");
        assert_eq!(payload[16..], regs::MAGIC_VALUE.to_le_bytes());
    }
}

/// After the case, a well-formed client is served by the same server.
fn served_afterwards(running: &Running) {
    let mut client = vfio_user::Client::new(&running.path).unwrap();
    assert_eq!(read32(&mut client, REGS, regs::MAGIC), regs::MAGIC_VALUE);
}

fn run_case(before_version: bool, steps: &[(Msg, Expect)]) {
    let running = start();
    let mut conn = Conn::open(&running.path);
    if !before_version {
        conn.expect(&version(), Expect::Ok);
    }
    for (m, e) in steps {
        conn.expect(m, *e);
    }
    let closed = steps.last().is_some_and(|(_, e)| *e == Expect::Closed);
    if !closed {
        if before_version {
            conn.expect(&version(), Expect::Ok);
        }
        conn.still_in_step();
    }
    drop(conn);
    served_afterwards(&running);
}

fn einval(m: Msg) -> Vec<(Msg, Expect)> {
    vec![(m, Expect::Err(Errno::EINVAL))]
}
fn err(errno: Errno, m: Msg) -> Vec<(Msg, Expect)> {
    vec![(m, Expect::Err(errno))]
}
fn closed(m: Msg) -> Vec<(Msg, Expect)> {
    vec![(m, Expect::Closed)]
}

/// Cases after a successful VERSION.
#[rstest]
// Framing the server cannot trust: the connection is closed.
#[case::short_header(closed(read(0, 0, 4).truncate(8).eof()))]
#[case::empty_header_then_eof(closed(read(0, 0, 4).truncate(1).eof()))]
#[case::size_below_header(closed(read(0, 0, 4).size(8)))]
#[case::size_zero(closed(read(0, 0, 4).size(0)))]
#[case::size_4_gib(closed(read(0, 0, 4).size(u32::MAX)))]
#[case::size_above_limit(closed(write(0, 0, 4, &[0; 4]).size(MAX_MESSAGE as u32 + 1)))]
#[case::payload_cut_by_eof(closed(write(0, 0, 64, &[0; 64]).truncate(40).eof()))]
#[case::payload_stalls(closed(write(0, 0, 64, &[0; 64]).truncate(40)))]
#[case::header_stalls(closed(read(0, 0, 4).truncate(10)))]
#[case::reply_instead_of_command(closed(read(0, 0, 4).flags(flags::TYPE_REPLY)))]
#[case::error_reply_instead_of_command(closed(read(0, 0, 4).flags(flags::TYPE_REPLY | flags::ERROR)))]
#[case::unknown_message_type(closed(read(0, 0, 4).flags(7)))]
// Unknown and unsupported commands, their payload skipped.
#[case::command_zero(err(Errno::ENOTSUP, msg(0, &[1; 8])))]
#[case::unknown_command(err(Errno::ENOTSUP, msg(99, &[0xff; 64])))]
#[case::command_max(err(Errno::ENOTSUP, msg(u16::MAX, &[])))]
#[case::region_io_fds(err(Errno::ENOTSUP, msg(DEVICE_GET_REGION_IO_FDS, &[0; 16])))]
#[case::dma_read_from_client(err(Errno::ENOTSUP, msg(DMA_READ, &[0; 16])))]
#[case::dma_write_from_client(err(Errno::ENOTSUP, msg(DMA_WRITE, &[0; 20])))]
#[case::dirty_pages(err(Errno::ENOTSUP, msg(14, &[0; 8])))]
#[case::write_multi(err(Errno::ENOTSUP, msg(15, &[0; 40])))]
#[case::device_feature(err(Errno::ENOTSUP, msg(16, &[0; 16])))]
// Flags.
#[case::error_flag_on_command(einval(read(0, 0, 4).flags(flags::ERROR)))]
#[case::reserved_flag(einval(read(0, 0, 4).flags(1 << 6)))]
#[case::all_flags(closed(read(0, 0, 4).flags(u32::MAX)))]
#[case::version_twice(einval(version()))]
// DMA_MAP.
#[case::dma_map_short(einval(dma_map(3, 0, 0, 4096).truncate(40).size(40)))]
#[case::dma_map_long(einval(msg(DMA_MAP, &P::default().u32(32).u32(3).u64(0).u64(0).u64(4096).u64(0).0)))]
#[case::dma_map_argsz(einval(msg(DMA_MAP, &P::default().u32(16).u32(3).u64(0).u64(0).u64(4096).0)))]
#[case::dma_map_flags(einval(dma_map(0x4, 0, 0, 4096)))]
#[case::dma_map_empty(einval(dma_map(3, 0, 0x1000, 0)))]
#[case::dma_map_wraps(einval(dma_map(3, 0, u64::MAX - 4095, 8192)))]
#[case::dma_map_ends_at_top(vec![(dma_map(3, 0, u64::MAX - 4095, 4096), Expect::Ok)])]
#[case::dma_map_unaligned(einval(dma_map(3, 0, 0x1800, 4096)))]
#[case::dma_map_offset_without_fd(einval(dma_map(3, 4096, 0, 4096)))]
#[case::dma_map_overlap(vec![
    (dma_map(3, 0, 0x10000, 0x4000), Expect::Ok),
    (dma_map(3, 0, 0x13000, 0x4000), Expect::Err(Errno::EEXIST)),
    (dma_map(3, 0, 0, 0x100000), Expect::Err(Errno::EEXIST)),
])]
#[case::dma_map_memfd(vec![(dma_map(3, 0, 0, M).fds(FdKind::Memory, 1), Expect::Ok)])]
#[case::dma_map_past_memfd(einval(dma_map(3, 1 << 30, 0, M).fds(FdKind::Memory, 1)))]
#[case::dma_map_offset_overflow(einval(dma_map(3, u64::MAX - 4095, 0, M).fds(FdKind::Memory, 1)))]
#[case::dma_map_pipe(err(Errno::EBADF, dma_map(3, 0, 0, M).fds(FdKind::Other, 1)))]
#[case::dma_map_eventfd(err(Errno::EBADF, dma_map(3, 0, 0, M).fds(FdKind::EventFd, 1)))]
#[case::dma_map_two_fds(einval(dma_map(3, 0, 0, M).fds(FdKind::Memory, 2)))]
#[case::dma_map_many_fds(einval(dma_map(3, 0, 0, M).fds(FdKind::Memory, 20)))]
// DMA_UNMAP.
#[case::dma_unmap_short(einval(dma_unmap(0, 0, 4096).truncate(32).size(32)))]
#[case::dma_unmap_argsz(einval(msg(DMA_UNMAP, &P::default().u32(8).u32(0).u64(0).u64(4096).0)))]
#[case::dma_unmap_dirty_bitmap(err(Errno::ENOTSUP, dma_unmap(1, 0, 4096)))]
#[case::dma_unmap_unknown_flag(einval(dma_unmap(8, 0, 4096)))]
#[case::dma_unmap_all_with_range(einval(dma_unmap(2, 0x1000, 4096)))]
#[case::dma_unmap_all(vec![(dma_map(3, 0, 0, 4096), Expect::Ok), (dma_unmap(2, 0, 0), Expect::Ok)])]
#[case::dma_unmap_wraps(einval(dma_unmap(0, u64::MAX - 4095, 8192)))]
#[case::dma_unmap_partial(vec![
    (dma_map(3, 0, 0x10000, 0x4000), Expect::Ok),
    (dma_unmap(0, 0x10000, 0x1000), Expect::Err(Errno::EINVAL)),
])]
#[case::dma_unmap_never_mapped(err(Errno::ENOENT, dma_unmap(0, 0x10000, 0x1000)))]
#[case::dma_unmap_twice(vec![
    (dma_map(3, 0, 0x10000, 0x1000), Expect::Ok),
    (dma_unmap(0, 0x10000, 0x1000), Expect::Ok),
    (dma_unmap(0, 0x10000, 0x1000), Expect::Err(Errno::ENOENT)),
])]
#[case::dma_unmap_with_fd(einval(dma_unmap(0, 0, 4096).fds(FdKind::Memory, 1)))]
// Queries.
#[case::device_info_short(einval(msg(DEVICE_GET_INFO, &[16, 0, 0, 0])))]
#[case::device_info_argsz(einval(info(DEVICE_GET_INFO, 8, 0)))]
#[case::device_info_with_fd(einval(info(DEVICE_GET_INFO, 16, 0).fds(FdKind::EventFd, 1)))]
#[case::region_info_index(einval(info(DEVICE_GET_REGION_INFO, 32, 9)))]
#[case::region_info_index_max(einval(info(DEVICE_GET_REGION_INFO, 32, u32::MAX)))]
#[case::region_info_short(einval(info(DEVICE_GET_REGION_INFO, 32, 1).truncate(32).size(32)))]
#[case::region_info_argsz(einval(info(DEVICE_GET_REGION_INFO, 4, 1)))]
#[case::irq_info_index(einval(info(DEVICE_GET_IRQ_INFO, 16, 5)))]
#[case::irq_info_long(einval(msg(DEVICE_GET_IRQ_INFO, &[0; 24])))]
// DEVICE_SET_IRQS.
#[case::set_irqs_no_flags(einval(set_irqs(0, MSIX, 0, 1)))]
#[case::set_irqs_two_data_types(einval(set_irqs(0x25, MSIX, 0, 1)))]
#[case::set_irqs_two_actions(einval(set_irqs(0x31, MSIX, 0, 1)))]
#[case::set_irqs_unknown_flag(einval(set_irqs(0x61, MSIX, 0, 1)))]
#[case::set_irqs_bool(err(Errno::ENOTSUP, set_irqs(0x22, MSIX, 0, 1)))]
#[case::set_irqs_index(einval(set_irqs(0x21, 5, 0, 1)))]
#[case::set_irqs_index_max(einval(set_irqs(0x21, u32::MAX, 0, 1)))]
#[case::set_irqs_vector_overflow(einval(set_irqs(0x21, MSIX, u32::MAX, 2)))]
#[case::set_irqs_too_many_vectors(einval(set_irqs(0x21, MSIX, 0, 9)))]
#[case::set_irqs_fd_count(einval(set_irqs(EVENTFD_TRIGGER, MSIX, 0, 3).fds(FdKind::EventFd, 1)))]
#[case::set_irqs_memfd(err(Errno::EBADF, set_irqs(EVENTFD_TRIGGER, MSIX, 0, 1).fds(FdKind::Memory, 1)))]
#[case::set_irqs_pipe(err(Errno::EBADF, set_irqs(EVENTFD_TRIGGER, MSIX, 0, 1).fds(FdKind::Other, 1)))]
#[case::set_irqs_none_with_fd(einval(set_irqs(0x21, MSIX, 0, 1).fds(FdKind::EventFd, 1)))]
#[case::set_irqs_above_max_msg_fds(einval(set_irqs(EVENTFD_TRIGGER, MSIX, 0, 2).fds(FdKind::EventFd, 2)))]
#[case::set_irqs_long(einval(msg(DEVICE_SET_IRQS, &P::default().u32(24).u32(0x21).u32(MSIX).u32(0).u32(1).u32(0).0)))]
#[case::set_irqs_mask_msi(einval(set_irqs(0x9, 1, 0, 1)))]
#[case::set_irqs_unmask_err(einval(set_irqs(0x11, 3, 0, 1)))]
#[case::set_irqs_mask_no_vectors(einval(set_irqs(0x9, MSIX, 0, 0)))]
#[case::set_irqs_mask_eventfd(err(Errno::ENOTSUP, set_irqs(0xc, MSIX, 0, 1).fds(FdKind::EventFd, 1)))]
#[case::set_irqs_mask_msix(vec![(set_irqs(0x9, MSIX, 7, 1), Expect::Ok), (set_irqs(0x11, MSIX, 7, 1), Expect::Ok)])]
#[case::set_irqs_eventfd(vec![(set_irqs(EVENTFD_TRIGGER, MSIX, 7, 1).fds(FdKind::EventFd, 1), Expect::Ok)])]
// REGION_READ and REGION_WRITE.
#[case::read_region_index(einval(read(9, 0, 4)))]
#[case::read_region_max(einval(read(u32::MAX, 0, 4)))]
#[case::read_above_xfer_limit(err(Errno::E2BIG, read(2, 0, (M + 1) as u32)))]
#[case::read_4_gib(err(Errno::E2BIG, read(2, 0, u32::MAX)))]
#[case::read_offset_overflow(einval(read(2, u64::MAX - 1, 4)))]
#[case::read_past_config_space(einval(read(CONFIG_REGION, 4094, 4)))]
#[case::read_absent_bar(einval(read(3, 0, 4)))]
#[case::read_register_unaligned(einval(read(0, 2, 4)))]
#[case::read_short(einval(read(0, 0, 4).truncate(24).size(24)))]
#[case::read_with_data(einval(msg(REGION_READ, &P::default().u64(0).u32(0).u32(4).u32(0).0)))]
#[case::read_with_fd(einval(read(0, 0, 4).fds(FdKind::EventFd, 1)))]
#[case::read_with_most_fds(einval(read(0, 0, 4).fds(FdKind::EventFd, 253)))]
#[case::write_data_short(einval(write(0, regs::SCRATCH, 8, &[0; 4])))]
#[case::write_data_long(einval(write(0, regs::SCRATCH, 4, &[0; 8])))]
#[case::write_above_xfer_limit(err(Errno::E2BIG, write(2, 0, (2 * M) as u32, &[0; 8])))]
#[case::write_no_header(einval(msg(REGION_WRITE, &[0; 12])))]
#[case::write_past_bar(einval(write(1, 64 * M - 4, 8, &[0; 8])))]
#[case::write_offset_overflow(einval(write(1, u64::MAX - 3, 8, &[0; 8])))]
#[case::write_with_fd(einval(write(0, regs::SCRATCH, 8, &[0; 8]).fds(FdKind::EventFd, 1)))]
// DEVICE_RESET.
#[case::reset_with_payload(einval(msg(DEVICE_RESET, &[0; 4])))]
#[case::reset_with_fd(einval(msg(DEVICE_RESET, &[]).fds(FdKind::EventFd, 1)))]
fn after_version(#[case] steps: Vec<(Msg, Expect)>) {
    run_case(false, &steps);
}

/// Cases during version negotiation: each refused, after which a proper
/// VERSION still succeeds.
#[rstest]
#[case::command_before_version(einval(read(0, 0, 4)))]
#[case::version_short(einval(msg(VERSION, &[0, 0])))]
#[case::version_major_1(err(Errno::ENOTSUP, msg(VERSION, &P::default().u16(1).u16(0).0)))]
#[case::version_no_nul(einval(version_json(b"{}")))]
#[case::version_interior_nul(einval(version_json(b"{}\0{}\0")))]
#[case::version_not_utf8(einval(version_json(b"{\"a\":\"\xff\"}\0")))]
#[case::version_not_json(einval(version_json(b"capabilities\0")))]
#[case::version_array(einval(version_json(b"[]\0")))]
#[case::version_deep(einval(version_json(format!("{}{}\0", "[".repeat(1500), "]".repeat(1500)).as_bytes())))]
#[case::version_huge(einval(version_json(format!("{{\"x\":\"{}\"}}\0", "a".repeat(100_000)).as_bytes())))]
#[case::version_fds_string(einval(version_json(
    b"{\"capabilities\":{\"max_msg_fds\":\"16\"}}\0"
)))]
#[case::version_fds_zero(einval(version_json(b"{\"capabilities\":{\"max_msg_fds\":0}}\0")))]
#[case::version_fds_huge(einval(version_json(
    b"{\"capabilities\":{\"max_msg_fds\":99999999999}}\0"
)))]
#[case::version_xfer_huge(einval(version_json(
    b"{\"capabilities\":{\"max_data_xfer_size\":1099511627776}}\0"
)))]
#[case::version_xfer_negative(einval(version_json(
    b"{\"capabilities\":{\"max_data_xfer_size\":-1}}\0"
)))]
#[case::version_migration_absurd(einval(version_json(
    b"{\"capabilities\":{\"migration\":{\"pgsize\":3}}}\0"
)))]
#[case::version_migration_type(einval(version_json(b"{\"capabilities\":{\"migration\":[]}}\0")))]
#[case::version_pgsizes_type(einval(version_json(b"{\"capabilities\":{\"pgsizes\":true}}\0")))]
#[case::version_with_fd(einval(version().fds(FdKind::EventFd, 1)))]
#[case::version_no_reply(einval(version().flags(flags::NO_REPLY)))]
fn before_version(#[case] steps: Vec<(Msg, Expect)>) {
    let no_reply = steps
        .iter()
        .any(|(m, _)| m.bytes[8..12] == flags::NO_REPLY.to_ne_bytes());
    if no_reply {
        // No reply comes for a no-reply command, even a refused one: the next
        // VERSION is answered, and is the first.
        let running = start();
        let mut conn = Conn::open(&running.path);
        conn.send(&steps[0].0);
        conn.expect(&version(), Expect::Ok);
        conn.still_in_step();
        drop(conn);
        served_afterwards(&running);
        return;
    }
    run_case(true, &steps);
}

/// A refused no-reply command sends nothing; the stream stays in step.
#[test]
fn a_refused_no_reply_command_gets_no_reply() {
    let running = start();
    let mut conn = Conn::open(&running.path);
    conn.expect(&version(), Expect::Ok);
    conn.send(&read(9, 0, 4).flags(flags::NO_REPLY));
    conn.send(&write(0, regs::SCRATCH, 8, &[0; 8]).flags(flags::NO_REPLY));
    conn.still_in_step();
}

/// A client that sends a message a byte at a time, each byte well within
/// the message timeout, is dropped once the whole message took longer than
/// it: the deadline does not restart with every byte.
#[test]
fn a_trickling_client_is_dropped_at_the_message_deadline() {
    let running = start();
    let mut conn = Conn::open(&running.path);
    conn.expect(&version(), Expect::Ok);
    let bytes = write(0, regs::SCRATCH, 8, &[0; 8]).bytes;
    let began = std::time::Instant::now();
    let mut sent = 0;
    for b in &bytes {
        if conn.0.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        sent += 1;
        // The pace of the slow client itself, a third of the timeout.
        std::thread::sleep(MESSAGE_TIMEOUT / 3);
    }
    assert!(
        conn.reply().is_none(),
        "the server answered a trickled message"
    );
    let took = began.elapsed();
    assert!(sent < bytes.len(), "all {sent} bytes went through");
    assert!(took < 3 * MESSAGE_TIMEOUT, "dropped after {took:?}");
    drop(conn);
    served_afterwards(&running);
}

/// The DMA mapping limit: 65535 maps (sent without replies), then ENOSPC.
#[test]
fn dma_maps_beyond_the_limit_get_enospc() {
    let running = start();
    let mut conn = Conn::open(&running.path);
    conn.expect(&version(), Expect::Ok);
    let limit = device_emu::dma::MAX_MAPPINGS as u64;
    let mut batch = Vec::new();
    for i in 0..limit {
        batch.extend(dma_map(3, 0, i * 4096, 4096).flags(flags::NO_REPLY).bytes);
    }
    conn.send(&raw(batch));
    conn.expect(
        &dma_map(3, 0, limit * 4096, 4096),
        Expect::Err(Errno::ENOSPC),
    );
    conn.expect(&dma_unmap(0, 0, 4096), Expect::Ok);
    conn.expect(&dma_map(3, 0, limit * 4096, 4096), Expect::Ok);
    drop(conn);
    served_afterwards(&running);
}
