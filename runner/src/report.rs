//! What a run produced, in the forms people and programs read: `results.json`,
//! a per-test table and the closing summary line.

use crate::console::KernelReport;
use crate::klog::Finding;
use crate::ktap::{TestResult, Verdict};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// How the run itself ended, independent of the test verdicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Outcome {
    /// The guest ran the test binary to its end and powered off.
    Completed,
    /// The kernel oopsed or panicked.
    KernelCrashed(String),
    /// Nothing was printed for longer than the timeout.
    TimedOut(String),
    /// QEMU, device-emu or a preparation step failed.
    Infrastructure(String),
}

/// The kernel a run booted.
#[derive(Clone, Debug, Serialize)]
pub struct KernelInfo {
    /// The `--kernel` spec, e.g. `debian:sid`.
    pub spec: String,
    /// The kernel release (`uname -r`), when known.
    pub release: Option<String>,
    /// The Debian package version, when the kernel came from Debian.
    pub package_version: Option<String>,
    /// How the guest opened the device: `group` or `cdev` (`--vfio-api`).
    pub vfio_api: String,
}

impl KernelInfo {
    /// What names this run in a matrix: the spec, with the interface when it
    /// is not the default (`fixed (cdev)`).
    pub fn label(&self) -> String {
        crate::cli::run_label(&self.spec, &self.vfio_api)
    }
}

/// The QEMU a run used.
#[derive(Clone, Debug, Serialize)]
pub struct QemuInfo {
    /// `qemu-system-x86_64 -version` first line's version number.
    pub version: String,
    /// The binary.
    pub path: String,
}

/// One guest boot within a run (a run boots again when a guest dies).
#[derive(Clone, Debug, Serialize)]
pub struct Boot {
    /// 1 for the first boot.
    pub boot: usize,
    /// How this boot ended.
    pub outcome: Outcome,
    /// Its QEMU wall time.
    pub guest_seconds: f64,
    /// The tests that ran (or were in flight) in it.
    pub tests: Vec<String>,
}

/// One run of the tests on one kernel.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The kernel.
    pub kernel: KernelInfo,
    /// The emulator.
    pub qemu: QemuInfo,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Why that accelerator was used.
    pub accel_reason: String,
    /// The device's BAR layout (`--bars` syntax).
    pub bars: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// Seconds from QEMU start to QEMU exit, summed over boots.
    pub guest_seconds: f64,
    /// The KTAP results.
    pub tests: Vec<TestResult>,
    /// Oops, panic, warning and hung-task reports seen on the console.
    pub kernel_reports: Vec<KernelReport>,
    /// Kernel-log lines reporting trouble printed outside any test (during
    /// boot, between tests): attributed to no test, they fail none.
    pub kernel_log_outside_tests: Vec<Finding>,
    /// The guest boots of this run, with the tests each ran.
    pub boots: Vec<Boot>,
    /// The kept run directory (sockets, initramfs), with `--keep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
}

impl Run {
    /// A record of kernel `spec` that knows nothing else yet: no emulator, no
    /// tests, no boots.
    pub fn blank(spec: &str, outcome: Outcome) -> Self {
        Run {
            kernel: KernelInfo {
                spec: spec.to_string(),
                release: None,
                package_version: None,
                vfio_api: crate::cli::VfioApi::Group.name().to_string(),
            },
            qemu: QemuInfo {
                version: String::new(),
                path: String::new(),
            },
            accel: String::new(),
            accel_reason: String::new(),
            bars: String::new(),
            outcome,
            guest_seconds: 0.0,
            tests: vec![],
            kernel_reports: vec![],
            kernel_log_outside_tests: vec![],
            boots: vec![],
            run_dir: None,
        }
    }

    /// The record of a kernel that could not be tested at all (fetch or build failed).
    pub fn untested(spec: &str, why: String) -> Self {
        Self::blank(spec, Outcome::Infrastructure(why))
    }
}

/// The whole `results.json` document.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// One entry per boot.
    pub runs: Vec<Run>,
}

impl Results {
    /// Writes `results.json` (pretty printed) and its picture, `report.html`
    /// (see [`crate::html`]), into `dir`: one call, so the two never disagree.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("results.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        crate::html::write(self, dir)
    }
}

/// Counts of verdicts over a set of tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Passed tests.
    pub passed: usize,
    /// Failed tests, including unexpected passes.
    pub failed: usize,
    /// Skipped tests.
    pub skipped: usize,
    /// Expected failures.
    pub xfailed: usize,
}

impl Tally {
    /// Counts the verdicts of `tests`.
    pub fn of<'a>(tests: impl IntoIterator<Item = &'a TestResult>) -> Self {
        let mut t = Tally::default();
        for r in tests {
            match r.result {
                Verdict::Pass => t.passed += 1,
                Verdict::Fail | Verdict::Xpass => t.failed += 1,
                Verdict::Skip => t.skipped += 1,
                Verdict::Xfail => t.xfailed += 1,
            }
        }
        t
    }

    /// The closing line: `summary: N passed, N failed, N skipped`.
    pub fn summary_line(&self) -> String {
        let mut s = format!(
            "summary: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        if self.xfailed > 0 {
            let _ = write!(s, ", {} xfailed", self.xfailed);
        }
        s
    }
}

/// Renders the per-test table of one run, with the reason of every test that
/// did not pass, then the kernel-log lines printed outside tests.
pub fn table(run: &Run) -> String {
    let width = run
        .tests
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel {} ({}), qemu {}, {}",
        run.kernel.label(),
        run.kernel.release.as_deref().unwrap_or("release unknown"),
        run.qemu.version,
        run.accel
    );
    let rules_of = |t: &crate::ktap::TestResult| t.rules.join(",");
    let rules_width = run
        .tests
        .iter()
        .map(|t| rules_of(t).len())
        .max()
        .unwrap_or(0);
    let rules_width = if rules_width == 0 {
        0
    } else {
        rules_width.max(5)
    };
    let rules_head = if rules_width == 0 {
        String::new()
    } else {
        format!("{:<rules_width$}  ", "rules")
    };
    let _ = writeln!(out, "  {:<width$}  {rules_head}result", "test");
    for t in &run.tests {
        let verdict = format!("{:?}", t.result).to_lowercase();
        let rules = if rules_width == 0 {
            String::new()
        } else {
            format!("{:<rules_width$}  ", rules_of(t))
        };
        let _ = write!(out, "  {:<width$}  {rules}{verdict}", t.name);
        if t.result != Verdict::Pass && !t.reason.is_empty() {
            let _ = write!(out, "  ({})", t.reason);
        }
        out.push('\n');
    }
    out.push_str(&outside_tests(&run.kernel_log_outside_tests));
    out
}

/// Layouts drawn per failing test in the terminal; the rest are in report.html.
const PICTURES_PER_TEST: usize = 4;
/// Letters per row of a terminal picture.
const PICTURE_WIDTH: usize = 60;

/// The mappings of the tests that failed, as lines of letters (see
/// [`crate::picture::text`]); empty when no failing test measured one.
pub fn pictures(run: &Run) -> String {
    let mut out = String::new();
    let failing = run
        .tests
        .iter()
        .filter(|t| matches!(t.result, Verdict::Fail | Verdict::Xpass) && !t.layouts.is_empty());
    for t in failing {
        if out.is_empty() {
            out.push_str("mappings of failing tests (G 1 GiB, M 2 MiB, k 4 KiB, ? no single size; ^ differs from the row above):\n");
        }
        // The mappings that show a difference tell why it failed; without
        // one, the first ones give the context.
        let differing: Vec<_> = t.layouts.iter().filter(|l| l.differs()).collect();
        let shown = if differing.is_empty() {
            t.layouts.iter().collect()
        } else {
            differing
        };
        for l in shown.iter().take(PICTURES_PER_TEST) {
            let _ = writeln!(
                out,
                "  {}: {}: BAR {} [{:#x}, +{:#x}) at VA {:#x}",
                t.name, l.what, l.bar, l.offset, l.len, l.start
            );
            out.push_str(&crate::picture::text(l, PICTURE_WIDTH));
        }
        if t.layouts.len() > PICTURES_PER_TEST.min(shown.len()) {
            let _ = writeln!(
                out,
                "  {}: {} more mappings in report.html",
                t.name,
                t.layouts.len() - PICTURES_PER_TEST.min(shown.len())
            );
        }
    }
    out
}

/// The section listing kernel-log findings printed outside any test, if any.
pub fn outside_tests(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "kernel log outside tests (boot, between tests; fails no test):"
    );
    for f in findings {
        let when = match (&f.test, &f.after) {
            (Some(test), _) => format!("during {test}, which has no result"),
            (None, Some(test)) => format!("after {test}"),
            (None, None) => "before the first test".to_string(),
        };
        let _ = writeln!(out, "  boot {}, {when}: {}", f.boot, f.line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, result: Verdict) -> TestResult {
        TestResult::new(name, result, "why")
    }

    #[rstest::rstest]
    #[case(Verdict::Fail, true)]
    #[case(Verdict::Xpass, true)]
    #[case(Verdict::Pass, false)]
    #[case(Verdict::Xfail, false)]
    fn pictures_of_failing_tests_only(#[case] verdict: Verdict, #[case] drawn: bool) {
        let mut t = result("a3.msix_hole", verdict);
        t.layouts = vec![crate::layout::tests::lost_pmds()];
        let run = Run {
            tests: vec![t, result("f1.case_table", Verdict::Fail)],
            ..Run::blank("stock", Outcome::Completed)
        };
        let text = pictures(&run);
        assert_eq!(
            text.contains("a3.msix_hole: kernel placement"),
            drawn,
            "{text}"
        );
        assert_eq!(text.contains("rule placement"), drawn);
        assert!(!text.contains("f1.case_table"), "no layouts, no picture");
    }

    #[test]
    fn tally_and_summary() {
        let tests = [
            result("a", Verdict::Pass),
            result("b", Verdict::Fail),
            result("c", Verdict::Skip),
            result("d", Verdict::Xfail),
            result("e", Verdict::Xpass),
        ];
        let t = Tally::of(&tests);
        assert_eq!(
            t,
            Tally {
                passed: 1,
                failed: 2,
                skipped: 1,
                xfailed: 1
            }
        );
        assert_eq!(
            t.summary_line(),
            "summary: 1 passed, 2 failed, 1 skipped, 1 xfailed"
        );
    }

    #[test]
    fn json_shape() {
        let run = Run {
            kernel: KernelInfo {
                spec: "debian:sid".into(),
                release: Some("7.2.0-1-amd64".into()),
                package_version: None,
                vfio_api: "cdev".into(),
            },
            qemu: QemuInfo {
                version: "11.1.0".into(),
                path: "/q".into(),
            },
            accel: "tcg".into(),
            accel_reason: "requested".into(),
            bars: "1=64M".into(),
            outcome: Outcome::Completed,
            guest_seconds: 1.5,
            tests: vec![result("setup.bind_vfio", Verdict::Pass)],
            kernel_reports: vec![],
            kernel_log_outside_tests: vec![],
            boots: vec![],
            run_dir: None,
        };
        let v = serde_json::to_value(Results { runs: vec![run] }).unwrap();
        let r = &v["runs"][0];
        assert_eq!(r["kernel"]["spec"], "debian:sid");
        assert_eq!(r["kernel"]["release"], "7.2.0-1-amd64");
        assert_eq!(r["kernel"]["vfio_api"], "cdev");
        assert_eq!(r["qemu"]["version"], "11.1.0");
        assert_eq!(r["accel"], "tcg");
        assert_eq!(r["tests"][0]["name"], "setup.bind_vfio");
        assert_eq!(r["tests"][0]["result"], "pass");
        assert_eq!(r["tests"][0]["diagnostic"], "why");
        assert_eq!(r["outcome"]["status"], "completed");
    }
}
