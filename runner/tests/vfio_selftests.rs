//! End to end: `--suite vfio-selftests` builds the kernel's VFIO selftests from
//! the kernel's source (with kernel/patches/selftests) and runs every case in
//! the guest. On Debian sid's kernel (no IOMMUFD, no VFIO cdev) the type1
//! variants pass and the iommufd ones skip naming the missing option; nothing
//! fails; the same on `fixed` (built from the same source, no HUGETLBFS).
//! Needs network access to Debian's archive on the first run (kernel,
//! linux-source), no KVM.

mod common;

use common::{results, runner, verdicts};

/// The type1 cases that must pass at least: the mmio mapping (3 tests × 2
/// type1 modes), the DMA mapping (anonymous and 2 MiB hugetlb × 2 modes) and
/// its limit tests (3 × 2), and init (2).
const MIN_TYPE1_PASSES: usize = 16;

#[rstest::rstest]
#[case::debian_sid("debian:sid")]
#[case::fixed("fixed")]
fn every_case_passes_or_skips_for_a_true_reason(#[case] kernel: &str) {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", kernel, "--suite", "vfio-selftests"])
        .args(["--timeout", "1500", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    let run = results(out.path())["runs"][0].clone();
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
    assert_eq!(status.code(), Some(0), "{run}");
}
