//! The vfio-user wire format: the 16-byte message header, command numbers and
//! the encoding of the server's replies.
//!
//! The `vfio_user` crate has the same structures, but private to its own server
//! loop, which [`crate::session`] replaces; this module holds only what that
//! replacement needs. All fields are in host byte order (vfio-user 0.1).

/// Size of the header every message starts with.
pub const HEADER_SIZE: usize = 16;

/// Command numbers (vfio-user specification, "Commands").
pub mod command {
    /// `VFIO_USER_VERSION`.
    pub const VERSION: u16 = 1;
    /// `VFIO_USER_DMA_MAP`.
    pub const DMA_MAP: u16 = 2;
    /// `VFIO_USER_DMA_UNMAP`.
    pub const DMA_UNMAP: u16 = 3;
    /// `VFIO_USER_DEVICE_GET_INFO`.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS` (not supported).
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// `VFIO_USER_DEVICE_SET_IRQS`.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// `VFIO_USER_REGION_READ`.
    pub const REGION_READ: u16 = 9;
    /// `VFIO_USER_REGION_WRITE`.
    pub const REGION_WRITE: u16 = 10;
    /// `VFIO_USER_DMA_READ` (server to client only).
    pub const DMA_READ: u16 = 11;
    /// `VFIO_USER_DMA_WRITE` (server to client only).
    pub const DMA_WRITE: u16 = 12;
    /// `VFIO_USER_DEVICE_RESET`.
    pub const DEVICE_RESET: u16 = 13;
}

/// Header flag bits.
pub mod flags {
    /// The message type field (bits 0 to 3).
    pub const TYPE_MASK: u32 = 0xf;
    /// Type: a command.
    pub const TYPE_COMMAND: u32 = 0;
    /// Type: a reply.
    pub const TYPE_REPLY: u32 = 1;
    /// The sender wants no reply.
    pub const NO_REPLY: u32 = 1 << 4;
    /// The reply reports an error (the errno is in the header's error field).
    pub const ERROR: u32 = 1 << 5;
    /// Every bit the specification defines.
    pub const KNOWN: u32 = TYPE_MASK | NO_REPLY | ERROR;
}

/// A message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Message id, echoed in the reply.
    pub id: u16,
    /// Command number.
    pub command: u16,
    /// Size of the whole message, header included.
    pub size: u32,
    /// Flags ([`flags`]).
    pub flags: u32,
    /// Error number (replies only).
    pub error: u32,
}

impl Header {
    /// Decodes a header.
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Self {
        let mut r = Fields(bytes);
        Self {
            id: r.u16(),
            command: r.u16(),
            size: r.u32(),
            flags: r.u32(),
            error: r.u32(),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0; HEADER_SIZE];
        out[0..2].copy_from_slice(&self.id.to_ne_bytes());
        out[2..4].copy_from_slice(&self.command.to_ne_bytes());
        out[4..8].copy_from_slice(&self.size.to_ne_bytes());
        out[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        out[12..16].copy_from_slice(&self.error.to_ne_bytes());
        out
    }

    /// Whether the sender asked for no reply.
    pub fn no_reply(&self) -> bool {
        self.flags & flags::NO_REPLY != 0
    }

    /// The message type (command, reply...).
    pub fn kind(&self) -> u32 {
        self.flags & flags::TYPE_MASK
    }
}

/// Reads fixed-size host-endian fields from the front of a byte slice.
///
/// Callers check the slice length first; reading past the end panics, which
/// the fuzz target would report.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }

    /// Next `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }

    /// Next `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }

    /// Next `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
}

/// A reply under construction: the header's size is filled in by [`Reply::finish`].
pub struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    /// A successful reply to `request`.
    pub fn to(request: &Header) -> Self {
        let header = Header {
            id: request.id,
            command: request.command,
            size: 0,
            flags: flags::TYPE_REPLY,
            error: 0,
        };
        Self {
            bytes: header.encode().to_vec(),
        }
    }

    /// A command of the server's own (`DMA_READ`, `DMA_WRITE`), with `id`.
    pub fn command(id: u16, command: u16) -> Self {
        let header = Header {
            id,
            command,
            size: 0,
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        Self {
            bytes: header.encode().to_vec(),
        }
    }

    /// An error reply to `request` (header only, as the specification demands).
    pub fn error(request: &Header, errno: i32) -> Vec<u8> {
        let header = Header {
            id: request.id,
            command: request.command,
            size: HEADER_SIZE as u32,
            flags: flags::TYPE_REPLY | flags::ERROR,
            error: errno.unsigned_abs(),
        };
        header.encode().to_vec()
    }

    /// Appends a `u16`.
    pub fn u16(mut self, v: u16) -> Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends a `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// Finishes a command of the server's own with message id `id`.
    pub fn finish_with_id(mut self, id: u16) -> Vec<u8> {
        self.bytes[0..2].copy_from_slice(&id.to_ne_bytes());
        self.finish()
    }

    /// The encoded message with its size set. Replies are built from bounded
    /// pieces (at most the data transfer limit plus fixed fields).
    pub fn finish(mut self) -> Vec<u8> {
        let size = u32::try_from(self.bytes.len()).expect("replies are bounded far below 4 GiB");
        self.bytes[4..8].copy_from_slice(&size.to_ne_bytes());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            id: 0x1234,
            command: command::REGION_READ,
            size: 32,
            flags: flags::NO_REPLY,
            error: 5,
        };
        assert_eq!(Header::parse(&h.encode()), h);
        assert!(h.no_reply());
        assert_eq!(h.kind(), flags::TYPE_COMMAND);
    }

    #[test]
    fn replies_carry_their_size_and_echo_the_id() {
        let request = Header {
            id: 9,
            command: command::DEVICE_RESET,
            size: 16,
            ..Header::default()
        };
        let reply = Reply::to(&request).u32(7).finish();
        let h = Header::parse(reply[..16].try_into().unwrap());
        assert_eq!((h.id, h.command, h.size, h.flags), (9, 13, 20, 1));
        let e = Reply::error(&request, libc_einval());
        let h = Header::parse(e[..].try_into().unwrap());
        assert_eq!((h.size, h.flags, h.error), (16, 0x21, 22));
    }

    fn libc_einval() -> i32 {
        nix::errno::Errno::EINVAL as i32
    }
}
