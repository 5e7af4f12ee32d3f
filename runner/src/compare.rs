//! `runner compare A B`: what changed between two saved runs, for a bisect
//! step, a CI job against the last good run, or a kernel upgrade.
//!
//! A is the baseline: B's verdicts are judged against it exactly as
//! `--baseline A` judges a live run ([`crate::baseline`]), and for the tests
//! whose one-line reason changed (a count, a measured alignment) the two
//! reasons are shown side by side.

use crate::baseline::{self, Class, Crash, Judged, Judgement, KernelBaseline};
use crate::saved::{SavedResults, SavedRun};
use serde::Serialize;
use std::fmt::Write as _;

/// A test whose reason differs between A and B.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiagnosticChange {
    /// Test name.
    pub test: String,
    /// The reason in A.
    pub before: String,
    /// The reason in B.
    pub after: String,
}

/// One kernel of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelComparison {
    /// Kernel spec (B's).
    pub kernel: String,
    /// The release in A and in B.
    pub releases: (Option<String>, Option<String>),
    /// B judged against A.
    pub judgement: Judgement,
    /// Reasons that changed.
    pub changed_diagnostics: Vec<DiagnosticChange>,
}

/// The whole comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Kernels in both.
    pub kernels: Vec<KernelComparison>,
    /// Kernel specs only A has.
    pub only_in_a: Vec<String>,
    /// Kernel specs only B has.
    pub only_in_b: Vec<String>,
}

/// Compares B with A: runs are matched by kernel spec, or taken as they are
/// when each side holds one run.
pub fn compare(a: &SavedResults, b: &SavedResults) -> Comparison {
    let single = a.runs.len() == 1 && b.runs.len() == 1;
    let mut out = Comparison::default();
    for run_b in &b.runs {
        let run_a = if single {
            Some(&a.runs[0])
        } else {
            a.runs
                .iter()
                .find(|r| r.kernel.label() == run_b.kernel.label())
        };
        match run_a {
            Some(run_a) => out.kernels.push(kernel(run_a, run_b)),
            None => out.only_in_b.push(run_b.kernel.label()),
        }
    }
    if !single {
        out.only_in_a = a
            .runs
            .iter()
            .filter(|r| {
                !b.runs
                    .iter()
                    .any(|rb| rb.kernel.label() == r.kernel.label())
            })
            .map(|r| r.kernel.label())
            .collect();
    }
    out
}

fn kernel(a: &SavedRun, b: &SavedRun) -> KernelComparison {
    let judgement = baseline::judge(&KernelBaseline::of_run(a), b);
    let changed_diagnostics = judgement
        .tests
        .iter()
        // A changed verdict is reported already; here: the same verdict, a
        // different reason (a count, a measured alignment).
        .filter(|t| {
            t.now.is_some_and(|v| t.expected == [v]) && mask_hex(&t.note) != mask_hex(&t.reason)
        })
        .map(|t| DiagnosticChange {
            test: t.test.clone(),
            before: t.note.clone(),
            after: t.reason.clone(),
        })
        .collect();
    KernelComparison {
        kernel: b.kernel.label(),
        releases: (a.kernel.release.clone(), b.kernel.release.clone()),
        judgement,
        changed_diagnostics,
    }
}

impl Comparison {
    /// Whether B regressed anywhere: a new failure, or an oops A did not have.
    pub fn regressed(&self) -> bool {
        self.kernels.iter().any(|k| {
            k.judgement.of(Class::Regression).next().is_some()
                || matches!(k.judgement.crash, Crash::Unexpected(_))
        })
    }

    /// The exit status of `runner compare`: 1 on a regression, else 0.
    pub fn exit_status(&self) -> u8 {
        if self.regressed() {
            crate::cli::EXIT_TEST_FAILED
        } else {
            crate::cli::EXIT_OK
        }
    }

    /// The comparison as Markdown.
    pub fn markdown(&self, a: &str, b: &str) -> String {
        let mut out = format!("# bigbar compare\n\nA: `{a}`  \nB: `{b}`\n");
        for k in &self.kernels {
            out.push_str(&kernel_markdown(k));
        }
        for (specs, side) in [(&self.only_in_a, "A"), (&self.only_in_b, "B")] {
            for spec in specs {
                let _ = writeln!(out, "\nKernel `{spec}` is only in {side}: not compared.");
            }
        }
        out
    }
}

/// Section titles in the order they are printed, with their classes.
const SECTIONS: [(Class, &str); 6] = [
    (Class::Regression, "Regressions"),
    (Class::Fixed, "Fixed"),
    (Class::Known, "Still failing"),
    (Class::Changed, "Changed verdicts"),
    (Class::New, "New tests"),
    (Class::Removed, "Removed tests"),
];

fn kernel_markdown(k: &KernelComparison) -> String {
    let rel = |r: &Option<String>| r.clone().unwrap_or_else(|| "release unknown".into());
    let j = &k.judgement;
    let mut out = format!(
        "\n## {} (A: {}, B: {})\n\n{}\n",
        k.kernel,
        rel(&k.releases.0),
        rel(&k.releases.1),
        j.count_line()
    );
    if let Crash::Unexpected(w) = &j.crash {
        let _ = writeln!(out, "\n**B crashed {w}, which A did not.**");
    }
    for (class, title) in SECTIONS {
        let rows: Vec<&Judged> = j.of(class).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n### {title}\n\n| test | A | B | reason in B |\n|---|---|---|---|"
        );
        for t in rows {
            let now = t
                .now
                .map(|v| baseline::verdict_list(&[v]))
                .unwrap_or("—".into());
            let a = if t.expected.is_empty() {
                "—".into()
            } else {
                baseline::verdict_list(&t.expected)
            };
            let _ = writeln!(out, "| `{}` | {a} | {now} | {} |", t.test, cell(&t.reason));
        }
    }
    if !k.changed_diagnostics.is_empty() {
        let _ = writeln!(
            out,
            "\n### Changed diagnostics\n\n| test | A | B |\n|---|---|---|"
        );
        for d in &k.changed_diagnostics {
            let (before, after) = differing_tails(&d.before, &d.after);
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                d.test,
                cell(&before),
                cell(&after)
            );
        }
    }
    out
}

/// `reason` with addresses and pointer values masked: hex numbers (`0x...`)
/// and bare hex words of 8 digits or more (`00000000dad6de6c`) change with
/// every boot (KASLR, ASLR, hashed pointers) and say nothing; decimal counts
/// (`counted 1`, `24 of the placements`) are kept, they are what changed.
pub fn mask_hex(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut word = String::new();
    for c in reason.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() {
            word.push(c);
            continue;
        }
        out.push_str(if is_hex_word(&word) { "#" } else { &word });
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

fn is_hex_word(w: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    match w.strip_prefix("0x") {
        Some(digits) => hex(digits),
        None => w.len() >= 8 && hex(w) && w.chars().any(|c| c.is_ascii_digit()),
    }
}

/// A Markdown table cell: code-quoted, pipes escaped, `—` for nothing.
fn cell(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        format!("`{}`", s.replace('|', "\\|"))
    }
}

/// The two texts with their common leading words replaced by `…` in the
/// second, so `expected 0 refaults, counted 1` → `… counted 0` shows what moved.
pub fn differing_tails(before: &str, after: &str) -> (String, String) {
    let (wb, wa): (Vec<&str>, Vec<&str>) =
        (before.split(' ').collect(), after.split(' ').collect());
    let common = wb.iter().zip(&wa).take_while(|(x, y)| x == y).count();
    if common == 0 || common == wa.len() {
        return (before.to_string(), after.to_string());
    }
    (before.to_string(), format!("… {}", wa[common..].join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "expected 0 refaults, counted 1",
        "expected 0 refaults, counted 0",
        "… 0"
    )]
    #[case("a b", "c d", "c d")]
    #[case("same", "same", "same")]
    #[case("", "new reason", "new reason")]
    #[case("counted 3 faults", "counted 4 faults", "… 4 faults")]
    fn tails(#[case] before: &str, #[case] after: &str, #[case] want: &str) {
        assert_eq!(differing_tails(before, after).1, want);
    }

    #[rstest]
    #[case("bad pud 0000000056840036(800000f8400002b7)", "bad pud #(#)")]
    #[case("s = 0x7efebfee0000, s mod 0x200000 = 0xe0000", "s = #, s mod # = #")]
    #[case("24 of the placements, counted 1", "24 of the placements, counted 1")]
    #[case("deadbeef feedface", "deadbeef feedface")]
    #[case("address: ffd8890730000028", "address: #")]
    fn masking(#[case] reason: &str, #[case] want: &str) {
        assert_eq!(mask_hex(reason), want);
    }

    fn results(runs: serde_json::Value) -> SavedResults {
        serde_json::from_value(serde_json::json!({ "runs": runs })).unwrap()
    }

    fn run(spec: &str, tests: &[(&str, &str, &str)]) -> serde_json::Value {
        serde_json::json!({
            "kernel": {"spec": spec},
            "outcome": {"status": "completed"},
            "tests": tests.iter().map(|(n, v, r)| serde_json::json!({"name": n, "result": v, "reason": r})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn matrices_match_by_spec() {
        let a = results(serde_json::json!([
            run("debian:sid", &[("t", "fail", "counted 1")]),
            run("stock", &[("t", "pass", "")])
        ]));
        let b = results(serde_json::json!([
            run("stock", &[("t", "fail", "boom")]),
            run("debian:sid", &[("t", "fail", "counted 0")]),
            run("reference", &[("t", "pass", "")])
        ]));
        let c = compare(&a, &b);
        assert_eq!(c.kernels.len(), 2);
        assert_eq!(c.kernels[0].kernel, "stock");
        assert_eq!(c.kernels[0].judgement.tests[0].class, Class::Regression);
        assert_eq!(c.kernels[1].judgement.tests[0].class, Class::Known);
        assert_eq!(c.kernels[1].changed_diagnostics[0].after, "counted 0");
        assert_eq!(c.only_in_b, ["reference"]);
        assert_eq!(c.exit_status(), 1);
        let md = c.markdown("a", "b");
        assert!(md.contains("### Regressions\n\n| test | A | B | reason in B |\n|---|---|---|---|\n| `t` | pass | fail | `boom` |"), "{md}");
        assert!(md.contains("| `t` | `counted 1` | `… 0` |"), "{md}");
        assert!(md.contains("Kernel `reference` is only in B"), "{md}");
    }

    #[test]
    fn single_runs_pair_whatever_their_specs() {
        let a = results(serde_json::json!([run(
            "/home/me/linux/build",
            &[("t", "fail", "x")]
        )]));
        let b = results(serde_json::json!([run(
            "/home/me/linux/build2",
            &[("t", "pass", "")]
        )]));
        let c = compare(&a, &b);
        assert_eq!(c.kernels[0].judgement.tests[0].class, Class::Fixed);
        assert_eq!(c.exit_status(), 0);
    }
}
