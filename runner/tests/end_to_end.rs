//! End to end: the runner boots Debian sid's kernel with the emulated device and
//! the first five guest tests pass. Needs network access to Debian's archive on
//! the first run (QEMU and the kernel are cached afterwards) and no KVM.

mod common;

use common::{results, runner};

/// The first tests, which must pass on Debian sid. (The whole catalogue, with its
/// kernel findings, is checked by `catalogue.rs`.)
const REQUIRED: [&str; 5] = [
    "setup.bind_vfio",
    "content.offset_tags",
    "fault_order.pud_aligned",
    "fault_order.pmd_aligned",
    "fault_order.unaligned",
];

#[test]
fn debian_sid_runs_the_first_tests() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", "debian:sid", "--timeout", "900"])
        .args(REQUIRED.iter().flat_map(|t| ["--filter", t]))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("runner starts");
    let results = results(out.path());
    let json = results.to_string();
    let run = &results["runs"][0];
    assert_eq!(run["kernel"]["spec"], "debian:sid");
    assert!(run["kernel"]["release"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(run["outcome"]["status"], "completed", "{json}");
    let tests = run["tests"].as_array().expect("tests array");
    for name in REQUIRED {
        let t = tests
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {json}"));
        assert_eq!(t["result"], "pass", "{name}: {}", t["diagnostic"]);
    }
    assert_eq!(status.code(), Some(0), "runner exit status");
    for f in ["console.log", "results.ktap"] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
}
