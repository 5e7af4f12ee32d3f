//! The binary's command line, KTAP framing and exit codes, without a device.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_guest-tests"))
}

#[test]
fn list_honours_filters() {
    let out = bin()
        .args(["--list", "--filter", "fault_order.*", "--filter", "setup.*"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "setup.bind_vfio\nfault_order.pud_aligned\tF1,F2\nfault_order.pmd_aligned\tF1,F2\n\
         fault_order.unaligned\tF1,F2\n"
    );
}

/// Runs the five quick tests against the fake tree `root`, with `env` set and
/// neither BDF variable inherited: exit status and KTAP lines.
fn run_quick(root: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let mut cmd = bin();
    cmd.env_remove("BIGBAR_BDF")
        .env_remove("VFIO_SELFTESTS_BDF")
        .envs(env.iter().copied())
        .args(["--root", root.to_str().unwrap(), "--seed", "3"])
        .args(["--filter", "setup.*", "--filter", "content.*"])
        .args(["--filter", "fault_order.*"]);
    let out = cmd.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (out.status.code(), text.lines().map(str::to_owned).collect())
}

/// A fake sysfs under `root` holding one PCI device `bdf` with bigbar's IDs.
fn fake_device(root: &std::path::Path, bdf: &str) {
    let dev = root.join("sys/bus/pci/devices").join(bdf);
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("vendor"), "0x1234\n").unwrap();
    std::fs::write(dev.join("device"), "0xb16b\n").unwrap();
}

/// kselftest's convention, as the kernel's vfio selftests follow it: without a
/// device every test is skipped with the reason, and the exit status is 4.
#[rstest::rstest]
#[case::empty_bus(true)]
#[case::no_pci_at_all(false)]
fn no_device_skips_every_test_with_the_reason(#[case] bus: bool) {
    let root = tempfile::tempdir().unwrap();
    if bus {
        std::fs::create_dir_all(root.path().join("sys/bus/pci/devices")).unwrap();
    }
    let (code, lines) = run_quick(root.path(), &[]);
    assert_eq!(code, Some(4), "{lines:#?}");
    assert_eq!(lines[..2], ["TAP version 13", "1..5"]);
    let results: Vec<&String> = lines.iter().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(results.len(), 5, "{lines:#?}");
    for l in results {
        assert!(
            l.contains(" # SKIP no device: no PCI device 1234:b16b")
                && l.ends_with("(give --bdf or VFIO_SELFTESTS_BDF)"),
            "{l}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:5 error:0")
    );
}

/// A device that is there but cannot be set up fails every test, each result
/// line saying why (the runner shows it as the reason).
#[test]
fn a_failed_fixture_is_the_reason_on_every_result() {
    let root = tempfile::tempdir().unwrap();
    fake_device(root.path(), "0000:00:03.0");
    let (code, lines) = run_quick(root.path(), &[]);
    assert_eq!(code, Some(1), "{lines:#?}");
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("not ok ")).collect();
    assert_eq!(failed.len(), 5, "{lines:#?}");
    for l in failed {
        assert!(
            l.contains(" # fixture setup failed: opening the device: "),
            "{l}"
        );
    }
}

/// The kernel's vfio selftests take the device from VFIO_SELFTESTS_BDF; so does
/// this binary. A named device that is absent is a failure, not a skip.
#[test]
fn vfio_selftests_bdf_names_the_device() {
    let root = tempfile::tempdir().unwrap();
    fake_device(root.path(), "0000:00:03.0");
    let (code, lines) = run_quick(root.path(), &[("VFIO_SELFTESTS_BDF", "0000:00:09.0")]);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(
            |l| l.starts_with("not ok 1 setup.bind_vfio # fixture setup failed")
                && l.contains("0000:00:09.0")
        ),
        "{lines:#?}"
    );
}

#[test]
fn empty_selection_exits_skip() {
    let out = bin().args(["--filter", "no.such.test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("TAP version 13\n1..0\n"));
}

#[test]
fn bad_layout_is_a_usage_error() {
    let out = bin().args(["--bars", "2=3G"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--bars \"2=3G\"") && err.contains("power of two"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn list_has_every_rule_of_rules_md() {
    let out = bin().arg("--list").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<(&str, Vec<&str>)> = text
        .lines()
        .map(|l| match l.split_once('\t') {
            Some((name, rules)) => (name, rules.split(',').collect()),
            None => (l, Vec::new()),
        })
        .collect();
    let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
    // Every rule has a test that declares it, and the name finds it by its ID.
    for rule in guest_tests::harness::RULE_IDS {
        let prefix = format!("{}.", rule.to_lowercase());
        assert!(
            lines
                .iter()
                .any(|(n, r)| n.starts_with(&prefix) && r.contains(&rule)),
            "no test declares rule {rule} in {lines:?}"
        );
    }
    // The risky tests come last, so that an oops costs nothing else.
    let risky = [
        "f8.mremap_move_pud_incongruent",
        "f6.munmap_pud_unaligned",
        "f6.mprotect_pud_unaligned",
        "f6.mremap_shrink_pud_unaligned",
    ];
    assert_eq!(names[names.len() - risky.len()..], risky);
}
