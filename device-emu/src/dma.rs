//! Book-keeping of the client's DMA mappings. The device never does DMA; it
//! records the mappings so that a client that maps overlapping or wrapping
//! ranges, or too many, gets an error, as it would from the kernel's VFIO
//! type1 IOMMU driver.
//!
//! The memory file a mapping comes with is closed at once rather than kept:
//! nothing reads it, and holding up to [`MAX_MAPPINGS`] of a client's
//! descriptors would let it exhaust the server's descriptor table (after
//! which not even `accept` works).

use std::collections::BTreeMap;
use std::fs::File;

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

/// One recorded mapping.
#[derive(Debug)]
pub struct DmaMapping {
    /// Last byte of the range (inclusive, so a range may end at 2^64).
    pub last: u64,
    /// Offset into the file.
    pub offset: u64,
    /// Protection flags as sent.
    pub flags: u32,
    /// Whether the client passed a memory file (closed on arrival).
    pub with_file: bool,
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
        self.maps.insert(
            address,
            DmaMapping {
                last,
                offset,
                flags,
                with_file: file.is_some(),
            },
        );
        Ok(())
    }

    /// Removes every mapping inside `[address, address + size)`; returns how
    /// many. A mapping only partly inside is an error and nothing is removed.
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
    #[case::nothing(0x20 * K, 0x10 * K, Ok(0))]
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
}
