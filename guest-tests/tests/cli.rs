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
        "setup.bind_vfio\nfault_order.pud_aligned\nfault_order.pmd_aligned\nfault_order.unaligned\n"
    );
}

#[test]
fn missing_device_fails_every_test_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("sys/bus/pci/devices")).unwrap();
    let out = bin()
        .env_remove("BIGBAR_BDF")
        .args(["--root", root.path().to_str().unwrap(), "--seed", "3"])
        .args([
            "--filter",
            "setup.*",
            "--filter",
            "content.*",
            "--filter",
            "fault_order.*",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["TAP version 13", "1..5"]);
    assert!(
        lines[2].starts_with("# fixture setup failed: opening the device: no PCI device 1234:b16b"),
        "{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("not ok ")).count(),
        5,
        "{text}"
    );
    assert_eq!(
        lines.last(),
        Some(&"# Totals: pass:0 fail:5 xfail:0 xpass:0 skip:0 error:0")
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
    let names: Vec<&str> = text.lines().collect();
    let rules = (1..=9)
        .map(|i| format!("f{i}."))
        .chain((1..=5).map(|i| format!("a{i}.")));
    for rule in rules {
        assert!(
            names.iter().any(|n| n.starts_with(&rule)),
            "no test for rule {rule} in {names:?}"
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
