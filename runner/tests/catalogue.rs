//! End to end: the whole conformance catalogue runs on Debian sid's kernel.
//! Every rule of docs/RULES.md (f1–f9, a1–a5) has results; nothing fails except the
//! known kernel findings listed below; the placement tests that Debian's kernel
//! cannot satisfy are XFAIL with the measured alignment in their diagnostics.
//! Needs network access to Debian's archive on the first run, no KVM.

mod common;

use common::{results, runner, FINDINGS};
use serde_json::Value;

/// The rule IDs of docs/RULES.md.
const RULES: [&str; 14] = [
    "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "a1", "a2", "a3", "a4", "a5",
];

/// Tests that must be XFAIL on a kernel without offset-aware placement.
const XFAIL: [&str; 3] = ["a1.whole_bar", "a2.offset_ranges", "a3.msix_hole"];

/// The run's `results.json`, exit status, the JSON as text, and its console log.
fn run_catalogue() -> (Value, Option<i32>, String, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args(["--kernel", "debian:sid", "--timeout", "900", "--out"])
        .arg(out.path())
        .status()
        .expect("runner starts");
    let results = results(out.path());
    let json = results.to_string();
    let console = std::fs::read_to_string(out.path().join("console.log")).unwrap_or_default();
    (results, status.code(), json, console)
}

/// Every `bad pud` on the console is attributed to the test that printed it
/// (through the guest's kmsg markers), which fails by it and says so.
fn assert_kernel_log_attributed(run: &Value, console: &str, json: &str) {
    let tests = run["tests"].as_array().expect("tests array");
    let attributed: Vec<&str> = tests
        .iter()
        .flat_map(|t| t["kernel_log"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for line in console.lines().filter(|l| l.contains(": bad pud ")) {
        assert!(
            attributed.contains(&line),
            "{line} is attributed to no test: {json}"
        );
    }
    for t in tests
        .iter()
        .filter(|t| t["kernel_log"].as_array().is_some_and(|l| !l.is_empty()))
    {
        assert_eq!(t["result"], "fail", "{json}");
        let reason = t["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("[kernel log] "), "{reason}");
    }
}

#[test]
fn debian_sid_runs_the_whole_catalogue() {
    let (results, code, json, console) = run_catalogue();
    let run = &results["runs"][0];
    assert_kernel_log_attributed(run, &console, &json);
    let tests = run["tests"].as_array().expect("tests array");
    let named = |prefix: &str| {
        tests
            .iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .count()
    };
    for rule in RULES {
        assert!(
            named(&format!("{rule}.")) > 0,
            "no result for rule {rule}: {json}"
        );
    }
    for t in tests {
        let name = t["name"].as_str().unwrap_or_default();
        let result = t["result"].as_str().unwrap_or_default();
        let diag = t["diagnostic"].as_str().unwrap_or_default();
        if XFAIL.contains(&name) {
            assert_eq!(result, "xfail", "{name}: {diag}");
            assert!(
                diag.contains("4 KiB only"),
                "{name} lacks the measured alignment: {diag}"
            );
        } else if FINDINGS.contains(&name) {
            assert!(
                !diag.is_empty() || result == "pass",
                "{name} ({result}) must explain itself"
            );
        } else {
            assert!(
                matches!(result, "pass" | "skip" | "xfail"),
                "{name}: {result}: {diag}"
            );
            if result == "skip" || result == "xfail" {
                assert!(!diag.is_empty(), "{name}: {result} without a reason");
            }
        }
    }
    // The exit status follows: 3 with an oops (only a finding may cause one),
    // 1 when a finding failed, 0 otherwise.
    let oops = run["kernel_reports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["kind"] == "oops" || r["kind"] == "panic");
    let finding_failed = tests.iter().any(|t| {
        FINDINGS.contains(&t["name"].as_str().unwrap_or_default()) && t["result"] != "pass"
    });
    let want = if oops {
        3
    } else if finding_failed {
        1
    } else {
        0
    };
    assert_eq!(code, Some(want), "runner exit status: {json}");
}
