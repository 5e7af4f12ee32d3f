//! Mapping part of a BAR at a chosen virtual-address congruence.
//!
//! The kernel picks addresses without regard to huge alignment (docs/RULES.md A*), so
//! the tests place mappings themselves, like QEMU and the kernel selftests do:
//! reserve `len + align` bytes of PROT_NONE address space, map the device with
//! MAP_FIXED at the first address with the wanted residue inside it, and give the
//! unused head and tail of the reservation back.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{madvise, mmap, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};

use crate::model::align_up_congruent;

/// Errors from mapping.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// A length or offset does not fit the address space.
    #[error("{what} {value:#x} does not fit the address space")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The modulus is not a power of two.
    #[error("alignment {0:#x} is not a power of two")]
    BadModulus(u64),
    /// MAP_FIXED was passed to a safe constructor: it would replace whatever is
    /// mapped at the address (use [`Mapping::fixed`]).
    #[error("MAP_FIXED replaces existing mappings; Mapping::with_flags refuses it")]
    FixedRefused,
    /// A memory-management call failed.
    #[error("{call} of {len:#x} bytes at {addr:#x} (file offset {offset:#x})")]
    Sys {
        /// The call.
        call: &'static str,
        /// The address involved (0 for none).
        addr: u64,
        /// The length involved.
        len: u64,
        /// The file offset involved.
        offset: u64,
        /// The error.
        #[source]
        source: Errno,
    },
}

fn size(what: &'static str, value: u64) -> Result<NonZeroUsize, MapError> {
    usize::try_from(value)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or(MapError::TooLarge { what, value })
}

/// A shared read/write mapping of a device file; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<c_void>,
    len: usize,
    file_offset: u64,
}

impl Mapping {
    /// Maps `len` bytes at `file_offset` of `fd` where the kernel chooses.
    pub fn anywhere(fd: impl AsFd, file_offset: u64, len: u64) -> Result<Self, MapError> {
        let n = size("length", len)?;
        let off = i64::try_from(file_offset).map_err(|_| MapError::TooLarge {
            what: "file offset",
            value: file_offset,
        })?;
        // SAFETY: a new shared mapping without MAP_FIXED replaces nothing.
        let addr = unsafe { mmap(None, n, rw(), MapFlags::MAP_SHARED, fd, off) }
            .map_err(sys_err("mmap", 0, len, file_offset))?;
        Ok(Mapping {
            addr,
            len: n.get(),
            file_offset,
        })
    }

    /// Maps `len` bytes at `file_offset` of `fd` at an address `s` with
    /// `s % modulus == residue % modulus` (modulus a power of two).
    pub fn placed(
        fd: impl AsFd,
        file_offset: u64,
        len: u64,
        modulus: u64,
        residue: u64,
    ) -> Result<Self, MapError> {
        let n = size("length", len)?;
        let off = i64::try_from(file_offset).map_err(|_| MapError::TooLarge {
            what: "file offset",
            value: file_offset,
        })?;
        let start = reserve_congruent(len, modulus, residue)?;
        let fixed = NonZeroUsize::new(start as usize);
        // SAFETY: MAP_FIXED replaces exactly [start, start + len), the PROT_NONE
        // reservation just made for this mapping, which nothing else uses.
        let mapped = unsafe {
            mmap(
                fixed,
                n,
                rw(),
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                fd,
                off,
            )
        };
        match mapped {
            Ok(addr) => Ok(Mapping {
                addr,
                len: n.get(),
                file_offset,
            }),
            Err(e) => {
                // SAFETY: the reservation is ours and unused.
                let _ = unsafe { unmap_raw(start, len) };
                Err(sys_err("mmap MAP_FIXED", start, len, file_offset)(e))
            }
        }
    }

    /// Maps `len` bytes at `file_offset` with `flags` (MAP_SHARED or MAP_PRIVATE,
    /// plus any other flag but MAP_FIXED) and an optional address hint, which the
    /// kernel may ignore. MAP_FIXED is refused: it would replace whatever is mapped
    /// at the hint ([`Mapping::fixed`] does that, unsafely).
    pub fn with_flags(
        fd: impl AsFd,
        file_offset: u64,
        len: u64,
        hint: Option<u64>,
        flags: MapFlags,
    ) -> Result<Self, MapError> {
        if flags.contains(MapFlags::MAP_FIXED) {
            return Err(MapError::FixedRefused);
        }
        // SAFETY: without MAP_FIXED the kernel replaces nothing: a hint that is not
        // free is moved elsewhere (or, with MAP_FIXED_NOREPLACE, refused).
        unsafe { Self::map(fd, file_offset, len, hint, flags) }
    }

    /// Maps `len` bytes at `file_offset` exactly at `addr` (MAP_FIXED with `flags`).
    ///
    /// # Safety
    /// `[addr, addr + len)` must be address space the caller owns and nothing else
    /// uses (typically part of its own reservation from [`reserve_congruent`]):
    /// MAP_FIXED silently replaces whatever is mapped there.
    pub unsafe fn fixed(
        fd: impl AsFd,
        file_offset: u64,
        len: u64,
        addr: u64,
        flags: MapFlags,
    ) -> Result<Self, MapError> {
        // SAFETY: forwarded from the caller.
        unsafe {
            Self::map(
                fd,
                file_offset,
                len,
                Some(addr),
                flags | MapFlags::MAP_FIXED,
            )
        }
    }

    /// # Safety
    /// With MAP_FIXED in `flags`, as for [`Mapping::fixed`].
    unsafe fn map(
        fd: impl AsFd,
        file_offset: u64,
        len: u64,
        hint: Option<u64>,
        flags: MapFlags,
    ) -> Result<Self, MapError> {
        let n = size("length", len)?;
        let off = i64::try_from(file_offset).map_err(|_| MapError::TooLarge {
            what: "file offset",
            value: file_offset,
        })?;
        let at = hint.and_then(|h| NonZeroUsize::new(h as usize));
        // SAFETY: without MAP_FIXED nothing is replaced; with it, the caller
        // guarantees the range is theirs and unused.
        let addr = unsafe { mmap(at, n, rw(), flags, fd, off) }.map_err(sys_err(
            "mmap",
            hint.unwrap_or(0),
            len,
            file_offset,
        ))?;
        Ok(Mapping {
            addr,
            len: n.get(),
            file_offset,
        })
    }

    /// Takes over `[start, start + len)`, a mapping of `file_offset` made by other
    /// means (for example mremap); it is unmapped on drop.
    ///
    /// # Safety
    /// The range must be a live mapping owned by the caller and by nothing else.
    pub unsafe fn from_raw(start: u64, len: u64, file_offset: u64) -> Result<Self, MapError> {
        let addr = NonNull::new(start as *mut c_void).ok_or(MapError::TooLarge {
            what: "start address",
            value: start,
        })?;
        Ok(Mapping {
            addr,
            len: size("length", len)?.get(),
            file_offset,
        })
    }

    /// Gives up ownership: the range stays mapped and is not unmapped on drop.
    pub fn into_raw(self) -> (u64, u64) {
        let r = (self.start(), self.len());
        std::mem::forget(self);
        r
    }

    /// First address of the mapping (the VMA start `s`).
    pub fn start(&self) -> u64 {
        self.addr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty (never: mappings have a non-zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file offset it maps.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Pointer to the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr().cast()
    }

    /// Applies `madvise(advice)` to the whole mapping.
    pub fn advise(&self, advice: MmapAdvise) -> Result<(), MapError> {
        // SAFETY: the range is exactly this live mapping; advice changes no memory
        // Rust code relies on.
        unsafe { madvise(self.addr, self.len, advice) }.map_err(sys_err(
            "madvise",
            self.start(),
            self.len(),
            self.file_offset,
        ))
    }

    /// Reads the 8-byte word at byte `offset` of the mapping.
    ///
    /// Panics if the word is not inside the mapping or not 8-byte aligned.
    pub fn read_u64(&self, offset: u64) -> u64 {
        let p = self.word(offset);
        // SAFETY: `word` checked that the aligned word lies inside the live mapping.
        unsafe { p.read_volatile() }
    }

    /// Writes the 8-byte word at byte `offset` of the mapping.
    ///
    /// Panics if the word is not inside the mapping or not 8-byte aligned.
    pub fn write_u64(&self, offset: u64, value: u64) {
        let p = self.word(offset);
        // SAFETY: `word` checked that the aligned word lies inside the live mapping;
        // it is device memory shared with nobody that Rust tracks.
        unsafe { p.write_volatile(value) }
    }

    fn word(&self, offset: u64) -> *mut u64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len(),
            "word {offset:#x} outside mapping"
        );
        // SAFETY: offset + 8 <= len, so the result stays inside the mapping.
        unsafe { self.as_ptr().add(offset as usize).cast() }
    }
}

// SAFETY: a Mapping is an address range of a shared device mapping; all access
// goes through volatile word reads and writes, which any thread may do at the
// same time (the memory is device memory, not Rust-owned data), and unmapping
// happens only on drop, which needs ownership.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only offers volatile accesses and madvise.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows it past `self`.
        let _ = unsafe { munmap(self.addr, self.len) };
    }
}

fn rw() -> ProtFlags {
    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
}

fn sys_err(call: &'static str, addr: u64, len: u64, offset: u64) -> impl FnOnce(Errno) -> MapError {
    move |source| MapError::Sys {
        call,
        addr,
        len,
        offset,
        source,
    }
}

/// Reserves `len` bytes of PROT_NONE address space starting at an address `s`
/// with `s % modulus == residue % modulus`, and returns `s`. The caller owns the
/// reservation: it may map over it with MAP_FIXED or unmap it.
pub fn reserve_congruent(len: u64, modulus: u64, residue: u64) -> Result<u64, MapError> {
    if !modulus.is_power_of_two() {
        return Err(MapError::BadModulus(modulus));
    }
    let reserve_len = len.checked_add(modulus).ok_or(MapError::TooLarge {
        what: "length + alignment",
        value: len,
    })?;
    let n = size("reservation", reserve_len)?;
    let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE;
    // SAFETY: a new anonymous PROT_NONE mapping without MAP_FIXED replaces nothing.
    let reserve = unsafe { mmap_anonymous(None, n, ProtFlags::PROT_NONE, flags) }
        .map_err(sys_err("mmap reservation", 0, reserve_len, 0))?;
    let base = reserve.as_ptr() as u64;
    let start = align_up_congruent(base, modulus, residue).ok_or(MapError::TooLarge {
        what: "aligned start",
        value: base,
    })?;
    // SAFETY: the head is an unused part of the reservation just made.
    unsafe { unmap_raw(base, start - base) }?;
    // SAFETY: as above, for the tail.
    unsafe { unmap_raw(start + len, base + reserve_len - start - len) }?;
    Ok(start)
}

/// Unmaps `[addr, addr + len)` if `len` is not zero.
///
/// # Safety
/// The range must belong to the caller and nothing may use it afterwards.
pub unsafe fn unmap_range(addr: u64, len: u64) -> Result<(), MapError> {
    // SAFETY: forwarded from the caller.
    unsafe { unmap_raw(addr, len) }
}

/// Unmaps `[addr, addr + len)` if `len` is not zero.
///
/// # Safety
/// The range must belong to the caller and nothing may use it afterwards.
unsafe fn unmap_raw(addr: u64, len: u64) -> Result<(), MapError> {
    let Some(p) = NonNull::new(addr as *mut c_void) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees the range is theirs and unused.
    unsafe { munmap(p, len as usize) }.map_err(sys_err("munmap", addr, len, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PAGE, PMD, PUD};
    use std::io::Write;

    #[rstest::rstest]
    #[case(MapFlags::MAP_SHARED | MapFlags::MAP_FIXED)]
    #[case(MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED | MapFlags::MAP_NORESERVE)]
    fn with_flags_refuses_map_fixed(#[case] flags: MapFlags) {
        let f = file_of(1);
        let got = Mapping::with_flags(&f, 0, PAGE, Some(0x1000_0000), flags);
        assert!(matches!(got, Err(MapError::FixedRefused)));
    }

    fn file_of(pages: usize) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![0u8; pages * 4096]).unwrap();
        f
    }

    #[test]
    fn placement_hits_the_residue_and_maps_the_file() {
        let f = file_of(4);
        for (modulus, residue) in [(PMD, 0x1000), (PMD, 0), (PUD, PMD + 0x3000)] {
            let m = Mapping::placed(&f, 4096, 3 * 4096, modulus, residue).unwrap();
            assert_eq!(m.start() % modulus, residue);
            m.write_u64(8, 0xdead_beef);
            let mut buf = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 4096 + 8).unwrap();
            assert_eq!(u64::from_le_bytes(buf), 0xdead_beef);
            assert_eq!(m.read_u64(8), 0xdead_beef);
        }
    }

    #[test]
    fn reservation_remainder_is_released() {
        let f = file_of(1);
        let m = Mapping::placed(&f, 0, 4096, PUD, 0x5000).unwrap();
        // The page before the mapping is no longer ours: mapping it MAP_FIXED_NOREPLACE works.
        let before = NonZeroUsize::new((m.start() - 4096) as usize);
        // SAFETY: MAP_FIXED_NOREPLACE fails instead of replacing anything.
        let probe = unsafe {
            mmap_anonymous(
                before,
                NonZeroUsize::new(4096).unwrap(),
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
            )
        };
        // Either the page is free (mapped now) or someone else's (EEXIST); it must
        // not be a leftover of our reservation. Telling those apart needs /proc.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = m.start() - 4096;
        if let Ok(p) = probe {
            assert_eq!(p.as_ptr() as u64, start);
            // SAFETY: we just mapped this page.
            unsafe { munmap(p, 4096).unwrap() };
        } else {
            assert!(
                !maps.contains(&format!("{start:x}-{:x} ---p", m.start())),
                "{maps}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let f = file_of(1);
        assert!(matches!(
            Mapping::placed(&f, 0, 4096, 3 << 20, 0),
            Err(MapError::BadModulus(_))
        ));
        assert!(matches!(
            Mapping::placed(&f, 0, 0, PMD, 0),
            Err(MapError::TooLarge { .. })
        ));
        let e = Mapping::placed(&f, 1, 4096, PMD, 0).unwrap_err();
        assert!(e.to_string().contains("mmap MAP_FIXED"), "{e}");
    }
}
