//! JUnit XML: one `<testsuite>` per run (kernel), one `<testcase>` per KTAP result,
//! for CI systems that render JUnit.

use crate::ktap::Verdict;
use crate::report::{Outcome, Results};
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;

/// Builds the JUnit report of `results`.
pub fn report(results: &Results) -> Report {
    let mut report = Report::new("bigbar");
    for run in &results.runs {
        let release = run.kernel.release.as_deref().unwrap_or("unknown");
        let mut suite = TestSuite::new(format!("{} ({release})", run.kernel.spec));
        for t in &run.tests {
            let status = match t.result {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Skip | Verdict::Xfail => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!("{:?}: {}", t.result, first_line(&t.diagnostic)));
                    s
                }
                Verdict::Fail | Verdict::Xpass => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(first_line(&t.diagnostic).to_string());
                    s.set_description(t.diagnostic.clone());
                    s
                }
            };
            let mut case = TestCase::new(t.name.clone(), status);
            // The rule ID (`f1`, `a3`, `setup`, ...) groups cases in JUnit viewers.
            case.set_classname(t.name.split('.').next().unwrap_or("bigbar").to_string());
            if !t.diagnostic.is_empty() {
                case.set_system_out(t.diagnostic.clone());
            }
            suite.add_test_case(case);
        }
        if run.outcome != Outcome::Completed {
            // A run that did not complete is an error of its own, not a silent gap.
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(format!("{:?}", run.outcome));
            suite.add_test_case(TestCase::new("run.outcome", s));
        }
        report.add_test_suite(suite);
    }
    report
}

/// Writes the JUnit report of `results` to `path`.
pub fn write(results: &Results, path: &Path) -> Result<()> {
    let xml = report(results)
        .to_string()
        .context("serialising the JUnit report")?;
    std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::TestResult;
    use crate::report::Run;

    fn run(outcome: Outcome) -> Run {
        let t = |name: &str, result| TestResult {
            number: 1,
            name: name.into(),
            result,
            diagnostic: "expected 7 faults\ncounted 9".into(),
        };
        let mut run = Run::blank("debian:sid", outcome);
        run.kernel.release = Some("7.2".into());
        Run {
            tests: vec![
                t("f1.pud", Verdict::Pass),
                t("f2.count", Verdict::Fail),
                t("a3.hole", Verdict::Xfail),
                t("f3.thp", Verdict::Skip),
            ],
            ..run
        }
    }

    #[test]
    fn counts_and_elements() {
        let xml = report(&Results {
            runs: vec![run(Outcome::Completed)],
        })
        .to_string()
        .unwrap();
        assert!(xml.contains(
            "<testsuites name=\"bigbar\" tests=\"4\" skipped=\"2\" failures=\"1\" errors=\"0\">"
        ));
        assert!(xml.contains("<testsuite name=\"debian:sid (7.2)\" tests=\"4\""));
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert_eq!(xml.matches("<failure").count(), 1);
        assert_eq!(xml.matches("<skipped").count(), 2);
        assert!(xml.contains("classname=\"f2\""));
        assert!(xml.contains("message=\"expected 7 faults\""));
    }

    #[test]
    fn an_incomplete_run_is_an_error_case() {
        let xml = report(&Results {
            runs: vec![run(Outcome::TimedOut("hang".into()))],
        })
        .to_string()
        .unwrap();
        assert_eq!(xml.matches("<error").count(), 1);
        assert!(xml.contains("errors=\"1\""));
    }
}
