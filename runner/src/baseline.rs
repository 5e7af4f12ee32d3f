//! Judging a run against a baseline: a saved `results.json` or an expectations
//! file. The run keeps its real verdicts; the baseline decides which of its
//! failures are news (regressions), which are known, and which known failures
//! are gone (fixed). `runner compare` is the same judgement with a saved run as
//! the baseline.
//!
//! The expectations format (TOML, or JSON with the same fields) is a list of
//! `[[expect]]` tables, the first whose `test` and `kernels` match a result
//! applying to it:
//!
//! ```toml
//! [[expect]]
//! test = "f8.mremap_move_pud_*"        # a test name, `*` wildcards
//! kernels = ["debian:*", "stock"]      # optional: spec names or globs; all if absent
//! verdict = "fail"                     # or a list: ["skip", "fail"]
//! crash = false                        # optional: an oops during this test is known
//! reason = "mremap drops a huge PUD as bad pud"
//! link = "docs/findings/mremap-bad-pud.md"   # optional
//! ```
//!
//! A test no entry matches is expected not to fail (pass, skip or xfail).

use crate::ktap::Verdict;
use crate::saved::{self, LoadError, SavedOutcome, SavedResults, SavedRun};
use protocol::glob;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a baseline could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A results baseline that cannot be read.
    #[error(transparent)]
    Results(#[from] LoadError),
    /// An expectations file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TOML expectations file with a syntax or field error.
    #[error("{path} is not a valid expectations file: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the parser found, with line and column.
        source: toml::de::Error,
    },
    /// A JSON file that is neither results nor expectations.
    #[error(
        "{path} is neither a results.json (`runs`) nor an expectations file (`expect`): {source}"
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// An entry that can never match or says nothing.
    #[error("{path}: entry {index} (test {test:?}): {why}")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// 1-based position of the entry.
        index: usize,
        /// Its `test` field.
        test: String,
        /// What is wrong with it.
        why: String,
    },
}

/// One or several verdicts (`verdict = "fail"` or `verdict = ["skip", "fail"]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Verdicts {
    /// A single verdict.
    One(Verdict),
    /// Any of these.
    Any(Vec<Verdict>),
}

impl Verdicts {
    fn to_vec(&self) -> Vec<Verdict> {
        match self {
            Verdicts::One(v) => vec![*v],
            Verdicts::Any(v) => v.clone(),
        }
    }
}

/// One `[[expect]]` entry of an expectations file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Test name or glob.
    pub test: String,
    /// Kernel specs or globs it applies to; every kernel when empty.
    #[serde(default)]
    pub kernels: Vec<String>,
    /// The expected verdict(s).
    pub verdict: Verdicts,
    /// Whether an oops or panic during this test is known.
    #[serde(default)]
    pub crash: bool,
    /// Why this is expected.
    pub reason: String,
    /// Where it is explained (a finding, an issue).
    #[serde(default)]
    pub link: Option<String>,
}

/// An expectations file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// The entries, first match wins.
    pub expect: Vec<Entry>,
}

/// A baseline as given to `--baseline`.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// A saved run (of one kernel or a matrix).
    Results(SavedResults),
    /// An expectations file.
    Expectations(Expectations),
}

/// What is expected of one test on one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// Test name or glob.
    pub pattern: String,
    /// Verdicts that are no news.
    pub verdicts: Vec<Verdict>,
    /// Whether an oops during the test is known.
    pub crash: bool,
    /// Reason (and link) the baseline gives.
    pub note: String,
}

/// A baseline narrowed to one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelBaseline {
    /// The expectations, first match wins.
    pub expects: Vec<Expect>,
    /// Whether it lists every test (a saved run): then a test it lacks is new,
    /// and one it has that did not run is removed.
    pub exhaustive: bool,
}

/// How `--fixed-is` counts a known failure that now passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FixedIs {
    /// Exit 0; the summary says loudly to update the baseline.
    #[default]
    Ok,
    /// Exit 1, as for a regression, and so does any other verdict the
    /// baseline does not name (a `changed` test, e.g. a skip where it expects
    /// a pass): the baseline must be kept exact.
    Fail,
}

impl Baseline {
    /// Reads `path`: an `--out` directory or `*.json` results, or a TOML/JSON
    /// expectations file.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        if path.is_dir() {
            return Ok(Baseline::Results(saved::load(path)?));
        }
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let expectations = if is_json {
            if serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v.get("runs").is_some())
            {
                return Ok(Baseline::Results(saved::from_str(&text, path)?));
            }
            serde_json::from_str(&text).map_err(|source| BaselineError::Json {
                path: path.to_path_buf(),
                source,
            })?
        } else {
            toml::from_str(&text).map_err(|source| BaselineError::Toml {
                path: path.to_path_buf(),
                source,
            })?
        };
        check(&expectations, path)?;
        Ok(Baseline::Expectations(expectations))
    }

    /// The baseline of kernel `spec` (a run labelled `label`, see
    /// [`crate::cli::run_label`]): expectations name kernels by spec, saved
    /// results name runs by label. `single` says both sides hold one run,
    /// which are then compared whatever their labels. `None`: a results
    /// baseline without that run.
    pub fn for_kernel(&self, spec: &str, label: &str, single: bool) -> Option<KernelBaseline> {
        match self {
            Baseline::Expectations(e) => Some(e.for_kernel(spec)),
            Baseline::Results(r) => {
                let run = if single && r.runs.len() == 1 {
                    &r.runs[0]
                } else {
                    r.runs.iter().find(|run| run.kernel.label() == label)?
                };
                Some(KernelBaseline::of_run(run))
            }
        }
    }
}

/// Refuses entries that say nothing: an empty test pattern or verdict list.
fn check(e: &Expectations, path: &Path) -> Result<(), BaselineError> {
    for (i, entry) in e.expect.iter().enumerate() {
        let why = if entry.test.is_empty() {
            "empty `test`"
        } else if entry.verdict.to_vec().is_empty() {
            "empty `verdict` list"
        } else if entry.kernels.iter().any(String::is_empty) {
            "empty kernel pattern"
        } else {
            continue;
        };
        return Err(BaselineError::BadEntry {
            path: path.to_path_buf(),
            index: i + 1,
            test: entry.test.clone(),
            why: why.to_string(),
        });
    }
    Ok(())
}

impl Expectations {
    /// The entries that apply to kernel `spec`.
    pub fn for_kernel(&self, spec: &str) -> KernelBaseline {
        let expects = self
            .expect
            .iter()
            .filter(|e| e.kernels.is_empty() || e.kernels.iter().any(|k| glob::matches(k, spec)))
            .map(|e| Expect {
                pattern: e.test.clone(),
                verdicts: e.verdict.to_vec(),
                crash: e.crash,
                note: match &e.link {
                    Some(link) => format!("{} ({link})", e.reason),
                    None => e.reason.clone(),
                },
            })
            .collect();
        KernelBaseline {
            expects,
            exhaustive: false,
        }
    }
}

impl KernelBaseline {
    /// A saved run as a baseline: each test expected to keep its verdict, an
    /// oops known during the tests it happened in.
    pub fn of_run(run: &SavedRun) -> Self {
        let crashes = run.crash_tests();
        let expects = run
            .tests
            .iter()
            .map(|t| Expect {
                pattern: t.name.clone(),
                verdicts: vec![t.result],
                crash: crashes.contains(&Some(t.name.clone())),
                note: t.reason.clone(),
            })
            .collect();
        KernelBaseline {
            expects,
            exhaustive: true,
        }
    }

    /// The first expectation that matches test `name`.
    pub fn expect(&self, name: &str) -> Option<&Expect> {
        self.expects
            .iter()
            .find(|e| glob::matches(&e.pattern, name))
    }
}

/// What a result is, measured against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A failure the baseline did not expect.
    Regression,
    /// A known failure (or expected failure) that still fails.
    Known,
    /// A known failure that now passes.
    Fixed,
    /// A different verdict, neither a failure: e.g. pass → skip.
    Changed,
    /// A test the baseline run did not have, not failing.
    New,
    /// A test of the baseline run that did not run.
    Removed,
    /// As expected.
    Expected,
}

/// One test's judgement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judged {
    /// Test name.
    pub test: String,
    /// What it is.
    pub class: Class,
    /// Its verdict now (`None`: removed).
    pub now: Option<Verdict>,
    /// What the baseline expected (empty: nothing, a new test).
    pub expected: Vec<Verdict>,
    /// The baseline's reason (a saved run's reason, an entry's reason and link).
    pub note: String,
    /// The reason now.
    pub reason: String,
}

/// How a crash during the run relates to the baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "crash", content = "detail")]
pub enum Crash {
    /// No oops or panic.
    None,
    /// Every oops happened during a test the baseline knows to oops.
    Known(Vec<String>),
    /// An oops the baseline does not know (the test, or where it happened).
    Unexpected(String),
}

/// One kernel's run judged against its baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    /// The kernel spec.
    pub kernel: String,
    /// How the run ended.
    pub outcome: SavedOutcome,
    /// Every test, in run order, then the removed ones.
    pub tests: Vec<Judged>,
    /// The run's crash, judged.
    pub crash: Crash,
}

/// Whether a verdict is a failure (what fails a run without a baseline).
pub fn failing(v: Verdict) -> bool {
    matches!(v, Verdict::Fail | Verdict::Xpass)
}

/// Classifies verdict `now` against `expected` (empty: a test the baseline lacks).
pub fn classify(now: Verdict, expected: &[Verdict]) -> Class {
    if expected.is_empty() {
        return if failing(now) {
            Class::Regression
        } else {
            Class::New
        };
    }
    let defect = |v: &Verdict| failing(*v) || *v == Verdict::Xfail;
    if expected.contains(&now) {
        if defect(&now) {
            Class::Known
        } else {
            Class::Expected
        }
    } else if failing(now) {
        Class::Regression
    } else if now == Verdict::Pass && expected.iter().any(defect) {
        Class::Fixed
    } else {
        Class::Changed
    }
}

/// The verdicts an expectations file expects of a test it does not mention.
const NOT_FAILING: [Verdict; 3] = [Verdict::Pass, Verdict::Skip, Verdict::Xfail];

/// Judges `run` against `base`.
pub fn judge(base: &KernelBaseline, run: &SavedRun) -> Judgement {
    let mut tests: Vec<Judged> = run
        .tests
        .iter()
        .map(|t| {
            let (expected, note) = match base.expect(&t.name) {
                Some(e) => (e.verdicts.clone(), e.note.clone()),
                None if base.exhaustive => (vec![], String::new()),
                None => (NOT_FAILING.to_vec(), String::new()),
            };
            Judged {
                test: t.name.clone(),
                class: classify(t.result, &expected),
                now: Some(t.result),
                expected,
                note,
                reason: t.reason.clone(),
            }
        })
        .collect();
    if base.exhaustive {
        tests.extend(removed(base, run));
    }
    Judgement {
        kernel: run.kernel.label(),
        outcome: run.outcome.clone(),
        tests,
        crash: judge_crash(base, run),
    }
}

/// The tests of a saved-run baseline that `run` does not have.
fn removed(base: &KernelBaseline, run: &SavedRun) -> Vec<Judged> {
    base.expects
        .iter()
        .filter(|e| !run.tests.iter().any(|t| t.name == e.pattern))
        .map(|e| Judged {
            test: e.pattern.clone(),
            class: Class::Removed,
            now: None,
            expected: e.verdicts.clone(),
            note: e.note.clone(),
            reason: String::new(),
        })
        .collect()
}

/// A crash is known when every oops or panic happened during a test the
/// baseline expects to crash.
fn judge_crash(base: &KernelBaseline, run: &SavedRun) -> Crash {
    let during = run.crash_tests();
    if !run.crashed() && during.is_empty() {
        return Crash::None;
    }
    let mut known = Vec::new();
    for test in &during {
        match test {
            Some(t) if base.expect(t).is_some_and(|e| e.crash) => known.push(t.clone()),
            Some(t) => return Crash::Unexpected(format!("during {t}")),
            None => return Crash::Unexpected("outside any test".into()),
        }
    }
    if known.is_empty() {
        // Crashed without a report the watcher kept: nothing to match.
        return Crash::Unexpected("no report".into());
    }
    Crash::Known(known)
}

impl Judgement {
    /// The tests of class `c`.
    pub fn of(&self, c: Class) -> impl Iterator<Item = &Judged> {
        self.tests.iter().filter(move |t| t.class == c)
    }

    /// The exit status: 4 and 125 as without a baseline, 3 for a crash the
    /// baseline does not know, 1 for a regression (or a fix, with
    /// `--fixed-is fail`), 125 when nothing ran, else 0.
    pub fn exit_status(&self, fixed_is: FixedIs) -> u8 {
        use crate::cli::*;
        match self.outcome.status.as_str() {
            "timed_out" => return EXIT_TIMEOUT,
            "infrastructure" => return EXIT_NOT_TESTED,
            _ => {}
        }
        if matches!(self.crash, Crash::Unexpected(_)) {
            EXIT_KERNEL_CRASHED
        } else if self.regressed(fixed_is) {
            EXIT_TEST_FAILED
        } else if self.tests.iter().all(|t| t.now.is_none()) {
            EXIT_NOT_TESTED
        } else {
            EXIT_OK
        }
    }

    /// Whether the judgement fails the run: a regression, or a fix or another
    /// change that `--fixed-is fail` counts as one.
    fn regressed(&self, fixed_is: FixedIs) -> bool {
        let exact = fixed_is == FixedIs::Fail
            && (self.of(Class::Fixed).next().is_some() || self.of(Class::Changed).next().is_some());
        exact || self.of(Class::Regression).next().is_some()
    }

    /// The count line: `baseline: 0 regressions, 3 known, ...`.
    pub fn count_line(&self) -> String {
        let n = |c| self.of(c).count();
        let crash = match &self.crash {
            Crash::None => String::new(),
            Crash::Known(t) => format!(", known crash during {}", t.join(", ")),
            Crash::Unexpected(w) => format!(", UNEXPECTED crash {w}"),
        };
        format!(
            "{}: {} regressions, {} known failures, {} fixed, {} changed, {} new, {} removed{crash}",
            self.kernel,
            n(Class::Regression),
            n(Class::Known),
            n(Class::Fixed),
            n(Class::Changed),
            n(Class::New),
            n(Class::Removed)
        )
    }
}

/// `fail`, `skip|fail`: verdicts as the reports print them.
pub fn verdict_list(v: &[Verdict]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|v| format!("{v:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join("|")
}

/// The lines a run's summary gains from the baseline: every regression,
/// fix, known failure and change, then the counts.
pub fn summary(j: &Judgement, fixed_is: FixedIs) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (class, label) in [
        (Class::Regression, "REGRESSION"),
        (Class::Fixed, "FIXED"),
        (Class::Known, "known"),
        (Class::Changed, "changed"),
    ] {
        for t in j.of(class) {
            let now = t.now.map(|v| verdict_list(&[v])).unwrap_or_default();
            let _ = write!(
                out,
                "{label:<10} {}: {now} (baseline: {}",
                t.test,
                verdict_list(&t.expected)
            );
            if !t.note.is_empty() {
                let _ = write!(out, ", {}", t.note);
            }
            out.push(')');
            if class == Class::Regression && !t.reason.is_empty() {
                let _ = write!(out, ": {}", t.reason);
            }
            out.push('\n');
        }
    }
    let fixed = j.of(Class::Fixed).count();
    if fixed > 0 {
        let effect = match fixed_is {
            FixedIs::Ok => "exit status unaffected (--fixed-is ok)",
            FixedIs::Fail => "exit status 1 (--fixed-is fail)",
        };
        let _ = writeln!(
            out,
            "bigbar: {fixed} KNOWN FAILURE(S) NOW PASS: update the baseline; {effect}"
        );
    }
    let changed = j.of(Class::Changed).count();
    if changed > 0 && fixed_is == FixedIs::Fail {
        let _ = writeln!(
            out,
            "bigbar: {changed} test(s) with a verdict the baseline does not name; \
             exit status 1 (--fixed-is fail keeps the baseline exact)"
        );
    }
    let _ = writeln!(out, "baseline {}", j.count_line());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use Verdict::*;

    #[rstest]
    #[case(Pass, &[Pass], Class::Expected)]
    #[case(Skip, &[Pass, Skip, Xfail], Class::Expected)]
    #[case(Fail, &[Pass, Skip, Xfail], Class::Regression)]
    #[case(Xpass, &[Xfail], Class::Regression)]
    #[case(Fail, &[Fail], Class::Known)]
    #[case(Fail, &[Skip, Fail], Class::Known)]
    #[case(Xfail, &[Xfail], Class::Known)]
    #[case(Pass, &[Fail], Class::Fixed)]
    #[case(Pass, &[Xfail], Class::Fixed)]
    #[case(Skip, &[Fail], Class::Changed)]
    #[case(Skip, &[Pass], Class::Changed)]
    #[case(Pass, &[Skip], Class::Changed)]
    #[case(Pass, &[], Class::New)]
    #[case(Fail, &[], Class::Regression)]
    fn classification(#[case] now: Verdict, #[case] expected: &[Verdict], #[case] want: Class) {
        assert_eq!(classify(now, expected), want);
    }

    const FILE: &str = r#"
        [[expect]]
        test = "a3.msix_hole"
        kernels = ["debian:trixie"]
        verdict = "pass"
        reason = "6.12 THP accident"

        [[expect]]
        test = "a*"
        kernels = ["debian:*", "stock"]
        verdict = "xfail"
        reason = "no placement"

        [[expect]]
        test = "f6.munmap_pud_unaligned"
        verdict = "fail"
        crash = true
        reason = "oops"
        link = "docs/findings/pud-split-oops.md"
    "#;

    fn file() -> Expectations {
        toml::from_str(FILE).unwrap()
    }

    #[rstest]
    #[case("debian:trixie", "a3.msix_hole", Some(&[Pass][..]))]
    #[case("debian:sid", "a3.msix_hole", Some(&[Xfail][..]))]
    #[case("stock", "a1.whole_bar", Some(&[Xfail][..]))]
    #[case("reference", "a1.whole_bar", None)]
    #[case("reference", "f6.munmap_pud_unaligned", Some(&[Fail][..]))]
    #[case("debian:sid", "f1.case_table", None)]
    fn first_matching_entry_applies(
        #[case] kernel: &str,
        #[case] test: &str,
        #[case] want: Option<&[Verdict]>,
    ) {
        let kb = file().for_kernel(kernel);
        assert_eq!(kb.expect(test).map(|e| e.verdicts.as_slice()), want);
    }

    #[test]
    fn link_is_part_of_the_note() {
        let kb = file().for_kernel("x");
        let e = kb.expect("f6.munmap_pud_unaligned").unwrap();
        assert_eq!(e.note, "oops (docs/findings/pud-split-oops.md)");
        assert!(e.crash);
    }

    fn run(tests: &[(&str, Verdict)], crash_during: Option<&str>) -> SavedRun {
        let json = serde_json::json!({
            "kernel": {"spec": "debian:sid"},
            "outcome": {"status": if crash_during.is_some() {"kernel_crashed"} else {"completed"}},
            "tests": tests.iter().map(|(n, v)| serde_json::json!({"name": n, "result": v})).collect::<Vec<_>>(),
            "kernel_reports": crash_during.iter().map(|t| serde_json::json!({"kind": "oops", "during_test": t})).collect::<Vec<_>>(),
        });
        serde_json::from_value(json).unwrap()
    }

    #[rstest]
    #[case(&[("f1.a", Pass), ("f6.munmap_pud_unaligned", Fail)], Some("f6.munmap_pud_unaligned"), FixedIs::Ok, 0)]
    #[case(&[("f1.a", Fail)], None, FixedIs::Ok, 1)]
    #[case(&[("f1.a", Pass), ("f1.b", Fail)], Some("f1.b"), FixedIs::Ok, 3)]
    #[case(&[("f6.munmap_pud_unaligned", Pass)], None, FixedIs::Ok, 0)]
    #[case(&[("f6.munmap_pud_unaligned", Pass)], None, FixedIs::Fail, 1)]
    #[case(&[("a1.whole_bar", Xfail)], None, FixedIs::Fail, 0)]
    // A verdict the file does not name: news, but a failure only when exact.
    #[case(&[("a1.whole_bar", Skip)], None, FixedIs::Ok, 0)]
    #[case(&[("a1.whole_bar", Skip)], None, FixedIs::Fail, 1)]
    #[case(&[], None, FixedIs::Ok, 125)]
    fn exit_status_against_expectations(
        #[case] tests: &[(&str, Verdict)],
        #[case] crash: Option<&str>,
        #[case] fixed_is: FixedIs,
        #[case] want: u8,
    ) {
        let j = judge(&file().for_kernel("debian:sid"), &run(tests, crash));
        assert_eq!(j.exit_status(fixed_is), want, "{j:?}");
    }

    #[test]
    fn a_saved_run_as_baseline_sees_new_and_removed_tests() {
        let before = run(&[("a", Pass), ("b", Fail), ("gone", Pass)], Some("b"));
        let now = run(&[("a", Fail), ("b", Fail), ("fresh", Pass)], Some("b"));
        let j = judge(&KernelBaseline::of_run(&before), &now);
        let classes: Vec<_> = j.tests.iter().map(|t| (t.test.as_str(), t.class)).collect();
        assert_eq!(
            classes,
            [
                ("a", Class::Regression),
                ("b", Class::Known),
                ("fresh", Class::New),
                ("gone", Class::Removed)
            ]
        );
        assert_eq!(j.crash, Crash::Known(vec!["b".into()]));
        assert_eq!(j.exit_status(FixedIs::Ok), 1);
    }

    #[test]
    fn bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.toml");
        std::fs::write(
            &p,
            "[[expect]]\ntest = \"x\"\nverdict = []\nreason = \"r\"\n",
        )
        .unwrap();
        let e = Baseline::load(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("e.toml: entry 1 (test \"x\"): empty `verdict` list"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[[expect]]\ntest = \"x\"\nverdict = \"maybe\"\nreason = \"r\"\n",
        )
        .unwrap();
        let e = Baseline::load(&p).unwrap_err().to_string();
        assert!(e.contains("e.toml is not a valid expectations file"), "{e}");
        std::fs::write(
            &p,
            "[[expect]]\ntest = \"x\"\nverdict = \"fail\"\nreasn = \"r\"\n",
        )
        .unwrap();
        let e = Baseline::load(&p).unwrap_err().to_string();
        assert!(e.contains("reasn"), "{e}");
    }
}
