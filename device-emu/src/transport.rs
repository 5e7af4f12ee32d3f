//! Where a session's bytes and file descriptors come from and go to: a Unix
//! socket, or memory (for the fuzz target and for replaying recordings).
//!
//! # Recording format
//!
//! A recording (written when `BIGBAR_DEVICE_RECORD=DIR` is set, see
//! [`crate::session::Recorder`]) and a [`MemoryTransport`] input are the same
//! thing: a sequence of chunks `[kinds: u8][len: u32 LE][len bytes]`. The low
//! nibble of `kinds` is how many descriptors arrive with the chunk's first byte,
//! the high nibble what they are ([`FdKind`]). Trailing bytes too short for a
//! chunk header are ignored, so any byte string is a valid input.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Room for descriptors in one receive: the kernel's `SCM_MAX_FD`, the most
/// one `sendmsg` can pass. With less room the kernel would install the ones
/// that fit and nix would refuse to hand them over (`ENOBUFS` on a truncated
/// control message), leaking them; with this room every descriptor a peer
/// sends is received, then closed if the message may not carry it.
pub const MAX_FDS: usize = 253;

/// What one receive call got.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes written to the buffer; 0 means the peer closed the connection.
    pub len: usize,
    /// Descriptors that came with them.
    pub fds: Vec<OwnedFd>,
    /// The control data was cut short (cannot happen with [`MAX_FDS`] room
    /// for descriptors; treated as a broken message).
    pub truncated: bool,
}

/// A connection to one client.
pub trait Transport {
    /// Receives up to `buf.len()` bytes and any descriptors sent with them.
    /// Blocks until something arrives, the peer closes, or the timeout set by
    /// [`Transport::set_timeout`] passes (an error of kind `TimedOut`).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received>;
    /// Sends a whole message, with `fds` attached to its first byte.
    fn send(&mut self, bytes: &[u8], fds: &[RawFd]) -> io::Result<()>;
    /// Limits how long the next receive calls may block; `None` waits forever.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

/// A client on a Unix stream socket.
pub struct SocketTransport {
    stream: UnixStream,
}

impl SocketTransport {
    /// Wraps a connected stream. A client that stops reading our replies for
    /// `write_timeout` is dropped rather than blocking the server.
    pub fn new(stream: UnixStream, write_timeout: Duration) -> io::Result<Self> {
        stream.set_write_timeout(Some(write_timeout))?;
        Ok(Self { stream })
    }
}

impl Drop for SocketTransport {
    /// Ends the connection for every holder of the socket (the acceptor keeps
    /// a duplicate to see whether the client is still there).
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Transport for SocketTransport {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let msg = loop {
            match recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "receive timed out"))
                }
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        if truncated {
            return Ok(Received {
                len: msg.bytes,
                fds,
                truncated,
            });
        }
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in our
                // table for this message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        Ok(Received {
            len: msg.bytes,
            fds,
            truncated,
        })
    }

    fn send(&mut self, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut sent = 0;
        if !fds.is_empty() {
            let rights = [ControlMessage::ScmRights(fds)];
            sent = loop {
                match sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(bytes)],
                    &rights,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Err(Errno::EINTR) => continue,
                    other => break other?,
                }
            };
        }
        // Rust binaries ignore SIGPIPE, so a vanished peer is an EPIPE error.
        self.stream.write_all(&bytes[sent..])
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}

/// What a descriptor in a recording or fuzz input stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// An eventfd (interrupts).
    EventFd = 0,
    /// A memory file (DMA maps): a memfd of [`MemoryTransport::MEMFD_SIZE`].
    Memory = 1,
    /// Anything else (here: a pipe), which no command accepts.
    Other = 2,
}

impl FdKind {
    fn from_nibble(n: u8) -> Self {
        match n % 3 {
            0 => Self::EventFd,
            1 => Self::Memory,
            _ => Self::Other,
        }
    }

    /// Classifies a descriptor as [`crate::session`] does.
    pub fn of(fd: &OwnedFd) -> Self {
        if is_memory_fd(fd) {
            Self::Memory
        } else if is_eventfd(fd) {
            Self::EventFd
        } else {
            Self::Other
        }
    }

    /// Creates a descriptor of this kind.
    pub fn create(self) -> io::Result<OwnedFd> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        match self {
            Self::EventFd => Ok(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?.into()),
            Self::Memory => {
                let fd = memfd_create("fuzz-dma", MFdFlags::MFD_CLOEXEC)?;
                nix::unistd::ftruncate(&fd, MemoryTransport::MEMFD_SIZE as i64)?;
                Ok(fd)
            }
            Self::Other => Ok(nix::unistd::pipe()?.0),
        }
    }
}

/// Whether `fd` is memory a client may share for DMA: a regular file (a
/// memfd or a file on a RAM file system).
pub fn is_memory_fd(fd: &OwnedFd) -> bool {
    use nix::sys::stat::{fstat, SFlag};
    fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
}

/// Whether `fd` is an eventfd (an anonymous inode named `[eventfd]`; the
/// kernel offers no other way to tell).
pub fn is_eventfd(fd: &OwnedFd) -> bool {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::read_link(link).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventfd]")
}

/// Encodes one chunk of a recording.
pub fn encode_chunk(bytes: &[u8], fds: &[FdKind]) -> Vec<u8> {
    let count = fds.len().min(15) as u8;
    let kind = fds.first().map_or(0, |k| *k as u8);
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.push(count | (kind << 4));
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A client whose messages come from a recording or fuzz input; replies are
/// counted and checked for a well-formed header, then dropped.
pub struct MemoryTransport<'a> {
    input: &'a [u8],
    /// The rest of the current chunk.
    chunk: &'a [u8],
    /// Descriptors to attach to the next receive.
    pending: Vec<FdKind>,
    /// Replies sent so far.
    pub replies: usize,
}

impl<'a> MemoryTransport<'a> {
    /// Size of each memfd handed out for [`FdKind::Memory`] (sparse).
    pub const MEMFD_SIZE: u64 = 1 << 30;

    /// A transport replaying `input` (see the module documentation).
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            chunk: &[],
            pending: Vec::new(),
            replies: 0,
        }
    }

    /// Moves to the next chunk; false at the end of the input.
    fn next_chunk(&mut self) -> bool {
        while self.chunk.is_empty() {
            let [kinds, l0, l1, l2, l3, ref rest @ ..] = *self.input else {
                return false;
            };
            let len = (u32::from_le_bytes([l0, l1, l2, l3]) as usize).min(rest.len());
            let (chunk, rest) = rest.split_at(len);
            self.chunk = chunk;
            self.input = rest;
            let kind = FdKind::from_nibble(kinds >> 4);
            self.pending = vec![kind; usize::from(kinds & 0xf)];
        }
        true
    }
}

impl Transport for MemoryTransport<'_> {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if buf.is_empty() || !self.next_chunk() {
            return Ok(Received::default());
        }
        let len = buf.len().min(self.chunk.len());
        buf[..len].copy_from_slice(&self.chunk[..len]);
        self.chunk = &self.chunk[len..];
        let fds = std::mem::take(&mut self.pending)
            .into_iter()
            .map(FdKind::create)
            .collect::<io::Result<_>>()?;
        Ok(Received {
            len,
            fds,
            truncated: false,
        })
    }

    fn send(&mut self, bytes: &[u8], _fds: &[RawFd]) -> io::Result<()> {
        let header: &[u8; crate::wire::HEADER_SIZE] = bytes
            .get(..crate::wire::HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .expect("a reply has a header");
        let header = crate::wire::Header::parse(header);
        assert_eq!(header.size as usize, bytes.len(), "reply size field");
        assert_eq!(header.kind(), crate::wire::flags::TYPE_REPLY);
        self.replies += 1;
        Ok(())
    }

    fn set_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_transport_splits_chunks_and_attaches_fds_once() {
        let mut input = encode_chunk(b"abc", &[FdKind::EventFd, FdKind::EventFd]);
        input.extend(encode_chunk(b"de", &[]));
        input.extend([1, 2]); // a truncated chunk header: ignored
        let mut t = MemoryTransport::new(&input);
        let mut buf = [0; 2];
        let r = t.recv(&mut buf).unwrap();
        assert_eq!((r.len, &buf[..2], r.fds.len()), (2, &b"ab"[..], 2));
        assert!(r.fds.iter().all(is_eventfd));
        let r = t.recv(&mut buf).unwrap();
        assert_eq!((r.len, &buf[..1], r.fds.len()), (1, &b"c"[..], 0));
        let r = t.recv(&mut buf).unwrap();
        assert_eq!((r.len, &buf[..2]), (2, &b"de"[..]));
        assert_eq!(t.recv(&mut buf).unwrap().len, 0);
    }

    #[test]
    fn fd_kinds_are_recognised() {
        for kind in [FdKind::EventFd, FdKind::Memory, FdKind::Other] {
            assert_eq!(FdKind::of(&kind.create().unwrap()), kind);
        }
    }
}
