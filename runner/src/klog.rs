//! The kernel log, judged per test.
//!
//! A test whose own counts are right can still make the kernel complain: a
//! `bad pud` from a page-table walk, a `WARNING:`, a `BUG: Bad page map`. Such
//! a line printed while the test ran fails the test. [`classify`] says which
//! console lines are such complaints; [`Attributor`] says which test a line was
//! printed during, from the markers the guest test binary writes to the kernel
//! log around each test (`bigbar: begin NAME`, `bigbar: end NAME`); [`judge`]
//! turns that into verdicts. Lines outside any test are kept apart: they fail
//! no test.
//!
//! The markers, not the KTAP stream, delimit the tests: KTAP arrives on its own
//! serial port, so whether a `RUN` line or a printk reaches the runner first is
//! a race, while the markers are in order with the kernel's own messages. A
//! saved `console.log` holds them too, so `runner parse` judges alike.

use crate::console::KernelReport;
use crate::ktap::{TestResult, Verdict};
use serde::Serialize;

pub use protocol::kmsg::{BEGIN_MARKER, END_MARKER};

/// The prefix of a test's reason when the kernel log decided its verdict.
pub const REASON_PREFIX: &str = "[kernel log] ";

/// What a kernel-log line reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `Kernel panic - not syncing`.
    Panic,
    /// `Oops:`, `general protection fault`, `Unable to handle kernel ...`.
    Oops,
    /// `BUG: ...` (not one of the kinds below) or `kernel BUG at`.
    Bug,
    /// `WARNING:`.
    Warning,
    /// `FILE:LINE: bad pgd/p4d/pud/pmd/pte ...`: a page-table walk met an entry
    /// it took for corrupt (and cleared it).
    BadPageTable,
    /// `BUG: Bad page map` / `BUG: Bad page state`.
    BadPage,
    /// `BUG: Bad rss-counter`: an mm's page counters did not add up at exit.
    BadRssCounter,
    /// A soft or hard lockup detected by the watchdog.
    Lockup,
    /// `INFO: task ... blocked for more than ...`.
    HungTask,
    /// An RCU stall report.
    RcuStall,
    /// A sanitizer report: `UBSAN:`, `BUG: KASAN:`, KFENCE, KCSAN, KMSAN.
    Sanitizer,
    /// `list_add corruption` and the like from the list debugging checks.
    Corruption,
}

/// The message of a console line: without the printk timestamp `[    1.234567] `
/// and the caller field `[    T1] ` some kernels add.
pub fn message(line: &str) -> &str {
    let mut msg = line.trim_end_matches(['\r', '\n']);
    while let Some(rest) = msg.trim_start().strip_prefix('[') {
        let Some((field, after)) = rest.split_once(']') else {
            break;
        };
        let field = field.trim();
        let stamp = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let caller = field.len() > 1
            && matches!(field.as_bytes()[0], b'T' | b'C')
            && field[1..].bytes().all(|b| b.is_ascii_digit());
        if !(stamp || caller) {
            break;
        }
        msg = after.strip_prefix(' ').unwrap_or(after);
    }
    msg
}

/// Message prefixes and what they report, most specific first (`BUG: Bad page
/// map` before `BUG:`).
const PREFIXES: &[(&str, Kind)] = &[
    ("Kernel panic - not syncing", Kind::Panic),
    ("BUG: Bad page map", Kind::BadPage),
    ("BUG: Bad page state", Kind::BadPage),
    ("BUG: Bad rss-counter", Kind::BadRssCounter),
    ("BUG: KASAN:", Kind::Sanitizer),
    ("BUG: KFENCE:", Kind::Sanitizer),
    ("BUG: KCSAN:", Kind::Sanitizer),
    ("BUG: KMSAN:", Kind::Sanitizer),
    ("BUG: soft lockup", Kind::Lockup),
    ("BUG: workqueue lockup", Kind::Lockup),
    ("watchdog: BUG: soft lockup", Kind::Lockup),
    ("watchdog: Watchdog detected hard LOCKUP", Kind::Lockup),
    ("BUG:", Kind::Bug),
    ("kernel BUG at", Kind::Bug),
    ("Oops:", Kind::Oops),
    ("general protection fault", Kind::Oops),
    ("Unable to handle kernel", Kind::Oops),
    ("WARNING:", Kind::Warning),
    ("UBSAN:", Kind::Sanitizer),
    ("list_add corruption", Kind::Corruption),
    ("list_del corruption", Kind::Corruption),
];

/// The page-table levels `pXX_ERROR` names in its `bad pXX` message.
const TABLE_LEVELS: [&str; 5] = ["pgd", "p4d", "pud", "pmd", "pte"];

/// Whether the kernel-log line `line` reports kernel trouble, and what kind.
///
/// Anchored at the start of the message, so a test's own diagnostic that merely
/// mentions "BUG:" (guest-tests' stderr also reaches the console) is no report.
pub fn classify(line: &str) -> Option<Kind> {
    let msg = message(line);
    if let Some(&(_, kind)) = PREFIXES.iter().find(|(p, _)| msg.starts_with(p)) {
        return Some(kind);
    }
    if msg.starts_with("INFO: task ") && msg.contains(" blocked for more than ") {
        return Some(Kind::HungTask);
    }
    if (msg.starts_with("rcu: INFO: ") || msg.starts_with("INFO: rcu")) && msg.contains("stall") {
        return Some(Kind::RcuStall);
    }
    bad_table_entry(msg).then_some(Kind::BadPageTable)
}

/// `mm/pgtable-generic.c:44: bad pud 00000000abcd(0000000f80000e7)`: a source
/// location, then `bad` and a page-table level.
fn bad_table_entry(msg: &str) -> bool {
    let Some((location, rest)) = msg.split_once(": bad ") else {
        return false;
    };
    let located = location.rsplit_once(':').is_some_and(|(file, line)| {
        !file.is_empty() && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit())
    });
    located
        && TABLE_LEVELS
            .iter()
            .any(|l| rest.strip_prefix(l).is_some_and(|r| r.starts_with(' ')))
}

/// A kernel-log line that reports trouble, and where in the run it was printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it reports.
    pub kind: Kind,
    /// The line as printed (timestamp kept).
    pub line: String,
    /// The test whose markers enclose it; `None` outside any test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// For a line outside tests: the last test that ended before it (`None`:
    /// before the first test of its boot).
    pub after: Option<String>,
    /// The boot it was printed in (set when a run's boots are combined).
    pub boot: usize,
}

/// Follows the test markers on the console and collects the findings.
#[derive(Debug, Default)]
pub struct Attributor {
    current: Option<String>,
    last_ended: Option<String>,
    findings: Vec<Finding>,
}

impl Attributor {
    /// An attributor before any console line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one console line; returns the test it was printed during, if any.
    pub fn feed_line(&mut self, line: &str) -> Option<&str> {
        let msg = message(line);
        if let Some(name) = msg.strip_prefix(BEGIN_MARKER) {
            self.current = Some(name.trim().to_string());
        } else if let Some(name) = msg.strip_prefix(END_MARKER) {
            // The end marker names its test; trust it over a lost begin marker.
            self.current = None;
            self.last_ended = Some(name.trim().to_string());
        } else if let Some(kind) = classify(line) {
            self.findings.push(Finding {
                kind,
                line: line.trim_end_matches(['\r', '\n']).to_string(),
                test: self.current.clone(),
                after: self
                    .current
                    .is_none()
                    .then(|| self.last_ended.clone())
                    .flatten(),
                boot: 0,
            });
        }
        self.current.as_deref()
    }

    /// Consumes the attributor, returning its findings.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}

/// Fails every test of `tests` during which `findings` were printed, with the
/// offending lines (and the full text of `reports` printed during it) in its
/// diagnostic and a [`REASON_PREFIX`] reason; a test that failed already keeps
/// failing and gains them. Returns the findings no test of `tests` owns (those
/// outside tests, and those of a test without a result).
pub fn judge(
    tests: &mut [TestResult],
    findings: Vec<Finding>,
    reports: &[KernelReport],
) -> Vec<Finding> {
    let mut unowned = Vec::new();
    for f in findings {
        match f
            .test
            .as_deref()
            .and_then(|n| tests.iter_mut().find(|t| t.name == n))
        {
            Some(t) => t.kernel_log.push(f.line),
            None => unowned.push(f),
        }
    }
    for t in tests.iter_mut().filter(|t| !t.kernel_log.is_empty()) {
        fail_by_kernel_log(t, reports);
    }
    unowned
}

/// Turns `t`, whose `kernel_log` is set, into a failure the kernel log explains.
fn fail_by_kernel_log(t: &mut TestResult, reports: &[KernelReport]) {
    t.result = Verdict::Fail;
    t.reason = format!("{REASON_PREFIX}{}", message(&t.kernel_log[0]));
    let texts: Vec<&str> = reports
        .iter()
        .filter(|r| r.during_test.as_deref() == Some(t.name.as_str()))
        .map(|r| r.text.as_str())
        .collect();
    let lone = t
        .kernel_log
        .iter()
        .map(String::as_str)
        .filter(|l| !texts.iter().any(|x| x.contains(l)));
    let evidence: Vec<&str> = texts
        .iter()
        .copied()
        .chain(lone)
        .filter(|e| !t.diagnostic.contains(e))
        .collect();
    if evidence.is_empty() {
        return; // a crash report already carries them
    }
    if !t.diagnostic.is_empty() {
        t.diagnostic.push('\n');
    }
    t.diagnostic
        .push_str("kernel log during this test (fails it):\n");
    t.diagnostic.push_str(&evidence.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::TroubleKind;
    use rstest::rstest;

    #[rstest]
    #[case(
        "[    7.442449] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)",
        Some(Kind::BadPageTable)
    )]
    #[case(
        "[    1.0] mm/pgtable-generic.c:53: bad pmd 00000000abcd(0000000f80000e7)",
        Some(Kind::BadPageTable)
    )]
    #[case(
        "[    1.0] arch/x86/mm/pgtable.c:12: bad pte 0000(0000000000000001)",
        Some(Kind::BadPageTable)
    )]
    #[case(
        "[    1.0] mm/pgtable-generic.c:30: bad pgd 0(1)",
        Some(Kind::BadPageTable)
    )]
    #[case(
        "[    5.1] BUG: Bad page map in process guest-tests  pte:8000000f80000227 pmd:0",
        Some(Kind::BadPage)
    )]
    #[case(
        "[    5.1] BUG: Bad page state in process guest-tests  pfn:f80000",
        Some(Kind::BadPage)
    )]
    #[case(
        "[    5.1] BUG: Bad rss-counter state mm:0000000012345678 type:MM_FILEPAGES val:-512",
        Some(Kind::BadRssCounter)
    )]
    #[case(
        "[    8.152522] BUG: unable to handle page fault for address: ffbd44c470000028",
        Some(Kind::Bug)
    )]
    #[case("[    8.153585] Oops: Oops: 0000 [#1] SMP NOPTI", Some(Kind::Oops))]
    #[case(
        "[    3.0] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]",
        Some(Kind::Oops)
    )]
    #[case("[ 2.0] kernel BUG at mm/huge_memory.c:2000!", Some(Kind::Bug))]
    #[case(
        "[    2.0] Unable to handle kernel paging request at virtual address 0",
        Some(Kind::Oops)
    )]
    #[case(
        "[    3.1] WARNING: CPU: 0 PID: 223 at mm/memory.c:1234 remap_pfn_range+0x1/0x2",
        Some(Kind::Warning)
    )]
    #[case(
        "[   48.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [guest-tests:223]",
        Some(Kind::Lockup)
    )]
    #[case(
        "[   48.0] watchdog: Watchdog detected hard LOCKUP on cpu 1",
        Some(Kind::Lockup)
    )]
    #[case(
        "[  242.0] INFO: task guest-tests:223 blocked for more than 120 seconds.",
        Some(Kind::HungTask)
    )]
    #[case(
        "[   60.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
        Some(Kind::RcuStall)
    )]
    #[case(
        "[   60.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
        Some(Kind::RcuStall)
    )]
    #[case(
        "[    4.0] UBSAN: array-index-out-of-bounds in mm/memory.c:100:5",
        Some(Kind::Sanitizer)
    )]
    #[case(
        "[    4.0] BUG: KASAN: slab-use-after-free in vfio_pci_mmap_huge_fault+0x1/0x2",
        Some(Kind::Sanitizer)
    )]
    #[case(
        "[    4.0] list_add corruption. prev->next should be next (ff11), but was 0",
        Some(Kind::Corruption)
    )]
    #[case(
        "[    9.0] Kernel panic - not syncing: Fatal exception",
        Some(Kind::Panic)
    )]
    #[case(
        "[    1.0][    T1] WARNING: CPU: 0 PID: 1 at x.c:1 f",
        Some(Kind::Warning)
    )]
    #[case(
        "WARNING: CPU: 0 PID: 1 at x.c:1 f (a log without timestamps)",
        Some(Kind::Warning)
    )]
    #[case("[    3.6] vfio-pci 0000:00:01.0: resetting", None)]
    #[case("[    0.1] Spectre V2 : Mitigation: Enhanced / Automatic IBRS", None)]
    #[case("[    0.2] ACPI: PM-Timer IO Port: 0x608", None)]
    #[case("[    8.1] #PF: supervisor read access in kernel mode", None)]
    #[case("[    8.1] RIP: 0010:_raw_spin_lock+0x17/0x30", None)]
    #[case("[    7.4] bigbar: begin f8.mremap_move_pud_congruent", None)]
    #[case("guest-tests: the check said: bad pud handling", None)]
    #[case("# f8.x: WARNING: in a KTAP diagnostic is not the kernel's", None)]
    #[case("[    1.0] mm: the word bad pud in prose: no location", None)]
    #[case("[    1.0] foo.c:x: bad pud 0(0)", None)]
    #[case("[    1.0] foo.c:1: bad pudding", None)]
    fn classification(#[case] line: &str, #[case] kind: Option<Kind>) {
        assert_eq!(classify(line), kind);
    }

    #[rstest]
    #[case("[    1.234567] msg", "msg")]
    #[case("[    1.2][    T42] msg", "msg")]
    #[case("[    1.2] [C0] msg", "msg")]
    #[case("[not a stamp] msg", "[not a stamp] msg")]
    #[case("msg\r", "msg")]
    fn messages(#[case] line: &str, #[case] msg: &str) {
        assert_eq!(message(line), msg);
    }

    /// The console of debian:sid 7.2.13 around its two findings, markers added.
    const SID_CONSOLE: &str = "\
[    3.114130] Run /init as init process
[    3.200000] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 probe+0x1/0x2
[    3.600000] bigbar: begin setup.bind_vfio
[    3.603876] vfio-pci 0000:00:01.0: resetting
[    3.700000] bigbar: end setup.bind_vfio
[    7.440000] bigbar: begin f8.mremap_move_pud_congruent
[    7.442449] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)
[    7.450000] bigbar: end f8.mremap_move_pud_congruent
[    7.500000] UBSAN: shift-out-of-bounds in between.c:1:1
[    8.100000] bigbar: begin f6.munmap_pud_unaligned
[    8.152522] BUG: unable to handle page fault for address: ffbd44c470000028
[    8.152899] #PF: supervisor read access in kernel mode
[    8.153585] Oops: Oops: 0000 [#1] SMP NOPTI
[    8.166537] ---[ end trace 0000000000000000 ]---
[   14.000000] bigbar: end f6.munmap_pud_unaligned
";

    fn attribute(console: &str) -> Vec<(Option<String>, Kind, Option<String>)> {
        let mut a = Attributor::new();
        for l in console.lines() {
            a.feed_line(l);
        }
        a.into_findings()
            .into_iter()
            .map(|f| (f.test, f.kind, f.after))
            .collect()
    }

    #[test]
    fn markers_attribute_lines_to_tests_and_the_rest_is_outside() {
        let name = |s: &str| Some(s.to_string());
        assert_eq!(
            attribute(SID_CONSOLE),
            [
                (None, Kind::Warning, None),
                (
                    name("f8.mremap_move_pud_congruent"),
                    Kind::BadPageTable,
                    None
                ),
                (None, Kind::Sanitizer, name("f8.mremap_move_pud_congruent")),
                (name("f6.munmap_pud_unaligned"), Kind::Bug, None),
                (name("f6.munmap_pud_unaligned"), Kind::Oops, None),
            ]
        );
    }

    #[rstest]
    #[case::no_markers("[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f\n", None)]
    #[case::after_the_end(
        "[ 1.0] bigbar: begin a\n[ 1.1] bigbar: end a\n[ 1.2] BUG: Bad rss-counter state\n",
        None
    )]
    #[case::begin_without_end(
        "[ 1.0] bigbar: begin a\n[ 1.2] BUG: Bad page map in process x\n",
        Some("a")
    )]
    #[case::next_begin_moves_on(
        "[ 1.0] bigbar: begin a\n[ 1.1] bigbar: begin b\n[ 1.2] BUG: Bad page map in process x\n",
        Some("b")
    )]
    fn attribution(#[case] console: &str, #[case] test: Option<&str>) {
        let got = attribute(console);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0.as_deref(), test);
    }

    fn result(name: &str, verdict: Verdict, diagnostic: &str) -> TestResult {
        TestResult::new(name, verdict, diagnostic)
    }

    fn judged(console: &str, tests: &mut [TestResult]) -> Vec<Finding> {
        let mut a = Attributor::new();
        let mut w = crate::console::Watcher::new();
        for l in console.lines() {
            let during = a.feed_line(l).map(str::to_string);
            w.feed_line(l, during.as_deref());
        }
        judge(tests, a.into_findings(), &w.into_reports())
    }

    #[test]
    fn a_passing_test_fails_by_the_kernel_log_and_says_so() {
        let mut tests = [
            result("setup.bind_vfio", Verdict::Pass, ""),
            result(
                "f8.mremap_move_pud_congruent",
                Verdict::Pass,
                "f8.x: 0.016 s",
            ),
            result("f6.munmap_pud_unaligned", Verdict::Skip, "no PUD"),
        ];
        let outside = judged(SID_CONSOLE, &mut tests);
        assert_eq!(tests[0].result, Verdict::Pass);
        assert!(tests[0].kernel_log.is_empty());
        let f8 = &tests[1];
        assert_eq!(f8.result, Verdict::Fail);
        assert_eq!(
            f8.reason,
            "[kernel log] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)"
        );
        assert_eq!(f8.kernel_log.len(), 1);
        assert!(f8
            .diagnostic
            .starts_with("f8.x: 0.016 s\nkernel log during"));
        assert!(f8
            .diagnostic
            .ends_with("bad pud 000000003ad0a0f5(800000f8400002b7)"));
        // Even a skipped test fails when the kernel complained while it ran;
        // the oops is attached whole, once.
        let f6 = &tests[2];
        assert_eq!(f6.result, Verdict::Fail);
        assert!(f6
            .reason
            .starts_with("[kernel log] BUG: unable to handle page fault"));
        assert_eq!(f6.kernel_log.len(), 2);
        assert!(f6.diagnostic.contains("#PF: supervisor read access"));
        assert_eq!(f6.diagnostic.matches("Oops: Oops").count(), 1);
        let kinds: Vec<Kind> = outside.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [Kind::Warning, Kind::Sanitizer]);
    }

    #[test]
    fn a_failed_test_keeps_failing_and_gains_the_lines() {
        let diag = "f8.mremap_move_pud_congruent: expected 0 refaults, counted 1";
        let mut tests = [result("f8.mremap_move_pud_congruent", Verdict::Fail, diag)];
        judged(SID_CONSOLE, &mut tests);
        assert_eq!(tests[0].result, Verdict::Fail);
        assert!(tests[0]
            .reason
            .starts_with("[kernel log] mm/pgtable-generic.c:44: bad pud"));
        assert!(tests[0].diagnostic.starts_with(diag));
        assert!(tests[0].diagnostic.contains("bad pud"));
    }

    #[test]
    fn a_crash_report_already_in_the_diagnostic_is_not_repeated() {
        let report = KernelReport {
            kind: TroubleKind::Panic,
            text: "[ 3.0] Kernel panic - not syncing: sysrq".into(),
            during_test: Some("inject.panic".into()),
        };
        let mut tests = [result(
            "inject.panic",
            Verdict::Fail,
            "the kernel crashed during this test\n[ 3.0] Kernel panic - not syncing: sysrq",
        )];
        let before = tests[0].diagnostic.clone();
        let f = Finding {
            kind: Kind::Panic,
            line: report.text.clone(),
            test: Some("inject.panic".into()),
            after: None,
            boot: 1,
        };
        assert!(judge(&mut tests, vec![f], &[report]).is_empty());
        assert_eq!(tests[0].diagnostic, before);
        assert_eq!(tests[0].kernel_log.len(), 1);
    }

    #[test]
    fn a_finding_of_a_test_without_result_is_unowned() {
        let f = Finding {
            kind: Kind::Warning,
            line: "[ 1.0] WARNING: x".into(),
            test: Some("gone".into()),
            after: None,
            boot: 1,
        };
        let mut tests = [result("a", Verdict::Pass, "")];
        assert_eq!(judge(&mut tests, vec![f], &[]).len(), 1);
        assert_eq!(tests[0].result, Verdict::Pass);
    }
}
