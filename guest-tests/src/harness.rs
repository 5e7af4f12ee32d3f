//! A small kselftest_harness-like registry: named test functions over a shared
//! fixture, each run in its own forked child with a deadline, reported as KTAP.
//!
//! A test body returns a [`TestResult`]: `?` on any error fails the test with
//! the whole context chain as diagnostic, and a skip (or an expected failure)
//! travels the same way as a [`Stop`](crate::stop::Stop).

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::isolate::{self, End, Finished, RecordKind};
use crate::kmsg::KernelLog;
use crate::ktap::{Ktap, Totals, Verdict, KSFT_FAIL, KSFT_PASS, KSFT_SKIP, KSFT_XFAIL, KSFT_XPASS};
use crate::stop::TestResult;

/// Deadline of a test unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A fixture setup error that makes every test of the group a skip rather than
/// a failure: there is nothing to test here (no device), as kselftest programs
/// exit with `KSFT_SKIP` when they find no device. Returned inside the setup's
/// `anyhow::Error`, found by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SkipAll(pub String);

/// How [`run`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Print each test's wall time as a diagnostic after its result.
    pub times: bool,
    /// The kernel log device (`/dev/kmsg`) to write [`BEGIN_MARKER`] and
    /// [`END_MARKER`] lines to around each test; `None` writes none.
    pub kmsg: Option<PathBuf>,
    /// Write `# heartbeat NAME SECONDS` this often while a test runs (`None`:
    /// never), so that a watcher of the stream can tell a long test from a
    /// dead machine; see [`HEARTBEAT`].
    pub heartbeat: Option<Duration>,
    /// Which processes may fork the tests' children (see [`isolate::Threads`]):
    /// by default only a single-threaded one.
    pub threads: isolate::Threads,
}

pub use protocol::kmsg::{BEGIN_MARKER, END_MARKER, HEARTBEAT};

/// How often the guest binary beats by default: well under the runner's
/// 30 s progress limit, so that a guest slowed down by a loaded host under TCG
/// still beats many times within it.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// Writes `marker` and `name` to the kernel log at `kmsg` as one record.
///
/// Best effort: without a writable `/dev/kmsg` (not root, a real machine's
/// lockdown) the tests still run, their kernel messages just are not delimited.
fn mark(kmsg: Option<&Path>, marker: &str, name: &str) {
    let Some(path) = kmsg else {
        return;
    };
    // Append: /dev/kmsg ignores it, and a plain file (in tests) keeps every record.
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        // One write is one record; its level is the kernel's default for /dev/kmsg.
        let _ = f.write_all(format!("{marker}{name}\n").as_bytes());
    }
}

/// The signature of a test body: a function, or a closure for tests found at
/// run time (external kselftest programs).
pub type TestFn<F> = Box<dyn Fn(&F) -> TestResult>;

/// One registered test.
pub struct TestCase<F> {
    /// KTAP name, `group.case`.
    pub name: Cow<'static, str>,
    /// How long the child may run before it is killed.
    pub timeout: Duration,
    /// The body, run in a forked child.
    pub run: TestFn<F>,
    /// Run in the parent after the child ended, however it ended (kselftest's
    /// teardown): undoes system-wide changes a killed child could not undo.
    pub teardown: Option<fn(&F)>,
    /// The IDs of the rules it checks (docs/RULES.md): by default the one its
    /// name starts with (`f6.` checks F6), none for other names.
    pub rules: Vec<&'static str>,
}

/// The rule IDs of docs/RULES.md.
pub const RULE_IDS: [&str; 14] = [
    "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "A1", "A2", "A3", "A4", "A5",
];

/// The rule a test name declares by its prefix (`f6.munmap_pmd_cut` → F6).
pub fn rule_of_name(name: &str) -> Option<&'static str> {
    let prefix = name.split('.').next()?;
    RULE_IDS
        .iter()
        .copied()
        .find(|id| id.eq_ignore_ascii_case(prefix))
}

/// The line `--list` prints for a test: its name, then a tab and its rule IDs
/// separated by commas when it has any.
pub fn listing_line(name: &str, rules: &[&str]) -> String {
    if rules.is_empty() {
        name.to_owned()
    } else {
        format!("{name}\t{}", rules.join(","))
    }
}

impl<F> TestCase<F> {
    /// A test with the default deadline.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        run: impl Fn(&F) -> TestResult + 'static,
    ) -> Self {
        let name = name.into();
        let rules = rule_of_name(&name).into_iter().collect();
        TestCase {
            name,
            timeout: DEFAULT_TIMEOUT,
            run: Box::new(run),
            teardown: None,
            rules,
        }
    }

    /// The same test declaring the rules it checks (instead of its name's).
    pub fn with_rules(mut self, rules: &[&'static str]) -> Self {
        self.rules = rules.to_vec();
        self
    }

    /// The same test with a teardown run in the parent after it.
    pub fn with_teardown(mut self, teardown: fn(&F)) -> Self {
        self.teardown = Some(teardown);
        self
    }

    /// The same test with another deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The tests whose names match any of `filters` (all if there is none), in order.
pub fn select<'a, F>(tests: &'a [TestCase<F>], filters: &[String]) -> Vec<&'a TestCase<F>> {
    tests
        .iter()
        .filter(|t| crate::glob::selected(filters, &t.name))
        .collect()
}

/// Runs `tests` and writes the KTAP document to `out`.
///
/// `setup` builds the fixture once, in this process, after the plan is printed, so
/// that every child inherits it. If it fails, every test fails with its error.
pub fn run<'a, F, W: Write>(
    out: W,
    tests: &[&'a TestCase<F>],
    opts: RunOptions,
    setup: impl FnOnce() -> anyhow::Result<F> + 'a,
) -> io::Result<Totals> {
    run_groups(out, vec![Group::boxed(tests.to_vec(), setup)], opts)
}

/// Tests over one fixture, in one KTAP document with other groups: the fixture
/// is built right before the group's first test and dropped after its last, so
/// that what it holds (an open VFIO group) is free for the next group.
pub struct Group<'a, F> {
    tests: Vec<&'a TestCase<F>>,
    setup: Box<dyn FnOnce() -> anyhow::Result<F> + 'a>,
}

impl<'a, F: 'a> Group<'a, F> {
    /// A group, ready for [`run_groups`].
    pub fn boxed<W: Write>(
        tests: Vec<&'a TestCase<F>>,
        setup: impl FnOnce() -> anyhow::Result<F> + 'a,
    ) -> Box<dyn Phase<W> + 'a> {
        Box::new(Group {
            tests,
            setup: Box::new(setup),
        })
    }
}

/// A part of a KTAP document that runs its tests its own way (see [`Group`]).
pub trait Phase<W: Write> {
    /// How many results it writes.
    fn len(&self) -> usize;
    /// Whether it writes none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Runs its tests, one result each.
    fn run(self: Box<Self>, ktap: &mut Ktap<W>, opts: &RunOptions) -> io::Result<()>;
}

impl<F, W: Write> Phase<W> for Group<'_, F> {
    fn len(&self) -> usize {
        self.tests.len()
    }

    fn run(self: Box<Self>, ktap: &mut Ktap<W>, opts: &RunOptions) -> io::Result<()> {
        if self.tests.is_empty() {
            // Nothing to run: do not touch the device.
            return Ok(());
        }
        match (self.setup)() {
            Ok(fixture) => {
                for test in &self.tests {
                    run_one(ktap, test, &fixture, opts)?;
                }
            }
            Err(e) => {
                let verdict = match e.downcast_ref::<SkipAll>() {
                    Some(SkipAll(why)) => Verdict::Skip(why.clone()),
                    None => {
                        let why = format!("fixture setup failed: {e:#}");
                        ktap.diag(&why)?;
                        Verdict::FailBecause(why)
                    }
                };
                for test in &self.tests {
                    ktap.result(&test.name, &verdict)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `groups` one after another as one KTAP document written to `out`.
pub fn run_groups<'a, W: Write>(
    out: W,
    groups: Vec<Box<dyn Phase<W> + 'a>>,
    opts: RunOptions,
) -> io::Result<Totals> {
    let planned = groups.iter().map(|g| g.len()).sum();
    let mut ktap = Ktap::start(out, planned)?;
    if planned == 0 {
        ktap.diag("no test selected")?;
        return ktap.finish();
    }
    for group in groups {
        group.run(&mut ktap, &opts)?;
    }
    ktap.finish()
}

fn run_one<F, W: Write>(
    ktap: &mut Ktap<W>,
    test: &TestCase<F>,
    fixture: &F,
    opts: &RunOptions,
) -> io::Result<()> {
    // Announce the test before it runs, as kselftest_harness does, so whoever
    // reads the stream knows which test was in flight if the kernel dies.
    ktap.diag(&format!(" RUN           {} ...", test.name))?;
    let kmsg = opts.kmsg.as_deref();
    mark(kmsg, BEGIN_MARKER, &test.name);
    // Opened after the begin marker, so that only this test's records are read.
    let mut kernel_log = kmsg.and_then(|p| KernelLog::open(p).ok());
    let finished = run_child(ktap, test, fixture, opts, kernel_log.as_mut());
    if let Some(teardown) = test.teardown {
        teardown(fixture);
    }
    mark(kmsg, END_MARKER, &test.name);
    let (verdict, elapsed) = match finished {
        Ok(f) => (report(ktap, test, &f)?, Some(f.elapsed)),
        Err(e) => {
            ktap.diag(&format!("{}: could not run: {e}", test.name))?;
            (Verdict::Fail, None)
        }
    };
    if let (true, Some(t)) = (opts.times, elapsed) {
        ktap.diag(&format!("{}: {:.3} s", test.name, t.as_secs_f64()))?;
    }
    ktap.result(&test.name, &verdict)
}

/// Forks the test's child and waits for it, beating on the KTAP stream and
/// watching the kernel log for an oops.
fn run_child<F, W: Write>(
    ktap: &mut Ktap<W>,
    test: &TestCase<F>,
    fixture: &F,
    opts: &RunOptions,
    kernel_log: Option<&mut KernelLog>,
) -> Result<Finished, isolate::IsolateError> {
    let (every, threads) = (opts.heartbeat, opts.threads);
    let body = || child_body(test, fixture);
    let Some(every) = every else {
        let watch = isolate::Watch {
            threads,
            heartbeat: None,
            kernel_log,
        };
        return isolate::run_watched(test.timeout, watch, body);
    };
    // Best effort: a beat that cannot be written changes nothing for the test.
    let mut beat = |t: Duration| {
        let _ = ktap.diag(&format!("{HEARTBEAT}{} {}", test.name, t.as_secs()));
    };
    let heartbeat = isolate::Heartbeat {
        every,
        beat: &mut beat,
    };
    let watch = isolate::Watch {
        threads,
        heartbeat: Some(heartbeat),
        kernel_log,
    };
    isolate::run_watched(test.timeout, watch, body)
}

/// Runs the body in the child and turns its outcome into an exit status and messages.
fn child_body<F>(test: &TestCase<F>, fixture: &F) -> i32 {
    match panic::catch_unwind(AssertUnwindSafe(|| (test.run)(fixture))) {
        Ok(Ok(())) => KSFT_PASS,
        Ok(Err(stop)) => {
            isolate::message(&stop.to_string());
            stop.exit_code()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            isolate::message(&format!("panicked: {what}"));
            KSFT_FAIL
        }
    }
}

/// Writes the child's diagnostics and decides the verdict from how it ended.
fn report<F, W: Write>(
    ktap: &mut Ktap<W>,
    test: &TestCase<F>,
    f: &Finished,
) -> io::Result<Verdict> {
    let mut messages = Vec::new();
    for r in &f.records {
        match r.kind {
            RecordKind::Diag => ktap.diag(&r.text)?,
            RecordKind::Message => messages.push(r.text.as_str()),
        }
    }
    let message = messages.join("\n");
    let name = &test.name;
    let verdict = match f.end {
        End::Exited(KSFT_PASS) => Verdict::Pass,
        End::Exited(KSFT_SKIP) => Verdict::Skip(message.replace('\n', "; ")),
        End::Exited(KSFT_XFAIL) => Verdict::Xfail(message.replace('\n', "; ")),
        End::Exited(KSFT_XPASS) => Verdict::Xpass(message.replace('\n', "; ")),
        End::Exited(KSFT_FAIL) => {
            ktap.diag(&format!("{name}: {message}"))?;
            Verdict::Fail
        }
        End::Exited(code) => {
            ktap.diag(&format!(
                "{name}: child exited with unexpected status {code}"
            ))?;
            Verdict::Fail
        }
        End::Signaled(sig) => {
            ktap.diag(&format!("{name}: killed by signal {}", sig.as_str()))?;
            Verdict::Fail
        }
        End::TimedOut | End::Unkillable if f.kernel_oops.is_some() => {
            let stuck = if f.end == End::Unkillable {
                " and survived SIGKILL (stuck in the kernel)"
            } else {
                ", killed"
            };
            ktap.diag(&format!(
                "{name}: the kernel oopsed while it ran ({}); the child did not end{stuck}",
                f.kernel_oops.as_deref().unwrap_or_default()
            ))?;
            Verdict::Timeout
        }
        End::TimedOut => {
            ktap.diag(&format!(
                "{name}: timed out after {} s",
                test.timeout.as_secs_f64()
            ))?;
            Verdict::Timeout
        }
        End::Unkillable => {
            ktap.diag(&format!(
                "{name}: timed out after {} s and survived SIGKILL (stuck in the kernel?)",
                test.timeout.as_secs_f64()
            ))?;
            Verdict::Timeout
        }
    };
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("f6.munmap_pud_unaligned", Some("F6"))]
    #[case("a3.msix_hole", Some("A3"))]
    #[case("f1.case_table", Some("F1"))]
    #[case("fault_order.unaligned", None)]
    #[case("f10.none", None)]
    #[case("repro.vfio_pci_pud_split_test.x.y", None)]
    #[case("", None)]
    fn rules_from_names(#[case] name: &str, #[case] rule: Option<&str>) {
        assert_eq!(rule_of_name(name), rule);
    }

    #[rstest::rstest]
    #[case("f6.x", &["F6"], "f6.x\tF6")]
    #[case("fault_order.pud_aligned", &["F1", "F2"], "fault_order.pud_aligned\tF1,F2")]
    #[case("setup.bind_vfio", &[], "setup.bind_vfio")]
    fn listing_lines(#[case] name: &str, #[case] rules: &[&str], #[case] line: &str) {
        assert_eq!(listing_line(name, rules), line);
    }

    /// Options for the multi-threaded `cargo test` process.
    fn test_opts() -> RunOptions {
        // SAFETY: the dummy bodies allocate, write to the report pipe and exit;
        // the one that panics could meet another test thread's panic lock, which
        // its 20 s deadline turns into a failure instead of a hang.
        let threads = isolate::Threads::Any(unsafe { isolate::ForkAnyway::new() });
        RunOptions {
            threads,
            ..RunOptions::default()
        }
    }
    use crate::stop::{OrSkip, Stop};
    use anyhow::Context;

    struct Fx {
        value: u32,
    }

    fn pass(fx: &Fx) -> TestResult {
        isolate::diag(&format!("value is {}", fx.value));
        Ok(())
    }
    fn fail(_: &Fx) -> TestResult {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!("expected 1 fault, got 512"));
        inner.context("touching the PMD block")?;
        Ok(())
    }
    fn skip(_: &Fx) -> TestResult {
        crate::skip!("kernel lacks huge pfnmap")
    }
    fn xfail(_: &Fx) -> TestResult {
        Err(Stop::Xfail("placed at 4 KiB".into()))
    }
    fn panics(_: &Fx) -> TestResult {
        panic!("boom {}", 7);
    }
    fn sigbus(_: &Fx) -> TestResult {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGBUS)?;
        crate::bail!("survived SIGBUS")
    }
    fn hangs(_: &Fx) -> TestResult {
        loop {
            nix::unistd::pause();
        }
    }
    fn exits(_: &Fx) -> TestResult {
        std::process::exit(9)
    }
    /// A precondition of a step, after the body wrote a diagnostic.
    fn needs_a_bar(fx: &Fx) -> TestResult<u32> {
        (fx.value > 100)
            .then_some(fx.value)
            .or_skip("no BAR of 1 GiB")
    }
    fn skips_in_a_step(fx: &Fx) -> TestResult {
        isolate::diag("looking for a BAR");
        needs_a_bar(fx)?;
        crate::bail!("a skipped step went on")
    }
    fn xpass(_: &Fx) -> TestResult {
        Err(Stop::Xpass("kept by accident".into()))
    }

    /// Deadline of the dummy tests. A child forked from this multi-threaded test
    /// process can inherit a lock another thread held at fork time (a concurrent
    /// test failure holds the panic machinery's backtrace lock while it prints),
    /// and a child that panics then waits for it forever. The deadline turns that
    /// into a quick, visible failure instead of a five-minute stall.
    const DUMMY_TIMEOUT: Duration = Duration::from_secs(20);

    fn suite() -> Vec<TestCase<Fx>> {
        let case = |name: &'static str, run: fn(&Fx) -> TestResult| {
            TestCase::new(name, run).with_timeout(DUMMY_TIMEOUT)
        };
        vec![
            case("dummy.pass", pass),
            case("dummy.fail", fail),
            case("dummy.skip", skip),
            case("dummy.panic", panics),
            case("dummy.sigbus", sigbus),
            TestCase::new("dummy.hang", hangs).with_timeout(Duration::from_millis(400)),
            case("dummy.exit", exits),
            case("dummy.xfail", xfail),
        ]
    }

    fn run_to_string(
        filters: &[&str],
        setup: impl FnOnce() -> anyhow::Result<Fx>,
    ) -> (String, Totals) {
        let tests = suite();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let selected = select(&tests, &filters);
        let mut buf = Vec::new();
        let totals = run(&mut buf, &selected, test_opts(), setup).unwrap();
        (String::from_utf8(buf).unwrap(), totals)
    }

    #[test]
    fn every_kind_of_ending_is_one_result() {
        let (out, totals) = run_to_string(&[], || Ok(Fx { value: 42 }));
        let want = "TAP version 13\n\
            1..8\n\
            #  RUN           dummy.pass ...\n\
            # value is 42\n\
            ok 1 dummy.pass\n\
            #  RUN           dummy.fail ...\n\
            # dummy.fail: touching the PMD block: expected 1 fault, got 512\n\
            not ok 2 dummy.fail\n\
            #  RUN           dummy.skip ...\n\
            ok 3 dummy.skip # SKIP kernel lacks huge pfnmap\n\
            #  RUN           dummy.panic ...\n\
            # dummy.panic: panicked: boom 7\n\
            not ok 4 dummy.panic\n\
            #  RUN           dummy.sigbus ...\n\
            # dummy.sigbus: killed by signal SIGBUS\n\
            not ok 5 dummy.sigbus\n\
            #  RUN           dummy.hang ...\n\
            # dummy.hang: timed out after 0.4 s\n\
            not ok 6 dummy.hang # TIMEOUT\n\
            #  RUN           dummy.exit ...\n\
            # dummy.exit: child exited with unexpected status 9\n\
            not ok 7 dummy.exit\n\
            #  RUN           dummy.xfail ...\n\
            ok 8 dummy.xfail # XFAIL placed at 4 KiB\n\
            # Totals: pass:1 fail:5 xfail:1 xpass:0 skip:1 error:0\n";
        assert_eq!(out, want);
        assert_eq!(totals.exit_code(), KSFT_FAIL);
    }

    #[test]
    fn a_skip_from_a_step_and_an_xpass_are_one_result_each() {
        let tests = [
            TestCase::new("t.step_skip", skips_in_a_step).with_timeout(DUMMY_TIMEOUT),
            TestCase::new("t.xpass", xpass).with_timeout(DUMMY_TIMEOUT),
        ];
        let mut buf = Vec::new();
        let totals = run(&mut buf, &select(&tests, &[]), test_opts(), || {
            Ok(Fx { value: 1 })
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "TAP version 13\n1..2\n\
             #  RUN           t.step_skip ...\n\
             # looking for a BAR\n\
             ok 1 t.step_skip # SKIP no BAR of 1 GiB\n\
             #  RUN           t.xpass ...\n\
             ok 2 t.xpass # XPASS kept by accident\n\
             # Totals: pass:0 fail:0 xfail:0 xpass:1 skip:1 error:0\n"
        );
        assert_eq!(totals.exit_code(), KSFT_PASS);
    }

    static TORN_DOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn count_teardown(_: &Fx) {
        TORN_DOWN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn teardown_runs_in_the_parent_however_the_child_ended() {
        let tests = [
            TestCase::new("t.sigbus", sigbus).with_teardown(count_teardown),
            TestCase::new("t.hang", hangs)
                .with_timeout(Duration::from_millis(400))
                .with_teardown(count_teardown),
            TestCase::new("t.pass", pass).with_teardown(count_teardown),
        ];
        let selected = select(&tests, &[]);
        let mut buf = Vec::new();
        let totals = run(&mut buf, &selected, test_opts(), || Ok(Fx { value: 1 })).unwrap();
        assert_eq!(TORN_DOWN.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(totals.fail, 2);
    }

    #[test]
    fn kernel_log_markers_enclose_each_test_and_its_teardown() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let tests = [
            TestCase::new("t.pass", pass),
            TestCase::new("t.sigbus", sigbus).with_teardown(|_| ()),
        ];
        let opts = RunOptions {
            threads: test_opts().threads,
            times: false,
            kmsg: Some(log.path().to_path_buf()),
            heartbeat: None,
        };
        let mut buf = Vec::new();
        run(&mut buf, &select(&tests, &[]), opts, || Ok(Fx { value: 1 })).unwrap();
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap(),
            "bigbar: begin t.pass\nbigbar: end t.pass\n\
             bigbar: begin t.sigbus\nbigbar: end t.sigbus\n"
        );
    }

    #[test]
    fn an_unwritable_kernel_log_does_not_stop_the_tests() {
        let opts = RunOptions {
            threads: test_opts().threads,
            times: false,
            kmsg: Some("/nonexistent/kmsg".into()),
            heartbeat: None,
        };
        let tests = [TestCase::new("t.pass", pass)];
        let mut buf = Vec::new();
        let totals = run(&mut buf, &select(&tests, &[]), opts, || Ok(Fx { value: 1 })).unwrap();
        assert_eq!(totals.pass, 1);
    }

    fn sleeps(_: &Fx) -> TestResult {
        std::thread::sleep(Duration::from_millis(700));
        Ok(())
    }

    #[test]
    fn a_running_test_beats_on_the_stream_and_still_passes() {
        let opts = RunOptions {
            threads: test_opts().threads,
            times: false,
            kmsg: None,
            heartbeat: Some(Duration::from_millis(200)),
        };
        let tests = [
            TestCase::new("t.slow", sleeps).with_timeout(DUMMY_TIMEOUT),
            TestCase::new("t.quick", skip),
        ];
        let mut buf = Vec::new();
        let totals = run(&mut buf, &select(&tests, &[]), opts, || Ok(Fx { value: 1 })).unwrap();
        assert_eq!(totals.pass, 1);
        let out = String::from_utf8(buf).unwrap();
        let beats: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("# heartbeat "))
            .collect();
        assert!(beats.len() >= 2, "{out}");
        assert!(
            beats.iter().all(|l| l.starts_with("# heartbeat t.slow ")),
            "{out}"
        );
        // Beats come between the announcement and the result of their test.
        let run_at = out.find("RUN           t.slow").unwrap();
        let ok_at = out.find("ok 1 t.slow").unwrap();
        assert!(beats.iter().all(|b| {
            let at = out.find(b).unwrap();
            run_at < at && at < ok_at
        }));
    }

    #[test]
    fn filters_select_and_exit_code_follows() {
        let (out, totals) = run_to_string(&["*.pass", "*.skip"], || Ok(Fx { value: 1 }));
        assert!(out.starts_with("TAP version 13\n1..2\n"), "{out}");
        assert_eq!(
            totals,
            Totals {
                pass: 1,
                fail: 0,
                skip: 1,
                xfail: 0,
                xpass: 0,
            }
        );
        assert_eq!(totals.exit_code(), KSFT_PASS);

        let (_, totals) = run_to_string(&["dummy.skip"], || Ok(Fx { value: 1 }));
        assert_eq!(totals.exit_code(), KSFT_SKIP);
    }

    #[test]
    fn empty_selection_skips_setup() {
        let (out, totals) = run_to_string(&["nothing*"], || panic!("setup must not run"));
        assert_eq!(
            out,
            "TAP version 13\n1..0\n# no test selected\n\
             # Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0\n"
        );
        assert_eq!(totals.exit_code(), KSFT_SKIP);
    }

    #[test]
    fn setup_failure_fails_every_selected_test() {
        let (out, totals) = run_to_string(&["dummy.p*"], || {
            Err(anyhow::anyhow!("no device 1234:b16b"))
        });
        assert_eq!(
            out,
            "TAP version 13\n1..2\n# fixture setup failed: no device 1234:b16b\n\
             not ok 1 dummy.pass # fixture setup failed: no device 1234:b16b\n\
             not ok 2 dummy.panic # fixture setup failed: no device 1234:b16b\n\
             # Totals: pass:0 fail:2 xfail:0 xpass:0 skip:0 error:0\n"
        );
        assert_eq!(totals.exit_code(), KSFT_FAIL);
    }

    #[test]
    fn a_skip_all_setup_skips_every_test_and_exits_ksft_skip() {
        let (out, totals) = run_to_string(&["dummy.p*"], || {
            Err(anyhow::Error::new(SkipAll("no device 1234:b16b".into())).context("opening"))
        });
        assert_eq!(
            out,
            "TAP version 13\n1..2\n\
             ok 1 dummy.pass # SKIP no device 1234:b16b\n\
             ok 2 dummy.panic # SKIP no device 1234:b16b\n\
             # Totals: pass:0 fail:0 xfail:0 xpass:0 skip:2 error:0\n"
        );
        assert_eq!(totals.exit_code(), KSFT_SKIP);
    }
}
