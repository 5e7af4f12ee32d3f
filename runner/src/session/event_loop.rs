//! The event loop of one boot: console lines, KTAP lines and process exits,
//! in whatever order they come, turned into how the boot ended.

use super::{Event, SessionResult};
use crate::console::Watcher;
use crate::device_emu::tail;
use crate::klog::Attributor;
use crate::ktap::Parser;
use crate::process::Supervised;
use crate::progress::{self, Clock, Stall};
use crate::report::Outcome;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use vm_images::launch::SerialPort;

/// Why a boot whose guest powered off cleanly without a KTAP stream is not a
/// run; a bare boot (`--bare-boot`) ends so on purpose.
pub const POWERED_OFF_UNTESTED: &str = "the guest powered off without running the tests";

/// When the event loop gives up on a guest.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The whole boot must end by then.
    pub(super) deadline: Instant,
    /// How long the guest may stay silent.
    pub(super) silence: progress::Limits,
}

/// The event loop's state while one guest runs.
pub(super) struct LoopState {
    ktap: Parser,
    watcher: Watcher,
    klog: Attributor,
    console_tail: Vec<String>,
    open_streams: u8,
    echo: bool,
    device_socket: PathBuf,
    /// This guest's boot number; serial events of other boots are stale.
    boot: usize,
}

/// The least silence allowed before the guest's first console line.
pub(super) const FIRST_LINE_GRACE: Duration = Duration::from_secs(120);

/// Console lines kept for error messages.
pub const TAIL_LINES: usize = 40;

impl LoopState {
    pub(super) fn new(echo: bool, device_socket: PathBuf, boot: usize) -> Self {
        Self {
            ktap: Parser::new(),
            watcher: Watcher::new(),
            klog: Attributor::new(),
            console_tail: Vec::new(),
            open_streams: SerialPort::ALL.len() as u8,
            echo,
            device_socket,
            boot,
        }
    }

    /// The test in flight: the one announced, else the one after the last result.
    fn current_test(&self) -> Option<String> {
        if let Some(name) = self.ktap.in_flight() {
            return Some(name.to_string());
        }
        let last = self.ktap.results().last().map(|r| r.name.clone());
        Some(match last {
            Some(name) => format!("(the test after {name})"),
            None if self.ktap.saw_version() => "(the first test)".into(),
            None => return None,
        })
    }

    fn on_console(&mut self, line: String) {
        if self.echo {
            eprintln!("| {line}");
        }
        // The console's own test markers say which test a report belongs to;
        // the KTAP stream's RUN lines race it on the other serial port.
        let during = self.klog.feed_line(&line);
        self.watcher.feed_line(&line, during);
        if self.console_tail.len() == TAIL_LINES {
            self.console_tail.remove(0);
        }
        self.console_tail.push(line);
    }

    /// Processes events until QEMU has exited and both streams are drained.
    pub(super) fn drive(
        &mut self,
        rx: &Receiver<Event>,
        qemu: &Supervised,
        limits: Limits,
        qemu_log: &Path,
    ) -> Outcome {
        let mut qemu_status: Option<ExitStatus> = None;
        let mut forced: Option<Outcome> = None;
        let mut clock = Clock::new(limits.silence, Instant::now());
        while qemu_status.is_none() || self.open_streams > 0 {
            let (expiry, stall) = clock.expiry(self.ktap.in_flight().is_some());
            let wake = limits.deadline.min(expiry);
            match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Event::Console(b, _) | Event::Ktap(b, _) | Event::StreamClosed(b))
                    if b != self.boot => {}
                Ok(Event::Console(_, l)) => {
                    clock.console(Instant::now());
                    self.on_console(l)
                }
                Ok(Event::Ktap(_, l)) => {
                    clock.ktap(Instant::now());
                    self.ktap.feed_line(&l);
                }
                Ok(Event::StreamClosed(_)) => {
                    self.open_streams = self.open_streams.saturating_sub(1)
                }
                Ok(Event::QemuExited(s)) => {
                    qemu_status = Some(s);
                    // If QEMU never connected a serial socket, nothing will close it.
                    if self.console_tail.is_empty() && !self.ktap.saw_version() {
                        self.open_streams = 0;
                    }
                }
                Ok(Event::DeviceExited(sock, _)) if sock != self.device_socket => {}
                Ok(Event::DeviceExited(_, s)) => {
                    forced.get_or_insert(Outcome::Infrastructure(format!(
                        "device-emu exited while the guest ran ({s})"
                    )));
                    qemu.signal(Signal::SIGKILL);
                }
                Ok(Event::Signal(sig)) => {
                    forced.get_or_insert(Outcome::Infrastructure(format!(
                        "interrupted by signal {sig}"
                    )));
                    qemu.signal(Signal::SIGKILL);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if qemu_status.is_some() {
                        break; // QEMU gone; a stream that never closes is not worth waiting for.
                    }
                    let why = if Instant::now() >= limits.deadline {
                        "the guest did not finish within --timeout".to_string()
                    } else {
                        self.stalled(stall)
                    };
                    forced.get_or_insert(Outcome::TimedOut(why));
                    qemu.signal(Signal::SIGKILL);
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match forced {
            // A kernel that oopsed and then fell silent crashed; the silence is
            // its consequence, not the finding.
            Some(Outcome::TimedOut(why)) => match self.watcher.crash_summary() {
                Some(crash) => Outcome::KernelCrashed(format!("{crash} (then {why})")),
                None => Outcome::TimedOut(why),
            },
            Some(other) => other,
            None => self.judge(qemu_status, qemu_log),
        }
    }

    /// Says, on stderr at once and in the returned reason, that the guest stalled
    /// and which test was in flight (with how long it had beaten, if it had).
    fn stalled(&self, stall: Stall) -> String {
        let current = self.current_test().unwrap_or_else(|| "(boot)".into());
        let beat = match self.ktap.heartbeat_in_flight() {
            Some(b) => format!(" (its last heartbeat at {} s)", b.seconds),
            None => String::new(),
        };
        let why = format!("{stall}; in flight: {current}{beat}");
        eprintln!("bigbar: boot {}: {why}; stopping the guest", self.boot);
        why
    }

    /// Decides the outcome of a boot that ended by itself.
    fn judge(&self, status: Option<ExitStatus>, qemu_log: &Path) -> Outcome {
        if let Some(first) = self.watcher.crash_summary() {
            return Outcome::KernelCrashed(first);
        }
        match status {
            Some(s) if s.success() && self.ktap.saw_version() => match self.ktap.shortfall() {
                Some(why) => Outcome::Infrastructure(why),
                None => Outcome::Completed,
            },
            Some(s) => {
                let log = std::fs::read_to_string(qemu_log).unwrap_or_default();
                let why = if s.success() {
                    POWERED_OFF_UNTESTED.to_string()
                } else {
                    format!("QEMU failed ({s})")
                };
                let name = qemu_log.file_name().unwrap_or_default().to_string_lossy();
                Outcome::Infrastructure(format!("{why}\n{name}:\n{}", tail(&log, 20)))
            }
            None => Outcome::Infrastructure("QEMU's exit was not observed".into()),
        }
    }

    pub(super) fn finish(self, outcome: Outcome, guest_seconds: f64) -> SessionResult {
        let in_flight = self.ktap.in_flight().map(str::to_string);
        let ktap_complete = self.ktap.complete();
        SessionResult {
            outcome,
            tests: self.ktap.into_results(),
            kernel_reports: self.watcher.into_reports(),
            findings: self.klog.into_findings(),
            guest_seconds,
            console_tail: self.console_tail.join("\n"),
            in_flight,
            ktap_complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::TestResult;
    use std::process::Command;
    use std::sync::mpsc::channel;

    /// Drives a [`LoopState`] of boot `boot` over `events`, sent before a
    /// stand-in for QEMU (`sh -c script`) starts, so their order is fixed.
    fn drive_events(
        boot: usize,
        events: Vec<Event>,
        script: &str,
        (idle, progress): (Duration, Duration),
    ) -> SessionResult {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = channel();
        for e in events {
            tx.send(e).unwrap();
        }
        let qemu = Supervised::spawn(
            "qemu",
            Command::new("sh").args(["-c", script]),
            tx,
            Event::QemuExited,
        )
        .unwrap();
        let mut state = LoopState::new(false, dir.path().join("dev.sock"), boot);
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(60),
            silence: progress::Limits {
                idle,
                progress,
                first_line: FIRST_LINE_GRACE,
            },
        };
        let outcome = state.drive(&rx, &qemu, limits, &dir.path().join("qemu.log"));
        state.finish(outcome, 0.0)
    }

    #[test]
    fn events_of_an_earlier_boot_are_ignored() {
        let stale_panic = "[    9.0] Kernel panic - not syncing: of boot 1".to_string();
        let events = vec![
            Event::Console(1, stale_panic),
            Event::StreamClosed(1),
            Event::StreamClosed(1),
            Event::Console(2, "[    0.0] Linux version 7.2".into()),
            Event::Ktap(2, "TAP version 13".into()),
            Event::Ktap(2, "1..1".into()),
            Event::Ktap(2, "ok 1 a".into()),
            Event::StreamClosed(2),
            Event::StreamClosed(2),
        ];
        let r = drive_events(
            2,
            events,
            "exit 0",
            (Duration::from_secs(30), Duration::from_secs(30)),
        );
        assert_eq!(r.outcome, Outcome::Completed);
        assert!(r.kernel_reports.is_empty(), "{:?}", r.kernel_reports);
        assert_eq!(r.tests.len(), 1);
        assert!(r.ktap_complete);
    }

    #[test]
    fn an_oops_then_silence_is_a_crash_not_a_timeout() {
        let events = vec![
            Event::Ktap(1, "TAP version 13".into()),
            Event::Ktap(1, "1..2".into()),
            Event::Ktap(1, "#  RUN           f6.munmap_pud_unaligned ...".into()),
            Event::Console(1, "[    5.0] Oops: general protection fault".into()),
        ];
        // The stand-in for QEMU never exits by itself: the idle limit ends it.
        let r = drive_events(
            1,
            events,
            "exec sleep 60",
            (Duration::from_millis(300), Duration::from_secs(30)),
        );
        match &r.outcome {
            Outcome::KernelCrashed(why) => {
                assert!(why.starts_with("[    5.0] Oops"), "{why}");
                assert!(why.contains("printed nothing"), "{why}");
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        assert_eq!(r.in_flight.as_deref(), Some("f6.munmap_pud_unaligned"));
    }

    /// The console of a debian:sid boot around its `bad pud` finding, with the
    /// guest's test markers, and its KTAP stream.
    const SID_CONSOLE: [&str; 9] = [
        "[    3.114130] Run /init as init process",
        "[    3.200000] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 probe+0x1/0x2",
        "[    7.300000] bigbar: begin f8.mremap_move_pud_incongruent",
        "[    7.310000] bigbar: end f8.mremap_move_pud_incongruent",
        "[    7.440000] bigbar: begin f8.mremap_move_pud_congruent",
        "[    7.442449] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)",
        "[    7.450000] bigbar: end f8.mremap_move_pud_congruent",
        "[    7.500000] bigbar: begin f9.map_private_einval",
        "[    7.510000] bigbar: end f9.map_private_einval",
    ];
    const SID_KTAP: [&str; 12] = [
        "TAP version 13",
        "1..3",
        "#  RUN           f8.mremap_move_pud_incongruent ...",
        "# f8.mremap_move_pud_incongruent: 0.020 s",
        "ok 1 f8.mremap_move_pud_incongruent",
        "#  RUN           f8.mremap_move_pud_congruent ...",
        "# f8.mremap_move_pud_congruent: 0.016 s",
        "ok 2 f8.mremap_move_pud_congruent",
        "#  RUN           f9.map_private_einval ...",
        "# f9.map_private_einval: 0.005 s",
        "ok 3 f9.map_private_einval",
        "# Totals: pass:3 fail:0 xfail:0 xpass:0 skip:0 error:0",
    ];

    /// Name, verdict, reason and kernel-log lines of a record's tests.
    fn verdicts(tests: &[TestResult]) -> Vec<(String, crate::ktap::Verdict, String, usize)> {
        tests
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.result,
                    t.reason.clone(),
                    t.kernel_log.len(),
                )
            })
            .collect()
    }

    #[test]
    fn a_kernel_log_line_fails_its_test_whatever_order_the_ports_deliver_in() {
        // The whole KTAP stream first, the console after it: the worst race. The
        // markers on the console still put the bad pud in its test.
        let mut events: Vec<Event> = SID_KTAP
            .iter()
            .map(|l| Event::Ktap(1, l.to_string()))
            .collect();
        events.extend(SID_CONSOLE.iter().map(|l| Event::Console(1, l.to_string())));
        events.extend([Event::StreamClosed(1), Event::StreamClosed(1)]);
        let live = drive_events(
            1,
            events,
            "exit 0",
            (Duration::from_secs(30), Duration::from_secs(30)),
        );
        assert_eq!(live.outcome, Outcome::Completed);
        let mut record = crate::recovery::Recovery::new(Vec::new());
        record.absorb(1, live);
        let live = record.finish();

        use crate::ktap::Verdict::{Fail, Pass};
        let bad_pud =
            "[kernel log] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)";
        let want = [
            (
                "f8.mremap_move_pud_incongruent".to_string(),
                Pass,
                String::new(),
                0,
            ),
            (
                "f8.mremap_move_pud_congruent".to_string(),
                Fail,
                bad_pud.to_string(),
                1,
            ),
            ("f9.map_private_einval".to_string(), Pass, String::new(), 0),
        ];
        assert_eq!(verdicts(&live.tests), want);
        assert_eq!(live.outside_tests.len(), 1, "{:?}", live.outside_tests);
        assert_eq!(live.outside_tests[0].boot, 1);
        assert!(live.outside_tests[0].line.contains("WARNING: CPU: 0"));

        // The same boot saved and parsed again is judged the same.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.ktap"), SID_KTAP.join("\n")).unwrap();
        std::fs::write(dir.path().join("console.log"), SID_CONSOLE.join("\n")).unwrap();
        let parsed = crate::parse::read(dir.path()).unwrap();
        assert_eq!(verdicts(&parsed.tests), want);
        assert_eq!(parsed.kernel_log_outside_tests, live.outside_tests);
        assert_eq!(parsed.outcome, Outcome::Completed);
    }

    #[test]
    fn silence_alone_is_a_timeout() {
        let events = vec![Event::Console(1, "[    0.0] Linux version 7.2".into())];
        let r = drive_events(
            1,
            events,
            "exec sleep 60",
            (Duration::from_millis(300), Duration::from_secs(30)),
        );
        assert!(
            matches!(r.outcome, Outcome::TimedOut(ref why) if why.contains("printed nothing")),
            "{:?}",
            r.outcome
        );
    }

    /// A guest whose test binary announced `t.hang`, beat twice, then stopped.
    fn hung_in_a_test() -> Vec<Event> {
        [
            "TAP version 13",
            "1..2",
            "#  RUN           t.hang ...",
            "# heartbeat t.hang 2",
            "# heartbeat t.hang 4",
        ]
        .iter()
        .map(|l| Event::Ktap(1, l.to_string()))
        .chain([Event::Console(1, "[    9.0] bigbar: begin t.hang".into())])
        .collect()
    }

    #[test]
    fn a_test_whose_heartbeat_stops_is_a_hang_of_that_test() {
        let limits = (Duration::from_secs(30), Duration::from_millis(300));
        let started = Instant::now();
        let r = drive_events(1, hung_in_a_test(), "exec sleep 60", limits);
        // Well before the idle limit: the progress limit struck.
        assert!(started.elapsed() < Duration::from_secs(20));
        let Outcome::TimedOut(why) = &r.outcome else {
            panic!("expected a hang, got {:?}", r.outcome);
        };
        assert!(why.starts_with("the guest hung: no heartbeat"), "{why}");
        assert!(
            why.contains("in flight: t.hang (its last heartbeat at 4 s)"),
            "{why}"
        );
        assert_eq!(r.in_flight.as_deref(), Some("t.hang"));
        assert!(!r.ktap_complete);
        assert!(r.console_tail.contains("bigbar: begin t.hang"));
        // Recovery fails the test with the reason and the console lines.
        let mut record = crate::recovery::Recovery::new(vec!["t.hang".into(), "t.next".into()]);
        assert!(record.absorb(1, r), "the rest must go to a fresh guest");
        let rec = record.finish();
        assert_eq!(rec.tests[0].result, crate::ktap::Verdict::Fail);
        assert!(
            rec.tests[0].reason.contains("the guest hung"),
            "{}",
            rec.tests[0].reason
        );
        assert!(rec.tests[0].diagnostic.contains("bigbar: begin t.hang"));
    }

    #[test]
    fn a_slow_test_that_keeps_beating_is_not_stopped() {
        // The progress limit is 300 ms; the test runs four times that, beating
        // every 50 ms, as a slow but alive guest would.
        let limits = (Duration::from_secs(30), Duration::from_millis(300));
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = channel();
        for l in ["TAP version 13", "1..1", "#  RUN           t.slow ..."] {
            tx.send(Event::Ktap(1, l.into())).unwrap();
        }
        let qemu = Supervised::spawn(
            "qemu",
            Command::new("sh").args(["-c", "exec sleep 60"]),
            tx.clone(),
            Event::QemuExited,
        )
        .unwrap();
        let guest = std::thread::spawn(move || {
            for i in 0..24 {
                // The pace of the simulated guest, not a synchronisation.
                std::thread::sleep(Duration::from_millis(50));
                let beat = format!("# heartbeat t.slow {i}");
                tx.send(Event::Ktap(1, beat)).unwrap();
            }
            tx.send(Event::Ktap(1, "ok 1 t.slow".into())).unwrap();
            let status = Command::new("true").status().unwrap();
            for e in [
                Event::StreamClosed(1),
                Event::StreamClosed(1),
                Event::QemuExited(status),
            ] {
                tx.send(e).unwrap();
            }
        });
        let mut state = LoopState::new(false, dir.path().join("dev.sock"), 1);
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(60),
            silence: progress::Limits {
                idle: limits.0,
                progress: limits.1,
                first_line: FIRST_LINE_GRACE,
            },
        };
        let outcome = state.drive(&rx, &qemu, limits, &dir.path().join("qemu.log"));
        guest.join().unwrap();
        assert_eq!(outcome, Outcome::Completed);
        let r = state.finish(outcome, 0.0);
        assert_eq!(r.tests.len(), 1);
        assert_eq!(r.tests[0].result, crate::ktap::Verdict::Pass);
        assert_eq!(r.tests[0].diagnostic, "", "heartbeats are no diagnostics");
    }

    #[test]
    fn between_tests_only_silence_on_both_ports_counts() {
        // A finished test and then a long fixture setup: no test in flight, so
        // the short progress limit does not apply and the idle limit strikes.
        let events = [
            "TAP version 13",
            "1..2",
            "#  RUN           t.a ...",
            "ok 1 t.a",
        ]
        .iter()
        .map(|l| Event::Ktap(1, l.to_string()))
        .collect();
        let limits = (Duration::from_millis(600), Duration::from_millis(100));
        let r = drive_events(1, events, "exec sleep 60", limits);
        let Outcome::TimedOut(why) = &r.outcome else {
            panic!("expected a timeout, got {:?}", r.outcome);
        };
        assert!(
            why.starts_with("the guest printed nothing for 0 s"),
            "{why}"
        );
        assert!(why.contains("in flight: (the test after t.a)"), "{why}");
    }
}
