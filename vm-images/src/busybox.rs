//! A statically linked busybox for the initramfs: Debian's `busybox-static`.

use std::fs;
use std::path::{Path, PathBuf};

use object::Object;
use serde::{Deserialize, Serialize};

use crate::cache::key_from_version;
use crate::debian::{deb, Archive, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// The Debian package.
pub const DEBIAN_PACKAGE: &str = "busybox-static";

/// Where the package puts the binary, newest layout first.
const BINARY_PATHS: [&str; 2] = ["usr/bin/busybox", "bin/busybox"];

/// A static busybox binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Busybox {
    /// The binary.
    pub binary: PathBuf,
    /// The Debian package version it came from.
    pub package_version: String,
}

/// Debian's `busybox-static` from `suite`, cached per package version.
pub fn obtain(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<Busybox> {
    let category_name = format!("debian-{suite}");
    let category = ["busybox", category_name.as_str()];
    let cache = fetcher.cache();
    if let Some((version, entry)) = fetcher.warm_entry(&category, key_from_version)? {
        return load_entry(&entry, version);
    }
    let archive = Archive::open(fetcher, suite)?;
    let version = archive.candidate(DEBIAN_PACKAGE)?;
    let entry = cache.get_or_create(&category, &key_from_version(&version), |dir| {
        let debs = archive.download(
            &[(DEBIAN_PACKAGE.to_owned(), version.clone())],
            &dir.join("debs"),
        )?;
        let root = dir.join("root");
        deb::extract_all(&debs, &root)?;
        let found = BINARY_PATHS
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::MissingFromPackage {
                what: "busybox binary",
                package: format!("{DEBIAN_PACKAGE} {version}"),
                looked_for: BINARY_PATHS.join(", "),
            })?;
        fs::copy(&found, dir.join("busybox")).at("copying busybox to", dir.join("busybox"))?;
        for sub in [root, dir.join("debs")] {
            fs::remove_dir_all(&sub).at("removing", sub)?;
        }
        check_static(&dir.join("busybox"))
    })?;
    fetcher.set_current(&category, &version)?;
    load_entry(&entry, version)
}

fn load_entry(entry: &Path, package_version: String) -> Result<Busybox> {
    let binary = entry.join("busybox");
    if !binary.is_file() {
        return Err(Error::CacheEntry {
            path: entry.to_owned(),
            detail: "busybox binary missing".into(),
        });
    }
    Ok(Busybox {
        binary,
        package_version,
    })
}

/// Fails unless `path` is an ELF executable without a dynamic loader: the initramfs
/// has no libraries.
pub fn check_static(path: &Path) -> Result<()> {
    let data = fs::read(path).at("reading", path)?;
    let bad = |detail: String| Error::Parse {
        what: format!("executable {}", path.display()),
        detail,
    };
    let elf = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF file: {e}")))?;
    if elf.kind() != object::ObjectKind::Executable && elf.kind() != object::ObjectKind::Dynamic {
        return Err(bad(format!("not an executable ({:?})", elf.kind())));
    }
    let has_interp = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data)
        .map_err(|e| bad(format!("not a 64-bit ELF file: {e}")))?
        .elf_program_headers()
        .iter()
        .any(|ph| {
            object::read::elf::ProgramHeader::p_type(ph, object::Endianness::Little)
                == object::elf::PT_INTERP
        });
    if has_interp {
        return Err(bad(
            "dynamically linked (has an ELF interpreter); the initramfs needs a static binary"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_non_elf_binaries_are_rejected() {
        // /bin/sh on any Debian host is dynamically linked.
        let err = check_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("s");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(check_static(&script)
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));
    }
}
