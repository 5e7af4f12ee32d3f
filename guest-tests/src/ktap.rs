//! KTAP output (Documentation/dev-tools/ktap.rst) in the flavour kselftest prints:
//! `TAP version 13`, a plan, one result line per test, `# ` diagnostics, totals,
//! and the kselftest exit codes.

use std::io::{self, Write};

use protocol::ktap::{Directive, ResultLine};
pub use protocol::ktap::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP, KSFT_XFAIL, KSFT_XPASS};

/// The result of one test as KTAP records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `ok N name`.
    Pass,
    /// `ok N name # SKIP reason`.
    Skip(String),
    /// `not ok N name`.
    Fail,
    /// `not ok N name # reason`: a failure whose reason is not the test's own
    /// (its fixture could not be built), stated on the line so that every
    /// affected result carries it. Parsers take an unknown directive word as a
    /// description, so the verdict stays a failure; the reason must not start
    /// with a directive word (SKIP, TODO, XFAIL, TIMEOUT).
    FailBecause(String),
    /// `not ok N name # TIMEOUT`.
    Timeout,
    /// `ok N name # XFAIL reason`: failed as expected (the reason says why a
    /// failure is expected here); `ok` as kselftest's `ksft_test_result_xfail`
    /// prints it, since an expected failure does not fail the run.
    Xfail(String),
    /// `ok N name # XPASS reason`: passed though a failure was expected (the
    /// reason says why one was, and why it passed anyway).
    Xpass(String),
}

/// Counts of each verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tests that passed.
    pub pass: usize,
    /// Tests that failed (including timeouts).
    pub fail: usize,
    /// Tests that were skipped.
    pub skip: usize,
    /// Tests that failed as expected.
    pub xfail: usize,
    /// Tests that passed though a failure was expected.
    pub xpass: usize,
}

impl Totals {
    /// The kselftest exit code for these totals.
    pub fn exit_code(&self) -> i32 {
        if self.fail > 0 {
            KSFT_FAIL
        } else if self.pass == 0 && self.xfail == 0 && self.xpass == 0 {
            KSFT_SKIP
        } else {
            KSFT_PASS
        }
    }
}

/// Writes one KTAP document, flushing after every line so that a crash of the
/// whole program still leaves everything before it readable.
pub struct Ktap<W: Write> {
    out: W,
    number: usize,
    totals: Totals,
}

impl<W: Write> Ktap<W> {
    /// Writes the header and the plan for `planned` tests.
    pub fn start(out: W, planned: usize) -> io::Result<Self> {
        let mut k = Ktap {
            out,
            number: 0,
            totals: Totals::default(),
        };
        k.line("TAP version 13")?;
        k.line(&format!("1..{planned}"))?;
        Ok(k)
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }

    /// Writes `text` as diagnostic lines (`# ` before each line).
    pub fn diag(&mut self, text: &str) -> io::Result<()> {
        for l in text.lines() {
            self.line(&format!("# {l}"))?;
        }
        Ok(())
    }

    /// Writes the result line of the next test.
    pub fn result(&mut self, name: &str, verdict: &Verdict) -> io::Result<()> {
        self.number += 1;
        let n = self.number;
        let (ok, directive, reason) = match verdict {
            Verdict::Pass => {
                self.totals.pass += 1;
                (true, None, "")
            }
            Verdict::Skip(reason) => {
                self.totals.skip += 1;
                (true, Some(Directive::Skip), reason.as_str())
            }
            Verdict::Fail => {
                self.totals.fail += 1;
                (false, None, "")
            }
            Verdict::FailBecause(reason) => {
                self.totals.fail += 1;
                (false, None, reason.as_str())
            }
            Verdict::Timeout => {
                self.totals.fail += 1;
                (false, Some(Directive::Timeout), "")
            }
            Verdict::Xfail(reason) => {
                self.totals.xfail += 1;
                (true, Some(Directive::Xfail), reason.as_str())
            }
            Verdict::Xpass(reason) => {
                self.totals.xpass += 1;
                (true, Some(Directive::Xpass), reason.as_str())
            }
        };
        let line = ResultLine {
            ok,
            number: n as u32,
            name,
            directive,
            reason,
        }
        .render();
        self.line(&line)
    }

    /// Writes the kselftest totals line and returns the totals.
    pub fn finish(mut self) -> io::Result<Totals> {
        let t = self.totals;
        self.line(&format!(
            "# Totals: pass:{} fail:{} xfail:{} xpass:{} skip:{} error:0",
            t.pass, t.fail, t.xfail, t.xpass, t.skip
        ))?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_shape() {
        let mut buf = Vec::new();
        let mut k = Ktap::start(&mut buf, 7).unwrap();
        k.diag("two\nlines").unwrap();
        k.result("a.pass", &Verdict::Pass).unwrap();
        k.result("a.skip", &Verdict::Skip("no device\nmore".into()))
            .unwrap();
        k.result("a.fail", &Verdict::Fail).unwrap();
        k.result("a.hang", &Verdict::Timeout).unwrap();
        k.result("a.place", &Verdict::Xfail("no placement\nmore".into()))
            .unwrap();
        k.result(
            "a.setup",
            &Verdict::FailBecause("fixture setup failed: x\ny".into()),
        )
        .unwrap();
        k.result("a.lucky", &Verdict::Xpass("kept by accident".into()))
            .unwrap();
        let t = k.finish().unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "TAP version 13\n1..7\n# two\n# lines\nok 1 a.pass\nok 2 a.skip # SKIP no device\n\
             not ok 3 a.fail\nnot ok 4 a.hang # TIMEOUT\nok 5 a.place # XFAIL no placement\n\
             not ok 6 a.setup # fixture setup failed: x\nok 7 a.lucky # XPASS kept by accident\n\
             # Totals: pass:1 fail:3 xfail:1 xpass:1 skip:1 error:0\n"
        );
        assert_eq!(
            t,
            Totals {
                pass: 1,
                fail: 3,
                skip: 1,
                xfail: 1,
                xpass: 1,
            }
        );
    }

    #[test]
    fn exit_codes_follow_kselftest() {
        let t = |pass, fail, skip| {
            Totals {
                pass,
                fail,
                skip,
                xfail: 0,
                xpass: 0,
            }
            .exit_code()
        };
        assert_eq!(t(3, 0, 0), KSFT_PASS);
        assert_eq!(t(3, 0, 2), KSFT_PASS);
        assert_eq!(t(3, 1, 2), KSFT_FAIL);
        assert_eq!(t(0, 1, 0), KSFT_FAIL);
        assert_eq!(t(0, 0, 2), KSFT_SKIP);
        assert_eq!(t(0, 0, 0), KSFT_SKIP);
        let only_xfail = Totals {
            xfail: 1,
            ..Totals::default()
        };
        assert_eq!(only_xfail.exit_code(), KSFT_PASS);
    }
}
