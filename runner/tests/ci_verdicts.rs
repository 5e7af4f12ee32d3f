//! `--baseline` (through `runner parse`) and `runner compare` on small
//! synthetic saved runs: no guest, no cache. Checks the exit statuses the
//! README promises and that bad input is named.

mod common;

use common::runner;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The shipped expectations of Debian's kernels.
fn debian_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../expectations/debian.toml")
}

fn run(args: &[&str]) -> Output {
    runner().args(args).output().expect("runner starts")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A results.json of one kernel with `tests` (name, verdict, reason).
fn results(spec: &str, status: &str, tests: &[(&str, &str, &str)]) -> Value {
    json!({"runs": [{
        "kernel": {"spec": spec, "release": "7.2.13+deb14-amd64"},
        "outcome": {"status": status},
        "tests": tests.iter().map(|(n, v, r)| json!({"name": n, "result": v, "reason": r})).collect::<Vec<_>>(),
        "kernel_reports": [],
    }]})
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// A saved debian:sid `--out` directory as the live run leaves it: the
/// catalogue's non-passing tests of that kernel, `bad pud` in the kernel log
/// of the mremap moves and the oops during f6.munmap_pud_unaligned.
fn sid_out_dir(dir: &Path, extra_failure: bool) {
    let tests = [
        ("ok", "setup.bind_vfio"),
        ("not ok", "f8.mremap_move_pud_congruent"),
        (
            "ok",
            "a1.whole_bar # XFAIL kernel without offset-aware placement",
        ),
        (
            "ok",
            "a2.offset_ranges # XFAIL kernel without offset-aware placement",
        ),
        (
            "ok",
            "a3.msix_hole # XFAIL kernel without offset-aware placement",
        ),
        ("not ok", "f8.mremap_move_pud_incongruent"),
        (if extra_failure { "not ok" } else { "ok" }, "f1.case_table"),
    ];
    let mut ktap = format!("TAP version 13\n1..{}\n", tests.len() + 3);
    let mut console = String::from("[    1.0] Run /init as init process\n");
    for (i, (status, name)) in tests.iter().enumerate() {
        let bare = name.split(' ').next().unwrap();
        console.push_str(&format!("[    2.{i}] bigbar: begin {bare}\n"));
        if bare.starts_with("f8.mremap_move_pud") {
            console.push_str(
                "[    2.5] mm/pgtable-generic.c:44: bad pud 00000000(800000f8400002b7)\n",
            );
        }
        console.push_str(&format!("[    2.{i}] bigbar: end {bare}\n"));
        ktap.push_str(&format!("{status} {} {name}\n", i + 1));
    }
    let oops = tests.len() + 1;
    console.push_str("[    3.0] bigbar: begin f6.munmap_pud_unaligned\n");
    console.push_str("[    3.1] BUG: unable to handle page fault for address: ffd8890730000028\n");
    console.push_str("[    3.1] Oops: Oops: 0000 [#1] SMP NOPTI\n[    3.2] ---[ end trace 0000000000000000 ]---\n");
    ktap.push_str(&format!(
        "# f6.munmap_pud_unaligned: did not come back\nnot ok {oops} f6.munmap_pud_unaligned\n"
    ));
    for (k, name) in [
        "f6.mprotect_pud_unaligned",
        "f6.mremap_shrink_pud_unaligned",
    ]
    .iter()
    .enumerate()
    {
        ktap.push_str(&format!(
            "ok {} {name} # SKIP the earlier risky test did not come back\n",
            oops + 1 + k
        ));
    }
    std::fs::write(dir.join("results.ktap"), ktap).unwrap();
    std::fs::write(dir.join("console.log"), console).unwrap();
    write(
        dir,
        "results.json",
        &results("debian:sid", "kernel_crashed", &[]),
    );
}

#[test]
fn debian_expectations_turn_the_known_findings_into_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    sid_out_dir(dir.path(), false);
    let d = dir.path().to_str().unwrap();
    let plain = run(&["parse", d]);
    assert_eq!(plain.status.code(), Some(3), "{}", text(&plain));
    let toml = debian_toml();
    let judged = run(&["parse", d, "--baseline", toml.to_str().unwrap()]);
    let out = text(&judged);
    assert_eq!(judged.status.code(), Some(0), "{out}");
    assert!(
        out.contains("known      f6.munmap_pud_unaligned: fail"),
        "{out}"
    );
    assert!(out.contains("0 regressions, 6 known failures"), "{out}");
    assert!(
        out.contains("known crash during f6.munmap_pud_unaligned"),
        "{out}"
    );
}

#[test]
fn a_new_failure_or_a_broken_expectation_is_a_regression_named() {
    let dir = tempfile::tempdir().unwrap();
    sid_out_dir(dir.path(), true);
    let d = dir.path().to_str().unwrap();
    let toml = debian_toml();
    let o = run(&["parse", d, "--baseline", toml.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION f1.case_table: fail"),
        "{}",
        text(&o)
    );

    // The shipped file with one expectation broken: that test is named.
    let clean = tempfile::tempdir().unwrap();
    sid_out_dir(clean.path(), false);
    let broken = std::fs::read_to_string(&toml).unwrap().replacen(
        "verdict = \"fail\"\nreason = \"mremap drops",
        "verdict = \"pass\"\nreason = \"mremap drops",
        1,
    );
    let bad = clean.path().join("broken.toml");
    std::fs::write(&bad, broken).unwrap();
    let o = run(&[
        "parse",
        clean.path().to_str().unwrap(),
        "--baseline",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION f8.mremap_move_pud_congruent: fail (baseline: pass"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_unknown_crash_stays_3_and_a_fix_follows_fixed_is() {
    let dir = tempfile::tempdir().unwrap();
    sid_out_dir(dir.path(), false);
    let exp = dir.path().join("e.toml");
    // Knows the mremap failures but not the oops, and expects a1 to fail.
    std::fs::write(
        &exp,
        "[[expect]]\ntest = \"f8.*\"\nverdict = \"fail\"\nreason = \"bad pud\"\n\
         [[expect]]\ntest = \"f6.munmap_pud_unaligned\"\nverdict = \"fail\"\nreason = \"oops, crash not listed\"\n\
         [[expect]]\ntest = \"setup.bind_vfio\"\nverdict = \"fail\"\nreason = \"pretend known\"\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let e = exp.to_str().unwrap();
    assert_eq!(run(&["parse", d, "--baseline", e]).status.code(), Some(3));
    let fixed_crash = std::fs::read_to_string(&exp).unwrap().replace(
        "reason = \"oops, crash not listed\"",
        "crash = true\nreason = \"oops\"",
    );
    std::fs::write(&exp, fixed_crash).unwrap();
    let ok = run(&["parse", d, "--baseline", e]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains("KNOWN FAILURE(S) NOW PASS"),
        "{}",
        text(&ok)
    );
    let strict = run(&["parse", d, "--baseline", e, "--fixed-is", "fail"]);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
}

#[test]
fn a_bad_baseline_is_a_usage_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    sid_out_dir(dir.path(), false);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[expect]]\ntest = \"x\"\nverdict = \"sometimes\"\nreason = \"r\"\n",
    )
    .unwrap();
    let o = run(&[
        "parse",
        dir.path().to_str().unwrap(),
        "--baseline",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.toml is not a valid expectations file"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "--baseline",
        "/nonexistent/e.toml",
        "--kernel",
        "debian:sid",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot read /nonexistent/e.toml"),
        "{}",
        text(&o)
    );
}

#[test]
fn compare_reports_regressions_fixes_and_changed_counts() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.json",
        &results(
            "debian:sid",
            "completed",
            &[
                ("f1.case_table", "pass", ""),
                (
                    "f4.refault_after_reset",
                    "fail",
                    "expected 0 refaults, counted 1",
                ),
                ("f8.mremap_move_pud_congruent", "fail", "bad pud"),
                ("f9.gone", "pass", ""),
            ],
        ),
    );
    let b = write(
        dir.path(),
        "b.json",
        &results(
            "debian:sid",
            "completed",
            &[
                ("f1.case_table", "fail", "f1: 3 faults, expected 1"),
                (
                    "f4.refault_after_reset",
                    "fail",
                    "expected 0 refaults, counted 0",
                ),
                ("f8.mremap_move_pud_congruent", "pass", ""),
                ("f9.fresh", "pass", ""),
            ],
        ),
    );
    let json_out = dir.path().join("cmp.json");
    let o = run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        json_out.to_str().unwrap(),
    ]);
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for want in [
        "### Regressions",
        "| `f1.case_table` | pass | fail | `f1: 3 faults, expected 1` |",
        "### Fixed",
        "| `f8.mremap_move_pud_congruent` | fail | pass | — |",
        "### Still failing",
        "### New tests",
        "| `f9.fresh` | — | pass | — |",
        "### Removed tests",
        "| `f9.gone` | pass | — | — |",
        "| `f4.refault_after_reset` | `expected 0 refaults, counted 1` | `… 0` |",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(
        v["kernels"][0]["changed_diagnostics"][0]["after"],
        "expected 0 refaults, counted 0"
    );
    // Reversed there is no regression to find... but the fix becomes one.
    let back = run(&["compare", b.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(back.status.code(), Some(1));
    let same = run(&[
        "compare",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--markdown",
        dir.path().join("m.md").to_str().unwrap(),
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert!(std::fs::read_to_string(dir.path().join("m.md"))
        .unwrap()
        .contains("0 regressions"));
}

#[test]
fn compare_matches_matrix_runs_by_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = results("debian:sid", "completed", &[("t", "fail", "x")]);
    let stock = results("stock", "completed", &[("t", "pass", "")])["runs"][0].clone();
    a["runs"].as_array_mut().unwrap().push(stock.clone());
    let mut b = json!({"runs": [stock]});
    b["runs"]
        .as_array_mut()
        .unwrap()
        .push(results("debian:sid", "completed", &[("t", "fail", "x")])["runs"][0].clone());
    let (pa, pb) = (
        write(dir.path(), "a.json", &a),
        write(dir.path(), "b.json", &b),
    );
    let o = run(&["compare", pa.to_str().unwrap(), pb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("## debian:sid"), "{}", text(&o));
}

#[test]
fn compare_names_a_missing_or_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.json",
        &results("s", "completed", &[("t", "pass", "")]),
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"runs\": [{\"kernel\": 7}]}").unwrap();
    let o = run(&["compare", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.json is not a bigbar results.json"),
        "{}",
        text(&o)
    );
    let empty_dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "compare",
        empty_dir.path().to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("results.json"), "{}", text(&o));
}

/// A filter that selects nothing is the user's mistake, said as one before
/// anything is fetched or booted (exit 2), not a run that tested nothing.
#[test]
fn a_filter_that_selects_no_test_is_a_usage_error() {
    let o = run(&["--filter", "zzz*", "--filter", "nope.*", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--filter 'zzz*' --filter 'nope.*' selects no test"),
        "{}",
        text(&o)
    );
    let o = run(&["--filter", "zzz*", "--filter", "f9.*", "--list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("f9.map_private_einval"), "{}", text(&o));
}
