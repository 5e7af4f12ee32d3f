//! An uncompressed copy of a kernel that QEMU can boot through its PVH entry.
//!
//! A bzImage decompresses itself when it starts. Under TCG that costs more than a
//! second on every boot of a Debian kernel (a 14.5 MB zstd payload, measured 1.4 s
//! of 4.8 s to `/init` here). A vmlinux that carries the Xen
//! `XEN_ELFNOTE_PHYS32_ENTRY` note (`CONFIG_PVH`, which Debian enables) can be given
//! to QEMU's `-kernel` directly: QEMU loads the ELF segments and jumps to the PVH
//! entry, with the initrd and command line as usual. The copy is made once per
//! kernel and cached; a kernel without the note keeps booting its bzImage.

use std::fs;
use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{elf, Endianness};

use super::ikconfig;
use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};

/// The ELF note type of the 32-bit PVH entry point (Xen's public `elfnote.h`).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// The owner name of Xen's ELF notes.
const XEN_NOTE_NAME: &[u8] = b"Xen";

/// The file holding the PVH image in its cache entry.
const IMAGE: &str = "vmlinux.pvh";
/// The file recording that a kernel has no PVH image.
const NONE: &str = "no-pvh-entry";

/// Whether `elf` is a 64-bit ELF kernel with a PVH entry note.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    let Ok(file) = ElfFile64::<Endianness>::parse(elf) else {
        return false;
    };
    let endian = file.endian();
    let Ok(segments) = file.elf_header().program_headers(endian, elf) else {
        return false;
    };
    segments.iter().any(|segment| {
        let Ok(Some(mut notes)) = segment.notes(endian, elf) else {
            return false;
        };
        std::iter::from_fn(|| notes.next().ok().flatten()).any(|note| {
            note.name() == XEN_NOTE_NAME
                && note.n_type(endian) == elf::NoteType(XEN_ELFNOTE_PHYS32_ENTRY)
        })
    })
}

/// The uncompressed PVH-bootable kernel of `image`, if it has one.
pub fn pvh_kernel(image: &[u8]) -> Option<Vec<u8>> {
    ikconfig::vmlinux(image).filter(|elf| has_pvh_entry(elf))
}

/// The cached PVH image of the bzImage `image`, whose cache entry is named `key`
/// in `category`: made on first use, `None` for a kernel without a PVH entry.
pub fn cached(
    cache: &Cache,
    category: &[&str],
    key: &str,
    image: &Path,
) -> Result<Option<PathBuf>> {
    let entry = cache.get_or_create(category, key, |dir| {
        let bytes = fs::read(image).at("reading", image)?;
        match pvh_kernel(&bytes) {
            Some(elf) => fs::write(dir.join(IMAGE), elf).at("writing", dir.join(IMAGE)),
            None => fs::write(dir.join(NONE), b"").at("writing", dir.join(NONE)),
        }
    })?;
    let pvh = entry.join(IMAGE);
    if pvh.is_file() {
        return Ok(Some(pvh));
    }
    if entry.join(NONE).is_file() {
        return Ok(None);
    }
    Err(Error::CacheEntry {
        path: entry,
        detail: format!("neither {IMAGE} nor {NONE} is there"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 executable: the 64-byte file header, one
    /// PT_NOTE program header, and the note (`name`, `n_type`, a 4-byte
    /// descriptor). Written out by hand: only the fields the reader checks matter.
    fn elf_with_note(name: &[u8], n_type: u32) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&n_type.to_le_bytes());
        note.extend_from_slice(name);
        note.push(0);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        let (ehsize, phentsize) = (64u16, 56u16);
        let note_at = u64::from(ehsize + phentsize);
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01");
        out.resize(16, 0);
        out.extend_from_slice(&elf::ET_EXEC.0.to_le_bytes());
        out.extend_from_slice(&elf::EM_X86_64.0.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        out.extend_from_slice(&u64::from(ehsize).to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for half in [ehsize, phentsize, 1, 64, 0, 0] {
            out.extend_from_slice(&half.to_le_bytes()); // ehsize .. shstrndx
        }
        out.extend_from_slice(&elf::PT_NOTE.0.to_le_bytes());
        out.extend_from_slice(&elf::PF_R.0.to_le_bytes());
        for word in [note_at, 0, 0, note.len() as u64, note.len() as u64, 4] {
            out.extend_from_slice(&word.to_le_bytes()); // offset .. align
        }
        out.extend_from_slice(&note);
        out
    }

    #[rstest::rstest]
    #[case::pvh(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, true)]
    #[case::other_xen_note(b"Xen", 5, false)]
    #[case::other_owner(b"GNU", XEN_ELFNOTE_PHYS32_ENTRY, false)]
    fn finds_the_pvh_note(#[case] name: &[u8], #[case] n_type: u32, #[case] found: bool) {
        assert_eq!(has_pvh_entry(&elf_with_note(name, n_type)), found);
    }

    #[rstest::rstest]
    #[case::empty(b"")]
    #[case::not_elf(b"MZ\x90\x00 a PE file, not ELF")]
    #[case::truncated(b"\x7fELF\x02\x01\x01")]
    fn garbage_has_no_pvh_entry(#[case] bytes: &[u8]) {
        assert!(!has_pvh_entry(bytes));
        assert!(pvh_kernel(bytes).is_none());
    }

    #[test]
    fn cached_records_a_kernel_without_an_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cache"));
        let image = tmp.path().join("vmlinuz");
        fs::write(&image, b"not a bzImage").unwrap();
        let got = cached(&cache, &["kernel-pvh", "t"], "k1", &image).unwrap();
        assert_eq!(got, None);
        // A second call answers from the entry without reading the image.
        fs::remove_file(&image).unwrap();
        assert_eq!(
            cached(&cache, &["kernel-pvh", "t"], "k1", &image).unwrap(),
            None
        );
    }
}
