//! The tests × kernels table of a matrix run, as text and as Markdown.

use crate::report::{Outcome, Results};
use std::fmt::Write as _;

/// Rows (test names in order of first appearance) and one column per run.
pub(crate) fn grid(results: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let mut names: Vec<String> = Vec::new();
    for run in &results.runs {
        for t in &run.tests {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    let columns = results
        .runs
        .iter()
        .map(|run| {
            names
                .iter()
                .map(|n| match run.tests.iter().find(|t| &t.name == n) {
                    Some(t) => format!("{:?}", t.result).to_lowercase(),
                    None => "—".to_string(),
                })
                .collect()
        })
        .collect();
    (names, columns)
}

/// Column headers: spec and kernel release.
pub(crate) fn headers(results: &Results) -> Vec<String> {
    results
        .runs
        .iter()
        .map(|r| match &r.kernel.release {
            Some(rel) => format!("{} ({rel})", r.kernel.label()),
            None => r.kernel.label(),
        })
        .collect()
}

/// One line per run that did not complete, saying how it ended.
fn outcome_notes(results: &Results) -> Vec<String> {
    results
        .runs
        .iter()
        .filter(|r| r.outcome != Outcome::Completed)
        .map(|r| format!("{}: {:?}", r.kernel.label(), r.outcome))
        .collect()
}

/// The matrix as a Markdown table.
pub fn markdown(results: &Results) -> String {
    let (names, columns) = grid(results);
    let mut out = String::new();
    let _ = writeln!(out, "| test | {} |", headers(results).join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<&str> = columns.iter().map(|c| c[i].as_str()).collect();
        let _ = writeln!(out, "| `{name}` | {} |", cells.join(" | "));
    }
    for note in outcome_notes(results) {
        let _ = writeln!(out, "\n{note}");
    }
    out
}

/// The matrix as an aligned text table for the terminal.
pub fn text(results: &Results) -> String {
    let (names, columns) = grid(results);
    let heads = headers(results);
    let name_w = names.iter().map(String::len).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = heads
        .iter()
        .zip(&columns)
        .map(|(h, c)| {
            c.iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:<name_w$}", "test");
    for (h, w) in heads.iter().zip(&widths) {
        let _ = write!(out, "  {h:<w$}");
    }
    out.push('\n');
    for (i, name) in names.iter().enumerate() {
        let _ = write!(out, "{name:<name_w$}");
        for (c, w) in columns.iter().zip(&widths) {
            let _ = write!(out, "  {:<w$}", c[i]);
        }
        out.push('\n');
    }
    for note in outcome_notes(results) {
        let _ = writeln!(out, "{note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{TestResult, Verdict};
    use crate::report::Run;

    fn run(spec: &str, tests: &[(&str, Verdict)], outcome: Outcome) -> Run {
        let mut run = Run::blank(spec, outcome);
        run.kernel.release = Some("r".into());
        Run {
            tests: tests
                .iter()
                .map(|(n, v)| TestResult::new(n, *v, ""))
                .collect(),
            ..run
        }
    }

    #[test]
    fn union_of_tests_and_missing_cells() {
        let r = Results {
            runs: vec![
                run(
                    "debian:sid",
                    &[("f1.a", Verdict::Pass), ("a3.b", Verdict::Xfail)],
                    Outcome::Completed,
                ),
                run(
                    "reference",
                    &[
                        ("f1.a", Verdict::Pass),
                        ("a3.b", Verdict::Pass),
                        ("x", Verdict::Skip),
                    ],
                    Outcome::Completed,
                ),
                run("stock", &[], Outcome::Infrastructure("build failed".into())),
            ],
        };
        let md = markdown(&r);
        assert!(md.starts_with(
            "| test | debian:sid (r) | reference (r) | stock (r) |\n|---|---|---|---|\n"
        ));
        assert!(md.contains("| `a3.b` | xfail | pass | — |"));
        assert!(md.contains("| `x` | — | skip | — |"));
        assert!(md.contains("stock: Infrastructure(\"build failed\")"));
        let t = text(&r);
        assert!(t.lines().nth(1).unwrap().starts_with("f1.a  pass"));
    }
}
