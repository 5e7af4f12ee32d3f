//! The KTAP words the guest binary writes and the runner reads
//! (Documentation/dev-tools/ktap.rst, in the flavour kselftest prints), and the
//! kselftest exit codes behind them: one definition, so that a directive one
//! side writes is one the other side knows. [`layout`] is the structured
//! diagnostic that carries a measured mapping.

pub mod layout;

/// kselftest exit code: every test passed (or some passed and the rest skipped).
pub const KSFT_PASS: i32 = 0;
/// kselftest exit code: at least one test failed.
pub const KSFT_FAIL: i32 = 1;
/// kselftest exit code of a test that failed as expected.
pub const KSFT_XFAIL: i32 = 2;
/// kselftest exit code of a test that passed though a failure was expected.
pub const KSFT_XPASS: i32 = 3;
/// kselftest exit code: nothing ran to a pass or a failure; everything skipped.
pub const KSFT_SKIP: i32 = 4;

/// A result line's directive: the word after `# `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// `ok N name # SKIP reason`: not run, for the reason given.
    Skip,
    /// `ok N name # XFAIL reason`: failed as expected (`ok`, as kselftest's
    /// `ksft_test_result_xfail` prints it: an expected failure fails no run).
    Xfail,
    /// `ok N name # XPASS reason`: passed though a failure was expected.
    Xpass,
    /// `not ok N name # TIMEOUT`: killed at its deadline.
    Timeout,
}

impl Directive {
    /// Every directive.
    pub const ALL: [Directive; 4] = [Self::Skip, Self::Xfail, Self::Xpass, Self::Timeout];

    /// The word written after `# `.
    pub fn word(self) -> &'static str {
        match self {
            Self::Skip => "SKIP",
            Self::Xfail => "XFAIL",
            Self::Xpass => "XPASS",
            Self::Timeout => "TIMEOUT",
        }
    }

    /// Whether its result line starts with `ok`.
    pub fn ok(self) -> bool {
        self != Self::Timeout
    }

    /// The directive `word` names (case-insensitive, as KTAP parsers read it).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.word().eq_ignore_ascii_case(word))
    }
}

/// One result line, as written: `ok`/`not ok`, number, name, and an optional
/// directive or description after `# `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultLine<'a> {
    /// `ok` (true) or `not ok`.
    pub ok: bool,
    /// The test number.
    pub number: u32,
    /// The test name.
    pub name: &'a str,
    /// The directive, if the text after `# ` starts with one.
    pub directive: Option<Directive>,
    /// The text after the directive word, or after `# ` when there is no
    /// directive (a description, such as why a fixture failed); empty if none.
    pub reason: &'a str,
}

impl ResultLine<'_> {
    /// The line as the guest binary writes it (a reason's newlines would end
    /// the line, so only its first line is kept).
    pub fn render(&self) -> String {
        let head = format!(
            "{} {} {}",
            if self.ok { "ok" } else { "not ok" },
            self.number,
            self.name
        );
        let reason = self.reason.lines().next().unwrap_or("");
        match (self.directive, reason.is_empty()) {
            (Some(d), true) => format!("{head} # {}", d.word()),
            (Some(d), false) => format!("{head} # {} {reason}", d.word()),
            (None, true) => head,
            (None, false) => format!("{head} # {reason}"),
        }
    }
}

/// Parses a result line (`ok 3 name # SKIP why`, `not ok 4 name`); `None` for
/// any other line.
pub fn parse_result(line: &str) -> Option<ResultLine<'_>> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else {
        (true, line.strip_prefix("ok ")?)
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = number.parse().ok()?;
    let (name, tail) = match rest.split_once(" # ") {
        Some((n, t)) => (n.trim(), Some(t.trim())),
        None => (rest.trim(), None),
    };
    let (directive, reason) = match tail {
        None => (None, ""),
        Some(t) => {
            let (word, after) = t.split_once(' ').unwrap_or((t, ""));
            match Directive::parse(word) {
                Some(d) => (Some(d), after.trim()),
                None => (None, t),
            }
        }
    };
    Some(ResultLine {
        ok,
        number,
        name,
        directive,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(true, None, "")]
    #[case(false, None, "")]
    #[case(true, Some(Directive::Skip), "no device 1234:b16b")]
    #[case(true, Some(Directive::Xfail), "kernel without offset-aware placement")]
    #[case(true, Some(Directive::Xpass), "placed 2 MiB-congruent by accident")]
    #[case(false, Some(Directive::Timeout), "")]
    #[case(false, None, "fixture setup failed: no IOMMU group")]
    fn what_is_written_is_read_back(
        #[case] ok: bool,
        #[case] directive: Option<Directive>,
        #[case] reason: &str,
    ) {
        let line = ResultLine {
            ok,
            number: 7,
            name: "a3.msix_hole",
            directive,
            reason,
        };
        let text = line.render();
        assert_eq!(parse_result(&text), Some(line), "{text}");
    }

    #[rstest::rstest]
    #[case("ok 1 x # skip lower case", Some(Directive::Skip), "lower case")]
    #[case(
        "not ok 2 x # TIMEOUT after 60s",
        Some(Directive::Timeout),
        "after 60s"
    )]
    #[case("not ok 3 x # TODO not ours", None, "TODO not ours")]
    fn directives_by_word(
        #[case] text: &str,
        #[case] directive: Option<Directive>,
        #[case] reason: &str,
    ) {
        let line = parse_result(text).unwrap();
        assert_eq!((line.directive, line.reason), (directive, reason));
    }

    #[rstest::rstest]
    #[case("# a diagnostic")]
    #[case("TAP version 13")]
    #[case("1..4")]
    #[case("ok x name")]
    fn other_lines_are_no_results(#[case] text: &str) {
        assert_eq!(parse_result(text), None);
    }

    #[test]
    fn words_are_distinct_and_round_trip() {
        for d in Directive::ALL {
            assert_eq!(Directive::parse(d.word()), Some(d));
        }
    }
}
