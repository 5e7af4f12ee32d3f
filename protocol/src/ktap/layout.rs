//! The `# layout: ...` diagnostic: one mapping a test measured, as data.
//!
//! Where a test compares counted faults with the rule model, the guest writes
//! the mapping (VMA start and length, BAR and offset, the physical address of
//! its start) and, run by run of the model's plan, the entries expected, the
//! faults expected and counted, and the entry size the count proves. The runner
//! reads it back into `results.json` and draws it. One line, `key=value` words,
//! the free-text description last so that it may hold spaces:
//!
//! ```text
//! layout: bar=1 start=0x7f0000201000 len=0x3dff000 offset=0x201000 phys=0xe0201000 runs=pte*511:511/511=pte,pmd*30:30/30=pmd what=kernel placement
//! ```
//!
//! A run is `SIZE*COUNT:EXPECTED/COUNTED=MEASURED`: COUNT entries of SIZE
//! expected, EXPECTED faults expected and COUNTED counted over its pages, and
//! MEASURED the one entry size that explains the count (`?` when none does).
//! A mapping whose address the kernel chose (A1–A3) also carries `rule=`, the
//! runs (`SIZE*COUNT`, comma-separated) a placement keeping the rule
//! (`start ≡ phys (mod 1 GiB)`) would get, so a lost PMD shows as a difference.

use std::fmt;

/// The word that starts a layout diagnostic (after `# `).
pub const PREFIX: &str = "layout:";

/// The size of a page-table entry mapping a BAR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntrySize {
    /// 4 KiB (a PTE).
    Pte,
    /// 2 MiB (a PMD leaf).
    Pmd,
    /// 1 GiB (a PUD leaf).
    Pud,
}

impl EntrySize {
    /// Every size, largest first.
    pub const LARGEST_FIRST: [EntrySize; 3] = [Self::Pud, Self::Pmd, Self::Pte];

    /// Bytes one entry maps.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Pte => 1 << 12,
            Self::Pmd => 1 << 21,
            Self::Pud => 1 << 30,
        }
    }

    /// The word written for it (`pte`, `pmd`, `pud`).
    pub const fn word(self) -> &'static str {
        match self {
            Self::Pte => "pte",
            Self::Pmd => "pmd",
            Self::Pud => "pud",
        }
    }

    /// One letter per block in text pictures: G(iB), M(iB), k (4 KiB).
    pub const fn letter(self) -> char {
        match self {
            Self::Pte => 'k',
            Self::Pmd => 'M',
            Self::Pud => 'G',
        }
    }

    /// The size `word` names.
    pub fn parse(word: &str) -> Option<Self> {
        Self::LARGEST_FIRST.into_iter().find(|s| s.word() == word)
    }
}

/// One run of equal entries of the model's plan, and what was counted over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutRun {
    /// The size the model expects.
    pub size: EntrySize,
    /// How many entries of that size it expects.
    pub count: u64,
    /// Faults the model expects for touching the run.
    pub expected_faults: u64,
    /// Faults counted while touching it.
    pub faults: u64,
    /// The entry size the counted faults prove for the whole run, `None` when
    /// no single size explains them (a mix, or a count of nothing).
    pub measured: Option<EntrySize>,
}

impl LayoutRun {
    /// Bytes the run covers.
    pub fn bytes(&self) -> u64 {
        self.count * self.size.bytes()
    }

    /// Entries of the measured size the run holds, if one was measured.
    pub fn measured_count(&self) -> Option<u64> {
        self.measured.map(|m| self.bytes() / m.bytes())
    }

    fn render(&self) -> String {
        format!(
            "{}*{}:{}/{}={}",
            self.size.word(),
            self.count,
            self.expected_faults,
            self.faults,
            self.measured.map_or("?", EntrySize::word)
        )
    }

    fn parse(text: &str) -> Result<Self, LayoutError> {
        let bad = || LayoutError::Run(text.to_string());
        let (size, rest) = text.split_once('*').ok_or_else(bad)?;
        let (count, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (expected, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (faults, measured) = rest.split_once('=').ok_or_else(bad)?;
        Ok(LayoutRun {
            size: EntrySize::parse(size).ok_or_else(bad)?,
            count: count.parse().map_err(|_| bad())?,
            expected_faults: expected.parse().map_err(|_| bad())?,
            faults: faults.parse().map_err(|_| bad())?,
            measured: match measured {
                "?" => None,
                w => Some(EntrySize::parse(w).ok_or_else(bad)?),
            },
        })
    }
}

/// One measured mapping of part of a BAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// What the test calls this mapping (one line).
    pub what: String,
    /// The BAR index.
    pub bar: u32,
    /// Virtual start address of the VMA.
    pub start: u64,
    /// Length of the VMA in bytes.
    pub len: u64,
    /// Offset of the VMA's start in the BAR.
    pub offset: u64,
    /// Physical address the VMA's start maps (BAR base + offset).
    pub phys: u64,
    /// The model's runs, from the VMA's start up, each with its count.
    pub runs: Vec<LayoutRun>,
    /// The runs a rule-keeping placement would get (`SIZE`, `COUNT`), for a
    /// mapping placed by the kernel; empty otherwise.
    pub rule: Vec<(EntrySize, u64)>,
}

/// A layout diagnostic that does not have the format above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A `key=value` word is missing.
    Missing(&'static str),
    /// A number does not parse.
    Number(&'static str, String),
    /// A run does not parse.
    Run(String),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "layout line without {key}="),
            Self::Number(key, v) => write!(f, "layout {key}={v} is not a number"),
            Self::Run(r) => write!(
                f,
                "layout run {r:?} is not SIZE*COUNT:EXPECTED/COUNTED=SIZE"
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

impl Layout {
    /// The diagnostic's text, without the leading `# ` (the description's
    /// newlines would end the line, so only its first line is kept).
    pub fn render(&self) -> String {
        let runs: Vec<String> = self.runs.iter().map(LayoutRun::render).collect();
        let rule = if self.rule.is_empty() {
            String::new()
        } else {
            let r: Vec<String> = self
                .rule
                .iter()
                .map(|(s, n)| format!("{}*{n}", s.word()))
                .collect();
            format!(" rule={}", r.join(","))
        };
        format!(
            "{PREFIX} bar={} start={:#x} len={:#x} offset={:#x} phys={:#x} runs={}{rule} what={}",
            self.bar,
            self.start,
            self.len,
            self.offset,
            self.phys,
            runs.join(","),
            self.what.lines().next().unwrap_or("")
        )
    }

    /// The layout a diagnostic (without its `# `) holds; `None` if it is not
    /// a layout diagnostic, an error if it is one but malformed.
    pub fn parse(diag: &str) -> Option<Result<Self, LayoutError>> {
        let rest = diag.trim_start().strip_prefix(PREFIX)?;
        Some(Self::parse_words(rest))
    }

    fn parse_words(rest: &str) -> Result<Self, LayoutError> {
        let (words, what) = match rest.split_once(" what=") {
            Some((w, what)) => (w, what),
            None => (rest, ""),
        };
        let value = |key: &'static str| {
            words
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .ok_or(LayoutError::Missing(key))
        };
        let number = |key: &'static str| -> Result<u64, LayoutError> {
            let v = value(key)?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|_| LayoutError::Number(key, v.to_string()))
        };
        let runs = value("runs")?;
        Ok(Layout {
            what: what.to_string(),
            bar: u32::try_from(number("bar")?)
                .map_err(|_| LayoutError::Number("bar", value("bar").unwrap_or("").into()))?,
            start: number("start")?,
            len: number("len")?,
            offset: number("offset")?,
            phys: number("phys")?,
            runs: runs
                .split(',')
                .filter(|r| !r.is_empty())
                .map(LayoutRun::parse)
                .collect::<Result<_, _>>()?,
            rule: match value("rule") {
                Ok(r) => parse_rule(r)?,
                Err(_) => Vec::new(),
            },
        })
    }

    /// Entries of `size` the model expects.
    pub fn expected(&self, size: EntrySize) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.size == size)
            .map(|r| r.count)
            .sum()
    }

    /// Entries of `size` the counts prove; `None` when a run's count fits no
    /// single size (so the total is unknown).
    pub fn counted(&self, size: EntrySize) -> Option<u64> {
        self.runs.iter().try_fold(0, |sum, r| {
            let n = r.measured_count()?;
            Some(sum + if r.measured == Some(size) { n } else { 0 })
        })
    }

    /// Whether every run cost the faults the model expects.
    pub fn matches(&self) -> bool {
        self.runs.iter().all(|r| r.faults == r.expected_faults)
    }

    /// `(start mod block, phys mod block)`: the placement congruence that F1
    /// and A1–A3 compare (equal residues let blocks of `size` map huge).
    pub fn congruence(&self, size: EntrySize) -> (u64, u64) {
        (self.start % size.bytes(), self.phys % size.bytes())
    }
}

/// `SIZE*COUNT,...`.
fn parse_rule(text: &str) -> Result<Vec<(EntrySize, u64)>, LayoutError> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let bad = || LayoutError::Run(r.to_string());
            let (size, count) = r.split_once('*').ok_or_else(bad)?;
            Ok((
                EntrySize::parse(size).ok_or_else(bad)?,
                count.parse().map_err(|_| bad())?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(size: EntrySize, count: u64, faults: u64, measured: Option<EntrySize>) -> LayoutRun {
        LayoutRun {
            size,
            count,
            expected_faults: count,
            faults,
            measured,
        }
    }

    fn msix_tail() -> Layout {
        Layout {
            what: "kernel placement: [0x201000, +0x3dff000)".into(),
            bar: 1,
            start: 0x7f00_0020_1000,
            len: 0x3df_f000,
            offset: 0x20_1000,
            phys: 0xe020_1000,
            runs: vec![
                run(EntrySize::Pte, 511, 511, Some(EntrySize::Pte)),
                run(EntrySize::Pmd, 30, 30, Some(EntrySize::Pmd)),
            ],
            rule: vec![],
        }
    }

    #[rstest::rstest]
    #[case(msix_tail())]
    #[case(Layout { runs: vec![], what: String::new(), ..msix_tail() })]
    #[case(Layout {
        runs: vec![run(EntrySize::Pmd, 30, 60, Some(EntrySize::Pte)), run(EntrySize::Pud, 1, 7, None)],
        what: "what= with = and spaces".into(),
        rule: vec![(EntrySize::Pte, 511), (EntrySize::Pmd, 30)],
        ..msix_tail()
    })]
    fn what_is_written_is_read_back(#[case] layout: Layout) {
        let text = layout.render();
        assert_eq!(Layout::parse(&text), Some(Ok(layout)), "{text}");
    }

    #[rstest::rstest]
    #[case("a diagnostic")]
    #[case("layout of the BAR: 1 GiB")]
    fn other_diagnostics_are_no_layouts(#[case] text: &str) {
        assert_eq!(Layout::parse(text), None);
    }

    #[rstest::rstest]
    #[case(
        "layout: bar=1 len=0x1000 offset=0 phys=0 runs=",
        LayoutError::Missing("start")
    )]
    #[case(
        "layout: bar=1 start=0xzz len=0x1000 offset=0 phys=0 runs=",
        LayoutError::Number("start", "0xzz".into())
    )]
    #[case(
        "layout: bar=1 start=0 len=0x1000 offset=0 phys=0 runs=pte*1",
        LayoutError::Run("pte*1".into())
    )]
    fn malformed_layouts_say_why(#[case] text: &str, #[case] want: LayoutError) {
        assert_eq!(Layout::parse(text), Some(Err(want)));
    }

    #[rstest::rstest]
    #[case(EntrySize::Pte, 511, Some(511))]
    #[case(EntrySize::Pmd, 30, Some(30))]
    #[case(EntrySize::Pud, 0, Some(0))]
    fn counts_per_size(
        #[case] size: EntrySize,
        #[case] expected: u64,
        #[case] counted: Option<u64>,
    ) {
        let l = msix_tail();
        assert_eq!((l.expected(size), l.counted(size)), (expected, counted));
        assert!(l.matches());
        assert_eq!(l.congruence(EntrySize::Pmd), (0x1000, 0x1000));
    }

    #[test]
    fn a_lost_pmd_run_counts_as_ptes() {
        let mut l = msix_tail();
        l.runs[1] = run(EntrySize::Pmd, 30, 15360, Some(EntrySize::Pte));
        assert_eq!(l.counted(EntrySize::Pte), Some(511 + 15360));
        assert_eq!(l.counted(EntrySize::Pmd), Some(0));
        assert!(!l.matches());
        l.runs[1].measured = None;
        assert_eq!(l.counted(EntrySize::Pte), None);
    }
}
