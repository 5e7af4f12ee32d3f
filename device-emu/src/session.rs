//! One client connection: reads each vfio-user message whole and bounded,
//! checks it, and answers it from the [`Device`].
//!
//! # Why this replaces `vfio_user::Server::run`
//!
//! The crate's server loop trusts its peer. It takes a short read as a whole
//! header; reads payloads by the size of its own structures, not the header's
//! size field, so any disagreement (and every unknown or unsupported command,
//! whose payload it leaves unread) desynchronises the stream; allocates buffers
//! of a size the peer chooses (4 GiB region reads and writes, and a VERSION
//! size below 20 underflows); panics on VERSION data without a NUL; overflows
//! the reply size of large reads; answers replies as if they were commands;
//! and reports every backend error with errno 0. A validating front end
//! relaying to it would have to understand every message anyway, so the
//! messages are handled here and the crate is kept for what it does right: the
//! [`ServerBackend`] interface the device implements, the region and interrupt
//! descriptions ([`vfio_user::ServerRegion`], [`vfio_user::IrqInfo`]), and its
//! client, which the tests drive the server with.
//!
//! # What a bad message gets
//!
//! - The connection is closed (with a log line) when framing can no longer be
//!   trusted: a header or payload cut short by EOF or by
//!   [`Limits::message_timeout`], a size below the header or above
//!   [`MAX_MESSAGE`], or a message that is not a command (a reply where a
//!   command is expected).
//! - Otherwise the message was read whole, and it gets an error reply carrying
//!   an errno: `EINVAL` for malformed fields or sizes, out-of-range regions,
//!   offsets and vectors, and descriptors where none belong (or more than
//!   advertised); `EBADF` for a descriptor of the wrong kind; `E2BIG` for a
//!   transfer above the negotiated limit; `ENOTSUP` for unknown or unsupported
//!   commands; `EEXIST` for an overlapping DMA map; `ENOENT` for an unmap
//!   that matches no mapping; `ENOSPC` beyond
//!   [`crate::dma::MAX_MAPPINGS`]. A command with the no-reply flag gets no
//!   reply either way; its error is logged.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_FLAG_CAPS,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion};

use crate::capabilities::{self, ClientCaps};
use crate::device::{AccessError, Device};
use crate::regs::DmaFault;
use crate::transport::{is_eventfd, is_memory_fd, FdKind, Received, Transport};
use crate::wire::{command, flags, Fields, Header, Reply, HEADER_SIZE};

/// Largest region read or write (our `max_data_xfer_size`).
pub const MAX_DATA_XFER: u32 = 1 << 20;
/// Largest message accepted: a region write of [`MAX_DATA_XFER`] bytes.
pub const MAX_MESSAGE: usize = HEADER_SIZE + 16 + MAX_DATA_XFER as usize;
/// Descriptors we accept per message (announced as `max_msg_fds`). QEMU
/// splits interrupt set-up into messages of this many eventfds.
pub const MAX_MSG_FDS: u32 = 1;
/// The DMA page size (`pgsizes`): maps and unmaps are aligned to it.
const DMA_PAGE: u64 = 4096;

/// Time limits of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long the rest of a message may take once its first byte arrived.
    pub message_timeout: Duration,
    /// How long a new client may take to send its first message.
    pub handshake_timeout: Duration,
    /// How long the client may take to answer a `DMA_READ` or `DMA_WRITE`
    /// of the DMA engine (meanwhile its commands are served).
    pub dma_reply_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            dma_reply_timeout: Duration::from_secs(5),
        }
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed the connection between messages.
    Closed,
    /// The server dropped the connection; the reason was logged.
    Dropped(String),
}

/// A refused command: the errno for the reply and the reason for the log.
#[derive(Debug)]
struct Rejected {
    errno: Errno,
    why: String,
}

fn reject<T>(errno: Errno, why: impl Into<String>) -> Result<T, Rejected> {
    Err(Rejected {
        errno,
        why: why.into(),
    })
}

impl From<io::Error> for Rejected {
    /// A backend error: the device's own errno for what it refused, else the
    /// system error.
    fn from(e: io::Error) -> Self {
        let errno = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<AccessError>())
            .map(AccessError::errno)
            .or_else(|| e.raw_os_error().map(Errno::from_raw))
            .unwrap_or(Errno::EIO);
        Self {
            errno,
            why: crate::error_chain(&e),
        }
    }
}

/// A successful reply and the descriptors to send with it.
struct Response {
    bytes: Vec<u8>,
    fds: Vec<RawFd>,
}

impl From<Vec<u8>> for Response {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            fds: Vec::new(),
        }
    }
}

/// Writes every message a session receives to a file, in the format
/// [`crate::transport::MemoryTransport`] replays (the fuzz seed corpus comes
/// from such recordings of QEMU).
pub struct Recorder {
    file: File,
    path: PathBuf,
}

impl Recorder {
    /// Creates `dir/<name>` (which must not exist).
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(Self { file, path })
    }

    fn record(&mut self, message: &[u8], fds: &[OwnedFd]) {
        let kinds: Vec<FdKind> = fds.iter().map(FdKind::of).collect();
        let chunk = crate::transport::encode_chunk(message, &kinds);
        if let Err(e) = self.file.write_all(&chunk) {
            log::warn!("recording to {}: {e}", self.path.display());
        }
    }
}

/// The per-connection protocol state and the device it drives.
struct Handler<'d> {
    device: &'d mut Device,
    regions: Vec<ServerRegion>,
    irqs: Vec<IrqInfo>,
    /// The client's capabilities once VERSION succeeded.
    client: Option<ClientCaps>,
}

/// One connection.
pub struct Session<'d, T: Transport> {
    handler: Handler<'d>,
    transport: T,
    limits: Limits,
    /// Receive buffer for payloads: allocated once at the bound, never at a
    /// size the peer names.
    buf: Box<[u8]>,
    recorder: Option<Recorder>,
    /// Messages handled (answered or rejected).
    pub messages: u64,
    /// Messages rejected with an error.
    pub rejected: u64,
    /// Id of the next command the server sends (DMA requests).
    next_id: u16,
}

/// A message read whole.
struct Incoming {
    header: Header,
    payload_len: usize,
    fds: Vec<OwnedFd>,
    fds_truncated: bool,
}

impl<'d, T: Transport> Session<'d, T> {
    /// A session for a freshly connected client of `device`.
    pub fn new(device: &'d mut Device, transport: T, limits: Limits) -> Self {
        Self {
            handler: Handler {
                regions: device.regions(),
                irqs: device.irqs(),
                device,
                client: None,
            },
            transport,
            limits,
            buf: vec![0; MAX_MESSAGE - HEADER_SIZE].into_boxed_slice(),
            recorder: None,
            messages: 0,
            rejected: 0,
            next_id: 0,
        }
    }

    /// Records every received message with `recorder`.
    pub fn record_with(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// The transport (for inspecting a [`crate::transport::MemoryTransport`]).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Serves messages until the client leaves or is dropped.
    pub fn run(&mut self) -> End {
        loop {
            let incoming = match self.read_message(None) {
                Ok(Some(m)) => m,
                Ok(None) => return End::Closed,
                Err(why) => {
                    log::warn!("dropping the client: {why}");
                    return End::Dropped(why);
                }
            };
            let answered = self.answer(incoming).and_then(|()| self.run_dma());
            if let Err(why) = answered {
                log::warn!("dropping the client: {why}");
                return End::Dropped(why);
            }
        }
    }

    /// Runs the copy the last message started, if any. It runs here, after
    /// the reply to the register write that started it, because a copy may
    /// need the client to serve `DMA_READ`s, which QEMU cannot do while its
    /// vCPU waits for that reply. `Err` when the connection broke meanwhile.
    fn run_dma(&mut self) -> Result<(), String> {
        let Some(job) = self.handler.device.take_dma_job() else {
            return Ok(());
        };
        let mut bus = Bus {
            session: self,
            broken: None,
        };
        let result = crate::dma::copy(&mut bus, job.src, job.dst, job.len);
        let broken = bus.broken.take();
        self.handler.device.finish_dma(&job, result);
        broken.map_or(Ok(()), Err)
    }

    /// Sends a DMA request and waits for its reply, serving the client's
    /// commands meanwhile; returns the reply's payload. `Ok(Err(errno))` is
    /// an error reply; `Err` a broken connection.
    fn dma_request(&mut self, request: Reply) -> Result<Result<Vec<u8>, u32>, String> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = request.finish_with_id(id);
        self.transport
            .send(&bytes, &[])
            .map_err(|e| format!("sending a DMA request: {e}"))?;
        let deadline = Instant::now() + self.limits.dma_reply_timeout;
        loop {
            let m = self
                .read_message(Some(deadline))?
                .ok_or("the client closed the connection with a DMA request outstanding")?;
            if m.header.kind() != flags::TYPE_REPLY {
                self.answer(m)?;
                continue;
            }
            if m.header.id != id || m.header.command != Header::parse(&head16(&bytes)).command {
                return Err(format!(
                    "reply {} (command {}) to no request of ours (awaiting {id})",
                    m.header.id, m.header.command
                ));
            }
            if m.header.flags & flags::ERROR != 0 {
                return Ok(Err(m.header.error));
            }
            return Ok(Ok(self.buf[..m.payload_len].to_vec()));
        }
    }

    /// Handles one message and sends its reply (unless none is wanted).
    fn answer(&mut self, m: Incoming) -> Result<(), String> {
        let payload = &self.buf[..m.payload_len];
        if let Some(r) = &mut self.recorder {
            let mut whole = m.header.encode().to_vec();
            whole.extend_from_slice(payload);
            r.record(&whole, &m.fds);
        }
        self.messages += 1;
        let h = m.header;
        let reply = match self.handler.handle(&h, payload, m.fds, m.fds_truncated) {
            Ok(response) => response,
            Err(Rejected { errno, why }) => {
                self.rejected += 1;
                if worth_logging(self.rejected) {
                    let thinned = if self.rejected > LOGGED_REJECTIONS {
                        format!(
                            " (rejection {}: only powers of two are logged now)",
                            self.rejected
                        )
                    } else {
                        String::new()
                    };
                    log::warn!(
                        "command {} (id {}, {} bytes) rejected with {errno}: {why}{thinned}",
                        h.command,
                        h.id,
                        h.size
                    );
                }
                Reply::error(&h, errno as i32).into()
            }
        };
        if h.no_reply() {
            return Ok(());
        }
        self.transport
            .send(&reply.bytes, &reply.fds)
            .map_err(|e| format!("sending the reply to command {}: {e}", h.command))
    }

    /// Reads one message: `Ok(None)` when the peer closed between messages,
    /// `Err` when the framing is broken. `waiting` is the deadline of a reply
    /// the server awaits (to a DMA request): replies are accepted then, and
    /// the wait for the message's first byte ends at that deadline.
    ///
    /// A whole message has one deadline, [`Limits::message_timeout`] from
    /// its first byte: each receive is limited to what is left of it, so a
    /// client trickling a byte at a time cannot hold the server.
    fn read_message(&mut self, waiting: Option<Instant>) -> Result<Option<Incoming>, String> {
        let first = self.handler.client.is_none() && self.messages == 0;
        let idle = match waiting {
            Some(deadline) => Some(left(deadline).ok_or("no reply to a DMA request in time")?),
            None => first.then_some(self.limits.handshake_timeout),
        };
        self.set_timeout(idle)?;
        let mut head = [0; HEADER_SIZE];
        let mut acc = Received::default();
        let r = self.transport.recv(&mut head).map_err(|e| {
            if first {
                format!(
                    "no message within {:?} of connecting: {e}",
                    self.limits.handshake_timeout
                )
            } else {
                format!("waiting for a message: {e}")
            }
        })?;
        if r.len == 0 {
            return Ok(None);
        }
        let deadline = Instant::now() + self.limits.message_timeout;
        let got = r.len;
        take(&mut acc, r);
        fill(&mut self.transport, &mut head[got..], deadline, &mut acc).map_err(|e| {
            format!(
                "reading a message header ({} of {HEADER_SIZE} bytes): {e}",
                got + e.got
            )
        })?;
        let header = Header::parse(&head);
        let reply_ok = waiting.is_some() && header.kind() == flags::TYPE_REPLY;
        if header.kind() != flags::TYPE_COMMAND && !reply_ok {
            return Err(format!(
                "message {} (command {}) has type {} where a command (0) is expected",
                header.id,
                header.command,
                header.kind()
            ));
        }
        let size = header.size as usize;
        if size < HEADER_SIZE {
            return Err(format!("message size {size} is smaller than the header"));
        }
        if size > MAX_MESSAGE {
            return Err(format!(
                "message size {size} (command {}) exceeds the {MAX_MESSAGE}-byte limit",
                header.command
            ));
        }
        let payload_len = size - HEADER_SIZE;
        fill(
            &mut self.transport,
            &mut self.buf[..payload_len],
            deadline,
            &mut acc,
        )
        .map_err(|e| {
            format!(
                "reading {payload_len} bytes of command {} ({} read): {e}",
                header.command, e.got
            )
        })?;
        Ok(Some(Incoming {
            header,
            payload_len,
            fds: acc.fds,
            fds_truncated: acc.truncated,
        }))
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        self.transport
            .set_timeout(timeout)
            .map_err(|e| format!("setting the receive timeout: {e}"))
    }
}

/// The DMA engine's way to the client: the session's device mappings, and
/// `DMA_READ`/`DMA_WRITE` messages for memory the client did not share.
struct Bus<'s, 'd, T: Transport> {
    session: &'s mut Session<'d, T>,
    /// Why the connection broke during the copy.
    broken: Option<String>,
}

/// Where the data starts in a `DMA_READ` reply's payload and a
/// `DMA_WRITE` request's: after the 64-bit address and the 64-bit count, as
/// the specification lays them out. (QEMU's older headers declared the
/// count 32 bits wide, data at 12; QEMU 11.1 answers at 16, measured in the
/// guest: with 12, each 32 KiB piece lost its last 4 bytes.)
const DMA_DATA_OFFSET: usize = 16;

/// Most bytes one `DMA_READ` or `DMA_WRITE` carries, whatever the limits.
/// A message must fit in the socket's buffer at once: QEMU writes a long
/// reply from its main loop in pieces, and between pieces needs the big
/// lock, which a vCPU holds while it waits for our answer to its register
/// read; a reply of 256 KiB stalled there until the message timed out.
pub const DMA_MESSAGE_CHUNK: usize = 32 << 10;

impl<T: Transport> Bus<'_, '_, T> {
    /// The most bytes one request may carry: the client's limit and ours.
    fn chunk(&self) -> usize {
        let client = self
            .session
            .handler
            .client
            .map_or(MAX_DATA_XFER, |c| c.max_data_xfer_size);
        (client.min(MAX_DATA_XFER) as usize).min(DMA_MESSAGE_CHUNK)
    }

    fn fail(&mut self, what: &str, iova: u64, outcome: Result<u32, String>) -> DmaFault {
        match outcome {
            Ok(errno) => log::warn!("{what} at {iova:#x}: the client answered errno {errno}"),
            Err(why) => self.broken = Some(why),
        }
        DmaFault::Transfer
    }
}

impl<T: Transport> crate::dma::DmaBus for Bus<'_, '_, T> {
    fn mappings(&self) -> &crate::dma::DmaMappings {
        self.session.handler.device.dma()
    }

    fn remote_read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let chunk = self.chunk();
        for (i, part) in buf.chunks_mut(chunk).enumerate() {
            let at = iova + (i * chunk) as u64;
            let request = Reply::command(0, command::DMA_READ)
                .u64(at)
                .u64(part.len() as u64);
            let payload = match self.session.dma_request(request) {
                Ok(Ok(p)) => p,
                Ok(Err(errno)) => return Err(self.fail("DMA_READ", at, Ok(errno))),
                Err(why) => return Err(self.fail("DMA_READ", at, Err(why))),
            };
            let data = payload.get(DMA_DATA_OFFSET..DMA_DATA_OFFSET + part.len());
            let Some(data) = data else {
                log::warn!("DMA_READ at {at:#x}: a {}-byte reply", payload.len());
                return Err(DmaFault::Transfer);
            };
            part.copy_from_slice(data);
        }
        Ok(())
    }

    fn remote_write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let chunk = self.chunk();
        for (i, part) in data.chunks(chunk).enumerate() {
            let at = iova + (i * chunk) as u64;
            let request = Reply::command(0, command::DMA_WRITE)
                .u64(at)
                .u64(part.len() as u64)
                .bytes(part);
            match self.session.dma_request(request) {
                Ok(Ok(_)) => {}
                Ok(Err(errno)) => return Err(self.fail("DMA_WRITE", at, Ok(errno))),
                Err(why) => return Err(self.fail("DMA_WRITE", at, Err(why))),
            }
        }
        Ok(())
    }
}

/// The first 16 bytes of a message (its header).
fn head16(bytes: &[u8]) -> [u8; HEADER_SIZE] {
    bytes[..HEADER_SIZE]
        .try_into()
        .expect("a message has a header")
}

/// Time left until `deadline`, `None` once it passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Adds what a receive brought besides bytes.
fn take(acc: &mut Received, r: Received) {
    acc.fds.extend(r.fds);
    acc.truncated |= r.truncated;
}

/// Why a message could not be read whole, and how far it got.
#[derive(Debug)]
struct Short {
    got: usize,
    why: String,
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Fills `buf` by `deadline`, collecting descriptors into `acc`.
fn fill<T: Transport>(
    transport: &mut T,
    buf: &mut [u8],
    deadline: Instant,
    acc: &mut Received,
) -> Result<(), Short> {
    let mut got = 0;
    while got < buf.len() {
        let short = |why: String| Short { got, why };
        let remaining = left(deadline).ok_or_else(|| short("the message timed out".into()))?;
        transport
            .set_timeout(Some(remaining))
            .map_err(|e| short(format!("setting the receive timeout: {e}")))?;
        let r = transport
            .recv(&mut buf[got..])
            .map_err(|e| short(e.to_string()))?;
        if r.len == 0 {
            return Err(short("connection closed".into()));
        }
        got += r.len;
        take(acc, r);
    }
    Ok(())
}

/// Checks that `payload` has exactly `len` bytes.
fn exact(payload: &[u8], len: usize, what: &str) -> Result<(), Rejected> {
    if payload.len() == len {
        Ok(())
    } else {
        reject(
            Errno::EINVAL,
            format!("{what} payload is {} bytes, expected {len}", payload.len()),
        )
    }
}

/// Checks that no descriptors came with a command that takes none.
fn no_fds(fds: &[OwnedFd], what: &str) -> Result<(), Rejected> {
    if fds.is_empty() {
        Ok(())
    } else {
        reject(
            Errno::EINVAL,
            format!("{what} takes no descriptors, {} were sent", fds.len()),
        )
    }
}

/// Checks that a request's `argsz` leaves room for the reply payload.
fn room(argsz: u32, needed: usize, what: &str) -> Result<(), Rejected> {
    if argsz as usize >= needed {
        Ok(())
    } else {
        reject(
            Errno::EINVAL,
            format!("{what} argsz {argsz} is below the {needed}-byte reply"),
        )
    }
}

impl Handler<'_> {
    fn handle(
        &mut self,
        h: &Header,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        fds_truncated: bool,
    ) -> Result<Response, Rejected> {
        let max_fds = MAX_MSG_FDS;
        if fds_truncated || fds.len() > max_fds as usize {
            return reject(
                Errno::EINVAL,
                format!(
                    "{} or more descriptors, above max_msg_fds {max_fds}",
                    fds.len()
                ),
            );
        }
        if h.flags & !flags::KNOWN != 0 || h.flags & flags::ERROR != 0 {
            return reject(
                Errno::EINVAL,
                format!("bad flags {:#x} for a command", h.flags),
            );
        }
        if h.command != command::VERSION && self.client.is_none() {
            return reject(
                Errno::EINVAL,
                format!("command {} before VERSION", h.command),
            );
        }
        match h.command {
            command::VERSION => self.version(h, payload, &fds).map(Into::into),
            command::DMA_MAP => self.dma_map(h, payload, fds).map(Into::into),
            command::DMA_UNMAP => self.dma_unmap(h, payload, &fds).map(Into::into),
            command::DEVICE_GET_INFO => self.device_info(h, payload, &fds).map(Into::into),
            command::DEVICE_GET_REGION_INFO => self.region_info(h, payload, &fds),
            command::DEVICE_GET_IRQ_INFO => self.irq_info(h, payload, &fds).map(Into::into),
            command::DEVICE_SET_IRQS => self.set_irqs(h, payload, fds).map(Into::into),
            command::REGION_READ => self.region_read(h, payload, &fds).map(Into::into),
            command::REGION_WRITE => self.region_write(h, payload, &fds).map(Into::into),
            command::DEVICE_RESET => {
                exact(payload, 0, "DEVICE_RESET")?;
                no_fds(&fds, "DEVICE_RESET")?;
                self.device.reset()?;
                Ok(Reply::to(h).finish().into())
            }
            command::DEVICE_GET_REGION_IO_FDS | command::DMA_READ | command::DMA_WRITE => reject(
                Errno::ENOTSUP,
                format!("command {} is not supported", h.command),
            ),
            other => reject(Errno::ENOTSUP, format!("unknown command {other}")),
        }
    }

    fn version(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        if self.client.is_some() {
            return reject(Errno::EINVAL, "VERSION sent twice");
        }
        no_fds(fds, "VERSION")?;
        if p.len() < 4 {
            return reject(
                Errno::EINVAL,
                format!("VERSION payload of {} bytes", p.len()),
            );
        }
        if h.no_reply() {
            return reject(Errno::EINVAL, "VERSION without a reply");
        }
        let mut f = Fields(p);
        let (major, minor) = (f.u16(), f.u16());
        if major != 0 {
            return reject(
                Errno::ENOTSUP,
                format!("protocol version {major}.{minor}; only 0.x is served"),
            );
        }
        let caps = capabilities::parse_client(&p[4..])
            .or_else(|e| reject(Errno::EINVAL, format!("VERSION capabilities: {e}")))?;
        log::info!("client speaks vfio-user {major}.{minor} with {caps:?}");
        self.client = Some(caps);
        Ok(Reply::to(h)
            .u16(0)
            .u16(0)
            .bytes(&capabilities::server_data(MAX_MSG_FDS, MAX_DATA_XFER))
            .finish())
    }

    fn dma_map(
        &mut self,
        h: &Header,
        p: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, Rejected> {
        exact(p, 32, "DMA_MAP")?;
        let mut f = Fields(p);
        let (argsz, map_flags, offset, address, size) =
            (f.u32(), f.u32(), f.u64(), f.u64(), f.u64());
        if argsz != 32 {
            return reject(Errno::EINVAL, format!("DMA_MAP argsz {argsz}, expected 32"));
        }
        if map_flags & !DmaMapFlags::READ_WRITE.bits() != 0 {
            return reject(Errno::EINVAL, format!("DMA_MAP flags {map_flags:#x}"));
        }
        if address % DMA_PAGE != 0 || size % DMA_PAGE != 0 || offset % DMA_PAGE != 0 {
            return reject(
                Errno::EINVAL,
                format!("DMA_MAP {address:#x}+{size:#x} at offset {offset:#x} is not page aligned"),
            );
        }
        let file = match fds.pop() {
            Some(fd) => Some(memory_file(fd, offset, size)?),
            None if offset != 0 => {
                return reject(
                    Errno::EINVAL,
                    "DMA_MAP without a descriptor has a non-zero offset",
                )
            }
            None => None,
        };
        self.device.dma_map(
            DmaMapFlags::from_bits_retain(map_flags),
            offset,
            address,
            size,
            file,
        )?;
        Ok(Reply::to(h).finish())
    }

    fn dma_unmap(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        exact(p, 24, "DMA_UNMAP")?;
        no_fds(fds, "DMA_UNMAP")?;
        let mut f = Fields(p);
        let (argsz, unmap_flags, address, size) = (f.u32(), f.u32(), f.u64(), f.u64());
        room(argsz, 24, "DMA_UNMAP")?;
        // The crate's DmaUnmapFlags name bits 1 and 2 differently from
        // <linux/vfio.h>, which QEMU uses; translate the wire's flags here.
        let backend_flags = match unmap_flags {
            0 => DmaUnmapFlags::empty(),
            VFIO_DMA_UNMAP_FLAG_ALL if address == 0 && size == 0 => DmaUnmapFlags::UNMAP_ALL,
            VFIO_DMA_UNMAP_FLAG_ALL => {
                return reject(
                    Errno::EINVAL,
                    "DMA_UNMAP of all mappings with an address or size",
                )
            }
            f if f & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 => {
                return reject(
                    Errno::ENOTSUP,
                    "DMA_UNMAP dirty page tracking is not supported",
                )
            }
            f => return reject(Errno::EINVAL, format!("DMA_UNMAP flags {f:#x}")),
        };
        if backend_flags.is_empty() && (address % DMA_PAGE != 0 || size % DMA_PAGE != 0) {
            return reject(
                Errno::EINVAL,
                format!("DMA_UNMAP {address:#x}+{size:#x} is not page aligned"),
            );
        }
        self.device.dma_unmap(backend_flags, address, size)?;
        Ok(Reply::to(h)
            .u32(24)
            .u32(unmap_flags)
            .u64(address)
            .u64(size)
            .finish())
    }

    fn device_info(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        exact(p, 16, "DEVICE_GET_INFO")?;
        no_fds(fds, "DEVICE_GET_INFO")?;
        room(Fields(p).u32(), 16, "DEVICE_GET_INFO")?;
        Ok(Reply::to(h)
            .u32(16)
            .u32(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET)
            .u32(self.regions.len() as u32)
            .u32(self.irqs.len() as u32)
            .finish())
    }

    /// Answers as the crate's server did, which QEMU's client expects: the
    /// sparse mmap capability and the memfd only when `argsz` has room for
    /// the capability, otherwise the needed `argsz` alone.
    fn region_info(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Response, Rejected> {
        exact(p, 32, "DEVICE_GET_REGION_INFO")?;
        no_fds(fds, "DEVICE_GET_REGION_INFO")?;
        let mut f = Fields(p);
        let (argsz, index) = (f.u32(), {
            f.u32();
            f.u32()
        });
        room(argsz, 32, "DEVICE_GET_REGION_INFO")?;
        let Some(region) = self.regions.get(index as usize) else {
            return reject(Errno::EINVAL, format!("region {index} does not exist"));
        };
        let info = region.region_info;
        let mut caps = Vec::new();
        if !region.sparse_areas.is_empty() {
            caps.extend_from_slice(&(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16).to_ne_bytes());
            caps.extend_from_slice(&1u16.to_ne_bytes());
            caps.extend_from_slice(&0u32.to_ne_bytes());
            caps.extend_from_slice(&(region.sparse_areas.len() as u32).to_ne_bytes());
            caps.extend_from_slice(&0u32.to_ne_bytes());
            for a in &region.sparse_areas {
                caps.extend_from_slice(&a.area.offset.to_ne_bytes());
                caps.extend_from_slice(&a.area.size.to_ne_bytes());
            }
        }
        let (flags, full, cap_offset) = if caps.is_empty() {
            (info.flags, 32, 0)
        } else {
            (
                info.flags | VFIO_REGION_INFO_FLAG_CAPS,
                32 + caps.len() as u32,
                32,
            )
        };
        let send_caps = !caps.is_empty() && argsz >= full;
        let reply = Reply::to(h)
            .u32(full)
            .u32(flags)
            .u32(info.index)
            .u32(cap_offset)
            .u64(info.size)
            .u64(info.offset);
        if !send_caps {
            return Ok(reply.finish().into());
        }
        Ok(Response {
            bytes: reply.bytes(&caps).finish(),
            fds: region.mmap_fd.into_iter().collect(),
        })
    }

    fn irq_info(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        exact(p, 16, "DEVICE_GET_IRQ_INFO")?;
        no_fds(fds, "DEVICE_GET_IRQ_INFO")?;
        let mut f = Fields(p);
        let (argsz, index) = (f.u32(), {
            f.u32();
            f.u32()
        });
        room(argsz, 16, "DEVICE_GET_IRQ_INFO")?;
        let Some(irq) = self.irqs.get(index as usize) else {
            return reject(
                Errno::EINVAL,
                format!("interrupt index {index} does not exist"),
            );
        };
        Ok(Reply::to(h)
            .u32(16)
            .u32(irq.flags)
            .u32(irq.index)
            .u32(irq.count)
            .finish())
    }

    fn set_irqs(&mut self, h: &Header, p: &[u8], fds: Vec<OwnedFd>) -> Result<Vec<u8>, Rejected> {
        if p.len() < 20 {
            return reject(
                Errno::EINVAL,
                format!("DEVICE_SET_IRQS payload of {} bytes", p.len()),
            );
        }
        let mut f = Fields(p);
        let (argsz, irq_flags, index, start, count) = (f.u32(), f.u32(), f.u32(), f.u32(), f.u32());
        let data = irq_flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = irq_flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let known = VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if irq_flags & !known != 0 || !data.is_power_of_two() || !action.is_power_of_two() {
            return reject(
                Errno::EINVAL,
                format!("DEVICE_SET_IRQS flags {irq_flags:#x}: one data and one action type"),
            );
        }
        if data == VFIO_IRQ_SET_DATA_BOOL {
            return reject(Errno::ENOTSUP, "DEVICE_SET_IRQS with boolean data");
        }
        exact(p, 20, "DEVICE_SET_IRQS")?;
        if argsz < 20 {
            return reject(Errno::EINVAL, format!("DEVICE_SET_IRQS argsz {argsz}"));
        }
        let vectors = self.irqs.get(index as usize).map(|i| i.count);
        let in_range = start
            .checked_add(count)
            .zip(vectors)
            .is_some_and(|(end, n)| end <= n);
        if !in_range {
            return reject(
                Errno::EINVAL,
                format!("interrupt index {index}: vectors {start}+{count} of {vectors:?}"),
            );
        }
        match data {
            VFIO_IRQ_SET_DATA_NONE => no_fds(&fds, "DEVICE_SET_IRQS without eventfds")?,
            VFIO_IRQ_SET_DATA_EVENTFD if fds.is_empty() || fds.len() == count as usize => {
                if !fds.iter().all(is_eventfd) {
                    return reject(Errno::EBADF, "DEVICE_SET_IRQS descriptor is not an eventfd");
                }
            }
            _ => {
                return reject(
                    Errno::EINVAL,
                    format!(
                        "DEVICE_SET_IRQS for {count} vectors with {} eventfds",
                        fds.len()
                    ),
                )
            }
        }
        let files = fds.into_iter().map(File::from).collect();
        self.device
            .set_irqs(index, irq_flags, start, count, files)?;
        Ok(Reply::to(h).finish())
    }

    /// Checks a region access's header fields; returns (offset, region, count).
    fn access(&self, p: &[u8], what: &str) -> Result<(u64, u32, u32), Rejected> {
        let mut f = Fields(p);
        let (offset, region, count) = (f.u64(), f.u32(), f.u32());
        let limit = self
            .client
            .map_or(MAX_DATA_XFER, |c| c.max_data_xfer_size.min(MAX_DATA_XFER));
        if count > limit {
            return reject(
                Errno::E2BIG,
                format!("{what} of {count} bytes exceeds max_data_xfer_size {limit}"),
            );
        }
        let Some(r) = self.regions.get(region as usize) else {
            return reject(
                Errno::EINVAL,
                format!("{what}: region {region} does not exist"),
            );
        };
        let size = r.region_info.size;
        if offset
            .checked_add(u64::from(count))
            .is_none_or(|end| end > size)
        {
            return reject(
                Errno::EINVAL,
                format!("{what} of {count} bytes at {offset:#x} is outside region {region} ({size:#x} bytes)"),
            );
        }
        Ok((offset, region, count))
    }

    fn region_read(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        exact(p, 16, "REGION_READ")?;
        no_fds(fds, "REGION_READ")?;
        let (offset, region, count) = self.access(p, "REGION_READ")?;
        let mut data = vec![0; count as usize];
        self.device.region_read(region, offset, &mut data)?;
        Ok(Reply::to(h)
            .u64(offset)
            .u32(region)
            .u32(count)
            .bytes(&data)
            .finish())
    }

    fn region_write(&mut self, h: &Header, p: &[u8], fds: &[OwnedFd]) -> Result<Vec<u8>, Rejected> {
        if p.len() < 16 {
            return reject(
                Errno::EINVAL,
                format!("REGION_WRITE payload of {} bytes", p.len()),
            );
        }
        no_fds(fds, "REGION_WRITE")?;
        let (offset, region, count) = self.access(p, "REGION_WRITE")?;
        exact(&p[16..], count as usize, "REGION_WRITE data")?;
        self.device.region_write(region, offset, &p[16..])?;
        Ok(Reply::to(h).u64(offset).u32(region).u32(count).finish())
    }
}

/// Checks a DMA descriptor: a memory file covering `[offset, offset + size)`.
fn memory_file(fd: OwnedFd, offset: u64, size: u64) -> Result<File, Rejected> {
    if !is_memory_fd(&fd) {
        return reject(Errno::EBADF, "DMA_MAP descriptor is not a memory file");
    }
    let file = File::from(fd);
    let len = file.metadata().map_err(Rejected::from)?.len();
    if offset.checked_add(size).is_none_or(|end| end > len) {
        return reject(
            Errno::EINVAL,
            format!(
                "DMA_MAP {size:#x} bytes at file offset {offset:#x} exceed the {len:#x}-byte file"
            ),
        );
    }
    Ok(file)
}

/// Rejections logged in full before the log thins out.
const LOGGED_REJECTIONS: u64 = 64;

/// Whether the `n`th rejection of a session is logged: the first
/// [`LOGGED_REJECTIONS`], then every power of two. A client that repeats a
/// bad request (a vIOMMU forwarding a million DMA maps past the limit) must
/// not fill the disk with the same line; the session's count stays exact.
fn worth_logging(n: u64) -> bool {
    n <= LOGGED_REJECTIONS || n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(1, true)]
    #[case(64, true)]
    #[case(65, false)]
    #[case(128, true)]
    #[case(1000, false)]
    #[case(1 << 20, true)]
    fn rejections_are_logged_sparsely(#[case] n: u64, #[case] logged: bool) {
        assert_eq!(worth_logging(n), logged);
    }
}
