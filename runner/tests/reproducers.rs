//! End to end: `--reproducers` compiles the kernel reproducers of
//! `kernel/selftests/vfio` and runs them in the guest. On Debian sid's kernel and
//! the project's `stock` build, which have both defects, the mremap reproducer
//! fails (the moved GiB refaults) and the split reproducer fails or oopses the
//! kernel (exit 3 with the oops attached); on `fixed` both pass. Needs network
//! access to Debian's archive on the first run (kernel, linux-source), no KVM;
//! `stock` and `fixed` are built on first use (minutes, then cached).

mod common;

use common::{results, runner, verdict, verdicts};

const MREMAP: &str = "repro.vfio_pci_pud_mremap_test.vfio_pci_pud_mremap.move_pud_congruent";
const SPLIT: &str = "repro.vfio_pci_pud_split_test.vfio_pci_pud_split.munmap_unaligned_tail";
const SPLIT_CONTROL: &str = "repro.vfio_pci_pud_split_test.vfio_pci_pud_split.munmap_pmd_tail";

/// Runs the reproducers alone on `kernel`: its exit status and run record.
fn reproducers_on(kernel: &str) -> (Option<i32>, serde_json::Value) {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", kernel, "--reproducers", "--filter", "repro.*"])
        .args(["--timeout", "900", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    let run = results(out.path())["runs"][0].clone();
    (status.code(), run)
}

#[rstest::rstest]
#[case::debian_sid("debian:sid")]
#[case::stock("stock")]
fn kernels_without_the_fixes_show_both_defects(#[case] kernel: &str) {
    let (code, run) = reproducers_on(kernel);
    let run = &run;
    let names: Vec<String> = verdicts(run).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, [MREMAP, SPLIT_CONTROL, SPLIT], "{run}");

    let (result, diag) = verdict(run, MREMAP);
    assert_eq!(result, "fail", "{diag}");
    assert!(diag.contains("refaulted (1 faults)"), "{diag}");

    let (result, diag) = verdict(run, SPLIT_CONTROL);
    assert_eq!(result, "pass", "{diag}");

    let (result, diag) = verdict(run, SPLIT);
    assert_eq!(result, "fail", "{diag}");
    let reports = run["kernel_reports"].as_array().expect("kernel_reports");
    let oops = reports
        .iter()
        .find(|r| r["during_test"].as_str() == Some(SPLIT));
    match code {
        // The oops is attached to the test that caused it.
        Some(3) => {
            let text = oops.and_then(|r| r["text"].as_str()).unwrap_or_default();
            assert!(
                text.contains("_raw_spin_lock") || text.contains("Oops"),
                "{run}"
            );
        }
        Some(1) => assert!(oops.is_none(), "an oops must make the exit status 3: {run}"),
        other => panic!("exit status {other:?}: {run}"),
    }
}

#[test]
fn fixed_passes_both_reproducers() {
    let (code, run) = reproducers_on("fixed");
    let names: Vec<String> = verdicts(&run).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, [MREMAP, SPLIT_CONTROL, SPLIT], "{run}");
    for name in [MREMAP, SPLIT_CONTROL, SPLIT] {
        let (result, diag) = verdict(&run, name);
        assert_eq!(result, "pass", "fixed: {name}: {diag}");
    }
    assert_eq!(code, Some(0), "{run}");
}
