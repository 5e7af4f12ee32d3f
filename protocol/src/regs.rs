//! The register BAR's programming interface: the contract between the emulated
//! device (device-emu) and the guest tests.
//!
//! The register BAR is BAR 0, 4 KiB, 32-bit, non-prefetchable and trapped: every
//! access reaches the server as a vfio-user region read or write. Registers are
//! little endian; 64-bit registers may be accessed as one 8-byte access or as two
//! 4-byte halves (low half first).
//!
//! A command is issued by writing its code to [`COMMAND`]; it runs to completion
//! before the write returns, so [`STATUS`] and the result registers are valid on
//! the next read. The arguments are [`ARG_BAR`], [`ARG_OFFSET`], [`ARG_LENGTH`],
//! [`ARG_STRIDE`] and [`ARG_SEED`].
//!
//! Two commands reach beyond BAR memory. [`Command::RaiseIrq`] makes the
//! device signal interrupt [`IRQ_INDEX`] vector [`IRQ_VECTOR`] itself, through
//! the eventfd the client registered for it. [`Command::DmaCopy`] starts the
//! DMA engine: it copies [`DMA_LEN`] bytes (at most [`DMA_MAX_LEN`]) from
//! IOVA [`DMA_SRC`] to IOVA [`DMA_DST`] of the client's DMA mappings. The
//! copy runs after the write that started it has been answered, so
//! [`DMA_STATUS`] reads [`DmaStatus::Busy`] until it ends with
//! [`DmaStatus::Done`] or [`DmaStatus::Error`] (the [`DmaFault`] in
//! [`DMA_ERROR`]); [`DMA_IRQ`] optionally names a completion interrupt.

/// PCI vendor ID of the emulated device (the ID QEMU uses for its test devices).
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID of the emulated device ("bigbar").
pub const DEVICE_ID: u16 = 0xb16b;
/// BAR index of the register BAR.
pub const REGS_BAR: u32 = 0;
/// Size of the register BAR.
pub const REGS_SIZE: u64 = 4096;

/// Read-only u32: [`MAGIC_VALUE`].
pub const MAGIC: u64 = 0x00;
/// Read-only u32: [`ABI_VERSION`].
pub const VERSION: u64 = 0x04;
/// Read-only u32: bitmap of the BAR indices that are backed by memory (large BARs).
pub const BAR_MASK: u64 = 0x08;
/// Read/write u32: index of the BAR a command works on.
pub const ARG_BAR: u64 = 0x10;
/// Read/write u64: byte offset inside the BAR where a command starts.
pub const ARG_OFFSET: u64 = 0x18;
/// Read/write u64: number of bytes a command covers.
pub const ARG_LENGTH: u64 = 0x20;
/// Read/write u64: distance between two tagged words (a multiple of 8, at least 8).
pub const ARG_STRIDE: u64 = 0x28;
/// Read/write u64: seed mixed into every tag, so stale patterns are told apart.
pub const ARG_SEED: u64 = 0x30;
/// Write-only u32: writing a [`Command`] code runs it.
pub const COMMAND: u64 = 0x38;
/// Read-only u32: the [`Status`] of the last command.
pub const STATUS: u64 = 0x3c;
/// Read-only u64: words that did not hold their tag in the last `Verify`.
pub const MISMATCHES: u64 = 0x40;
/// Read-only u64: BAR offset of the first mismatching word of the last `Verify`.
pub const FIRST_MISMATCH_OFFSET: u64 = 0x48;
/// Read-only u64: the value found at [`FIRST_MISMATCH_OFFSET`].
pub const FIRST_MISMATCH_VALUE: u64 = 0x50;
/// Read/write u64: scratch register with no side effect, for data-path checks.
pub const SCRATCH: u64 = 0x58;
/// Read-only u64: number of commands executed since the last reset.
pub const COMMANDS_DONE: u64 = 0x60;

/// Read/write u32: interrupt index [`Command::RaiseIrq`] raises
/// ([`IRQ_INDEX_MSI`] or [`IRQ_INDEX_MSIX`], the VFIO index numbers).
pub const IRQ_INDEX: u64 = 0x68;
/// Read/write u32: vector [`Command::RaiseIrq`] raises.
pub const IRQ_VECTOR: u64 = 0x6c;
/// Read/write u64: IOVA the DMA engine copies from.
pub const DMA_SRC: u64 = 0x70;
/// Read/write u64: IOVA the DMA engine copies to.
pub const DMA_DST: u64 = 0x78;
/// Read/write u64: bytes the DMA engine copies (1 to [`DMA_MAX_LEN`]).
pub const DMA_LEN: u64 = 0x80;
/// Read/write u32: completion interrupt of a copy, [`dma_irq`] or 0 for none.
pub const DMA_IRQ: u64 = 0x88;
/// Read-only u32: the [`DmaStatus`] of the DMA engine.
pub const DMA_STATUS: u64 = 0x8c;
/// Read-only u32: the [`DmaFault`] of the last copy.
pub const DMA_ERROR: u64 = 0x90;
/// Read-only u64: copies finished (done or failed) since the last reset.
pub const DMA_COPIES: u64 = 0x98;

/// VFIO interrupt index of MSI (`VFIO_PCI_MSI_IRQ_INDEX`).
pub const IRQ_INDEX_MSI: u32 = 1;
/// VFIO interrupt index of MSI-X (`VFIO_PCI_MSIX_IRQ_INDEX`).
pub const IRQ_INDEX_MSIX: u32 = 2;
/// Largest copy of the DMA engine.
pub const DMA_MAX_LEN: u64 = 1 << 20;
/// [`DMA_IRQ`] bit: raise an interrupt when the copy ends.
pub const DMA_IRQ_ENABLE: u32 = 1 << 31;

/// The [`DMA_IRQ`] value that raises `index` vector `vector` at completion.
pub fn dma_irq(index: u32, vector: u16) -> u32 {
    DMA_IRQ_ENABLE | (index & 0xff) << 16 | u32::from(vector)
}

/// Decodes a [`DMA_IRQ`] value: `Some((index, vector))` when enabled.
pub fn dma_irq_target(value: u32) -> Option<(u32, u32)> {
    (value & DMA_IRQ_ENABLE != 0).then_some(((value >> 16) & 0xff, value & 0xffff))
}

/// Value of the [`MAGIC`] register: "bbar" in ASCII.
pub const MAGIC_VALUE: u32 = u32::from_be_bytes(*b"bbar");
/// Version of this register interface.
pub const ABI_VERSION: u32 = 2;

/// Commands written to [`COMMAND`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    /// Write [`tag`] to every stride-th word of the range.
    Fill = 1,
    /// Compare every stride-th word of the range with [`tag`]; count mismatches.
    Verify = 2,
    /// Release the host memory behind the range (punch a hole in the memfd);
    /// the range reads back as zeros.
    Discard = 3,
    /// Signal [`IRQ_INDEX`] vector [`IRQ_VECTOR`] (held pending while masked).
    RaiseIrq = 4,
    /// Start the DMA engine with [`DMA_SRC`], [`DMA_DST`], [`DMA_LEN`] and
    /// [`DMA_IRQ`]; the status is `Ok` once it is accepted.
    DmaCopy = 5,
}

impl Command {
    /// Decodes a value written to [`COMMAND`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Fill),
            2 => Some(Self::Verify),
            3 => Some(Self::Discard),
            4 => Some(Self::RaiseIrq),
            5 => Some(Self::DmaCopy),
            _ => None,
        }
    }
}

/// Values of the [`STATUS`] register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// The command succeeded (for `Verify`: no mismatch).
    Ok = 0,
    /// Unknown command code.
    BadCommand = 1,
    /// [`ARG_BAR`] names no memory-backed BAR.
    BadBar = 2,
    /// Offset, length or stride out of range, unaligned or overflowing.
    BadRange = 3,
    /// `Verify` found at least one mismatch.
    Mismatch = 4,
    /// The host failed to carry out the command (I/O error on the memfd).
    HostError = 5,
    /// `RaiseIrq`: the device has no such interrupt index or vector.
    BadIrq = 6,
    /// `RaiseIrq`: the client registered no eventfd for the vector.
    IrqUnset = 7,
    /// `DmaCopy`: the DMA engine is still busy with the previous copy.
    Busy = 8,
}

impl Status {
    /// Decodes a value read from [`STATUS`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Ok),
            1 => Some(Self::BadCommand),
            2 => Some(Self::BadBar),
            3 => Some(Self::BadRange),
            4 => Some(Self::Mismatch),
            5 => Some(Self::HostError),
            6 => Some(Self::BadIrq),
            7 => Some(Self::IrqUnset),
            8 => Some(Self::Busy),
            _ => None,
        }
    }
}

/// Values of the [`DMA_STATUS`] register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DmaStatus {
    /// No copy since the last reset.
    Idle = 0,
    /// A copy was started and has not ended.
    Busy = 1,
    /// The last copy wrote every byte.
    Done = 2,
    /// The last copy failed; [`DMA_ERROR`] says why.
    Error = 3,
}

impl DmaStatus {
    /// Decodes a value read from [`DMA_STATUS`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Idle),
            1 => Some(Self::Busy),
            2 => Some(Self::Done),
            3 => Some(Self::Error),
            _ => None,
        }
    }
}

/// Values of the [`DMA_ERROR`] register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DmaFault {
    /// No error.
    None = 0,
    /// [`DMA_LEN`] is 0 or above [`DMA_MAX_LEN`], or a range wraps.
    BadLength = 1,
    /// Part of the source or destination is not covered by a DMA mapping.
    Unmapped = 2,
    /// A mapping lacks the read (source) or write (destination) permission.
    Permission = 3,
    /// The client failed a DMA read or write message (or did not answer).
    Transfer = 4,
    /// Source and destination overlap.
    Overlap = 5,
}

impl DmaFault {
    /// Decodes a value read from [`DMA_ERROR`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::BadLength),
            2 => Some(Self::Unmapped),
            3 => Some(Self::Permission),
            4 => Some(Self::Transfer),
            5 => Some(Self::Overlap),
            _ => None,
        }
    }
}

/// The argument registers of one command: [`ARG_BAR`], [`ARG_OFFSET`],
/// [`ARG_LENGTH`], [`ARG_STRIDE`] and [`ARG_SEED`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandArgs {
    /// [`ARG_BAR`]: index of the BAR the command works on.
    pub bar: u32,
    /// [`ARG_OFFSET`]: byte offset inside the BAR.
    pub offset: u64,
    /// [`ARG_LENGTH`]: bytes covered.
    pub length: u64,
    /// [`ARG_STRIDE`]: distance between tagged words.
    pub stride: u64,
    /// [`ARG_SEED`]: seed mixed into every tag.
    pub seed: u64,
}

/// The tag stored in the 8-byte word at byte `offset` of BAR `bar`.
///
/// Offset, BAR and seed all enter the value, so a word read through a mapping
/// that points at the wrong page, the wrong BAR or an old fill never matches.
pub fn tag(seed: u64, bar: u32, offset: u64) -> u64 {
    // splitmix64-style mixing: cheap, and no two nearby offsets share a tag.
    let mut z = offset ^ ((bar as u64) << 56) ^ seed.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_offset_bar_and_seed() {
        assert_ne!(tag(0, 1, 0), tag(0, 1, 8));
        assert_ne!(tag(0, 1, 0), tag(0, 2, 0));
        assert_ne!(tag(0, 1, 0), tag(1, 1, 0));
        assert_ne!(tag(0, 1, 4096), tag(0, 1, 0));
    }

    #[test]
    fn codes_round_trip() {
        for c in 1..=5 {
            assert_eq!(Command::from_u32(c).map(|c| c as u32), Some(c));
        }
        assert_eq!(Command::from_u32(0), None);
        assert_eq!(Command::from_u32(6), None);
        for s in 0..=8 {
            assert_eq!(Status::from_u32(s).map(|s| s as u32), Some(s));
        }
        assert_eq!(Status::from_u32(9), None);
        for s in 0..=3 {
            assert_eq!(DmaStatus::from_u32(s).map(|s| s as u32), Some(s));
        }
        assert_eq!(DmaStatus::from_u32(4), None);
        for f in 0..=5 {
            assert_eq!(DmaFault::from_u32(f).map(|f| f as u32), Some(f));
        }
        assert_eq!(DmaFault::from_u32(6), None);
    }

    #[test]
    fn dma_irq_round_trips() {
        assert_eq!(dma_irq_target(0), None);
        assert_eq!(dma_irq_target(dma_irq(IRQ_INDEX_MSIX, 7)), Some((2, 7)));
        assert_eq!(dma_irq_target(dma_irq(IRQ_INDEX_MSI, 0)), Some((1, 0)));
    }
}
