//! End to end: `--suite vfio-selftests` builds the kernel's VFIO selftests from
//! the kernel's source (with kernel/patches/selftests, which adds the driver
//! for bigbar's device) and runs every case in the guest.
//! - Debian sid's kernel (no IOMMUFD, no VFIO cdev): the type1 variants pass,
//!   the driver test included; every iommufd case skips
//!   naming the missing option; nothing fails.
//! - `fixed` (IOMMUFD, VFIO_DEVICE_CDEV, IOMMU_DEBUGFS, HUGETLBFS; 1 GiB and
//!   2 MiB pages reserved): every case in every IOMMU mode passes, the driver
//!   test included; only the SR-IOV test skips (the device has no VFs).
//! - a developer's `make O=` build directory (here leading to a tree that
//!   shares Debian's files but has its own selftests): the selftests are built
//!   from that tree, taking the patches that apply, saying which did not, and
//!   rebuilt when the tree's selftests change (`--list`, no boot).
//!
//! Needs network access to Debian's archive on the first run (kernel,
//! linux-source), no KVM.

mod common;

use common::{results, runner, verdicts};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The type1 cases that must pass at least: the mmio mapping (3 tests × 2
/// type1 modes), the DMA mapping (anonymous and 2 MiB hugetlb × 2 modes) and
/// its limit tests (3 × 2), and init (2).
const MIN_TYPE1_PASSES: usize = 16;

/// The cases of vfio_pci_driver_test: 7 tests in each of the 5 IOMMU modes.
const DRIVER_CASES: usize = 35;

/// Asserts that the run reported exactly the cases `--list` names for `kernel`.
fn assert_every_case_ran(all: &[(String, String, String)], kernel: &str) {
    let listed = common::listed(&["--kernel", kernel, "--suite", "vfio-selftests"]);
    assert_eq!(
        common::sorted_names(all),
        common::sorted(listed),
        "{kernel}: not every listed case reported"
    );
}

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
    assert_every_case_ran(&all, "debian:sid");
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
    assert_every_case_ran(&all, "fixed");
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

/// The store the runner uses when given none.
fn default_cache() -> PathBuf {
    vm_images::cache::default_root().expect("a store")
}

/// Debian sid's linux-source tree, obtained by the runner if not cached.
fn debian_source() -> PathBuf {
    let out = runner()
        .args([
            "--kernel",
            "debian:sid",
            "--suite",
            "vfio-selftests",
            "--list",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let category = default_cache().join("kernel-source/debian-sid");
    let key = fs::read_to_string(category.join("current")).unwrap();
    let entry = category.join(key.trim());
    let info: Value =
        serde_json::from_str(&fs::read_to_string(entry.join("source.json")).unwrap()).unwrap();
    entry.join(info["tree"].as_str().unwrap())
}

/// Links every entry of `from` into `to` but `except`, which is returned.
fn link_all_but(from: &Path, to: &Path, except: &str) -> (PathBuf, PathBuf) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != except {
            symlink(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    (from.join(except), to.join(except))
}

/// Copies `from` to `to`, links followed.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            fs::copy(&p, &target).unwrap();
        }
    }
}

/// A developer's tree at `dev`: Debian's files linked, but a selftests
/// directory of its own (`vfio` copied), where it differs from Debian's.
fn developer_tree(debian: &Path, dev: &Path) {
    let (from, to) = link_all_but(debian, dev, "tools");
    let (from, to) = link_all_but(&from, &to, "testing");
    let (from, to) = link_all_but(&from, &to, "selftests");
    let (from, to) = link_all_but(&from, &to, "vfio");
    copy_tree(&from, &to);
}

/// `runner --kernel <build> --suite vfio-selftests --list` into a private
/// cache: whether it succeeded, its stderr and how many cases it listed.
fn list_from(build: &Path, cache: &Path) -> (bool, String, usize) {
    let out = runner()
        .arg("--cache")
        .arg(cache)
        .arg("--kernel")
        .arg(build)
        .args(["--suite", "vfio-selftests", "--list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cases = stdout
        .lines()
        .filter(|l| l.starts_with("vfio-selftests."))
        .count();
    (out.status.success(), stderr, cases)
}

/// Asserts that `stderr` says each of `lines`.
fn says(stderr: &str, lines: &[&str]) {
    for said in lines {
        assert!(stderr.contains(said), "{said} not in:\n{stderr}");
    }
}

const ALREADY: &str =
    "patch 1/4 0001-selftests-vfio-define-calloc_assert.patch: already in the tree";
const HARNESS: &str = "patch 2/4 0002-selftests-harness-let-the-build-override-TEST_TIMEOU.patch";
const APPLIED_3_4: [&str; 2] = [
    "patch 3/4 0003-selftests-vfio-skip-driver-test-cases-not-the-progra.patch: applied",
    "patch 4/4 0004-selftests-vfio-add-a-driver-for-bigbar-s-emulated-de.patch: applied",
];

#[test]
fn a_developer_build_directory_builds_the_selftests_of_its_own_tree() {
    let debian = debian_source();
    let t = tempfile::tempdir().unwrap();
    let dev = t.path().join("linux");
    developer_tree(&debian, &dev);
    // The tree has patch 1 already, and a harness patch 2 cannot apply to.
    let patches = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/patches/selftests");
    let first = patches.join("0001-selftests-vfio-define-calloc_assert.patch");
    let st = std::process::Command::new("patch")
        .args(["-s", "-p1", "-d"])
        .arg(&dev)
        .arg("-i")
        .arg(&first)
        .status()
        .unwrap();
    assert!(st.success());
    let harness = dev.join("tools/testing/selftests/kselftest_harness.h");
    let shipped = fs::read_to_string(&harness).unwrap();
    fs::remove_file(&harness).unwrap();
    let moved = "#define TEST_TIMEOUT_DEFAULT 45";
    fs::write(
        &harness,
        shipped.replace("#define TEST_TIMEOUT_DEFAULT 30", moved),
    )
    .unwrap();
    // `make O=build`: the directory links to its source.
    let build = t.path().join("build");
    fs::create_dir_all(build.join("include/config")).unwrap();
    fs::write(build.join("include/config/kernel.release"), "7.2.13-dev\n").unwrap();
    symlink(&dev, build.join("source")).unwrap();
    let cache = t.path().join("cache");

    // Without patch 2 the build's -DTEST_TIMEOUT_DEFAULT redefines the
    // harness's: the build fails, reported with make's command and error.
    let (ok, stderr, _) = list_from(&build, &cache);
    assert!(!ok, "{stderr}");
    let conflict = format!(
        "{HARNESS}: does not apply to this tree, building without it \
         (tools/testing/selftests/kselftest_harness.h: hunk #1 does not apply"
    );
    says(
        &stderr,
        &[ALREADY, &conflict, APPLIED_3_4[0], APPLIED_3_4[1]],
    );
    says(
        &stderr,
        &[
            "failed at `",
            "make -s -C",
            "\"TEST_TIMEOUT_DEFAULT\" redefined",
        ],
    );

    fs::write(&harness, &shipped).unwrap();
    let (ok, stderr, cases) = list_from(&build, &cache);
    assert!(ok, "{stderr}");
    let applied = format!("{HARNESS}: applied");
    says(
        &stderr,
        &[
            "building vfio-selftests from the 7.2.13-dev tree at",
            ALREADY,
            &applied,
            APPLIED_3_4[0],
            APPLIED_3_4[1],
        ],
    );
    assert!(cases >= 90, "{cases}: {stderr}");
    assert_eq!(
        fs::read_dir(&build).unwrap().count(),
        2,
        "the build directory is not written to"
    );

    let (_, again, _) = list_from(&build, &cache);
    assert!(
        !again.contains("building vfio-selftests"),
        "cached: {again}"
    );
    let test = dev.join("tools/testing/selftests/vfio/vfio_pci_device_test.c");
    let mut source = fs::read_to_string(&test).unwrap();
    source.push_str("/* edited */\n");
    fs::write(&test, source).unwrap();
    let (ok, edited, _) = list_from(&build, &cache);
    assert!(
        ok && edited.contains("building vfio-selftests"),
        "rebuilt: {edited}"
    );
}

#[test]
fn a_bare_image_is_refused_asking_for_the_build_directory() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("vmlinuz");
    fs::write(&image, b"not a tree").unwrap();
    let out = runner()
        .arg("--kernel")
        .arg(&image)
        .args(["--suite", "vfio-selftests", "--list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pass the kernel's build directory"),
        "{stderr}"
    );
}
