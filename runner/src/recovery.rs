//! Carrying a run across guests that die.
//!
//! Some tests probe kernel paths that may oops or hang the kernel. When a guest
//! dies before its KTAP stream is complete, the test in flight is failed with the
//! kernel's report, and the tests not yet run go to a fresh guest. [`Recovery`]
//! keeps the combined record and says whether another boot is worth it.

use crate::console::KernelReport;
use crate::klog::{self, Finding};
use crate::ktap::{TestResult, Verdict};
use crate::report::{Boot, Outcome};
use crate::session::SessionResult;

/// The combined record of all boots of one run.
#[derive(Debug)]
pub struct Recovery {
    selected: Vec<String>,
    tests: Vec<TestResult>,
    reports: Vec<KernelReport>,
    outside_tests: Vec<Finding>,
    boots: Vec<Boot>,
}

/// What a run found, all boots combined.
#[derive(Debug)]
pub struct Record {
    /// How the run ended.
    pub outcome: Outcome,
    /// Every selected test's result, in run order of the boots.
    pub tests: Vec<TestResult>,
    /// Every kernel report of every boot.
    pub kernel_reports: Vec<KernelReport>,
    /// Kernel-log findings printed outside any test (they fail none).
    pub outside_tests: Vec<Finding>,
    /// The boots.
    pub boots: Vec<Boot>,
    /// QEMU wall time summed over the boots.
    pub guest_seconds: f64,
}

impl Recovery {
    /// Starts a record for the `selected` tests (in run order).
    pub fn new(selected: Vec<String>) -> Self {
        Self {
            selected,
            tests: Vec::new(),
            reports: Vec::new(),
            outside_tests: Vec::new(),
            boots: Vec::new(),
        }
    }

    /// Selected tests that have no result yet, in run order.
    pub fn remaining(&self) -> Vec<String> {
        self.selected
            .iter()
            .filter(|n| !self.tests.iter().any(|t| &t.name == *n))
            .cloned()
            .collect()
    }

    /// Adds the result of boot number `boot`; returns whether the remaining tests
    /// should run in another guest.
    ///
    /// Here, where live runs and `runner parse` meet, the kernel log is judged:
    /// a test during which the kernel complained fails.
    pub fn absorb(&mut self, boot: usize, mut result: SessionResult) -> bool {
        let mut names: Vec<String> = result.tests.iter().map(|t| t.name.clone()).collect();
        let guest_died = matches!(
            result.outcome,
            Outcome::KernelCrashed(_) | Outcome::TimedOut(_)
        ) && !result.ktap_complete;
        let mut progressed = !result.tests.is_empty();
        if guest_died {
            if let Some(name) = result.in_flight.take() {
                let died = died_during(&name, &result);
                result.tests.push(died);
                names.push(name);
                progressed = true;
            }
        }
        let findings = std::mem::take(&mut result.findings);
        let outside = klog::judge(&mut result.tests, findings, &result.kernel_reports);
        self.outside_tests
            .extend(outside.into_iter().map(|f| Finding { boot, ..f }));
        self.tests.append(&mut result.tests);
        self.reports.append(&mut result.kernel_reports);
        self.boots.push(Boot {
            boot,
            outcome: result.outcome,
            guest_seconds: result.guest_seconds,
            tests: names,
        });
        guest_died && progressed && !self.remaining().is_empty()
    }

    /// Records that boot number `boot` could not even start (its initramfs,
    /// device or QEMU failed): the run stops there, keeping what earlier boots found.
    pub fn absorb_failure(&mut self, boot: usize, why: String) {
        self.boots.push(Boot {
            boot,
            outcome: Outcome::Infrastructure(why),
            guest_seconds: 0.0,
            tests: Vec::new(),
        });
    }

    /// The run's combined record.
    ///
    /// A crash in any boot makes the run a crash (exit status 3) even when later
    /// boots completed or could not start; otherwise a timeout; otherwise how the
    /// last boot ended. Selected tests that never ran are failed as "not run", so
    /// that a run cut short never looks shorter but clean.
    pub fn finish(mut self) -> Record {
        let seconds = self.boots.iter().map(|b| b.guest_seconds).sum();
        let last = self.boots.last().map(|b| b.outcome.clone());
        let find = |f: fn(&Outcome) -> bool| {
            self.boots
                .iter()
                .map(|b| &b.outcome)
                .find(|o| f(o))
                .cloned()
        };
        let outcome = find(|o| matches!(o, Outcome::KernelCrashed(_)))
            .or_else(|| find(|o| matches!(o, Outcome::TimedOut(_))))
            .or(last)
            .unwrap_or_else(|| Outcome::Infrastructure("no guest was booted".into()));
        if outcome != Outcome::Completed {
            let boots = self.boots.len();
            let why = format!("not run: the run ended after {boots} boot(s) before it");
            for name in self.remaining() {
                self.tests.push(TestResult::new(&name, Verdict::Fail, &why));
            }
        }
        Record {
            outcome,
            tests: self.tests,
            kernel_reports: self.reports,
            outside_tests: self.outside_tests,
            boots: self.boots,
            guest_seconds: seconds,
        }
    }
}

/// The failed result of a test during which the guest died.
fn died_during(name: &str, result: &SessionResult) -> TestResult {
    let why = match &result.outcome {
        Outcome::KernelCrashed(first) => format!("the kernel crashed during this test: {first}"),
        Outcome::TimedOut(why) => format!("the guest stopped responding during this test: {why}"),
        o => format!("the guest died during this test: {o:?}"),
    };
    let report = result
        .kernel_reports
        .iter()
        .find(|r| r.during_test.as_deref() == Some(name))
        .map(|r| r.text.clone())
        .unwrap_or_else(|| result.console_tail.clone());
    let mut died = TestResult::new(name, Verdict::Fail, &format!("{why}\n{report}"));
    // The console's last line says what the kernel printed last, not why the
    // test failed: for a hang that is the stall, for a crash its first line.
    died.reason = why.lines().next().unwrap_or_default().to_string();
    died
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::TroubleKind;

    fn pass(name: &str) -> TestResult {
        TestResult::new(name, Verdict::Pass, "")
    }

    fn session(
        outcome: Outcome,
        tests: &[&str],
        in_flight: Option<&str>,
        complete: bool,
    ) -> SessionResult {
        SessionResult {
            outcome,
            tests: tests.iter().map(|n| pass(n)).collect(),
            kernel_reports: in_flight
                .map(|n| KernelReport {
                    kind: TroubleKind::Panic,
                    text: "Kernel panic - not syncing: boom".into(),
                    during_test: Some(n.into()),
                })
                .into_iter()
                .collect(),
            findings: Vec::new(),
            guest_seconds: 1.0,
            console_tail: "tail".into(),
            in_flight: in_flight.map(str::to_string),
            ktap_complete: complete,
        }
    }

    #[test]
    fn a_crash_fails_the_test_in_flight_and_continues() {
        let mut r = Recovery::new(vec!["a".into(), "b".into(), "c".into(), "d".into()]);
        let crash = Outcome::KernelCrashed("Kernel panic".into());
        assert!(r.absorb(1, session(crash, &["a"], Some("b"), false)));
        assert_eq!(r.remaining(), ["c", "d"]);
        assert!(!r.absorb(2, session(Outcome::Completed, &["c", "d"], None, true)));
        let Record {
            outcome,
            tests,
            kernel_reports: reports,
            boots,
            guest_seconds: secs,
            ..
        } = r.finish();
        assert!(matches!(outcome, Outcome::KernelCrashed(_)));
        assert_eq!(tests.len(), 4);
        assert_eq!(tests[1].name, "b");
        assert_eq!(tests[1].result, Verdict::Fail);
        assert!(tests[1]
            .diagnostic
            .contains("Kernel panic - not syncing: boom"));
        assert_eq!(reports.len(), 1);
        assert_eq!(boots[0].tests, ["a", "b"]);
        assert_eq!(boots[1].tests, ["c", "d"]);
        assert_eq!(secs, 2.0);
    }

    #[test]
    fn no_progress_stops() {
        let mut r = Recovery::new(vec!["a".into()]);
        let hang = Outcome::TimedOut("silence".into());
        assert!(!r.absorb(1, session(hang, &[], None, false)));
        let Record { outcome, tests, .. } = r.finish();
        assert!(matches!(outcome, Outcome::TimedOut(_)));
        assert_eq!(tests.len(), 1);
        assert_eq!(tests[0].result, Verdict::Fail);
    }

    #[test]
    fn infrastructure_failure_is_not_retried() {
        let mut r = Recovery::new(vec!["a".into(), "b".into()]);
        let dead = Outcome::Infrastructure("device-emu exited".into());
        assert!(!r.absorb(1, session(dead, &["a"], Some("b"), false)));
        assert!(matches!(r.finish().outcome, Outcome::Infrastructure(_)));
    }

    #[test]
    fn a_crash_outranks_a_later_boot_that_could_not_start() {
        let mut r = Recovery::new(vec!["a".into(), "b".into(), "c".into()]);
        let crash = Outcome::KernelCrashed("Oops".into());
        assert!(r.absorb(1, session(crash, &[], Some("a"), false)));
        r.absorb_failure(2, "device-emu did not start".into());
        let Record {
            outcome,
            tests,
            boots,
            ..
        } = r.finish();
        assert_eq!(outcome, Outcome::KernelCrashed("Oops".into()));
        assert_eq!(boots.len(), 2);
        assert_eq!(
            boots[1].outcome,
            Outcome::Infrastructure("device-emu did not start".into())
        );
        let verdicts: Vec<_> = tests.iter().map(|t| (t.name.as_str(), &t.result)).collect();
        assert_eq!(
            verdicts,
            [
                ("a", &Verdict::Fail),
                ("b", &Verdict::Fail),
                ("c", &Verdict::Fail)
            ]
        );
        assert!(
            tests[2].diagnostic.starts_with("not run: "),
            "{}",
            tests[2].diagnostic
        );
    }

    #[test]
    fn a_completed_run_adds_nothing() {
        let mut r = Recovery::new(vec!["a".into()]);
        assert!(!r.absorb(1, session(Outcome::Completed, &["a"], None, true)));
        let Record { outcome, tests, .. } = r.finish();
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(tests.len(), 1);
    }

    #[test]
    fn an_oops_the_guest_survives_needs_no_reboot() {
        let mut r = Recovery::new(vec!["a".into()]);
        let oops = Outcome::KernelCrashed("Oops".into());
        assert!(!r.absorb(1, session(oops, &["a"], None, true)));
    }
}
