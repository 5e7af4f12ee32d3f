//! The memory behind a large BAR: a sparse memfd of the BAR's size.
//!
//! The client (QEMU) maps the memfd directly, so host memory is only allocated
//! for the pages the guest touches. The device's own commands use `pread`/`pwrite`
//! rather than a mapping: reading a hole through `pread` returns zeros without
//! allocating, whereas a read fault on a shared mapping of a hole would allocate a
//! page, and a `Verify` over an untouched 512 GiB BAR would then fill the host.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::regs::tag;

/// Host page size the stride heuristic is based on.
const PAGE: u64 = 4096;
/// How much of a BAR dense fills and verifies handle per system call.
const CHUNK: u64 = 1 << 20;

/// Failure to set up the memory of a BAR.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `memfd_create` failed.
    #[error("creating the memfd of BAR {index}")]
    Create {
        /// BAR index.
        index: u8,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `ftruncate` to the BAR size failed.
    #[error("sizing the memfd of BAR {index} to {size:#x} bytes")]
    Size {
        /// BAR index.
        index: u8,
        /// The BAR size.
        size: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The outcome of [`BarMemory::verify`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// Number of words that did not hold their tag.
    pub mismatches: u64,
    /// Offset and value of the first such word.
    pub first: Option<(u64, u64)>,
}

impl VerifyOutcome {
    fn record(&mut self, offset: u64, found: u64, expected: u64) {
        if found != expected {
            self.mismatches += 1;
            self.first.get_or_insert((offset, found));
        }
    }
}

/// A memfd holding the contents of one memory BAR.
#[derive(Debug)]
pub struct BarMemory {
    index: u8,
    size: u64,
    file: File,
}

impl BarMemory {
    /// Creates a sparse memfd of `size` bytes for BAR `index`.
    pub fn new(index: u8, size: u64) -> Result<Self, MemoryError> {
        let name = format!("device-emu-bar{index}");
        let fd = memfd_create(name.as_str(), MFdFlags::MFD_CLOEXEC)
            .map_err(|source| MemoryError::Create { index, source })?;
        let file = File::from(fd);
        file.set_len(size).map_err(|source| MemoryError::Size {
            index,
            size,
            source,
        })?;
        Ok(Self { index, size, file })
    }

    /// BAR index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// BAR size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd, for handing to the client.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The memfd's raw descriptor (valid as long as `self` lives).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Host memory allocated to the BAR, in bytes.
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.blocks() * 512)
    }

    /// Reads BAR bytes; the caller has checked the range.
    pub fn read_at(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(data, offset)
    }

    /// Writes BAR bytes; the caller has checked the range.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Writes the tag of every `stride`-th word of `[offset, offset + len)`.
    ///
    /// The range must be inside the BAR, `offset`, `len` and `stride` multiples
    /// of 8 (see [`crate::commands`]), so no word crosses a chunk boundary.
    pub fn fill(&self, offset: u64, len: u64, stride: u64, seed: u64) -> io::Result<()> {
        let tag_of = |at| tag(seed, self.index.into(), at);
        if stride >= PAGE {
            // At most one word per page: write only the words, so untouched
            // pages stay unallocated.
            for at in words(offset, len, stride) {
                self.write_at(at, &tag_of(at).to_le_bytes())?;
            }
            return Ok(());
        }
        let mut buf = vec![0; CHUNK as usize];
        for (start, end) in chunks(offset, len) {
            let buf = &mut buf[..(end - start) as usize];
            if stride != 8 {
                // Keep the bytes between the words.
                self.read_at(start, buf)?;
            }
            for at in words_in(offset, stride, start, end) {
                let i = (at - start) as usize;
                buf[i..i + 8].copy_from_slice(&tag_of(at).to_le_bytes());
            }
            self.write_at(start, buf)?;
        }
        Ok(())
    }

    /// Compares every `stride`-th word of `[offset, offset + len)` with its tag.
    /// Same preconditions as [`Self::fill`].
    pub fn verify(
        &self,
        offset: u64,
        len: u64,
        stride: u64,
        seed: u64,
    ) -> io::Result<VerifyOutcome> {
        let tag_of = |at| tag(seed, self.index.into(), at);
        let mut outcome = VerifyOutcome::default();
        if stride >= PAGE {
            let mut word = [0; 8];
            for at in words(offset, len, stride) {
                self.read_at(at, &mut word)?;
                outcome.record(at, u64::from_le_bytes(word), tag_of(at));
            }
            return Ok(outcome);
        }
        let mut buf = vec![0; CHUNK as usize];
        for (start, end) in chunks(offset, len) {
            let buf = &mut buf[..(end - start) as usize];
            self.read_at(start, buf)?;
            for at in words_in(offset, stride, start, end) {
                let i = (at - start) as usize;
                let found = u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
                outcome.record(at, found, tag_of(at));
            }
        }
        Ok(outcome)
    }

    /// Releases the host memory of `[offset, offset + len)`; it reads back as
    /// zeros. Also drops those pages from every mapping of the memfd.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let to_off = |v: u64| {
            nix::libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        fallocate(
            &self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            to_off(offset)?,
            to_off(len)?,
        )
        .map_err(io::Error::from)
    }

    /// Releases all memory: the BAR reads back as zeros.
    pub fn wipe(&self) -> io::Result<()> {
        self.discard(0, self.size)
    }
}

/// Offsets of the tagged words of `[offset, offset + len)`.
fn words(offset: u64, len: u64, stride: u64) -> impl Iterator<Item = u64> {
    let count = if len < 8 { 0 } else { (len - 8) / stride + 1 };
    (0..count).map(move |k| offset + k * stride)
}

/// Offsets of the tagged words (of a range starting at `offset`) inside the
/// chunk `[start, end)`.
fn words_in(offset: u64, stride: u64, start: u64, end: u64) -> impl Iterator<Item = u64> {
    let first = offset + (start - offset).div_ceil(stride) * stride;
    (first..end)
        .step_by(stride as usize)
        .take_while(move |at| at + 8 <= end)
}

/// `[offset, offset + len)` cut into chunks of at most [`CHUNK`] bytes.
fn chunks(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset + len;
    (offset..end)
        .step_by(CHUNK as usize)
        .map(move |start| (start, (start + CHUNK).min(end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const M: u64 = 1 << 20;

    #[rstest]
    #[case::dense(0, 3 * M + 64, 8)]
    #[case::strided(8, 2 * M, 24)]
    #[case::odd_stride_across_chunks(4096, 3 * M, 4088)]
    #[case::page_stride(M, 4 * M, 4096)]
    #[case::huge_stride(0, 16 * M, 2 * M)]
    fn fill_then_verify_matches(#[case] offset: u64, #[case] len: u64, #[case] stride: u64) {
        let bar = BarMemory::new(1, 32 * M).unwrap();
        bar.fill(offset, len, stride, 7).unwrap();
        assert_eq!(
            bar.verify(offset, len, stride, 7).unwrap(),
            VerifyOutcome::default()
        );
        // Another seed finds every word wrong, the first at `offset`.
        let other = bar.verify(offset, len, stride, 8).unwrap();
        assert_eq!(other.mismatches, words(offset, len, stride).count() as u64);
        assert_eq!(other.first.map(|f| f.0), Some(offset));
        // The words between the tagged ones were not touched.
        if stride > 8 {
            let mut b = [0; 8];
            bar.read_at(offset + 8, &mut b).unwrap();
            assert_eq!(b, [0; 8]);
        }
    }

    #[test]
    fn verify_reports_the_first_corruption() {
        let bar = BarMemory::new(2, 4 * M).unwrap();
        bar.fill(0, 4 * M, 8, 1).unwrap();
        bar.write_at(3 * M + 16, &42u64.to_le_bytes()).unwrap();
        bar.write_at(3 * M + 800, &43u64.to_le_bytes()).unwrap();
        let outcome = bar.verify(0, 4 * M, 8, 1).unwrap();
        assert_eq!(outcome.mismatches, 2);
        assert_eq!(outcome.first, Some((3 * M + 16, 42)));
    }

    #[test]
    fn sparse_fill_allocates_little_and_discard_frees_it() {
        let bar = BarMemory::new(4, 1 << 30).unwrap();
        assert_eq!(bar.allocated_bytes().unwrap(), 0);
        bar.fill(0, 1 << 30, 64 * M, 3).unwrap();
        // 16 words, one page each (tmpfs may use huge pages: allow 2 MiB each).
        let used = bar.allocated_bytes().unwrap();
        assert!((16 * 4096..=16 * 2 * M).contains(&used), "{used}");
        bar.discard(0, 1 << 30).unwrap();
        assert_eq!(bar.allocated_bytes().unwrap(), 0);
        let outcome = bar.verify(0, 1 << 30, 64 * M, 3).unwrap();
        assert_eq!(outcome.mismatches, 16);
        assert_eq!(outcome.first, Some((0, 0)));
    }
}
