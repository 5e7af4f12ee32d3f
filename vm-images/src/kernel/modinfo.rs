//! Reading a kernel module's `.modinfo` section (name, depends) from its file.

use std::fs;
use std::io::BufReader;
use std::path::Path;

use object::{Object, ObjectSection};

use crate::error::{Error, IoContext, Result};

/// What the guest needs to know about a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=` (underscored), if present.
    pub name: Option<String>,
    /// `depends=` entries, normalised to underscores.
    pub depends: Vec<String>,
}

/// The module name a file name stands for: `vfio-pci-core.ko.xz` gives `vfio_pci_core`.
pub fn module_name_of_file(file_name: &str) -> Option<String> {
    let stem = file_name.split_once(".ko")?;
    let valid_suffix = ["", ".xz", ".zst", ".gz"].contains(&stem.1);
    (valid_suffix && !stem.0.is_empty()).then(|| normalise(stem.0))
}

/// Module names treat '-' and '_' alike; the kernel uses '_'.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads the module at `path` (plain `.ko` or xz-compressed `.ko.xz`).
pub fn read(path: &Path) -> Result<ModInfo> {
    let elf = decompressed(path)?;
    parse_elf(&elf).map_err(|detail| Error::Module {
        path: path.to_owned(),
        detail,
    })
}

/// The ELF bytes of a module file.
fn decompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).at("reading", path);
    }
    if name.ends_with(".ko.xz") {
        let file = fs::File::open(path).at("opening", path)?;
        let mut elf = Vec::new();
        lzma_rs::xz_decompress(&mut BufReader::new(file), &mut elf).map_err(|e| Error::Module {
            path: path.to_owned(),
            detail: format!("xz decompression failed: {e}"),
        })?;
        return Ok(elf);
    }
    Err(Error::Module {
        path: path.to_owned(),
        detail: "unsupported compression (only .ko and .ko.xz are handled)".into(),
    })
}

/// Parses the `.modinfo` section of an ELF image.
pub fn parse_elf(elf: &[u8]) -> std::result::Result<ModInfo, String> {
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let data = section
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(parse_modinfo(data))
}

/// Parses NUL-separated `key=value` strings.
pub fn parse_modinfo(data: &[u8]) -> ModInfo {
    let mut info = ModInfo {
        name: None,
        depends: Vec::new(),
    };
    for entry in data.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(normalise(value)),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalise)),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parses_modinfo_strings() {
        let data =
            b"license=GPL\0depends=vfio-pci-core,vfio,irqbypass\0\0name=vfio_pci\0vermagic=7.2\0";
        let info = parse_modinfo(data);
        assert_eq!(info.name.as_deref(), Some("vfio_pci"));
        assert_eq!(info.depends, ["vfio_pci_core", "vfio", "irqbypass"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }

    #[rstest::rstest]
    #[case("vfio-pci-core.ko.xz", Some("vfio_pci_core"))]
    #[case("vfio.ko", Some("vfio"))]
    #[case("vfio_iommu_type1.ko.zst", Some("vfio_iommu_type1"))]
    #[case("modules.order", None)]
    #[case(".ko", None)]
    #[case("x.kobj", None)]
    fn file_names(#[case] file: &str, #[case] name: Option<&str>) {
        assert_eq!(module_name_of_file(file).as_deref(), name);
    }

    #[test]
    fn rejects_non_elf() {
        assert!(parse_elf(b"not elf").unwrap_err().contains("not an ELF"));
    }

    /// A relocatable ELF object with the given `.modinfo` content, like a module.
    pub(crate) fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        use object::write::Object as Writer;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Writer::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(section, modinfo, 1);
        obj.write().unwrap()
    }

    #[test]
    fn reads_plain_and_xz_modules() {
        let tmp = tempfile::tempdir().unwrap();
        let elf = fake_module(b"name=vfio_pci\0depends=vfio-pci-core,vfio\0");
        let plain = tmp.path().join("vfio-pci.ko");
        fs::write(&plain, &elf).unwrap();
        let xz_path = tmp.path().join("vfio-pci.ko.xz");
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &elf[..], &mut xz).unwrap();
        fs::write(&xz_path, xz).unwrap();
        for path in [plain, xz_path] {
            let info = read(&path).unwrap();
            assert_eq!(info.name.as_deref(), Some("vfio_pci"));
            assert_eq!(info.depends, ["vfio_pci_core", "vfio"]);
        }
    }

    #[test]
    fn bad_module_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.ko.xz");
        fs::write(&path, b"garbage").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("xz decompression failed") && err.contains("m.ko.xz"),
            "{err}"
        );
        let zst = tmp.path().join("m.ko.zst");
        fs::write(&zst, b"x").unwrap();
        assert!(read(&zst)
            .unwrap_err()
            .to_string()
            .contains("unsupported compression"));
    }
}
