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
}
