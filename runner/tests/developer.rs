//! End to end: the runner's flags for kernel developers (`--filter`, `--junit`,
//! `--gdb`, `--keep`, `parse`, `--list`, `--dry-run`, `--shell`,
//! `export-kselftest`). Uses the cached debian:sid kernel and QEMU (fetched on
//! the first run).

mod common;

use common::{results, runner, Watchdog};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn names(v: &Value) -> Vec<String> {
    v["runs"][0]["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The summary line and table a run printed on stdout.
fn table(out: &Output) -> String {
    text(&out.stdout)
}

#[test]
fn filter_junit_gdb_keep_and_parse_agree() {
    let out = tempfile::tempdir().unwrap();
    let junit = out.path().join("junit.xml");
    // --gdb turns the run's time limits off; the watchdog stands in for them.
    let child = runner()
        .args(["--filter", "fault_order.*", "--gdb", "--junit"])
        .arg(&junit)
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watchdog = Watchdog::arm(&child, Duration::from_secs(600));
    let live = child.wait_with_output().unwrap();
    drop(watchdog);
    let stderr = text(&live.stderr);
    assert_eq!(live.status.code(), Some(0), "{stderr}");
    // --filter: only the matching tests ran.
    let v = results(out.path());
    let ran = names(&v);
    assert!(!ran.is_empty());
    assert!(ran.iter().all(|n| n.starts_with("fault_order.")), "{ran:?}");
    // --gdb printed how to attach, to a socket in the kept run directory.
    assert!(stderr.contains("target remote "), "{stderr}");
    let run_dir = v["runs"][0]["run_dir"]
        .as_str()
        .expect("--gdb keeps the run dir");
    assert!(Path::new(run_dir).join("initramfs-1.cpio").exists());
    std::fs::remove_dir_all(run_dir).unwrap();
    // --junit: one test case per result, schema element names and counts.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains(&format!(
        "<testsuites name=\"bigbar\" tests=\"{}\"",
        ran.len()
    )));
    assert_eq!(xml.matches("<testsuite ").count(), 1);
    assert_eq!(xml.matches("<testcase ").count(), ran.len());
    assert!(xml.contains("failures=\"0\""));
    // parse: the saved log gives the same table and exit status.
    let parsed = runner().arg("parse").arg(out.path()).output().unwrap();
    assert_eq!(parsed.status.code(), live.status.code());
    assert_eq!(table(&parsed), table(&live));
}

#[test]
fn list_and_dry_run_boot_nothing() {
    let list = runner()
        .args(["--list", "--filter", "setup.*"])
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(text(&list.stdout).trim(), "setup.bind_vfio");

    let dry = runner()
        .args([
            "--dry-run",
            "--append",
            "bigbar.marker=1",
            "--qemu-arg=-no-hpet",
        ])
        .args(["--bars", "1=64M:32:msix@2M,2=512G"])
        .output()
        .unwrap();
    let stdout = text(&dry.stdout);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(stdout.contains("QEMU command line:"), "{stdout}");
    assert!(stdout.contains("vfio-user-pci"));
    assert!(stdout.contains("-no-hpet"));
    assert!(stdout.contains("kernel command line:\n  console=ttyS0"));
    assert!(stdout.contains("bigbar.marker=1"));
    assert!(stdout.contains(" init\n"), "initramfs listing: {stdout}");
    assert!(stdout.contains("bin/guest-tests"));
    // --bars reaches the guest tests and sizes the guest's physical address space.
    assert!(stdout.contains("phys-bits=44"), "{stdout}");
    assert!(stdout.contains("pci-hole64-size=1099511627776"), "{stdout}");
}

#[test]
fn shell_gives_a_prompt_with_the_device_bound() {
    let mut child = runner()
        .arg("--shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _watchdog = Watchdog::arm(&child, Duration::from_secs(600));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Wait for the shell before typing: input sent earlier could be dropped.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("bigbar-init: interactive shell");
        seen.push(line);
        if ready {
            break;
        }
    }
    writeln!(
        stdin,
        "for d in /sys/bus/pci/devices/*; do [ $(cat $d/vendor) = 0x1234 ] && echo driver=$(basename $(readlink $d/driver)); done; poweroff -f"
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let all = [seen, rest].concat().join("\n");
    assert!(all.contains("ok 1 setup.bind_vfio"), "{all}");
    assert!(all.contains("driver=vfio-pci"), "{all}");
    assert_eq!(status.code(), Some(0), "{all}");
}

#[test]
fn exported_kselftest_layout_lists_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let st = runner()
        .arg("export-kselftest")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let list = Command::new(dir.path().join("run_kselftest.sh"))
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(text(&list.stdout), "bigbar:guest-tests\n");
    // Outside a guest the binary finds no bigbar device: every test skips with
    // the reason and it exits 4, which the run script reports as a skip.
    let run = Command::new(dir.path().join("run_kselftest.sh"))
        .output()
        .unwrap();
    let out = text(&run.stdout);
    assert!(
        out.starts_with("TAP version 13\n1..1\n# selftests: bigbar: guest-tests\n"),
        "{out}"
    );
    assert!(out.contains("# TAP version 13"), "{out}");
    assert!(
        out.contains("# ok 1 setup.bind_vfio # SKIP no device"),
        "{out}"
    );
    assert!(
        out.ends_with("ok 1 selftests: bigbar: guest-tests # SKIP\n"),
        "{out}"
    );
    assert_eq!(run.status.code(), Some(0), "{out}");
}

/// The layout under the kernel's own run_kselftest.sh and kselftest/runner.sh
/// (from the linux-source the kernel builds use): they read kselftest-list.txt
/// and bigbar/settings, and a binary that finds no device is a skip (exit 4),
/// which leaves run_kselftest.sh's status 0.
#[test]
fn exported_layout_runs_under_the_kernels_run_kselftest() {
    let dir = tempfile::tempdir().unwrap();
    let st = runner()
        .args(["export-kselftest", "--kernel-runner"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let script = std::fs::read_to_string(dir.path().join("run_kselftest.sh")).unwrap();
    assert!(
        script.contains(". ./kselftest/runner.sh"),
        "not the kernel's"
    );
    let list = Command::new(dir.path().join("run_kselftest.sh"))
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(text(&list.stdout), "bigbar:guest-tests\n");
    let run = Command::new(dir.path().join("run_kselftest.sh"))
        .args(["-c", "bigbar"])
        .output()
        .unwrap();
    let out = text(&run.stdout);
    assert!(out.starts_with("TAP version 13\n1..1\n"), "{out}");
    assert!(
        out.contains("# timeout set to 1800\n"),
        "settings not read: {out}"
    );
    assert!(out.contains("# selftests: bigbar: guest-tests\n"), "{out}");
    assert!(
        out.contains("# ok 1 setup.bind_vfio # SKIP no device"),
        "{out}"
    );
    assert!(
        out.contains("\nok 1 selftests: bigbar: guest-tests # SKIP\n"),
        "{out}"
    );
    assert!(
        out.contains("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0"),
        "{out}"
    );
    assert_eq!(run.status.code(), Some(0), "{out}");
}
