//! `--repeat N`: the same selection in N fresh guests, and how often each test
//! got each verdict. A test whose verdict varies is flaky; so is a run whose
//! outcome (completed, crashed, ...) varies.

use crate::saved::SavedResults;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The pseudo-verdict of a test missing from a repetition.
pub const NOT_RUN: &str = "not run";

/// How often one test got each verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// Test name.
    pub test: String,
    /// Verdict (`pass`, `fail`, ..., `not run`) → repetitions.
    pub counts: BTreeMap<String, usize>,
}

impl Histogram {
    /// Whether the verdict varied.
    pub fn flaky(&self) -> bool {
        self.counts.len() > 1
    }

    /// `pass 19, fail 1`.
    pub fn text(&self) -> String {
        counts_text(&self.counts)
    }
}

/// `completed 19, kernel_crashed 1`.
fn counts_text(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One kernel's verdicts over all repetitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Flakiness {
    /// Kernel spec.
    pub kernel: String,
    /// Repetitions that ran this kernel.
    pub repetitions: usize,
    /// Run outcome (`completed`, `kernel_crashed`, ...) → repetitions.
    pub outcomes: BTreeMap<String, usize>,
    /// Per test, in order of first appearance.
    pub tests: Vec<Histogram>,
}

impl Flakiness {
    /// The tests whose verdict varied.
    pub fn flaky(&self) -> impl Iterator<Item = &Histogram> {
        self.tests.iter().filter(|h| h.flaky())
    }

    /// Whether any test, or the run's outcome, varied.
    pub fn any_flaky(&self) -> bool {
        self.outcomes.len() > 1 || self.flaky().next().is_some()
    }
}

/// The histograms of `reps`, per kernel spec in order of first appearance.
pub fn histograms(reps: &[SavedResults]) -> Vec<Flakiness> {
    let mut out: Vec<Flakiness> = Vec::new();
    for rep in reps {
        for run in &rep.runs {
            let i = match out.iter().position(|f| f.kernel == run.kernel.label()) {
                Some(i) => i,
                None => {
                    out.push(Flakiness {
                        kernel: run.kernel.label(),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let f = &mut out[i];
            f.repetitions += 1;
            *f.outcomes.entry(run.outcome.status.clone()).or_default() += 1;
            for t in &run.tests {
                let verdict = format!("{:?}", t.result).to_lowercase();
                *entry(&mut f.tests, &t.name)
                    .counts
                    .entry(verdict)
                    .or_default() += 1;
            }
        }
    }
    for f in &mut out {
        // A test absent from some repetitions did not run there: that varies too.
        for h in &mut f.tests {
            let seen: usize = h.counts.values().sum();
            if seen < f.repetitions {
                h.counts.insert(NOT_RUN.into(), f.repetitions - seen);
            }
        }
    }
    out
}

fn entry<'a>(tests: &'a mut Vec<Histogram>, name: &str) -> &'a mut Histogram {
    match tests.iter().position(|h| h.test == name) {
        Some(i) => &mut tests[i],
        None => {
            tests.push(Histogram {
                test: name.to_string(),
                counts: BTreeMap::new(),
            });
            tests.last_mut().expect("just pushed")
        }
    }
}

/// The per-test table: every test's histogram, flaky ones marked.
pub fn table(f: &Flakiness) -> String {
    let width = f
        .tests
        .iter()
        .map(|h| h.test.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{} over {} repetitions: outcome {}\n",
        f.kernel,
        f.repetitions,
        counts_text(&f.outcomes)
    );
    for h in &f.tests {
        let mark = if h.flaky() { "  FLAKY" } else { "" };
        let _ = writeln!(out, "  {:<width$}  {}{mark}", h.test, h.text());
    }
    let flaky: Vec<&str> = f.flaky().map(|h| h.test.as_str()).collect();
    let _ = writeln!(
        out,
        "{}: {} of {} tests flaky{}",
        f.kernel,
        flaky.len(),
        f.tests.len(),
        if flaky.is_empty() {
            String::new()
        } else {
            format!(": {}", flaky.join(", "))
        }
    );
    out
}

/// The exit status of a repeated run: 125 when a repetition could not test
/// (the histograms are incomplete), else 5 when anything varied, else the
/// highest status of the repetitions (which then agree).
pub fn exit_status(flakiness: &[Flakiness], rep_statuses: &[u8]) -> u8 {
    if rep_statuses.contains(&crate::cli::EXIT_NOT_TESTED) {
        crate::cli::EXIT_NOT_TESTED
    } else if flakiness.iter().any(Flakiness::any_flaky) {
        crate::cli::EXIT_FLAKY
    } else {
        rep_statuses
            .iter()
            .copied()
            .max()
            .unwrap_or(crate::cli::EXIT_OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn rep(tests: &[(&str, &str)], status: &str) -> SavedResults {
        serde_json::from_value(serde_json::json!({"runs": [{
            "kernel": {"spec": "debian:sid"},
            "outcome": {"status": status},
            "tests": tests.iter().map(|(n, v)| serde_json::json!({"name": n, "result": v})).collect::<Vec<_>>(),
        }]}))
        .unwrap()
    }

    #[test]
    fn verdicts_are_counted_and_missing_tests_are_not_run() {
        let reps = [
            rep(&[("a", "pass"), ("b", "fail"), ("c", "pass")], "completed"),
            rep(&[("a", "pass"), ("b", "pass")], "completed"),
            rep(
                &[("a", "pass"), ("b", "fail"), ("c", "pass")],
                "kernel_crashed",
            ),
        ];
        let f = &histograms(&reps)[0];
        assert_eq!(f.repetitions, 3);
        let text: Vec<(String, String, bool)> = f
            .tests
            .iter()
            .map(|h| (h.test.clone(), h.text(), h.flaky()))
            .collect();
        assert_eq!(
            text,
            [
                ("a".into(), "pass 3".into(), false),
                ("b".into(), "fail 2, pass 1".into(), true),
                ("c".into(), "not run 1, pass 2".into(), true),
            ]
        );
        assert_eq!(counts_text(&f.outcomes), "completed 2, kernel_crashed 1");
        assert!(table(f).ends_with("debian:sid: 2 of 3 tests flaky: b, c\n"));
    }

    #[rstest]
    #[case(&[("a", "pass")], &[0, 0], 0)]
    #[case(&[("a", "fail")], &[1, 1], 1)]
    #[case(&[("a", "fail")], &[3, 3], 3)]
    #[case(&[("a", "fail")], &[1, 125], 125)]
    fn exit_status_of_stable_runs(
        #[case] tests: &[(&str, &str)],
        #[case] statuses: &[u8],
        #[case] want: u8,
    ) {
        let f = histograms(&[rep(tests, "completed"), rep(tests, "completed")]);
        assert_eq!(exit_status(&f, statuses), want);
    }

    #[test]
    fn a_varying_verdict_or_outcome_is_exit_5() {
        let f = histograms(&[
            rep(&[("a", "pass")], "completed"),
            rep(&[("a", "fail")], "completed"),
        ]);
        assert_eq!(exit_status(&f, &[0, 1]), 5);
        let f = histograms(&[
            rep(&[("a", "pass")], "completed"),
            rep(&[("a", "pass")], "timed_out"),
        ]);
        assert_eq!(exit_status(&f, &[0, 4]), 5);
    }
}
