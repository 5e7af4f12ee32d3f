//! The PCI device as sysfs shows it: finding it, binding it to vfio-pci, its IOMMU
//! group and the physical placement of its BARs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The driver the tests need.
pub const VFIO_PCI: &str = "vfio-pci";
/// `IORESOURCE_MEM` in a sysfs `resource` line's flags.
pub const IORESOURCE_MEM: u64 = 0x0000_0200;
/// `IORESOURCE_PREFETCH` in a sysfs `resource` line's flags.
pub const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
/// `IORESOURCE_MEM_64` in a sysfs `resource` line's flags.
pub const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// Errors from reading or writing sysfs.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// A sysfs file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sysfs file held something unexpected.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// No device with the vendor/device ID exists.
    #[error("no PCI device {vendor:04x}:{device:04x} in {dir}")]
    NotFound {
        /// Vendor ID looked for.
        vendor: u16,
        /// Device ID looked for.
        device: u16,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// More than one device matched; the user must choose with a BDF.
    #[error("several PCI devices {vendor:04x}:{device:04x}: {found:?}; choose one with --bdf")]
    Ambiguous {
        /// Vendor ID looked for.
        vendor: u16,
        /// Device ID looked for.
        device: u16,
        /// The addresses found.
        found: Vec<String>,
    },
    /// The device is not bound to vfio-pci after probing.
    #[error("{bdf} is bound to {driver:?} instead of vfio-pci after drivers_probe (is the vfio-pci module loaded?)")]
    NotBound {
        /// The device.
        bdf: String,
        /// The driver it ended up with, if any.
        driver: Option<String>,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PciError {
    let path = path.to_owned();
    move |source| PciError::Io { op, path, source }
}

fn read_trimmed(path: &Path) -> Result<String, PciError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(io_err("read", path))
}

fn write_str(path: &Path, value: &str) -> Result<(), PciError> {
    fs::write(path, value).map_err(io_err("write", path))
}

fn parse_hex(path: &Path, text: &str) -> Result<u64, PciError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|_| PciError::Parse {
        path: path.to_owned(),
        content: text.to_owned(),
    })
}

/// One resource line of a device's sysfs `resource` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// First physical address.
    pub start: u64,
    /// Last physical address (inclusive); 0 with `start` 0 for an unused slot.
    pub end: u64,
    /// `IORESOURCE_*` flags.
    pub flags: u64,
}

impl Resource {
    /// Size in bytes (0 for an unused slot).
    pub fn size(&self) -> u64 {
        if self.end == 0 && self.start == 0 {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether the BAR is a 64-bit memory BAR.
    pub fn is_64bit(&self) -> bool {
        self.flags & IORESOURCE_MEM_64 != 0
    }

    /// Whether the BAR is prefetchable.
    pub fn prefetchable(&self) -> bool {
        self.flags & IORESOURCE_PREFETCH != 0
    }
}

/// Parses the content of a sysfs `resource` file (`start end flags` in hex per line).
pub fn parse_resources(path: &Path, text: &str) -> Result<Vec<Resource>, PciError> {
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [start, end, flags] = fields[..] else {
                return Err(PciError::Parse {
                    path: path.to_owned(),
                    content: line.to_owned(),
                });
            };
            Ok(Resource {
                start: parse_hex(path, start)?,
                end: parse_hex(path, end)?,
                flags: parse_hex(path, flags)?,
            })
        })
        .collect()
}

/// A PCI device under a sysfs root (normally `/sys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    sys: PathBuf,
    bdf: String,
}

impl PciDevice {
    /// The device with address `bdf` (`0000:00:03.0`) under sysfs root `sys`.
    pub fn new(sys: &Path, bdf: &str) -> Self {
        PciDevice {
            sys: sys.to_owned(),
            bdf: bdf.to_owned(),
        }
    }

    /// Finds the single device with the given IDs.
    pub fn find(sys: &Path, vendor: u16, device: u16) -> Result<Self, PciError> {
        let dir = sys.join("bus/pci/devices");
        let mut found = Vec::new();
        let entries = match fs::read_dir(&dir) {
            // No PCI bus at all (a container, a machine without PCI): no device.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            entries => entries
                .map_err(io_err("list", &dir))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err("list", &dir))?,
        };
        for entry in entries {
            let path = entry.path();
            let v = parse_hex(&path, &read_trimmed(&path.join("vendor"))?)?;
            let d = parse_hex(&path, &read_trimmed(&path.join("device"))?)?;
            if v == u64::from(vendor) && d == u64::from(device) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        found.sort();
        match found.len() {
            0 => Err(PciError::NotFound {
                vendor,
                device,
                dir,
            }),
            1 => Ok(Self::new(sys, &found[0])),
            _ => Err(PciError::Ambiguous {
                vendor,
                device,
                found,
            }),
        }
    }

    /// The device's address.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    /// The device's sysfs directory.
    pub fn dir(&self) -> PathBuf {
        self.sys.join("bus/pci/devices").join(&self.bdf)
    }

    /// Name of the bound driver, if any.
    pub fn driver(&self) -> Result<Option<String>, PciError> {
        let link = self.dir().join("driver");
        match fs::read_link(&link) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("readlink", &link)(e)),
        }
    }

    /// Binds the device to vfio-pci through `driver_override`, unbinding it from
    /// its current driver first. Returns the driver it had before.
    pub fn bind_vfio(&self) -> Result<Option<String>, PciError> {
        let before = self.driver()?;
        if before.as_deref() == Some(VFIO_PCI) {
            return Ok(before);
        }
        write_str(&self.dir().join("driver_override"), VFIO_PCI)?;
        if before.is_some() {
            write_str(&self.dir().join("driver/unbind"), &self.bdf)?;
        }
        write_str(&self.sys.join("bus/pci/drivers_probe"), &self.bdf)?;
        match self.driver()? {
            Some(d) if d == VFIO_PCI => Ok(before),
            driver => Err(PciError::NotBound {
                bdf: self.bdf.clone(),
                driver,
            }),
        }
    }

    /// Number of the device's IOMMU group.
    pub fn iommu_group(&self) -> Result<u32, PciError> {
        let link = self.dir().join("iommu_group");
        let target = fs::read_link(&link).map_err(io_err("readlink", &link))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.parse().map_err(|_| PciError::Parse {
            path: link,
            content: name,
        })
    }

    /// The device's resources (BARs 0-5 first).
    pub fn resources(&self) -> Result<Vec<Resource>, PciError> {
        let path = self.dir().join("resource");
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        parse_resources(&path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let devs = t.path().join("bus/pci/devices");
        for (bdf, v, d) in [
            ("0000:00:01.0", "0x8086", "0x1237"),
            ("0000:00:03.0", "0x1234", "0xb16b"),
        ] {
            fs::create_dir_all(devs.join(bdf)).unwrap();
            fs::write(devs.join(bdf).join("vendor"), format!("{v}\n")).unwrap();
            fs::write(devs.join(bdf).join("device"), format!("{d}\n")).unwrap();
        }
        fs::create_dir_all(t.path().join("kernel/iommu_groups/7")).unwrap();
        symlink(
            t.path().join("kernel/iommu_groups/7"),
            devs.join("0000:00:03.0/iommu_group"),
        )
        .unwrap();
        t
    }

    #[test]
    fn finds_by_id_and_reads_group() {
        let t = fake_sys();
        let dev = PciDevice::find(t.path(), 0x1234, 0xb16b).unwrap();
        assert_eq!(dev.bdf(), "0000:00:03.0");
        assert_eq!(dev.iommu_group().unwrap(), 7);
        assert_eq!(dev.driver().unwrap(), None);
        let err = PciDevice::find(t.path(), 0x1234, 0x0001).unwrap_err();
        assert!(err.to_string().contains("no PCI device 1234:0001"), "{err}");
    }

    #[test]
    fn several_matches_are_ambiguous() {
        let t = fake_sys();
        let devs = t.path().join("bus/pci/devices");
        fs::create_dir_all(devs.join("0000:00:04.0")).unwrap();
        fs::write(devs.join("0000:00:04.0/vendor"), "0x1234\n").unwrap();
        fs::write(devs.join("0000:00:04.0/device"), "0xb16b\n").unwrap();
        let err = PciDevice::find(t.path(), 0x1234, 0xb16b).unwrap_err();
        assert!(
            matches!(err, PciError::Ambiguous { ref found, .. } if found.len() == 2),
            "{err}"
        );
    }

    #[test]
    fn resource_lines_parse() {
        let text = "0x00000000fea00000 0x00000000fea00fff 0x0000000000040200\n\
                    0x00000000f8000000 0x00000000fbffffff 0x0000000000042208\n\
                    0x000000f800000000 0x000000fbffffffff 0x000000000014220c\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        let r = parse_resources(Path::new("resource"), text).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].size(), 4096);
        assert_eq!(r[2].start, 0xf8_0000_0000);
        assert_eq!(r[2].size(), 16 << 30);
        assert!(r[2].is_64bit() && r[2].prefetchable());
        assert!(!r[1].is_64bit() && r[1].prefetchable());
        assert_eq!(r[3].size(), 0);
        assert!(parse_resources(Path::new("resource"), "0x1 0x2\n").is_err());
        assert!(parse_resources(Path::new("resource"), "0x1 0xzz 0x0\n").is_err());
    }

    #[test]
    fn bind_writes_override_and_probe() {
        // With a fake sysfs no driver appears, so binding must fail and say so,
        // after writing driver_override and drivers_probe.
        let t = fake_sys();
        let dev = PciDevice::new(t.path(), "0000:00:03.0");
        let err = dev.bind_vfio().unwrap_err();
        assert!(
            matches!(err, PciError::NotBound { driver: None, .. }),
            "{err}"
        );
        let dir = dev.dir();
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("bus/pci/drivers_probe")).unwrap(),
            "0000:00:03.0"
        );
    }
}
