//! Reading x86's page-table dump (`CONFIG_PTDUMP_DEBUGFS`,
//! `/sys/kernel/debug/page_tables/current_kernel`): the ground truth of which
//! entry sizes map a virtual range (docs/RULES.md, "Observing the order").
//!
//! The kernel (`arch/x86/mm/dump_pagetables.c`) prints one line per series of
//! consecutive entries of one level with equal protection bits, for example
//!
//! ```text
//! ---[ User Space ]---
//! 0x00007f4000000000-0x00007f4080000000           2G     USR RW     PCD PSE         NX  pud
//! 0x00007f4080000000-0x00007f4080200000           2M                               pmd
//! ```
//!
//! so one line may cover several entries (here two 1 GiB entries) and a range
//! of not-present entries has blanks where the flags go. The physical address is
//! not printed: entries of one size next to each other merge even when they map
//! unrelated memory, which is why counts are taken over a virtual range.
//! No I/O here: the guest test reads the file, this module interprets it.

use std::fmt;

use crate::model::Order;

/// Lowest address of the kernel half: everything below is user space.
const KERNEL_HALF: u64 = 1 << 63;

/// The page-table level a dump line's entries belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Page global directory.
    Pgd,
    /// Fourth-level directory (folded into the PGD on 4-level paging).
    P4d,
    /// Page upper directory: a present leaf maps 1 GiB.
    Pud,
    /// Page middle directory: a present leaf maps 2 MiB.
    Pmd,
    /// Page table entry: 4 KiB.
    Pte,
}

impl Level {
    fn from_name(name: &str) -> Option<Level> {
        Some(match name {
            "pgd" => Level::Pgd,
            "p4d" => Level::P4d,
            "pud" => Level::Pud,
            "pmd" => Level::Pmd,
            "pte" => Level::Pte,
            _ => return None,
        })
    }

    /// The model's order for a leaf at this level (PGD and P4D leaves do not
    /// occur in user space on x86-64).
    pub fn order(self) -> Option<Order> {
        match self {
            Level::Pud => Some(Order::Pud),
            Level::Pmd => Some(Order::Pmd),
            Level::Pte => Some(Order::Pte),
            Level::Pgd | Level::P4d => None,
        }
    }
}

/// One dump line: `[start, end)` covered by entries of `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First virtual address.
    pub start: u64,
    /// Virtual address just past the span.
    pub end: u64,
    /// Level of the entries.
    pub level: Level,
    /// Whether the entries are present (a hole prints no flags).
    pub present: bool,
}

/// A dump line that does not have the kernel's format.
#[derive(Debug, thiserror::Error)]
#[error("page-table dump line {line_no}: {why}: {line:?}")]
pub struct ParseError {
    /// 1-based line number in the dump.
    pub line_no: usize,
    /// The line.
    pub line: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a whole dump into its spans, in file order. Section markers
/// (`---[ name ]---`) and `... N entries skipped ...` lines are not spans.
pub fn parse(text: &str) -> Result<Vec<Span>, ParseError> {
    let mut spans = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with("0x") {
            continue;
        }
        let bad = |why| ParseError {
            line_no: i + 1,
            line: line.to_string(),
            why,
        };
        spans.push(parse_line(line).map_err(bad)?);
    }
    Ok(spans)
}

/// One line: `0x<start>-0x<end>   <size><unit> <flags...> <level>`.
fn parse_line(line: &str) -> Result<Span, &'static str> {
    let mut words = line.split_whitespace();
    let range = words.next().ok_or("empty line")?;
    let (start, end) = range.split_once('-').ok_or("no '-' in the address range")?;
    let start = hex(start).ok_or("start address is not 0x<hex>")?;
    let end = hex(end).ok_or("end address is not 0x<hex>")?;
    // The last series of the address space ends at 2^64, printed as 0.
    let end_wrapped = end == 0 && start > 0;
    if end <= start && !end_wrapped {
        return Err("end address not above start address");
    }
    let size = size(words.next().ok_or("no size")?).ok_or("size is not <number><BKMGTPE>")?;
    let rest: Vec<&str> = words.collect();
    let (&name, flags) = rest.split_last().ok_or("no level name")?;
    let level = Level::from_name(name).ok_or("level is not pgd/p4d/pud/pmd/pte")?;
    // `delta` is computed modulo 2^64 by the kernel too.
    if end.wrapping_sub(start) != size {
        return Err("size column differs from the address range");
    }
    // Present entries always print RW or ro; holes print blanks.
    let present = flags.iter().any(|&f| f == "RW" || f == "ro");
    if !present && !flags.is_empty() {
        return Err("flags without RW/ro");
    }
    Ok(Span {
        start,
        end: if end_wrapped { u64::MAX } else { end },
        level,
        present,
    })
}

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

/// `%9lu%c` with units `BKMGTPE`: the byte count, `None` if malformed or past 2^64.
fn size(word: &str) -> Option<u64> {
    let (digits, unit) = word.split_at(word.len().checked_sub(1)?);
    let shift = 10 * "BKMGTPE".find(unit)? as u32;
    digits
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64.checked_shl(shift)?)
}

/// What maps a virtual range according to the dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// 1 GiB entries overlapping the range.
    pub pud: u64,
    /// 2 MiB entries overlapping the range.
    pub pmd: u64,
    /// 4 KiB entries overlapping the range.
    pub pte: u64,
    /// Bytes of the range mapped by present entries of any level.
    pub mapped: u64,
}

impl Tally {
    /// Entries of `order`.
    pub fn count(&self, order: Order) -> u64 {
        match order {
            Order::Pud => self.pud,
            Order::Pmd => self.pmd,
            Order::Pte => self.pte,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} PUD, {} PMD, {} PTE, {:#x} bytes mapped",
            self.pud, self.pmd, self.pte, self.mapped
        )
    }
}

/// Counts the present entries overlapping `[start, end)`, per size. An entry
/// that sticks out of the range counts once (the test then sees more bytes
/// than its mapping, or a count the model does not predict).
pub fn tally(spans: &[Span], start: u64, end: u64) -> Tally {
    let mut t = Tally::default();
    for s in spans.iter().filter(|s| s.present) {
        let (lo, hi) = (s.start.max(start), s.end.min(end));
        if lo >= hi {
            continue;
        }
        t.mapped += hi - lo;
        let Some(order) = s.level.order() else {
            continue;
        };
        let size = order.size();
        // Spans start and end on entry boundaries of their level.
        let first = lo - (lo - s.start) % size;
        let entries = (hi - first).div_ceil(size);
        match order {
            Order::Pud => t.pud += entries,
            Order::Pmd => t.pmd += entries,
            Order::Pte => t.pte += entries,
        }
    }
    t
}

/// Whether the dump shows any present user-space entry: a dump of the kernel
/// copy of the page tables under page-table isolation, or of a kernel that
/// walks the kernel half only, has none.
pub fn has_user_entries(spans: &[Span]) -> bool {
    spans.iter().any(|s| s.present && s.start < KERNEL_HALF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PMD, PUD};
    use rstest::rstest;

    /// A dump in the kernel's exact column layout of a mapping
    /// [0x7f3f_ffdf_e000, 0x7f40_4020_3000): 2 PTE, 1 PMD, 1 PUD, 1 PMD, 3 PTE,
    /// with holes split across levels and a neighbour whose 2 PTEs merge into
    /// the line of the mapping's PTE tail.
    const DUMP: &str = "\
---[ User Space ]---
0x0000000000000000-0x0000000000400000           4M                               pte
0x0000000000400000-0x0000000000401000           4K USR ro                     NX pte
0x0000000000401000-0x0000000000600000        2044K                               pte
0x0000000000600000-0x0000000040000000        1018M                               pmd
0x0000000040000000-0x00007f0000000000      130047G                               pud
0x00007f3fffc00000-0x00007f3fffdfe000        2040K                               pte
0x00007f3fffdfe000-0x00007f3fffe00000           8K USR RW     PCD             NX pte
0x00007f3fffe00000-0x00007f4000000000           2M USR RW     PCD PSE         NX pmd
0x00007f4000000000-0x00007f4040000000           1G USR RW     PCD PSE         NX pud
0x00007f4040000000-0x00007f4040200000           2M USR RW     PCD PSE         NX pmd
0x00007f4040200000-0x00007f4040205000          20K USR RW     PCD             NX pte
0x00007f4040205000-0x00007f4040400000        2028K                               pte
0x00007f4040400000-0x00007f4080000000        1020M                               pmd
---[ Kernel Space ]---
0xffff800000000000-0xffff880000000000           8T                               pgd
... 3 entries skipped ... 
0xffffffffff600000-0xffffffffff601000           4K USR ro                 GLB NX pte
0xffffffffff601000-0x0000000000000000       10236K                               pte
";

    /// The spans of [`DUMP`].
    fn spans() -> Vec<Span> {
        parse(DUMP).unwrap()
    }

    #[test]
    fn parses_every_range_line() {
        let s = spans();
        assert_eq!(s.len(), 16);
        assert_eq!(
            s[7],
            Span {
                start: 0x7f3f_ffe0_0000,
                end: 0x7f40_0000_0000,
                level: Level::Pmd,
                present: true
            }
        );
        assert!(!s[0].present);
        assert_eq!(s[15].end, u64::MAX);
    }

    #[rstest]
    // The whole mapping: 2 + 3 PTEs; the 20 KiB line also holds 2 PTEs of a
    // neighbour, outside the range.
    #[case(0x7f3f_ffdf_e000, 0x7f40_4020_3000, (1, 2, 5), 0x4040_5000)]
    // Only the PUD.
    #[case(0x7f40_0000_0000, 0x7f40_4000_0000, (1, 0, 0), PUD)]
    // Half a PMD counts the entry once but maps half its bytes.
    #[case(0x7f3f_fff0_0000, 0x7f40_0000_0000, (0, 1, 0), PMD / 2)]
    // A hole: nothing.
    #[case(0x7f40_4040_0000, 0x7f40_8000_0000, (0, 0, 0), 0)]
    fn tallies_a_range(
        #[case] start: u64,
        #[case] end: u64,
        #[case] want: (u64, u64, u64),
        #[case] mapped: u64,
    ) {
        let t = tally(&spans(), start, end);
        assert_eq!((t.pud, t.pmd, t.pte), want, "{t}");
        assert_eq!(t.mapped, mapped, "{t}");
    }

    #[rstest]
    #[case(
        "0x00007f4000000000-0x00007f4080000000           2G USR RW         PSE         x  pud",
        Level::Pud,
        true
    )]
    #[case(
        "0x00007f4000000000-0x00007f4000002000           8K                               pte",
        Level::Pte,
        false
    )]
    fn one_line(#[case] line: &str, #[case] level: Level, #[case] present: bool) {
        let s = parse(line).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].level, s[0].present), (level, present));
        let n = (s[0].end - s[0].start) / level.order().unwrap().size();
        assert!(n >= 2, "one line, several entries");
    }

    #[rstest]
    #[case("0x1000-0x2000 4K USR RW x pgx", "level")]
    #[case("0x1000-0x2000 8K USR RW x pte", "size column")]
    #[case("0x2000-0x1000 4K USR RW x pte", "not above")]
    #[case("0x1000 4K USR RW x pte", "'-'")]
    #[case("0x1000-0x2000 4Q USR RW x pte", "size is not")]
    #[case("0x1000-0x2000 4K USR x pte", "RW/ro")]
    #[case("0xzz-0x2000 4K USR RW x pte", "start address")]
    fn rejects_malformed_lines(#[case] line: &str, #[case] why: &str) {
        let e = parse(&format!("---[ User Space ]---\n{line}\n")).unwrap_err();
        assert_eq!(e.line_no, 2);
        assert!(e.to_string().contains(why), "{e}");
    }

    #[test]
    fn user_entries_are_seen_or_not() {
        assert!(has_user_entries(&spans()));
        let kernel_only: Vec<Span> = spans()
            .into_iter()
            .filter(|s| s.start >= KERNEL_HALF)
            .collect();
        assert!(!has_user_entries(&kernel_only));
    }
}
