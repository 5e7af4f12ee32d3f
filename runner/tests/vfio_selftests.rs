//! End to end: `--suite vfio-selftests` builds the kernel's VFIO selftests from
//! the kernel's source (with kernel/patches/selftests, which adds the driver
//! for bigbar's device) and runs every case in the guest.
//! - Debian sid's kernel (no IOMMUFD, no VFIO cdev): the type1 variants pass,
//!   the driver test included; every iommufd case skips
//!   naming the missing option; nothing fails.
//! - `fixed` (IOMMUFD, VFIO_DEVICE_CDEV, IOMMU_DEBUGFS, HUGETLBFS; 1 GiB and
//!   2 MiB pages reserved): every case in every IOMMU mode passes, the driver
//!   test included; only the SR-IOV test skips (the device has no VFs).
//!
//! Needs network access to Debian's archive on the first run (kernel,
//! linux-source), no KVM.

mod common;

use common::{results, runner, verdicts};
use serde_json::Value;

/// The type1 cases that must pass at least: the mmio mapping (3 tests × 2
/// type1 modes), the DMA mapping (anonymous and 2 MiB hugetlb × 2 modes) and
/// its limit tests (3 × 2), and init (2).
const MIN_TYPE1_PASSES: usize = 16;

/// The cases of vfio_pci_driver_test: 7 tests in each of the 5 IOMMU modes.
const DRIVER_CASES: usize = 35;

/// Runs the selftests on `kernel`; the exit status and the run record.
fn run_selftests(kernel: &str) -> (Option<i32>, Value) {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", kernel, "--suite", "vfio-selftests"])
        .args(["--timeout", "1500", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    (status.code(), results(out.path())["runs"][0].clone())
}

#[test]
fn debian_sid_passes_type1_and_skips_iommufd_naming_the_option() {
    let (code, run) = run_selftests("debian:sid");
    let all = verdicts(&run);
    assert!(all.len() >= 50, "{run}");
    for (name, result, diag) in &all {
        assert!(name.starts_with("vfio-selftests."), "{name}");
        assert!(
            result == "pass" || result == "skip",
            "{name}: {result}: {diag}"
        );
    }
    let type1_passes = all
        .iter()
        .filter(|(n, r, _)| n.contains(".vfio_type1") && r == "pass")
        .count();
    assert!(type1_passes >= MIN_TYPE1_PASSES, "{type1_passes}: {run}");
    let iommufd: Vec<_> = all
        .iter()
        .filter(|(n, _, _)| n.contains(".iommufd"))
        .collect();
    assert!(!iommufd.is_empty(), "{run}");
    for (name, result, diag) in iommufd {
        assert_eq!(result, "skip", "{name}: {diag}");
        assert!(diag.contains("CONFIG_IOMMUFD"), "{name}: {diag}");
    }
    assert_eq!(code, Some(0), "{run}");
}

#[test]
fn fixed_passes_every_case_in_every_iommu_mode() {
    let (code, run) = run_selftests("fixed");
    let all = verdicts(&run);
    assert!(all.len() >= 50, "{run}");
    for (name, result, diag) in &all {
        if name.contains("vfio_pci_sriov_uapi_test") {
            assert_eq!(result, "skip", "{name}: {diag}");
            assert!(diag.contains("SR-IOV"), "{name}: {diag}");
        } else {
            assert_eq!(result, "pass", "{name}: {diag}");
        }
    }
    let driver = all
        .iter()
        .filter(|(n, _, _)| n.contains("vfio_pci_driver_test"))
        .count();
    assert_eq!(driver, DRIVER_CASES, "{run}");
    for mode in ["iommufd_compat_type1v2", ".iommufd.", "hugetlb_1gb"] {
        assert!(
            all.iter().any(|(n, r, _)| n.contains(mode) && r == "pass"),
            "no {mode} case passed: {run}"
        );
    }
    assert_eq!(code, Some(0), "{run}");
}
