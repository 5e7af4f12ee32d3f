//! Which cases of the kernel's VFIO selftests the running kernel and device can
//! support, decided from what the kernel offers (device nodes, sysfs), never
//! from how a case failed.
//!
//! The selftests choose an IOMMU mode per variant (`vfio_type1_iommu`,
//! `vfio_type1v2_iommu`: the legacy container `/dev/vfio/vfio`;
//! `iommufd_compat_type1[v2]`: `/dev/iommu` as a container; `iommufd`:
//! `/dev/iommu` and the device's cdev under `/dev/vfio/devices`). Fixtures
//! without a mode variant use the library's default, `iommufd` (lib/iommu.c).
//! Hugetlb variants need free pages of their size; the SR-IOV test needs VFs;
//! the driver test needs a driver of lib/drivers (ioat, dsa: Intel devices;
//! bigbar: this project's device, from its selftests series, which also
//! makes the test look for the driver per case, in the case's own mode).

use std::fs;
use std::path::Path;

use protocol::regs;

/// The collection the kernel's VFIO selftests are installed as.
pub const COLLECTION: &str = "vfio-selftests";
/// PCI vendor of the devices lib/drivers' ioat and dsa drive.
const INTEL: u16 = 0x8086;
/// The program that needs a driver of lib/drivers for the device.
const DRIVER_TEST: &str = "vfio_pci_driver_test";

/// What the running kernel and the device offer the selftests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `/dev/vfio/vfio` exists (CONFIG_VFIO_CONTAINER).
    pub vfio_container: bool,
    /// `/dev/iommu` exists (CONFIG_IOMMUFD).
    pub iommufd: bool,
    /// `/dev/vfio/devices` exists (CONFIG_VFIO_DEVICE_CDEV).
    pub vfio_cdev: bool,
    /// The device's `sriov_totalvfs` (0 without SR-IOV).
    pub sriov_totalvfs: u32,
    /// The device's PCI vendor ID.
    pub vendor: u16,
    /// The device's PCI device ID.
    pub device: u16,
    /// Free 2 MiB hugetlb pages; `None` when the kernel has no such pool.
    pub hugetlb_2m_free: Option<u64>,
    /// Free 1 GiB hugetlb pages; `None` when the kernel has no such pool.
    pub hugetlb_1g_free: Option<u64>,
}

impl Capabilities {
    /// Reads them below `root` (`/` in the guest) for the device `bdf`.
    pub fn probe(root: &Path, bdf: &str) -> Self {
        let dev = root.join("sys/bus/pci/devices").join(bdf);
        let hugepages = root.join("sys/kernel/mm/hugepages");
        Self {
            vfio_container: root.join("dev/vfio/vfio").exists(),
            iommufd: root.join("dev/iommu").exists(),
            vfio_cdev: root.join("dev/vfio/devices").is_dir(),
            sriov_totalvfs: read_number(&dev.join("sriov_totalvfs")).unwrap_or(0) as u32,
            vendor: read_number(&dev.join("vendor")).unwrap_or(0) as u16,
            device: read_number(&dev.join("device")).unwrap_or(0) as u16,
            hugetlb_2m_free: read_number(&hugepages.join("hugepages-2048kB/free_hugepages")),
            hugetlb_1g_free: read_number(&hugepages.join("hugepages-1048576kB/free_hugepages")),
        }
    }
}

/// Backs shared anonymous memory with 2 MiB THP (`shmem_enabled` = `always`,
/// globally and for the 2 MiB size) under `root`, where the kernel has the
/// knobs; returns what was set, for the log.
///
/// The selftests map DMA regions of up to 1 GiB of `MAP_SHARED |
/// MAP_ANONYMOUS` memory. In 4 KiB pages that is 262 144 IOMMU mappings,
/// each of which the vIOMMU forwards to the device as its own vfio-user
/// DMA map, past the protocol's default 65 535 (`max_dma_maps`) that QEMU
/// and the device keep to; in 2 MiB folios it is 512. What the tests check
/// does not depend on the page size behind the buffers.
pub fn shared_memory_in_huge_pages(root: &Path) -> Vec<String> {
    let thp = root.join("sys/kernel/mm/transparent_hugepage");
    ["shmem_enabled", "hugepages-2048kB/shmem_enabled"]
        .iter()
        .map(|knob| thp.join(knob))
        .filter(|path| fs::write(path, "always").is_ok())
        .map(|path| format!("{} = always", path.display()))
        .collect()
}

/// A sysfs number, decimal or `0x` hexadecimal.
fn read_number(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// An IOMMU mode of the selftests' library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuMode {
    /// `vfio_type1_iommu`, `vfio_type1v2_iommu`.
    Type1,
    /// `iommufd_compat_type1`, `iommufd_compat_type1v2`.
    IommufdCompat,
    /// `iommufd`.
    Iommufd,
}

/// The IOMMU mode a variant names (its name starts with it), else the
/// library's default (`iommufd`).
pub fn iommu_mode(variant: Option<&str>) -> IommuMode {
    match variant {
        Some(v) if v.starts_with("vfio_type1") => IommuMode::Type1,
        Some(v) if v.starts_with("iommufd_compat_type1") => IommuMode::IommufdCompat,
        _ => IommuMode::Iommufd,
    }
}

/// Why the case `case` (`fixture[.variant].test`, empty for a whole program)
/// of `program` cannot run here, or `None` when it can.
pub fn skip_reason(program: &str, case: &str, caps: &Capabilities) -> Option<String> {
    let variant = variant_of(case);
    // A variant that is no IOMMU mode (`msi`, `msix`) leaves the default.
    let named = variant.is_some_and(|v| v.starts_with("vfio_type1") || v.starts_with("iommufd"));
    device_reason(program, caps)
        .or_else(|| mode_reason(iommu_mode(variant), !named, caps))
        .or_else(|| variant.and_then(|v| hugetlb_reason(v, caps)))
}

/// The variant of `fixture.variant.test`; `fixture.test` has none.
fn variant_of(case: &str) -> Option<&str> {
    let mut parts = case.split('.');
    let (_fixture, variant, _test) = (parts.next()?, parts.next()?, parts.next()?);
    Some(variant)
}

/// What a whole program needs of the device.
fn device_reason(program: &str, caps: &Capabilities) -> Option<String> {
    match program {
        "vfio_pci_sriov_uapi_test" if caps.sriov_totalvfs == 0 => {
            Some("needs SR-IOV: the device offers no VFs (sriov_totalvfs 0)".into())
        }
        DRIVER_TEST if !has_driver(caps) => Some(format!(
            "no driver in lib/drivers for the device {:04x}:{:04x} \
             (ioat and dsa drive Intel devices, bigbar {:04x}:{:04x})",
            caps.vendor,
            caps.device,
            regs::VENDOR_ID,
            regs::DEVICE_ID
        )),
        _ => None,
    }
}

/// Whether lib/drivers has a driver for the device: Intel's engines, or
/// bigbar's own device through the driver that the project's selftests
/// series adds (the runner always applies it).
fn has_driver(caps: &Capabilities) -> bool {
    caps.vendor == INTEL || (caps.vendor, caps.device) == (regs::VENDOR_ID, regs::DEVICE_ID)
}

/// What the IOMMU mode needs of the kernel.
fn mode_reason(mode: IommuMode, default: bool, caps: &Capabilities) -> Option<String> {
    let which = if default {
        "the selftests' default IOMMU mode iommufd"
    } else {
        match mode {
            IommuMode::Type1 => "IOMMU mode vfio_type1",
            IommuMode::IommufdCompat => "IOMMU mode iommufd_compat_type1",
            IommuMode::Iommufd => "IOMMU mode iommufd",
        }
    };
    let mut missing = Vec::new();
    match mode {
        IommuMode::Type1 if !caps.vfio_container => {
            missing.push(("CONFIG_VFIO_CONTAINER", "/dev/vfio/vfio"))
        }
        IommuMode::IommufdCompat | IommuMode::Iommufd if !caps.iommufd => {
            missing.push(("CONFIG_IOMMUFD", "/dev/iommu"))
        }
        _ => {}
    }
    if mode == IommuMode::Iommufd && !caps.vfio_cdev {
        missing.push(("CONFIG_VFIO_DEVICE_CDEV", "/dev/vfio/devices"));
    }
    if missing.is_empty() {
        return None;
    }
    let options: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let nodes: Vec<&str> = missing.iter().map(|m| m.1).collect();
    Some(format!(
        "{which} needs {}: no {} in this kernel",
        options.join(" and "),
        nodes.join(", ")
    ))
}

/// What a hugetlb variant needs: a free page of its size.
fn hugetlb_reason(variant: &str, caps: &Capabilities) -> Option<String> {
    let (size, free) = if variant.ends_with("_hugetlb_2mb") {
        ("2 MiB", caps.hugetlb_2m_free)
    } else if variant.ends_with("_hugetlb_1gb") {
        ("1 GiB", caps.hugetlb_1g_free)
    } else {
        return None;
    };
    match free {
        None => Some(format!(
            "needs {size} hugetlb pages: the kernel has none (CONFIG_HUGETLBFS, page size)"
        )),
        Some(0) => Some(format!(
            "needs a free {size} hugetlb page: none reserved (hugepagesz=/hugepages= on the command line)"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Debian sid's kernel on bigbar's device: type1 only, 2 MiB pages reserved.
    fn debian() -> Capabilities {
        Capabilities {
            vfio_container: true,
            iommufd: false,
            vfio_cdev: false,
            sriov_totalvfs: 0,
            vendor: 0x1b36,
            device: 0x0010,
            hugetlb_2m_free: Some(16),
            hugetlb_1g_free: Some(0),
        }
    }

    fn everything() -> Capabilities {
        Capabilities {
            iommufd: true,
            vfio_cdev: true,
            sriov_totalvfs: 4,
            vendor: INTEL,
            hugetlb_1g_free: Some(1),
            ..debian()
        }
    }

    #[rstest]
    #[case(Some("vfio_type1_iommu"), IommuMode::Type1)]
    #[case(Some("vfio_type1v2_iommu_anonymous_hugetlb_2mb"), IommuMode::Type1)]
    #[case(Some("iommufd_compat_type1v2_anonymous"), IommuMode::IommufdCompat)]
    #[case(Some("iommufd"), IommuMode::Iommufd)]
    #[case(Some("msix"), IommuMode::Iommufd)]
    #[case(None, IommuMode::Iommufd)]
    fn modes(#[case] variant: Option<&str>, #[case] want: IommuMode) {
        assert_eq!(iommu_mode(variant), want);
    }

    #[rstest]
    #[case::type1_runs(
        "vfio_dma_mapping_mmio_test",
        "vfio_dma_mapping_mmio_test.vfio_type1_iommu.map_full_bar",
        None
    )]
    #[case::type1v2_runs(
        "vfio_dma_mapping_test",
        "vfio_dma_mapping_test.vfio_type1v2_iommu_anonymous.dma_map_unmap",
        None
    )]
    #[case::reserved_2m_pages_run(
        "vfio_dma_mapping_test",
        "vfio_dma_mapping_test.vfio_type1_iommu_anonymous_hugetlb_2mb.dma_map_unmap",
        None
    )]
    #[case::no_1g_page(
        "vfio_dma_mapping_test",
        "vfio_dma_mapping_test.vfio_type1_iommu_anonymous_hugetlb_1gb.dma_map_unmap",
        Some("needs a free 1 GiB hugetlb page: none reserved (hugepagesz=/hugepages= on the command line)")
    )]
    #[case::compat_needs_iommufd(
        "vfio_dma_mapping_test",
        "vfio_dma_map_limit_test.iommufd_compat_type1.overflow",
        Some("IOMMU mode iommufd_compat_type1 needs CONFIG_IOMMUFD: no /dev/iommu in this kernel")
    )]
    #[case::iommufd_needs_both(
        "vfio_dma_mapping_mmio_test",
        "vfio_dma_mapping_mmio_test.iommufd.map_partial_bar",
        Some(
            "IOMMU mode iommufd needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV: \
              no /dev/iommu, /dev/vfio/devices in this kernel"
        )
    )]
    #[case::default_mode_without_variant(
        "vfio_pci_device_test",
        "vfio_pci_device_test.reset",
        Some(
            "the selftests' default IOMMU mode iommufd needs CONFIG_IOMMUFD and \
              CONFIG_VFIO_DEVICE_CDEV: no /dev/iommu, /dev/vfio/devices in this kernel"
        )
    )]
    #[case::irq_variants_use_the_default(
        "vfio_pci_device_test",
        "vfio_pci_irq_test.msix.enable_trigger_disable",
        Some(
            "the selftests' default IOMMU mode iommufd needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV: \
              no /dev/iommu, /dev/vfio/devices in this kernel"
        )
    )]
    #[case::whole_cdev_program(
        "vfio_iommufd_setup_test",
        "",
        Some(
            "the selftests' default IOMMU mode iommufd needs CONFIG_IOMMUFD and \
              CONFIG_VFIO_DEVICE_CDEV: no /dev/iommu, /dev/vfio/devices in this kernel"
        )
    )]
    #[case::no_vfs(
        "vfio_pci_sriov_uapi_test",
        "",
        Some("needs SR-IOV: the device offers no VFs (sriov_totalvfs 0)")
    )]
    #[case::no_driver(
        "vfio_pci_driver_test",
        "",
        Some(
            "no driver in lib/drivers for the device 1b36:0010 \
              (ioat and dsa drive Intel devices, bigbar 1234:b16b)"
        )
    )]
    #[case::driver_probe_needs_the_default_mode(
        "vfio_pci_driver_test",
        "vfio_pci_driver_test.vfio_type1_iommu.send_msi",
        Some(
            "no driver in lib/drivers for the device 1b36:0010 \
              (ioat and dsa drive Intel devices, bigbar 1234:b16b)"
        )
    )]
    fn debian_sid(#[case] program: &str, #[case] case: &str, #[case] want: Option<&str>) {
        assert_eq!(skip_reason(program, case, &debian()).as_deref(), want);
    }

    #[rstest]
    #[case("vfio_pci_device_test", "vfio_pci_device_test.reset")]
    #[case(
        "vfio_dma_mapping_mmio_test",
        "vfio_dma_mapping_mmio_test.iommufd.map_full_bar"
    )]
    #[case(
        "vfio_dma_mapping_test",
        "vfio_dma_mapping_test.iommufd_anonymous_hugetlb_1gb.dma_map_unmap"
    )]
    #[case("vfio_pci_sriov_uapi_test", "")]
    #[case("vfio_pci_driver_test", "")]
    fn a_capable_kernel_runs_everything(#[case] program: &str, #[case] case: &str) {
        assert_eq!(skip_reason(program, case, &everything()), None);
    }

    /// bigbar's own device on Debian's kernel: the type1 cases of the driver
    /// test run, the iommufd ones need the options.
    #[rstest]
    #[case("vfio_pci_driver_test.vfio_type1_iommu.send_msi", None)]
    #[case(
        "vfio_pci_driver_test.iommufd.send_msi",
        Some(
            "IOMMU mode iommufd needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV: \
             no /dev/iommu, /dev/vfio/devices in this kernel"
        )
    )]
    fn bigbar_driver_on_debian(#[case] case: &str, #[case] want: Option<&str>) {
        let caps = Capabilities {
            vendor: regs::VENDOR_ID,
            device: regs::DEVICE_ID,
            ..debian()
        };
        assert_eq!(skip_reason(DRIVER_TEST, case, &caps).as_deref(), want);
    }

    #[rstest]
    #[case("")]
    #[case("vfio_pci_driver_test.vfio_type1_iommu.memcpy_storm")]
    #[case("vfio_pci_driver_test.iommufd.send_msi")]
    fn bigbar_has_a_driver(#[case] case: &str) {
        let caps = Capabilities {
            vendor: regs::VENDOR_ID,
            device: regs::DEVICE_ID,
            ..everything()
        };
        assert_eq!(skip_reason(DRIVER_TEST, case, &caps), None);
    }

    #[test]
    fn shared_memory_knobs_are_set_where_they_exist() {
        let t = tempfile::tempdir().unwrap();
        let thp = t.path().join("sys/kernel/mm/transparent_hugepage");
        fs::create_dir_all(&thp).unwrap();
        fs::write(thp.join("shmem_enabled"), "never").unwrap();
        let set = shared_memory_in_huge_pages(t.path());
        assert_eq!(set.len(), 1, "{set:?}");
        assert_eq!(
            fs::read_to_string(thp.join("shmem_enabled")).unwrap(),
            "always"
        );
        assert!(shared_memory_in_huge_pages(&t.path().join("none")).is_empty());
    }

    #[test]
    fn no_hugetlb_pool_names_the_option() {
        let caps = Capabilities {
            hugetlb_2m_free: None,
            ..debian()
        };
        let why = skip_reason(
            "vfio_dma_mapping_test",
            "vfio_dma_mapping_test.vfio_type1_iommu_anonymous_hugetlb_2mb.dma_map_unmap",
            &caps,
        );
        assert_eq!(
            why.as_deref(),
            Some("needs 2 MiB hugetlb pages: the kernel has none (CONFIG_HUGETLBFS, page size)")
        );
    }

    #[test]
    fn probe_reads_sysfs_and_dev() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let dev = r.join("sys/bus/pci/devices/0000:00:03.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), "0x1b36\n").unwrap();
        fs::write(dev.join("device"), "0x0010\n").unwrap();
        let hp = r.join("sys/kernel/mm/hugepages/hugepages-2048kB");
        fs::create_dir_all(&hp).unwrap();
        fs::write(hp.join("free_hugepages"), "16\n").unwrap();
        fs::create_dir_all(r.join("dev/vfio")).unwrap();
        fs::write(r.join("dev/vfio/vfio"), "").unwrap();
        let caps = Capabilities::probe(r, "0000:00:03.0");
        assert_eq!(
            caps,
            Capabilities {
                hugetlb_1g_free: None,
                ..debian()
            }
        );
    }
}
