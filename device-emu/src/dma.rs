//! The client's DMA mappings: book-keeping (a client that maps overlapping
//! or wrapping ranges, or too many, gets an error, as it would from the
//! kernel's VFIO type1 IOMMU driver), and the memory behind them for the DMA
//! engine ([`crate::regs::Command::DmaCopy`]).
//!
//! A mapping's memory is reached one of two ways ([`Backing`]):
//!
//! - **Shared**: the client passed a memory file sealed against shrinking
//!   (`F_SEAL_SHRINK`, as QEMU's `memory-backend-memfd` seals by default).
//!   It is mapped into the server and the descriptor closed. Only sealed
//!   files are mapped: a client could truncate any other file under the
//!   mapping, and the server's next access would die of SIGBUS.
//! - **Messages**: no file, or an unsealed one (closed at once): the engine
//!   asks the client with `DMA_READ` and `DMA_WRITE` messages, which the
//!   specification requires every client to serve.
//!
//! Either way no descriptor is kept: holding up to [`MAX_MAPPINGS`] of a
//! client's descriptors would let it exhaust the server's descriptor table
//! (after which not even `accept` works).

use std::collections::BTreeMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use crate::regs::DmaFault;

/// Most live mappings: the default `dma_entry_limit` of the kernel's VFIO
/// type1 driver and vfio-user's default `max_dma_maps`.
pub const MAX_MAPPINGS: usize = 65535;

/// A rejected DMA map or unmap request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// The range has no bytes.
    #[error("DMA range at {address:#x} is empty")]
    Empty {
        /// Start of the range.
        address: u64,
    },
    /// The range wraps past the end of the address space.
    #[error("DMA range at {address:#x} of {size:#x} bytes wraps around")]
    Wraps {
        /// Start of the range.
        address: u64,
        /// Size of the range.
        size: u64,
    },
    /// The range overlaps an existing mapping.
    #[error("DMA range at {address:#x} of {size:#x} bytes overlaps the mapping at {existing:#x}")]
    Overlap {
        /// Start of the range.
        address: u64,
        /// Size of the range.
        size: u64,
        /// Start of the mapping it overlaps.
        existing: u64,
    },
    /// [`MAX_MAPPINGS`] mappings are live already.
    #[error("DMA map at {address:#x}: {MAX_MAPPINGS} mappings are live already")]
    TooMany {
        /// Start of the refused range.
        address: u64,
    },
    /// An unmap covers no mapping.
    #[error("DMA unmap at {address:#x} of {size:#x} bytes matches no mapping")]
    NotMapped {
        /// Start of the range.
        address: u64,
        /// Size of the range.
        size: u64,
    },
    /// An unmap covers only part of a mapping.
    #[error("DMA unmap at {address:#x} of {size:#x} bytes splits the mapping at {existing:#x}")]
    PartialUnmap {
        /// Start of the range.
        address: u64,
        /// Size of the range.
        size: u64,
        /// Start of the mapping it would split.
        existing: u64,
    },
}

/// DMA_MAP protection flag: the device may read the range.
pub const PROT_READ: u32 = 1;
/// DMA_MAP protection flag: the device may write the range.
pub const PROT_WRITE: u32 = 2;

/// A client's memory file mapped into the server (shared, read and write).
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; no thread-bound
// state is attached to the pointer, so moving it to another thread is sound.
unsafe impl Send for SharedMemory {}

impl SharedMemory {
    /// Maps `len` bytes at `offset` of `file`, or `None` when the file is
    /// not sealed against shrinking (or cannot be mapped): then the mapping
    /// is served with messages.
    fn map(file: &File, offset: u64, len: u64) -> Option<Self> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let seals = fcntl(file, FcntlArg::F_GET_SEALS).ok()?;
        if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
            return None;
        }
        let size = NonZeroUsize::new(usize::try_from(len).ok()?)?;
        let offset = i64::try_from(offset).ok()?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new shared mapping at an address the kernel picks
        // overlaps no Rust object. The file cannot shrink below the range
        // (checked at DMA_MAP and sealed), so no access to it faults; the
        // client may change its bytes at any time, which is why they are
        // only ever copied through raw pointers, never borrowed.
        let base = unsafe { mmap(None, size, prot, MapFlags::MAP_SHARED, file.as_fd(), offset) }
            .map_err(|e| log::warn!("mapping a DMA memory file: {e}; using messages"))
            .ok()?;
        Some(Self {
            base: base.cast(),
            len: size.get(),
        })
    }

    /// Copies `buf.len()` bytes at `at` into `buf`; false if out of range.
    fn read(&self, at: usize, buf: &mut [u8]) -> bool {
        if at.checked_add(buf.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: `at` is inside the mapping (checked above).
        let from = unsafe { self.base.as_ptr().add(at) };
        // SAFETY: `at..at + len` lies inside the mapping (checked above);
        // `buf` is a distinct Rust buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to `at`; false if out of range.
    fn write(&self, at: usize, data: &[u8]) -> bool {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: `at` is inside the mapping (checked above).
        let to = unsafe { self.base.as_ptr().add(at) };
        // SAFETY: as in `read`, with the copy going the other way.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), to, data.len()) };
        true
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` describe a mapping this value created and
        // nothing else refers to (copies never outlive a call).
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.base.cast(), self.len) } {
            log::warn!("unmapping DMA memory: {e}");
        }
    }
}

/// How the DMA engine reaches a mapping's memory.
#[derive(Debug)]
pub enum Backing {
    /// Through `DMA_READ` and `DMA_WRITE` messages to the client.
    Messages,
    /// Directly, in the client's (sealed) memory file.
    Shared(SharedMemory),
}

/// One recorded mapping.
#[derive(Debug)]
pub struct DmaMapping {
    /// Last byte of the range (inclusive, so a range may end at 2^64).
    pub last: u64,
    /// Offset into the file.
    pub offset: u64,
    /// Protection flags as sent ([`PROT_READ`], [`PROT_WRITE`]).
    pub flags: u32,
    /// Where its memory is.
    pub backing: Backing,
}

/// A piece of a DMA transfer that lies in one way of reaching memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// IOVA of the first byte.
    pub iova: u64,
    /// Bytes.
    pub len: u64,
    /// Whether the piece is in shared memory (else it takes messages).
    pub shared: bool,
}

/// The set of live mappings, keyed by start address.
#[derive(Debug, Default)]
pub struct DmaMappings {
    maps: BTreeMap<u64, DmaMapping>,
}

fn last_byte(address: u64, size: u64) -> Result<u64, DmaError> {
    if size == 0 {
        return Err(DmaError::Empty { address });
    }
    address
        .checked_add(size - 1)
        .ok_or(DmaError::Wraps { address, size })
}

impl DmaMappings {
    /// Records a mapping of `[address, address + size)`.
    pub fn map(
        &mut self,
        address: u64,
        size: u64,
        offset: u64,
        flags: u32,
        file: Option<File>,
    ) -> Result<(), DmaError> {
        let last = last_byte(address, size)?;
        let overlap = |(&start, m): (&u64, &DmaMapping)| {
            (start <= last && m.last >= address).then_some(start)
        };
        let before = self.maps.range(..=address).next_back().and_then(overlap);
        let after = self.maps.range(address..).next().and_then(overlap);
        if let Some(existing) = before.or(after) {
            return Err(DmaError::Overlap {
                address,
                size,
                existing,
            });
        }
        if self.maps.len() >= MAX_MAPPINGS {
            return Err(DmaError::TooMany { address });
        }
        let backing = file
            .and_then(|f| SharedMemory::map(&f, offset, size))
            .map_or(Backing::Messages, Backing::Shared);
        self.maps.insert(
            address,
            DmaMapping {
                last,
                offset,
                flags,
                backing,
            },
        );
        Ok(())
    }

    /// Cuts `[iova, iova + len)` into pieces of contiguous mappings that
    /// allow `access` ([`PROT_READ`] or [`PROT_WRITE`]); adjacent message
    /// pieces are merged, so one request can carry them.
    pub fn plan(&self, iova: u64, len: u64, access: u32) -> Result<Vec<Piece>, DmaFault> {
        let last = last_byte(iova, len).map_err(|_| DmaFault::BadLength)?;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut at = iova;
        loop {
            let (&start, m) = self
                .maps
                .range(..=at)
                .next_back()
                .filter(|(_, m)| m.last >= at)
                .ok_or(DmaFault::Unmapped)?;
            if m.flags & access == 0 {
                return Err(DmaFault::Permission);
            }
            let end = m.last.min(last);
            let shared = matches!(m.backing, Backing::Shared(_));
            let piece = Piece {
                iova: at,
                len: end - at + 1,
                shared,
            };
            match pieces.last_mut() {
                Some(p) if !p.shared && !shared => p.len += piece.len,
                _ => pieces.push(piece),
            }
            log::trace!("DMA piece {piece:?} of the mapping at {start:#x}");
            if end == last {
                return Ok(pieces);
            }
            at = end + 1;
        }
    }

    /// The shared memory holding `[iova, iova + len)` and the offset of
    /// `iova` in it.
    fn shared_at(&self, iova: u64, len: usize) -> Option<(&SharedMemory, usize)> {
        let (&start, m) = self.maps.range(..=iova).next_back()?;
        let last = iova.checked_add(len.checked_sub(1)? as u64)?;
        match &m.backing {
            Backing::Shared(mem) if last <= m.last => Some((mem, (iova - start) as usize)),
            _ => None,
        }
    }

    /// Reads a shared piece (looked up again: the client may have unmapped
    /// it since it was planned).
    pub fn read_shared(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        match self.shared_at(iova, buf.len()) {
            Some((mem, at)) if mem.read(at, buf) => Ok(()),
            _ => Err(DmaFault::Unmapped),
        }
    }

    /// Writes a shared piece (looked up again, as for reads).
    pub fn write_shared(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        match self.shared_at(iova, data.len()) {
            Some((mem, at)) if mem.write(at, data) => Ok(()),
            _ => Err(DmaFault::Unmapped),
        }
    }

    /// Removes every mapping inside `[address, address + size)`; returns how
    /// many. A mapping only partly inside is an error and nothing is removed;
    /// so is a range that holds no mapping at all: the specification says
    /// an unmap must match a previous mapping. (One range may remove several
    /// whole mappings: QEMU with a vIOMMU unmaps what it mapped page by page
    /// with one invalidation.)
    pub fn unmap(&mut self, address: u64, size: u64) -> Result<usize, DmaError> {
        let last = last_byte(address, size)?;
        let partial = |(&start, m): (&u64, &DmaMapping)| {
            let overlaps = start <= last && m.last >= address;
            let inside = start >= address && m.last <= last;
            (overlaps && !inside).then_some(start)
        };
        let straddling = self
            .maps
            .range(..=address)
            .next_back()
            .and_then(partial)
            .or_else(|| self.maps.range(..=last).next_back().and_then(partial));
        if let Some(existing) = straddling {
            return Err(DmaError::PartialUnmap {
                address,
                size,
                existing,
            });
        }
        let inside: Vec<u64> = self.maps.range(address..=last).map(|(&s, _)| s).collect();
        if inside.is_empty() {
            return Err(DmaError::NotMapped { address, size });
        }
        for start in &inside {
            self.maps.remove(start);
        }
        Ok(inside.len())
    }

    /// Removes every mapping.
    pub fn clear(&mut self) {
        self.maps.clear();
    }

    /// Number of live mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether no mapping is live.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// What the DMA engine copies through: the mappings, and the client for
/// the pieces that take messages.
pub trait DmaBus {
    /// The live mappings (asked again for every piece: serving the client
    /// while a message is outstanding may change them).
    fn mappings(&self) -> &DmaMappings;
    /// Reads `buf.len()` bytes at `iova` from the client (`DMA_READ`).
    fn remote_read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault>;
    /// Writes `data` at `iova` through the client (`DMA_WRITE`).
    fn remote_write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaFault>;
}

/// One copy of the DMA engine: `len` bytes from IOVA `src` to IOVA `dst`.
///
/// Every check comes before the first byte moves: the length (1 to
/// [`crate::regs::DMA_MAX_LEN`]), overlap, and that both ranges lie in
/// mappings with the right permission. The source is read whole, then the
/// destination written, so a copy between two mappings of the same memory
/// is never torn by its own writes.
pub fn copy(bus: &mut impl DmaBus, src: u64, dst: u64, len: u64) -> Result<(), DmaFault> {
    if len == 0 || len > crate::regs::DMA_MAX_LEN {
        return Err(DmaFault::BadLength);
    }
    let src_end = src.checked_add(len).ok_or(DmaFault::BadLength)?;
    let dst_end = dst.checked_add(len).ok_or(DmaFault::BadLength)?;
    if src < dst_end && dst < src_end {
        return Err(DmaFault::Overlap);
    }
    let from = bus.mappings().plan(src, len, PROT_READ)?;
    let to = bus.mappings().plan(dst, len, PROT_WRITE)?;
    let mut data = vec![0; len as usize];
    let mut at = 0;
    for p in from {
        let chunk = &mut data[at..at + p.len as usize];
        if p.shared {
            bus.mappings().read_shared(p.iova, chunk)?;
        } else {
            bus.remote_read(p.iova, chunk)?;
        }
        at += p.len as usize;
    }
    let mut at = 0;
    for p in to {
        let chunk = &data[at..at + p.len as usize];
        if p.shared {
            bus.mappings().write_shared(p.iova, chunk)?;
        } else {
            bus.remote_write(p.iova, chunk)?;
        }
        at += p.len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const K: u64 = 4096;

    fn with_two() -> DmaMappings {
        let mut m = DmaMappings::default();
        m.map(0x10 * K, 0x10 * K, 0, 3, None).unwrap();
        m.map(0x40 * K, 0x10 * K, 0, 3, None).unwrap();
        m
    }

    #[rstest]
    #[case::below(0, 0x10 * K, None)]
    #[case::between(0x20 * K, 0x20 * K, None)]
    #[case::top_of_space(u64::MAX - K + 1, K, None)]
    #[case::empty(0, 0, Some(DmaError::Empty { address: 0 }))]
    #[case::wraps(u64::MAX - K + 1, 2 * K, Some(DmaError::Wraps { address: u64::MAX - K + 1, size: 2 * K }))]
    #[case::same(0x10 * K, 0x10 * K, Some(DmaError::Overlap { address: 0x10 * K, size: 0x10 * K, existing: 0x10 * K }))]
    #[case::tail(0x1f * K, 2 * K, Some(DmaError::Overlap { address: 0x1f * K, size: 2 * K, existing: 0x10 * K }))]
    #[case::head(0x3f * K, 2 * K, Some(DmaError::Overlap { address: 0x3f * K, size: 2 * K, existing: 0x40 * K }))]
    #[case::covers(0, 0x100 * K, Some(DmaError::Overlap { address: 0, size: 0x100 * K, existing: 0x10 * K }))]
    fn map_checks(#[case] address: u64, #[case] size: u64, #[case] error: Option<DmaError>) {
        let mut m = with_two();
        assert_eq!(m.map(address, size, 0, 3, None).err(), error);
        assert_eq!(m.len(), 2 + usize::from(error.is_none()));
    }

    #[test]
    fn the_number_of_mappings_is_limited() {
        let mut m = DmaMappings::default();
        for i in 0..MAX_MAPPINGS as u64 {
            m.map(i * K, K, 0, 3, None).unwrap();
        }
        let address = MAX_MAPPINGS as u64 * K;
        assert_eq!(
            m.map(address, K, 0, 3, None),
            Err(DmaError::TooMany { address })
        );
        m.unmap(0, K).unwrap();
        m.map(address, K, 0, 3, None).unwrap();
    }

    #[rstest]
    #[case::exact(0x10 * K, 0x10 * K, Ok(1))]
    #[case::both(0, 0x100 * K, Ok(2))]
    #[case::nothing(0x20 * K, 0x10 * K, Err(DmaError::NotMapped { address: 0x20 * K, size: 0x10 * K }))]
    #[case::never_mapped_top(u64::MAX - K + 1, K, Err(DmaError::NotMapped { address: u64::MAX - K + 1, size: K }))]
    #[case::head_of_one(0x10 * K, K, Err(DmaError::PartialUnmap { address: 0x10 * K, size: K, existing: 0x10 * K }))]
    #[case::tail_of_one(0x4f * K, 0x10 * K, Err(DmaError::PartialUnmap { address: 0x4f * K, size: 0x10 * K, existing: 0x40 * K }))]
    #[case::into_second(0, 0x41 * K, Err(DmaError::PartialUnmap { address: 0, size: 0x41 * K, existing: 0x40 * K }))]
    #[case::wraps(u64::MAX, 2, Err(DmaError::Wraps { address: u64::MAX, size: 2 }))]
    fn unmap_checks(
        #[case] address: u64,
        #[case] size: u64,
        #[case] result: Result<usize, DmaError>,
    ) {
        let mut m = with_two();
        assert_eq!(m.unmap(address, size), result);
        assert_eq!(m.len(), 2 - result.unwrap_or(0));
    }

    fn three() -> DmaMappings {
        let mut m = DmaMappings::default();
        m.map(0x10 * K, K, 0, PROT_READ | PROT_WRITE, None).unwrap();
        m.map(0x11 * K, K, 0, PROT_READ | PROT_WRITE, None).unwrap();
        m.map(0x12 * K, K, 0, PROT_READ, None).unwrap();
        m
    }

    fn msgs(iova: u64, len: u64) -> Piece {
        Piece {
            iova,
            len,
            shared: false,
        }
    }

    #[rstest]
    #[case::inside(0x10 * K + 8, 16, PROT_READ, Ok(vec![msgs(0x10 * K + 8, 16)]))]
    #[case::merged_across(0x10 * K + 8, 3 * K - 16, PROT_READ, Ok(vec![msgs(0x10 * K + 8, 3 * K - 16)]))]
    #[case::whole(0x10 * K, 3 * K, PROT_READ, Ok(vec![msgs(0x10 * K, 3 * K)]))]
    #[case::read_only_dst(0x10 * K, 3 * K, PROT_WRITE, Err(DmaFault::Permission))]
    #[case::writable_part(0x10 * K, 2 * K, PROT_WRITE, Ok(vec![msgs(0x10 * K, 2 * K)]))]
    #[case::runs_off_the_end(0x12 * K, 2 * K, PROT_READ, Err(DmaFault::Unmapped))]
    #[case::starts_unmapped(0x0f * K, 2 * K, PROT_READ, Err(DmaFault::Unmapped))]
    #[case::nowhere(0, 8, PROT_READ, Err(DmaFault::Unmapped))]
    #[case::wraps(u64::MAX, 2, PROT_READ, Err(DmaFault::BadLength))]
    #[case::empty(0x10 * K, 0, PROT_READ, Err(DmaFault::BadLength))]
    fn plans(
        #[case] iova: u64,
        #[case] len: u64,
        #[case] access: u32,
        #[case] plan: Result<Vec<Piece>, DmaFault>,
    ) {
        assert_eq!(three().plan(iova, len, access), plan);
    }

    fn sealed_memfd(len: u64) -> File {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create("dma-test", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, len as i64).unwrap();
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).unwrap();
        File::from(fd)
    }

    /// A bus whose message pieces live in a map of IOVA to byte.
    struct FakeBus {
        maps: DmaMappings,
        remote: BTreeMap<u64, u8>,
        requests: usize,
    }

    impl DmaBus for FakeBus {
        fn mappings(&self) -> &DmaMappings {
            &self.maps
        }
        fn remote_read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
            self.requests += 1;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.remote.get(&(iova + i as u64)).copied().unwrap_or(0);
            }
            Ok(())
        }
        fn remote_write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
            self.requests += 1;
            for (i, &b) in data.iter().enumerate() {
                self.remote.insert(iova + i as u64, b);
            }
            Ok(())
        }
    }

    fn bus() -> FakeBus {
        let mut maps = three();
        let shared = sealed_memfd(2 * K);
        maps.map(0x20 * K, 2 * K, 0, 3, Some(shared)).unwrap();
        FakeBus {
            maps,
            remote: (0..3 * K).map(|i| (0x10 * K + i, i as u8)).collect(),
            requests: 0,
        }
    }

    #[rstest]
    #[case::zero(0x10 * K, 0x20 * K, 0, Err(DmaFault::BadLength))]
    #[case::too_long(0x10 * K, 0x20 * K, crate::regs::DMA_MAX_LEN + 1, Err(DmaFault::BadLength))]
    #[case::wraps(u64::MAX - 4, 0x20 * K, 8, Err(DmaFault::BadLength))]
    #[case::overlap(0x10 * K, 0x10 * K + 8, 16, Err(DmaFault::Overlap))]
    #[case::unmapped_src(0x30 * K, 0x20 * K, 16, Err(DmaFault::Unmapped))]
    #[case::unmapped_dst(0x10 * K, 0x30 * K, 16, Err(DmaFault::Unmapped))]
    #[case::read_only_dst(0x20 * K, 0x12 * K, 16, Err(DmaFault::Permission))]
    #[case::messages_to_shared(0x10 * K + 8, 0x20 * K + 8, 2 * K - 16, Ok(()))]
    #[case::shared_to_messages(0x20 * K, 0x10 * K, 2 * K, Ok(()))]
    fn copies(
        #[case] src: u64,
        #[case] dst: u64,
        #[case] len: u64,
        #[case] result: Result<(), DmaFault>,
    ) {
        let mut bus = bus();
        bus.maps
            .write_shared(0x20 * K, &[0xab; 2 * K as usize])
            .unwrap();
        let expect: Vec<u8> = if src >= 0x20 * K {
            vec![0xab; len as usize]
        } else {
            (0..len).map(|i| (src - 0x10 * K + i) as u8).collect()
        };
        assert_eq!(copy(&mut bus, src, dst, len), result);
        if result.is_err() {
            assert_eq!(bus.requests, 0, "nothing moves before every check passed");
            return;
        }
        let mut got = vec![0; len as usize];
        if dst >= 0x20 * K {
            bus.maps.read_shared(dst, &mut got).unwrap();
        } else {
            bus.remote_read(dst, &mut got).unwrap();
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn sealed_files_are_shared_and_others_take_messages() {
        use std::os::unix::fs::FileExt;
        let mut m = DmaMappings::default();
        let file = sealed_memfd(4 * K);
        let peer = file.try_clone().unwrap();
        m.map(0x10 * K, 2 * K, K, 3, Some(file)).unwrap();
        m.map(0x12 * K, K, 0, 3, Some(tempfile::tempfile().unwrap()))
            .unwrap();
        let plan = m.plan(0x11 * K, 2 * K, PROT_WRITE).unwrap();
        assert_eq!(
            plan,
            [
                Piece {
                    iova: 0x11 * K,
                    len: K,
                    shared: true
                },
                msgs(0x12 * K, K)
            ]
        );
        m.write_shared(0x11 * K + 4, b"dma!").unwrap();
        let mut got = [0; 4];
        peer.read_exact_at(&mut got, 2 * K + 4).unwrap();
        assert_eq!(&got, b"dma!", "IOVA 0x11000 is file offset 0x1000 + 0x1000");
        let mut back = [0; 4];
        m.read_shared(0x11 * K + 4, &mut back).unwrap();
        assert_eq!(&back, b"dma!");
        assert_eq!(m.read_shared(0x12 * K, &mut back), Err(DmaFault::Unmapped));
        assert_eq!(
            m.read_shared(0x12 * K - 2, &mut back),
            Err(DmaFault::Unmapped)
        );
        m.unmap(0x10 * K, 2 * K).unwrap();
        assert_eq!(m.read_shared(0x11 * K, &mut back), Err(DmaFault::Unmapped));
    }
}
