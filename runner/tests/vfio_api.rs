//! End to end: the catalogue gives the same verdicts whether the guest opens
//! the device through the group/container interface or through its cdev and
//! iommufd (`--vfio-api both` on the `fixed` kernel, which has both), and a
//! kernel without iommufd skips the cdev run's device tests, naming the
//! option. No KVM; the `fixed` kernel is built on first use (about 15 min).

mod common;

use common::{results, runner, verdicts};

#[test]
fn the_rules_give_the_same_verdicts_through_both_interfaces() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", "fixed", "--vfio-api", "both", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    let doc = results(out.path());
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{doc}");
    assert_eq!(runs[0]["kernel"]["vfio_api"], "group");
    assert_eq!(runs[1]["kernel"]["vfio_api"], "cdev");
    let group = verdicts(&runs[0]);
    let cdev = verdicts(&runs[1]);
    let names = |v: &[(String, String, String)]| v.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&group), names(&cdev));
    for ((name, a, da), (_, b, db)) in group.iter().zip(&cdev) {
        assert_eq!(a, b, "{name}: group {a} ({da}), cdev {b} ({db})");
    }
    // All pass but the masking tests, which no Linux vfio-pci offers for
    // MSI or MSI-X (expectations/debian.toml).
    let masked = |name: &str| name.starts_with("irq.") && name.ends_with("_masked");
    assert!(
        group
            .iter()
            .all(|t| t.1 == if masked(&t.0) { "skip" } else { "pass" }),
        "{doc}"
    );
    for (dir, line) in [
        ("fixed", "Type1v2 through the group interface"),
        ("fixed_cdev", "Iommufd through the cdev interface"),
    ] {
        let ktap = std::fs::read_to_string(out.path().join(dir).join("results.ktap"))
            .unwrap_or_else(|e| panic!("{dir}/results.ktap: {e}"));
        assert!(ktap.contains(line), "{dir}: no {line:?} in:\n{ktap}");
    }
    assert_eq!(status.code(), Some(0), "{doc}");
}

#[test]
fn a_kernel_without_iommufd_skips_the_cdev_run_naming_the_option() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", "debian:sid", "--vfio-api", "cdev"])
        .args(["--filter", "f1.*", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    let run = results(out.path())["runs"][0].clone();
    let all = verdicts(&run);
    assert!(!all.is_empty(), "{run}");
    for (name, result, diag) in &all {
        assert_eq!(result, "skip", "{name}: {diag}");
        assert!(diag.contains("CONFIG_IOMMUFD"), "{name}: {diag}");
    }
    // Skips fail nothing: the runner exits 0 (its 4 means a timeout).
    assert_eq!(status.code(), Some(0), "all skipped: {run}");
}
