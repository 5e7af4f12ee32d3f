//! JUnit XML: one `<testsuite>` per run (kernel), one `<testcase>` per KTAP result,
//! for CI systems that render JUnit.

use crate::ktap::{TestResult, Verdict};
use crate::report::{Outcome, Results};
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;

/// Builds the JUnit report of `results`.
pub fn report(results: &Results) -> Report {
    let mut report = Report::new("bigbar");
    for run in &results.runs {
        let release = run.kernel.release.as_deref().unwrap_or("unknown");
        let mut suite = TestSuite::new(format!("{} ({release})", run.kernel.label()));
        for t in &run.tests {
            let status = match t.result {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Skip | Verdict::Xfail => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!("{:?}: {}", t.result, t.reason));
                    s
                }
                Verdict::Fail | Verdict::Xpass => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(t.reason.clone());
                    s.set_description(failure_text(t));
                    s
                }
            };
            let mut case = TestCase::new(t.name.clone(), status);
            // The rule ID (`f1`, `a3`, `setup`, ...) groups cases in JUnit viewers.
            case.set_classname(t.name.split('.').next().unwrap_or("bigbar").to_string());
            if !t.diagnostic.is_empty() {
                case.set_system_out(t.diagnostic.clone());
            }
            if !t.rules.is_empty() {
                case.add_property(Property::new("rules", t.rules.join(",")));
            }
            suite.add_test_case(case);
        }
        if run.outcome != Outcome::Completed {
            // A run that did not complete is an error of its own, not a silent gap.
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(format!("{:?}", run.outcome));
            suite.add_test_case(TestCase::new("run.outcome", s));
        }
        let outside = crate::report::outside_tests(&run.kernel_log_outside_tests);
        if !outside.is_empty() {
            // Kept with the suite, not a test case: they fail no test.
            suite.set_system_err(outside);
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

/// A failure's text: its reason first, then the diagnostic, so a viewer that
/// shows only the start shows why; the kernel-log lines a verdict came from
/// get a line of their own.
fn failure_text(t: &TestResult) -> String {
    let mut text = t.reason.clone();
    if !t.kernel_log.is_empty() {
        text.push_str("\nfailed by the kernel log: ");
        text.push_str(&t.kernel_log.join("\n"));
    }
    if !t.diagnostic.is_empty() {
        text.push_str("\n\n");
        text.push_str(&t.diagnostic);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Run;

    fn run(outcome: Outcome) -> Run {
        let t = |name: &str, result| {
            TestResult::new(
                name,
                result,
                "f2.count: expected 7 faults\nf2.count: 0.010 s",
            )
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
        let mut r = run(Outcome::Completed);
        r.tests[1].rules = vec!["F2".into()];
        let xml = report(&Results { runs: vec![r] }).to_string().unwrap();
        assert!(
            xml.contains("<property name=\"rules\" value=\"F2\"/>"),
            "{xml}"
        );
        assert!(xml.contains(
            "<testsuites name=\"bigbar\" tests=\"4\" skipped=\"2\" failures=\"1\" errors=\"0\">"
        ));
        assert!(xml.contains("<testsuite name=\"debian:sid (7.2)\" tests=\"4\""));
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert_eq!(xml.matches("<failure").count(), 1);
        assert_eq!(xml.matches("<skipped").count(), 2);
        assert!(xml.contains("classname=\"f2\""));
        assert!(xml.contains("message=\"expected 7 faults\""), "{xml}");
    }

    #[test]
    fn a_kernel_log_verdict_says_so_and_outside_lines_go_to_the_suite() {
        let mut r = run(Outcome::Completed);
        let f8 = &mut r.tests[1];
        f8.kernel_log = vec!["[ 7.4] mm/pgtable-generic.c:44: bad pud 0(1)".into()];
        f8.reason = "[kernel log] mm/pgtable-generic.c:44: bad pud 0(1)".into();
        r.kernel_log_outside_tests = vec![crate::klog::Finding {
            kind: crate::klog::Kind::Warning,
            line: "[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f".into(),
            test: None,
            after: None,
            boot: 1,
        }];
        let xml = report(&Results { runs: vec![r] }).to_string().unwrap();
        assert!(
            xml.contains("message=\"[kernel log] mm/pgtable-generic.c:44: bad pud 0(1)\""),
            "{xml}"
        );
        assert!(
            xml.contains("failed by the kernel log: [ 7.4] mm/pgtable"),
            "{xml}"
        );
        assert!(
            xml.contains("<system-err>kernel log outside tests"),
            "{xml}"
        );
        assert_eq!(xml.matches("<failure").count(), 1);
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
