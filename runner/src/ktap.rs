//! Parsing of the KTAP stream the guest test binary prints on its own serial port.
//!
//! The parser is incremental ([`Parser::feed_line`]) so the runner knows which
//! test is in flight while the guest runs, and tolerant: a line it does not
//! understand is kept as a diagnostic rather than aborting the run.

use crate::layout::MappingLayout;
use protocol::ktap::layout::Layout;
use protocol::ktap::Directive;
use serde::{Deserialize, Serialize};

/// The verdict of one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// `ok` without directive.
    Pass,
    /// `not ok` without directive.
    Fail,
    /// `# SKIP` directive.
    Skip,
    /// `ok ... # XFAIL` (as kselftest's `ksft_test_result_xfail` prints it) or
    /// `not ok ... # XFAIL`: failed as expected.
    Xfail,
    /// `ok ... # XPASS`: passed though a failure was expected.
    Xpass,
}

/// One parsed test result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// Test number from the result line.
    #[serde(skip)]
    pub number: u32,
    /// Test name.
    pub name: String,
    /// Verdict, directives applied.
    pub result: Verdict,
    /// Why it failed or was skipped, in one line: the directive's reason, the
    /// failing check's diagnostic, or the kernel-log line that failed it (never
    /// a timing line); empty for a plain pass.
    pub reason: String,
    /// Diagnostic lines printed before the result line, and the directive's reason.
    pub diagnostic: String,
    /// Kernel-log lines printed while it ran that failed it (see [`crate::klog`]).
    pub kernel_log: Vec<String>,
    /// The IDs of the rules it checks (docs/RULES.md), as the guest binary
    /// declares them; empty when unknown (a saved stream read by `parse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The mappings it measured (its `# layout:` diagnostics), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layouts: Vec<MappingLayout>,
}

impl TestResult {
    /// A result built by the runner itself (not read from KTAP); its reason is
    /// picked from `diagnostic` as for a parsed result.
    pub fn new(name: &str, result: Verdict, diagnostic: &str) -> Self {
        let lines: Vec<&str> = diagnostic.lines().collect();
        TestResult {
            number: 0,
            name: name.to_string(),
            result,
            reason: reason(name, result, "", &lines),
            diagnostic: diagnostic.to_string(),
            kernel_log: Vec::new(),
            rules: Vec::new(),
            layouts: Vec::new(),
        }
    }
}

/// The one line that says why test `name` got `verdict`.
///
/// A skip or expected failure states its reason in the directive. A failure's
/// reason is the harness's `NAME: what failed` line, else the last diagnostic
/// line; the `NAME: 0.016 s` timing line says nothing about why and is never
/// picked; a bare directive (`TIMEOUT`) is the last resort.
fn reason(name: &str, verdict: Verdict, directive: &str, diag: &[&str]) -> String {
    if verdict == Verdict::Pass {
        return String::new();
    }
    let directive = directive.trim();
    let skipped = matches!(verdict, Verdict::Skip | Verdict::Xfail | Verdict::Xpass);
    if skipped && !directive.is_empty() {
        return directive.to_string();
    }
    let prefix = format!("{name}: ");
    // Searched from the end: the harness prints the failing check last.
    let mut telling = diag
        .iter()
        .rev()
        .copied()
        .filter(|l| !is_timing(l, &prefix));
    let named = telling.clone().find_map(|l| l.strip_prefix(&prefix));
    named
        .or_else(|| telling.find(|l| !l.trim().is_empty()))
        .unwrap_or(directive)
        .to_string()
}

/// Whether `line` is the harness's timing diagnostic `NAME: 0.016 s`.
fn is_timing(line: &str, prefix: &str) -> bool {
    line.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(" s"))
        .is_some_and(|secs| secs.parse::<f64>().is_ok())
}

/// A `# heartbeat NAME SECONDS` diagnostic: the guest binary's parent is
/// alive and test NAME has run for SECONDS. It says nothing about the test's
/// verdict and is never one of its diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The test running.
    pub test: String,
    /// Whole seconds since it started.
    pub seconds: u64,
}

/// The heartbeat `line` (a whole KTAP line) is, if it is one.
pub fn heartbeat(line: &str) -> Option<Heartbeat> {
    let rest = line.strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix(protocol::kmsg::HEARTBEAT)?;
    let (test, seconds) = rest.trim_end().rsplit_once(' ')?;
    let test = test.trim();
    if test.is_empty() || test.contains(char::is_whitespace) {
        return None;
    }
    Some(Heartbeat {
        test: test.to_string(),
        seconds: seconds.parse().ok()?,
    })
}

/// Incremental KTAP parser for the top-level test list.
#[derive(Debug, Default)]
pub struct Parser {
    saw_version: bool,
    plan: Option<u32>,
    in_flight: Option<String>,
    last_heartbeat: Option<Heartbeat>,
    pending_diag: Vec<String>,
    pending_layouts: Vec<MappingLayout>,
    results: Vec<TestResult>,
}

impl Parser {
    /// Creates an empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (without its newline). Returns the result it completed, if any.
    pub fn feed_line(&mut self, raw: &str) -> Option<&TestResult> {
        let line = raw.trim_end_matches(['\r', '\n']);
        if line.starts_with("TAP version") || line.starts_with("KTAP version") {
            self.saw_version = true;
            return None;
        }
        if let Some(n) = line.strip_prefix("1..") {
            self.plan = n.trim().parse().ok();
            return None;
        }
        if is_printk(line) {
            // Kernel messages interleaved in a saved serial log are not KTAP.
            return None;
        }
        if let Some(beat) = heartbeat(line) {
            // Liveness only: kept out of the diagnostics, so a saved stream
            // with beats is judged as one without them.
            self.last_heartbeat = Some(beat);
            return None;
        }
        if let Some(diag) = line.strip_prefix('#') {
            let diag = diag.trim_start();
            // kselftest_harness announces each test: "#  RUN           name ...".
            if let Some(name) = diag.strip_prefix("RUN ") {
                self.in_flight = Some(name.trim().trim_end_matches("...").trim().to_string());
            } else if let Some(Ok(layout)) = Layout::parse(diag) {
                // Data, not prose: kept out of the diagnostics (and so of the
                // reason); a malformed one stays a diagnostic.
                self.pending_layouts.push(MappingLayout::from(&layout));
            } else {
                self.pending_diag.push(diag.to_string());
            }
            return None;
        }
        // Subtest lines are indented; keep them as diagnostics of the enclosing test.
        if line.starts_with(' ') || line.starts_with('\t') {
            self.pending_diag.push(line.trim().to_string());
            return None;
        }
        match parse_result_line(line) {
            Some(mut result) => {
                let mut diag = std::mem::take(&mut self.pending_diag);
                let directive = std::mem::take(&mut result.diagnostic);
                let lines: Vec<&str> = diag.iter().map(String::as_str).collect();
                result.reason = reason(&result.name, result.result, &directive, &lines);
                if !directive.is_empty() {
                    diag.push(directive);
                }
                result.diagnostic = diag.join("\n");
                result.layouts = std::mem::take(&mut self.pending_layouts);
                self.in_flight = None;
                self.results.push(result);
                self.results.last()
            }
            None => {
                if !line.trim().is_empty() {
                    self.pending_diag.push(line.to_string());
                }
                None
            }
        }
    }

    /// Whether a `TAP version` / `KTAP version` header was seen.
    pub fn saw_version(&self) -> bool {
        self.saw_version
    }

    /// The test announced with a `RUN` line and not finished yet.
    pub fn in_flight(&self) -> Option<&str> {
        self.in_flight.as_deref()
    }

    /// The last heartbeat of the test in flight, if it beat.
    pub fn heartbeat_in_flight(&self) -> Option<&Heartbeat> {
        let beat = self.last_heartbeat.as_ref()?;
        (self.in_flight.as_deref() == Some(beat.test.as_str())).then_some(beat)
    }

    /// Why the stream falls short of its plan (or has none), if it does.
    pub fn shortfall(&self) -> Option<String> {
        let done = self.results.len();
        match self.plan {
            Some(plan) if plan as usize != done => Some(format!(
                "the KTAP stream ended after {done} of {plan} planned tests"
            )),
            Some(_) => None,
            None => Some(format!(
                "the KTAP stream has no plan line (it ended after {done} results)"
            )),
        }
    }

    /// Whether a version line and a plan were seen and the plan was met.
    pub fn complete(&self) -> bool {
        self.saw_version && self.plan.is_some() && self.shortfall().is_none()
    }

    /// Results so far, in order of arrival.
    pub fn results(&self) -> &[TestResult] {
        &self.results
    }

    /// Consumes the parser and returns the results.
    pub fn into_results(self) -> Vec<TestResult> {
        self.results
    }
}

/// Whether `line` is a kernel message with a printk timestamp (`[    1.234567] ...`).
fn is_printk(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    rest.split_once(']').is_some_and(|(stamp, _)| {
        let stamp = stamp.trim();
        !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    })
}

/// Parses `ok N name # DIRECTIVE reason` / `not ok N name ...`.
fn parse_result_line(line: &str) -> Option<TestResult> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number: u32 = num.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n.trim(), Some(d.trim())),
        None => (rest.trim().trim_end_matches(" #"), None),
    };
    let name = name.strip_prefix("- ").unwrap_or(name).to_string();
    let (result, reason) = apply_directive(ok, directive);
    Some(TestResult {
        number,
        name,
        result,
        reason: String::new(),
        diagnostic: reason,
        kernel_log: Vec::new(),
        rules: Vec::new(),
        layouts: Vec::new(),
    })
}

/// Maps the ok/not-ok flag and an optional directive to a verdict and reason.
fn apply_directive(ok: bool, directive: Option<&str>) -> (Verdict, String) {
    let Some(d) = directive else {
        return (
            if ok { Verdict::Pass } else { Verdict::Fail },
            String::new(),
        );
    };
    let (word, reason) = d.split_once(' ').unwrap_or((d, ""));
    let verdict = match Directive::parse(word) {
        Some(Directive::Skip) => Verdict::Skip,
        // kselftest prints an expected failure as `ok N # XFAIL reason`.
        Some(Directive::Xfail) => Verdict::Xfail,
        Some(Directive::Xpass) => Verdict::Xpass,
        // A timeout is a failure; its reason keeps the word.
        Some(Directive::Timeout) => Verdict::Fail,
        // TODO marks a known failure in TAP: an expected failure.
        None if word.eq_ignore_ascii_case("TODO") && !ok => Verdict::Xfail,
        None if ok => Verdict::Pass,
        None => Verdict::Fail,
    };
    let reason = if matches!(verdict, Verdict::Pass | Verdict::Fail) {
        d.to_string()
    } else {
        reason.trim().to_string()
    };
    (verdict, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("ok 1 setup.bind_vfio", Verdict::Pass, "setup.bind_vfio", "")]
    #[case(
        "not ok 2 content.offset_tags",
        Verdict::Fail,
        "content.offset_tags",
        ""
    )]
    #[case("ok 3 a # SKIP no huge pfnmap", Verdict::Skip, "a", "no huge pfnmap")]
    #[case("ok 3 a # skip lower case", Verdict::Skip, "a", "lower case")]
    #[case(
        "not ok 4 a3.msix_hole # XFAIL no placement",
        Verdict::Xfail,
        "a3.msix_hole",
        "no placement"
    )]
    #[case(
        "ok 5 b # XFAIL as kselftest prints it",
        Verdict::Xfail,
        "b",
        "as kselftest prints it"
    )]
    #[case("ok 6 b # XPASS", Verdict::Xpass, "b", "")]
    #[case(
        "not ok 7 c # TIMEOUT after 60s",
        Verdict::Fail,
        "c",
        "TIMEOUT after 60s"
    )]
    #[case("ok 8 - dashed name", Verdict::Pass, "dashed name", "")]
    #[case("not ok 9 d # TODO later", Verdict::Xfail, "d", "later")]
    // guest-tests puts a fixture's failure on each result; it is no directive.
    #[case(
        "not ok 3 f1.case_table # fixture setup failed: opening the device: EBUSY",
        Verdict::Fail,
        "f1.case_table",
        "fixture setup failed: opening the device: EBUSY"
    )]
    fn result_lines(
        #[case] line: &str,
        #[case] verdict: Verdict,
        #[case] name: &str,
        #[case] diag: &str,
    ) {
        let r = parse_result_line(line).expect("parses");
        assert_eq!(r.result, verdict);
        assert_eq!(r.name, name);
        assert_eq!(r.diagnostic, diag);
    }

    #[rstest]
    #[case("okay 1 x")]
    #[case("ok x name")]
    #[case("not ok")]
    #[case("[    1.234] ok 1 fake")]
    fn non_result_lines(#[case] line: &str) {
        assert!(parse_result_line(line).is_none());
    }

    /// The reason picked from what guest-tests prints before a result line.
    #[rstest]
    #[case::failed_check(
        &["#  RUN           f8.m ...", "# moved: counted 1", "# f8.m: moved: counted 1: PUD at +0x202000",
          "# f8.m: 0.016 s"],
        "not ok 33 f8.m",
        "moved: counted 1: PUD at +0x202000"
    )]
    #[case::skip_reason(&["# f1.p: 0.002 s"], "ok 9 f1.p # SKIP no CONFIG_PTDUMP_DEBUGFS", "no CONFIG_PTDUMP_DEBUGFS")]
    #[case::xfail_reason(&["# a1.w: 0.3 s"], "ok 1 a1.w # XFAIL 24 placements break it", "24 placements break it")]
    #[case::timeout(
        &["# f6.u: timed out after 5 s and survived SIGKILL (stuck in the kernel?)"],
        "not ok 44 f6.u # TIMEOUT",
        "timed out after 5 s and survived SIGKILL (stuck in the kernel?)"
    )]
    #[case::bare_directive(&["# f6.u: 5.000 s"], "not ok 44 f6.u # TIMEOUT", "TIMEOUT")]
    #[case::foreign_producer(&["# expected 1 got 2"], "not ok 2 f2.count", "expected 1 got 2")]
    #[case::only_timing(&["# f2.c: 0.010 s"], "not ok 2 f2.c", "")]
    #[case::pass(&["# f2.c: 0.010 s"], "ok 2 f2.c", "")]
    fn reasons(#[case] before: &[&str], #[case] result: &str, #[case] want: &str) {
        let mut p = Parser::new();
        p.feed_line("TAP version 13");
        for l in before {
            p.feed_line(l);
        }
        p.feed_line(result);
        assert_eq!(p.results()[0].reason, want);
    }

    #[test]
    fn run_lines_mark_the_test_in_flight() {
        let mut p = Parser::new();
        p.feed_line("TAP version 13");
        p.feed_line("#  RUN           f6.split_pud ...");
        assert_eq!(p.in_flight(), Some("f6.split_pud"));
        p.feed_line("# detail");
        p.feed_line("ok 1 f6.split_pud");
        assert_eq!(p.in_flight(), None);
        assert_eq!(p.results()[0].diagnostic, "detail");
    }

    #[rstest]
    #[case::well_formed(
        "# layout: bar=1 start=0x7f0000201000 len=0x3dff000 offset=0x201000 phys=0xe0201000 runs=pte*511:511/511=pte,pmd*30:30/30=pmd what=tail",
        1,
        ""
    )]
    #[case::malformed_stays_a_diagnostic("# layout: bar=1 runs=", 0, "layout: bar=1 runs=")]
    fn layout_lines_become_data(#[case] line: &str, #[case] layouts: usize, #[case] diag: &str) {
        let mut p = Parser::new();
        p.feed_line("TAP version 13");
        p.feed_line(line);
        p.feed_line("not ok 1 a3.msix_hole");
        let r = &p.results()[0];
        assert_eq!((r.layouts.len(), r.diagnostic.as_str()), (layouts, diag));
        if let Some(l) = r.layouts.first() {
            assert_eq!((l.expected.pte, l.expected.pmd, l.bar), (511, 30, 1));
            // A failure's reason is never the layout's data.
            assert_eq!(r.reason, "");
        }
    }

    #[rstest]
    #[case::plain("# heartbeat f6.split_pud 12", Some(("f6.split_pud", 12)))]
    #[case::zero("# heartbeat inject.slow 0", Some(("inject.slow", 0)))]
    #[case::no_space_after_hash("#heartbeat a.b 4", Some(("a.b", 4)))]
    #[case::carriage_return("# heartbeat a.b 4\r", Some(("a.b", 4)))]
    #[case::no_seconds("# heartbeat a.b", None)]
    #[case::bad_seconds("# heartbeat a.b 1.5", None)]
    #[case::negative("# heartbeat a.b -1", None)]
    #[case::two_names("# heartbeat a b 3", None)]
    #[case::not_a_diagnostic("heartbeat a.b 3", None)]
    #[case::other_diagnostic("# heartbeats are fine 3", None)]
    #[case::printk("[    1.0] # heartbeat a.b 3", None)]
    fn heartbeat_lines(#[case] line: &str, #[case] want: Option<(&str, u64)>) {
        let got = heartbeat(line.trim_end_matches('\r'));
        let want = want.map(|(test, seconds)| Heartbeat {
            test: test.into(),
            seconds,
        });
        assert_eq!(got, want);
    }

    #[rstest]
    #[case::before_diagnostics(&["# heartbeat t 2", "# t: counted 3"], "not ok 1 t", "counted 3", "t: counted 3")]
    #[case::last_line(&["# t: counted 3", "# heartbeat t 2"], "not ok 1 t", "counted 3", "t: counted 3")]
    #[case::only_beats(&["# heartbeat t 2", "# heartbeat t 4"], "not ok 1 t # TIMEOUT", "TIMEOUT", "TIMEOUT")]
    #[case::pass(&["# heartbeat t 2"], "ok 1 t", "", "")]
    fn heartbeats_change_no_verdict_reason_or_diagnostic(
        #[case] before: &[&str],
        #[case] result: &str,
        #[case] reason: &str,
        #[case] diagnostic: &str,
    ) {
        let mut p = Parser::new();
        p.feed_line("TAP version 13");
        p.feed_line("1..1");
        p.feed_line("#  RUN           t ...");
        for l in before {
            p.feed_line(l);
        }
        assert_eq!(p.heartbeat_in_flight().map(|b| b.test.as_str()), Some("t"));
        p.feed_line(result);
        assert!(p.complete());
        assert_eq!(p.heartbeat_in_flight(), None);
        let r = &p.results()[0];
        assert_eq!(
            (r.reason.as_str(), r.diagnostic.as_str()),
            (reason, diagnostic)
        );
    }

    #[test]
    fn shortfall_and_completeness() {
        let mut p = Parser::new();
        p.feed_line("TAP version 13");
        p.feed_line("1..2");
        p.feed_line("ok 1 a");
        assert_eq!(
            p.shortfall().as_deref(),
            Some("the KTAP stream ended after 1 of 2 planned tests")
        );
        assert!(!p.complete());
        p.feed_line("ok 2 b");
        assert_eq!(p.shortfall(), None);
        assert!(p.complete());
    }

    /// Every test of a group whose fixture failed fails with the fixture's reason,
    /// not only the first (whose diagnostics hold it too).
    #[test]
    fn a_fixture_failure_is_each_tests_reason() {
        let mut p = Parser::new();
        for l in [
            "TAP version 13",
            "1..2",
            "# fixture setup failed: opening the device: EBUSY",
            "not ok 1 setup.bind_vfio # fixture setup failed: opening the device: EBUSY",
            "not ok 2 f1.case_table # fixture setup failed: opening the device: EBUSY",
        ] {
            p.feed_line(l);
        }
        for r in p.into_results() {
            assert_eq!(r.result, Verdict::Fail, "{r:?}");
            assert_eq!(
                r.reason, "fixture setup failed: opening the device: EBUSY",
                "{r:?}"
            );
        }
    }

    #[test]
    fn stream_with_diagnostics_and_noise() {
        let stream = "\
TAP version 13
1..3
# setup: found 0000:00:03.0
ok 1 setup.bind_vfio
# expected 2 faults
# actual 3 faults
not ok 2 fault_order.pud_aligned
garbage line
  ok 1 sub
ok 3 fault_order.unaligned # SKIP not supported
";
        let mut p = Parser::new();
        for l in stream.lines() {
            p.feed_line(l);
        }
        assert!(p.saw_version());
        assert!(p.complete());
        let r = p.into_results();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].diagnostic, "setup: found 0000:00:03.0");
        assert_eq!(r[1].result, Verdict::Fail);
        assert_eq!(r[1].diagnostic, "expected 2 faults\nactual 3 faults");
        assert_eq!(r[2].result, Verdict::Skip);
        assert_eq!(r[2].diagnostic, "garbage line\nok 1 sub\nnot supported");
    }
}
