//! The mapping layouts a test measured, as `results.json` stores them: the
//! guest's `# layout:` diagnostics ([`protocol::ktap::layout`]) with the
//! totals per entry size and the placement congruence worked out, so that
//! readers of the JSON need not redo the arithmetic.

use protocol::ktap::layout::{EntrySize, Layout};
use serde::{Deserialize, Serialize};

/// Entries per size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerSize {
    /// 1 GiB entries.
    pub pud: u64,
    /// 2 MiB entries.
    pub pmd: u64,
    /// 4 KiB entries.
    pub pte: u64,
}

impl PerSize {
    fn of(f: impl Fn(EntrySize) -> Option<u64>) -> Option<Self> {
        Some(PerSize {
            pud: f(EntrySize::Pud)?,
            pmd: f(EntrySize::Pmd)?,
            pte: f(EntrySize::Pte)?,
        })
    }

    /// The count of `size`.
    #[cfg(test)]
    pub fn get(&self, size: EntrySize) -> u64 {
        match size {
            EntrySize::Pud => self.pud,
            EntrySize::Pmd => self.pmd,
            EntrySize::Pte => self.pte,
        }
    }
}

/// One run of equal entries: expected by the model, and what was counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `pud`, `pmd` or `pte`: the size the model expects.
    pub size: String,
    /// Entries of that size expected.
    pub count: u64,
    /// Faults expected for touching the run.
    pub expected_faults: u64,
    /// Faults counted.
    pub faults: u64,
    /// The size the count proves, `None` when no single size explains it.
    pub measured: Option<String>,
    /// Entries of the measured size.
    pub measured_count: Option<u64>,
}

/// A run of a rule-keeping placement: `count` entries of `size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRun {
    /// `pud`, `pmd` or `pte`.
    pub size: String,
    /// Entries.
    pub count: u64,
}

/// How the VMA's start lines up with the physical address modulo one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Congruence {
    /// `pmd` (2 MiB) or `pud` (1 GiB).
    pub block: String,
    /// The VMA start modulo the block.
    pub va_mod: u64,
    /// The BAR offset modulo the block.
    pub offset_mod: u64,
    /// The physical address of the start modulo the block.
    pub phys_mod: u64,
    /// Whether `va_mod == phys_mod` (blocks of this size can map huge).
    pub congruent: bool,
}

/// One measured mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingLayout {
    /// What the test calls it.
    pub what: String,
    /// BAR index.
    pub bar: u32,
    /// VMA start.
    pub start: u64,
    /// VMA length in bytes.
    pub len: u64,
    /// Offset in the BAR.
    pub offset: u64,
    /// Physical address of the start.
    pub phys: u64,
    /// Entries the model expects, per size.
    pub expected: PerSize,
    /// Entries the counts prove, per size; `None` when a run's count fits no
    /// single size.
    pub counted: Option<PerSize>,
    /// Whether every run cost the faults the model expects.
    pub matches: bool,
    /// Congruence modulo 2 MiB and 1 GiB.
    pub congruence: Vec<Congruence>,
    /// The model's runs from the start up, with their counts.
    pub runs: Vec<RunRecord>,
    /// A rule-keeping placement's runs, for mappings the kernel placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule: Vec<RuleRun>,
}

impl From<&Layout> for MappingLayout {
    fn from(l: &Layout) -> Self {
        let congruence = [EntrySize::Pmd, EntrySize::Pud]
            .into_iter()
            .map(|size| {
                let (va_mod, phys_mod) = l.congruence(size);
                Congruence {
                    block: size.word().into(),
                    va_mod,
                    offset_mod: l.offset % size.bytes(),
                    phys_mod,
                    congruent: va_mod == phys_mod,
                }
            })
            .collect();
        MappingLayout {
            what: l.what.clone(),
            bar: l.bar,
            start: l.start,
            len: l.len,
            offset: l.offset,
            phys: l.phys,
            expected: PerSize::of(|s| Some(l.expected(s))).unwrap_or_default(),
            counted: PerSize::of(|s| l.counted(s)),
            matches: l.matches(),
            congruence,
            runs: l
                .runs
                .iter()
                .map(|r| RunRecord {
                    size: r.size.word().into(),
                    count: r.count,
                    expected_faults: r.expected_faults,
                    faults: r.faults,
                    measured: r.measured.map(|m| m.word().into()),
                    measured_count: r.measured_count(),
                })
                .collect(),
            rule: l
                .rule
                .iter()
                .map(|&(s, count)| RuleRun {
                    size: s.word().into(),
                    count,
                })
                .collect(),
        }
    }
}

impl MappingLayout {
    /// Whether the drawing shows a difference: a run that cost other faults
    /// than expected, or a rule-keeping placement that maps otherwise.
    pub fn differs(&self) -> bool {
        !self.matches || (!self.rule.is_empty() && self.rule_per_size() != self.expected)
    }

    /// The rule-keeping placement's entries per size.
    pub fn rule_per_size(&self) -> PerSize {
        let of = |w: &str| {
            self.rule
                .iter()
                .filter(|r| r.size == w)
                .map(|r| r.count)
                .sum()
        };
        PerSize {
            pud: of("pud"),
            pmd: of("pmd"),
            pte: of("pte"),
        }
    }
}

/// Block size in bytes of a size word (`pud`, `pmd`, `pte`).
pub fn bytes_of(word: &str) -> u64 {
    EntrySize::parse(word).map_or(4096, EntrySize::bytes)
}

/// The letter drawn for a size word (G, M, k).
pub fn letter_of(word: &str) -> char {
    EntrySize::parse(word).map_or('?', EntrySize::letter)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The MSI-X tail as a size-only placement leaves it: 15 871 4 KiB pages,
    /// where a rule-keeping placement keeps 511 pages and 30 PMDs.
    pub(crate) fn lost_pmds() -> MappingLayout {
        let line = "layout: bar=1 start=0x7f0000200000 len=0x3dff000 offset=0x201000 \
                    phys=0xe0201000 runs=pte*15871:15871/15871=pte rule=pte*511,pmd*30 \
                    what=kernel placement";
        MappingLayout::from(&Layout::parse(line).unwrap().unwrap())
    }

    /// A mixed mapping whose PMD run faulted at every touch.
    pub(crate) fn pte_instead_of_pmd() -> MappingLayout {
        let line = "layout: bar=2 start=0x7f01ffdfe000 len=0x40405000 offset=0x3fdfe000 \
                    phys=0x803fdfe000 runs=pte*2:2/2=pte,pmd*1:1/2=pte,pud*1:1/1=pud,\
                    pmd*1:1/1=pmd,pte*3:3/3=pte what=first touch";
        MappingLayout::from(&Layout::parse(line).unwrap().unwrap())
    }

    #[test]
    fn totals_and_congruence() {
        let l = lost_pmds();
        assert_eq!(
            (l.expected.pte, l.counted.map(|c| c.pte)),
            (15871, Some(15871))
        );
        assert_eq!(l.congruence[0].va_mod, 0);
        assert_eq!(l.congruence[0].offset_mod, 0x1000);
        assert!(!l.congruence[0].congruent);
        assert!(l.matches && l.differs());
        let m = pte_instead_of_pmd();
        assert_eq!(
            m.counted.map(|c| (c.pte, c.pmd, c.pud)),
            Some((5 + 512, 1, 1))
        );
        assert!(!m.matches && m.differs());
    }
}
