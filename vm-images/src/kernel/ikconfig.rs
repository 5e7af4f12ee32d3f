//! Reading a bzImage without its build tree: the configuration embedded with
//! `CONFIG_IKCONFIG` and the release string in the boot header.
//!
//! The kernel's `scripts/extract-ikconfig` finds the compressed payload by its
//! magic bytes, decompresses it and cuts the gzip-compressed configuration out
//! from between the `IKCFG_ST` and `IKCFG_ED` markers. This does the same with
//! pure-Rust decompressors for the three payload compressions distributions use
//! (gzip, xz, zstd); a kernel compressed otherwise is reported as such.

use std::io::Read;

/// Most bytes one payload may decompress to: a vmlinux is well under this.
const MAX_PAYLOAD: u64 = 512 << 20;

const START: &[u8] = b"IKCFG_ST";
const END: &[u8] = b"IKCFG_ED";

/// The release (`uname -r`) from the bzImage's boot header, if it has one.
///
/// The header's `kernel_version` field (offset 0x20e) points, relative to 0x200,
/// at a string like `6.12.0 (user@host) #1 SMP ...`.
pub fn release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize;
    let start = ptr.checked_add(0x200)?;
    let text = image.get(start..start.checked_add(256)?.min(image.len()))?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let s = std::str::from_utf8(&text[..end]).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// The uncompressed kernel (`vmlinux`, an ELF file) that a bzImage carries as its
/// payload, located through the boot header (protocol 2.08+: `setup_sects` at
/// 0x1f1, `payload_offset`/`payload_length` at 0x248), if its compression is one
/// of the three and it decompresses whole to an ELF file: the kernel's build
/// appends the uncompressed size to every payload, and a stream that stops short
/// (an xz payload with the x86 BCJ filter, which lzma-rs does not implement, or a
/// damaged image) is refused rather than booted half-written.
pub fn vmlinux(image: &[u8]) -> Option<Vec<u8>> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + word(0x248)?;
    let payload = image.get(start..start.checked_add(word(0x24c)?)?)?;
    let (_, decompress) = DECOMPRESSORS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))?;
    let size = u32::from_le_bytes(
        payload
            .get(payload.len().checked_sub(4)?..)?
            .try_into()
            .ok()?,
    );
    let elf = decompress(payload);
    (elf.len() == size as usize && elf.starts_with(b"\x7fELF")).then_some(elf)
}

/// The embedded configuration text, if the image carries one.
pub fn config(image: &[u8]) -> Option<String> {
    // An uncompressed vmlinux (or an image with the config outside the payload).
    if let Some(c) = cut_config(image) {
        return Some(c);
    }
    for (magic, decompress) in DECOMPRESSORS {
        for at in find_all(image, magic) {
            let payload = decompress(&image[at..]);
            if let Some(c) = cut_config(&payload) {
                return Some(c);
            }
        }
    }
    None
}

type Decompress = fn(&[u8]) -> Vec<u8>;

const DECOMPRESSORS: [(&[u8], Decompress); 3] = [
    (&[0x1f, 0x8b, 0x08], gunzip),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], unxz),
    (&[0x28, 0xb5, 0x2f, 0xfd], unzstd),
];

/// Decompresses what it can: trailing data after a stream is normal in a bzImage,
/// so output produced before an error is kept.
fn read_partial(mut r: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while (out.len() as u64) < MAX_PAYLOAD {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    read_partial(flate2::read::GzDecoder::new(data))
}

fn unzstd(data: &[u8]) -> Vec<u8> {
    match ruzstd::decoding::StreamingDecoder::new(data) {
        Ok(d) => read_partial(d),
        Err(_) => Vec::new(),
    }
}

fn unxz(data: &[u8]) -> Vec<u8> {
    // lzma-rs writes into a Write; a cap keeps a corrupt stream from growing without bound.
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0.len() as u64 + b.len() as u64 > MAX_PAYLOAD {
                return Err(std::io::Error::other("payload too large"));
            }
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    let _ = lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out);
    out.0
}

/// The config between the markers (itself gzip-compressed), decompressed.
fn cut_config(data: &[u8]) -> Option<String> {
    let start = find_all(data, START).next()? + START.len();
    let len = find_all(&data[start..], END).next()?;
    let text = gunzip(&data[start..start + len]);
    let text = String::from_utf8(text).ok()?;
    text.contains("CONFIG_").then_some(text)
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A fake "vmlinux" with an embedded config, gzip-compressed as a payload
    /// behind some setup bytes, with trailing garbage.
    pub(crate) fn fake_image(config: &str) -> Vec<u8> {
        let mut vmlinux = b"\x7fELF...code...".to_vec();
        vmlinux.extend_from_slice(START);
        vmlinux.extend(gzip(config.as_bytes()));
        vmlinux.extend_from_slice(END);
        vmlinux.extend_from_slice(b"...more code...");
        let mut image = vec![0u8; 0x300];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0x80u16.to_le_bytes());
        image[0x280..0x280 + 22].copy_from_slice(b"6.18.0-rc1 (me@h) #1 S");
        image.extend(gzip(&vmlinux));
        image.extend_from_slice(b"trailing bytes");
        image
    }

    #[test]
    fn config_and_release_from_a_compressed_image() {
        let image = fake_image("CONFIG_VFIO=y\n# CONFIG_X is not set\n");
        assert_eq!(
            config(&image).unwrap(),
            "CONFIG_VFIO=y\n# CONFIG_X is not set\n"
        );
        assert_eq!(release(&image).as_deref(), Some("6.18.0-rc1"));
    }

    #[test]
    fn no_embedded_config() {
        let mut image = fake_image("x");
        image.truncate(0x300);
        assert_eq!(config(&image), None);
        assert_eq!(release(b"not a kernel"), None);
    }

    /// A bzImage-shaped file whose header locates `payload` (setup_sects 1, so the
    /// protected-mode part starts at 1024), with the uncompressed size `size`
    /// appended as the kernel's build does.
    fn with_payload(payload: &[u8], size: u32) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let mut body = payload.to_vec();
        body.extend_from_slice(&size.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(body.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0u8; 16]);
        image.extend(body);
        image
    }

    #[rstest::rstest]
    #[case::whole(0, true)]
    #[case::stream_stops_short(1, false)]
    fn vmlinux_is_the_whole_payload(#[case] extra: u32, #[case] found: bool) {
        let elf = b"\x7fELF and the rest of a kernel".to_vec();
        let image = with_payload(&gzip(&elf), elf.len() as u32 + extra);
        assert_eq!(vmlinux(&image), found.then_some(elf));
    }

    #[test]
    fn vmlinux_needs_a_known_compression_and_an_elf() {
        let not_elf = b"MZ not an ELF file".to_vec();
        assert_eq!(
            vmlinux(&with_payload(&gzip(&not_elf), not_elf.len() as u32)),
            None
        );
        assert_eq!(vmlinux(&with_payload(b"LZ4 or so", 9)), None);
        assert_eq!(vmlinux(b"not a kernel"), None);
    }
}
