//! Watching the guest's kernel console for signs that the kernel itself broke.
//!
//! A test may legitimately probe a kernel path that oopses; the runner must then
//! report the oops with its text instead of mistaking it for a test failure or
//! losing it. [`Watcher`] recognises the start of such a report and collects its
//! lines until the kernel's end-of-trace marker (or a line budget).

use serde::{Deserialize, Serialize};

/// What kind of kernel trouble a report describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TroubleKind {
    /// `Oops:`, `BUG:` or a general protection fault: the kernel killed a task.
    Oops,
    /// `Kernel panic - not syncing`: the kernel stopped.
    Panic,
    /// `WARNING:` with a call trace.
    Warning,
    /// `INFO: task ... blocked for more than`: the hung-task detector fired.
    HungTask,
}

/// One kernel report found on the console.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// What it is.
    pub kind: TroubleKind,
    /// The report's lines as printed (timestamps kept).
    pub text: String,
    /// The guest test that was in flight when it started, if known.
    pub during_test: Option<String>,
}

/// Most lines kept of one report: enough for a call trace and registers.
const MAX_REPORT_LINES: usize = 80;

/// Classifies a console line that starts a kernel report.
pub fn classify(line: &str) -> Option<TroubleKind> {
    // Without the printk timestamp the patterns anchor on the message.
    let msg = crate::klog::message(line);
    if msg.starts_with("Kernel panic - not syncing") {
        Some(TroubleKind::Panic)
    } else if msg.starts_with("Oops:")
        || msg.starts_with("BUG:")
        || msg.starts_with("kernel BUG at")
        || msg.starts_with("general protection fault")
        || msg.starts_with("Unable to handle kernel")
    {
        Some(TroubleKind::Oops)
    } else if msg.starts_with("WARNING:") {
        Some(TroubleKind::Warning)
    } else if msg.starts_with("INFO: task ") && msg.contains("blocked for more than") {
        Some(TroubleKind::HungTask)
    } else {
        None
    }
}

/// Collects kernel reports from a stream of console lines.
#[derive(Debug, Default)]
pub struct Watcher {
    open: Option<KernelReport>,
    open_lines: usize,
    done: Vec<KernelReport>,
}

impl Watcher {
    /// Creates a watcher with no reports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one console line; `current_test` is the guest test in flight.
    pub fn feed_line(&mut self, line: &str, current_test: Option<&str>) {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(kind) = classify(line) {
            // A BUG: line followed by Oops: is one report; a panic ends any report.
            let continues = matches!(&self.open, Some(r) if r.kind == TroubleKind::Oops)
                && kind == TroubleKind::Oops;
            if !continues {
                self.close();
                self.open = Some(KernelReport {
                    kind,
                    text: String::new(),
                    during_test: current_test.map(str::to_string),
                });
                self.open_lines = 0;
            }
        }
        let Some(report) = self.open.as_mut() else {
            return;
        };
        if self.open_lines < MAX_REPORT_LINES {
            if !report.text.is_empty() {
                report.text.push('\n');
            }
            report.text.push_str(line);
            self.open_lines += 1;
        }
        if line.contains("---[ end trace") || line.contains("---[ end Kernel panic") {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(r) = self.open.take() {
            self.done.push(r);
        }
    }

    /// The first line of the first oops or panic report, if the kernel broke:
    /// how a run that crashed is summed up (live or re-read from a log).
    pub fn crash_summary(&self) -> Option<String> {
        self.reports()
            .find(|r| matches!(r.kind, TroubleKind::Oops | TroubleKind::Panic))
            .map(|r| r.text.lines().next().unwrap_or("").to_string())
    }

    /// All reports, including one still being collected.
    pub fn reports(&self) -> impl Iterator<Item = &KernelReport> {
        self.done.iter().chain(self.open.iter())
    }

    /// Consumes the watcher, returning every report.
    pub fn into_reports(mut self) -> Vec<KernelReport> {
        self.close();
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "[    3.1] Kernel panic - not syncing: sysrq triggered crash",
        Some(TroubleKind::Panic)
    )]
    #[case("[    3.1] Oops: 0000 [#1] PREEMPT SMP NOPTI", Some(TroubleKind::Oops))]
    #[case(
        "[    3.1] BUG: unable to handle page fault for address: 0",
        Some(TroubleKind::Oops)
    )]
    #[case("[ 2.0] kernel BUG at mm/huge_memory.c:2000!", Some(TroubleKind::Oops))]
    #[case(
        "[    3.1] WARNING: CPU: 0 PID: 1 at mm/memory.c:1 foo",
        Some(TroubleKind::Warning)
    )]
    #[case(
        "[  120.0] INFO: task a:1 blocked for more than 120 seconds.",
        Some(TroubleKind::HungTask)
    )]
    #[case("[    1.0] vfio-pci 0000:00:03.0: enabling device", None)]
    #[case("# Oops: in a test diagnostic is not at line start", None)]
    fn classification(#[case] line: &str, #[case] kind: Option<TroubleKind>) {
        assert_eq!(classify(line), kind);
    }

    #[test]
    fn oops_report_collected_until_end_trace() {
        let mut w = Watcher::new();
        w.feed_line("[ 1.0] normal line", None);
        w.feed_line(
            "[ 2.0] BUG: kernel NULL pointer dereference",
            Some("f6.split"),
        );
        w.feed_line("[ 2.0] Oops: 0002 [#1] SMP", Some("f6.split"));
        w.feed_line("[ 2.0] RIP: 0010:foo+0x1/0x2", Some("f6.split"));
        w.feed_line(
            "[ 2.0] ---[ end trace 0000000000000000 ]---",
            Some("f6.split"),
        );
        w.feed_line("[ 3.0] after", Some("f6.split"));
        assert_eq!(
            w.crash_summary().as_deref(),
            Some("[ 2.0] BUG: kernel NULL pointer dereference")
        );
        let r = w.into_reports();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, TroubleKind::Oops);
        assert_eq!(r[0].during_test.as_deref(), Some("f6.split"));
        assert_eq!(r[0].text.lines().count(), 4);
        assert!(!r[0].text.contains("after"));
    }

    #[test]
    fn a_warning_before_an_oops_is_not_the_crash() {
        let mut w = Watcher::new();
        w.feed_line("[ 1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f", None);
        w.feed_line("[ 1.0] ---[ end trace 0 ]---", None);
        assert_eq!(w.crash_summary(), None);
        w.feed_line("[ 2.0] Oops: 0000 [#1] SMP", None);
        assert_eq!(
            w.crash_summary().as_deref(),
            Some("[ 2.0] Oops: 0000 [#1] SMP")
        );
    }

    #[test]
    fn report_length_is_bounded() {
        let mut w = Watcher::new();
        w.feed_line("Kernel panic - not syncing: x", None);
        for i in 0..1000 {
            w.feed_line(&format!("line {i}"), None);
        }
        let r = w.into_reports();
        assert_eq!(r[0].text.lines().count(), MAX_REPORT_LINES);
    }
}
