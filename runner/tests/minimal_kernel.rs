//! End to end: the whole catalogue on the `minimal` kernel (tinyconfig plus only
//! what the runner's configuration check requires). It is built from nothing on
//! every run, about 4 minutes on 2 cores, into a private store that shares only
//! the fetched packages with the user's ([`common::cold_store`]): the project's
//! own tests keep proving that a kernel builds on this machine, with the build
//! tools fetched again where the host lacks them, however warm the user's store
//! is. Both tests ask for it at once; one builds, the other waits. Every facility the kernel lacks (madvise, debugfs,
//! tracefs, kprobe events, ptdump, ACPI power-off, ...) must be detected: no
//! test fails but for the known kernel findings, and the tests that need what
//! is missing skip with the option named. A configuration lacking a required
//! option is refused before boot with the option named.

mod common;

use common::{built_kernel_in, cold_store, results, runner, verdicts, FINDINGS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The private store both tests build the minimal kernel in, and when it was made.
fn store() -> &'static (tempfile::TempDir, SystemTime) {
    static STORE: OnceLock<(tempfile::TempDir, SystemTime)> = OnceLock::new();
    STORE.get_or_init(|| {
        (
            cold_store(&["kernel/built", "build-tools"]),
            SystemTime::now(),
        )
    })
}

/// Asserts that the store's only minimal kernel was made by this test run.
fn assert_built_in_this_run() {
    let (dir, made) = store();
    let built = dir.path().join("kernel/built");
    let minimal: Vec<PathBuf> = std::fs::read_dir(&built)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("minimal-")
        })
        .collect();
    assert_eq!(minimal.len(), 1, "{minimal:?}");
    let record = std::fs::read_to_string(minimal[0].join(".bigbar-entry.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let made_at = made
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(record["made_at"].as_u64().unwrap() >= made_at, "{record}");
}

fn in_store(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.arg("--cache").arg(store().0.path())
}

/// Tests that need madvise, compiled out by tinyconfig.
const NEED_MADVISE: [&str; 5] = [
    "f3.madv_nohugepage",
    "f3.madv_hugepage",
    "f3.sysfs_enabled",
    "f7.dontfork_hides_vma",
    "f7.madvise_refused",
];

/// The run's `results.json` and exit status.
fn run_minimal() -> (Value, Option<i32>) {
    let out = tempfile::tempdir().expect("temp dir");
    let expectations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../expectations/debian.toml");
    let status = in_store(&mut runner())
        .args(["--kernel", "minimal", "--timeout", "900", "--baseline"])
        .arg(expectations)
        .args(["--fixed-is", "fail", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    (results(out.path()), status.code())
}

/// Checks one test's verdict: findings may fail (explaining themselves), the
/// rest pass, skip or xfail, never without a reason.
fn check_verdict(name: &str, result: &str, reason: &str) {
    if FINDINGS.contains(&name) {
        assert!(
            result == "pass" || !reason.is_empty(),
            "{name} ({result}) must explain itself"
        );
        return;
    }
    assert!(
        matches!(result, "pass" | "skip" | "xfail"),
        "{name}: {result}: {reason}"
    );
    if result != "pass" {
        assert!(!reason.is_empty(), "{name}: {result} without a reason");
    }
}

#[test]
fn the_minimal_kernel_skips_what_it_lacks_and_fails_only_findings() {
    let (v, code) = run_minimal();
    assert_built_in_this_run();
    let run = &v["runs"][0];
    let release = run["kernel"]["release"].as_str().unwrap_or_default();
    assert!(release.ends_with("-bigbar-minimal"), "{release}");
    let tests = verdicts(run);
    assert_eq!(
        common::sorted_names(&tests),
        common::sorted(common::listed(&[])),
        "not the whole catalogue ran: {v}"
    );
    let reason_of = |name: &str| {
        run["tests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == name)
            .and_then(|t| t["reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    for (name, result, _) in &tests {
        check_verdict(name, result, &reason_of(name));
    }
    let verdict_of = |name: &str| {
        let (_, r, _) = tests.iter().find(|(n, _, _)| n == name).unwrap();
        (r.clone(), reason_of(name))
    };
    for name in NEED_MADVISE {
        assert_eq!(
            verdict_of(name),
            (
                "skip".to_string(),
                "madvise is not available (CONFIG_ADVISE_SYSCALLS)".to_string()
            ),
            "{name}"
        );
    }
    // The prctl does not need madvise: it is checked without the advice.
    assert_eq!(verdict_of("f3.prctl_thp_disable").0, "pass");
    let (kprobe, why) = verdict_of("f1.kprobe_orders");
    assert!(
        kprobe == "skip" && why.contains("CONFIG_KPROBE_EVENTS"),
        "{why}"
    );
    let (ptdump, why) = verdict_of("f1.ptdump_orders");
    assert!(ptdump == "skip" && why.contains("CONFIG_DEBUG_FS"), "{why}");
    // Every verdict, and the findings' oops, as expectations/debian.toml says
    // for minimal, judged exactly: a finding that stops reproducing fails too.
    assert_eq!(code, Some(0), "not as expectations/debian.toml says: {v}");
}

/// The minimal kernel's image and configuration (from the cache after its build).
fn minimal_kernel() -> (PathBuf, String, String) {
    let (image, release) = built_kernel_in("minimal", Some(store().0.path()));
    let config = std::fs::read_to_string(image.with_file_name("config")).unwrap();
    (image, config, release)
}

/// Dropping any required option from the minimal configuration is refused
/// before boot, the option named: minimal is minimal for the check too.
#[test]
fn the_minimal_config_without_kallsyms_is_refused() {
    let (image, config, release) = minimal_kernel();
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("arch/x86/boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(&image, boot.join("bzImage")).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("CONFIG_KALLSYMS="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join(".config"), without).unwrap();
    std::fs::create_dir_all(dir.path().join("include/config")).unwrap();
    std::fs::write(dir.path().join("include/config/kernel.release"), release).unwrap();
    let refused = in_store(&mut runner())
        .arg("--kernel")
        .arg(dir.path())
        .arg("--dry-run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("CONFIG_KALLSYMS (/proc/kallsyms"),
        "{stderr}"
    );
}
