//! The MSI-X table and PBA, served from memory in the trapped 4 KiB page of the
//! MSI-X BAR. The PBA shows the triggers held behind a `SET_IRQS` mask
//! ([`crate::irqs`]); the device sets it, the client only reads it.

use crate::config_space::MSIX_VECTORS;
use crate::layout::{MSIX_PAGE_SIZE, MSIX_PBA_DISTANCE};

/// Bytes per MSI-X table entry (address low, address high, data, vector control).
pub const ENTRY_SIZE: usize = 16;
/// Vector control bit: the vector is masked.
pub const VECTOR_MASKED: u32 = 1;

/// MSI-X table and PBA contents; offsets are relative to the trapped page.
#[derive(Clone, Debug)]
pub struct MsixPage {
    table: Vec<u8>,
    pba: Vec<u8>,
}

impl Default for MsixPage {
    fn default() -> Self {
        Self::new()
    }
}

impl MsixPage {
    /// Power-on state: every vector masked, nothing pending.
    pub fn new() -> Self {
        let vectors = usize::from(MSIX_VECTORS);
        let mut table = vec![0; vectors * ENTRY_SIZE];
        for entry in table.chunks_exact_mut(ENTRY_SIZE) {
            entry[12..].copy_from_slice(&VECTOR_MASKED.to_le_bytes());
        }
        Self {
            table,
            pba: vec![0; vectors.div_ceil(64) * 8],
        }
    }

    /// Reads bytes of the page starting at `offset` (in `0..4096`); bytes outside
    /// the table and the PBA read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.byte(offset + i as u64).copied().unwrap_or(0);
        }
    }

    /// Writes bytes of the page starting at `offset`; only table bytes change
    /// (the PBA is read-only, the rest of the page is reserved).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            if let Some(slot) = usize::try_from(at).ok().and_then(|a| self.table.get_mut(a)) {
                *slot = byte;
            }
        }
    }

    /// Sets or clears the pending bit of `vector` (ignored past the table).
    pub fn set_pending(&mut self, vector: u32, pending: bool) {
        let (byte, bit) = (vector as usize / 8, vector % 8);
        if let Some(b) = self.pba.get_mut(byte) {
            if pending {
                *b |= 1 << bit;
            } else {
                *b &= !(1 << bit);
            }
        }
    }

    fn byte(&self, at: u64) -> Option<&u8> {
        debug_assert!(at < MSIX_PAGE_SIZE);
        let at = usize::try_from(at).ok()?;
        let pba = MSIX_PBA_DISTANCE as usize;
        if at < pba {
            self.table.get(at)
        } else {
            self.pba.get(at - pba)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(page: &MsixPage, offset: u64) -> u32 {
        let mut b = [0; 4];
        page.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn vectors_start_masked_and_table_is_writable() {
        let mut page = MsixPage::new();
        for v in 0..u64::from(MSIX_VECTORS) {
            assert_eq!(read32(&page, v * 16 + 12), VECTOR_MASKED);
        }
        page.write(16, &0xfee0_0000u32.to_le_bytes());
        page.write(28, &0u32.to_le_bytes());
        assert_eq!(read32(&page, 16), 0xfee0_0000);
        assert_eq!(read32(&page, 28), 0);
    }

    #[test]
    fn pba_and_reserved_bytes_ignore_writes() {
        let mut page = MsixPage::new();
        page.write(MSIX_PBA_DISTANCE, &[0xff; 8]);
        page.write(1024, &[0xff; 4]);
        assert_eq!(read32(&page, MSIX_PBA_DISTANCE), 0);
        assert_eq!(read32(&page, 1024), 0);
        // Past the table's 8 entries.
        assert_eq!(read32(&page, 8 * 16 + 12), 0);
    }

    #[test]
    fn pending_bits_show_in_the_pba() {
        let mut page = MsixPage::new();
        page.set_pending(0, true);
        page.set_pending(7, true);
        page.set_pending(64, true);
        assert_eq!(read32(&page, MSIX_PBA_DISTANCE), 0x81);
        page.set_pending(0, false);
        assert_eq!(read32(&page, MSIX_PBA_DISTANCE), 0x80);
    }
}
