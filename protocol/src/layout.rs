//! The BAR layout of the emulated device: which BAR slots hold memory BARs, how
//! large they are, their type, and where the MSI-X table lives.
//!
//! This module uses only `std` so that the static guest binary can parse the same
//! `--bars` syntax as the device and know what to expect.
//!
//! # Syntax
//!
//! A layout is a comma-separated list of entries `INDEX=SIZE[:FLAG]...`:
//!
//! - `INDEX` is the BAR slot, 1 to 5 (BAR 0 is always the register BAR).
//! - `SIZE` is a power of two of at least 4 KiB, in bytes or with a binary suffix
//!   `K`, `M`, `G` or `T`.
//! - Flags: `32` makes a 32-bit BAR (default 64-bit, which takes slots `INDEX` and
//!   `INDEX + 1`), `np` makes it non-prefetchable (default prefetchable), and
//!   `msix@OFFSET` puts the MSI-X table in this BAR at `OFFSET`, with the PBA in the
//!   same 4 KiB page at `OFFSET + 2 KiB`.
//!
//! The default layout is [`DEFAULT_SPEC`].

use std::fmt;
use std::str::FromStr;

/// The layout used when none is given. Six BAR slots cannot hold a 32-bit register
/// BAR plus three 64-bit BARs, so the MSI-X BAR (the layout of seed mail 004) is
/// 32-bit.
pub const DEFAULT_SPEC: &str = "1=64M:32:msix@2M,2=16G,4=1G";

/// Slot of the register BAR; see [`crate::regs`].
pub const REGISTER_BAR_INDEX: u8 = 0;
/// Size of the register BAR.
pub const REGISTER_BAR_SIZE: u64 = 4096;
/// Number of BAR slots of a type 0 PCI header.
pub const BAR_SLOTS: u8 = 6;
/// Size of the page that holds the MSI-X table and PBA; it is never mmap-able.
pub const MSIX_PAGE_SIZE: u64 = 4096;
/// Distance from the MSI-X table to the PBA.
pub const MSIX_PBA_DISTANCE: u64 = 2048;
/// Smallest memory BAR.
pub const MIN_BAR_SIZE: u64 = 4096;
/// Largest 32-bit BAR (the space below 4 GiB is shared with everything else).
pub const MAX_BAR_SIZE_32: u64 = 1 << 30;
/// Largest 64-bit BAR: VFIO encodes the region index above bit 40 of the file
/// offset (`VFIO_PCI_OFFSET_SHIFT`), so a BAR cannot exceed 1 TiB.
pub const MAX_BAR_SIZE_64: u64 = 1 << 40;

/// One memory BAR of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    index: u8,
    size: u64,
    is_64bit: bool,
    prefetchable: bool,
    msix_offset: Option<u64>,
}

impl BarSpec {
    /// BAR slot (for a 64-bit BAR: the slot of its low half).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Size in bytes (a power of two).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the BAR is 64-bit (taking slots `index` and `index + 1`).
    pub fn is_64bit(&self) -> bool {
        self.is_64bit
    }

    /// Whether the BAR is prefetchable.
    pub fn prefetchable(&self) -> bool {
        self.prefetchable
    }

    /// Offset of the MSI-X table when it lives in this BAR.
    pub fn msix_offset(&self) -> Option<u64> {
        self.msix_offset
    }

    /// Offset of the MSI-X PBA when the MSI-X table lives in this BAR.
    pub fn msix_pba_offset(&self) -> Option<u64> {
        self.msix_offset.map(|o| o + MSIX_PBA_DISTANCE)
    }

    /// The BAR slots this BAR occupies.
    pub fn slots(&self) -> std::ops::RangeInclusive<u8> {
        self.index..=self.index + u8::from(self.is_64bit)
    }
}

/// A validated BAR layout: the memory BARs besides the register BAR 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarLayout {
    /// Sorted by index.
    bars: Vec<BarSpec>,
}

impl BarLayout {
    /// The memory BARs, sorted by index. The register BAR 0 is not among them.
    pub fn bars(&self) -> &[BarSpec] {
        &self.bars
    }

    /// The memory BAR whose low slot is `index`, if any.
    pub fn bar(&self, index: u8) -> Option<&BarSpec> {
        self.bars.iter().find(|b| b.index == index)
    }

    /// The BAR holding the MSI-X table, if any.
    pub fn msix_bar(&self) -> Option<&BarSpec> {
        self.bars.iter().find(|b| b.msix_offset.is_some())
    }

    /// Bitmap of the memory BAR indices (the value of [`crate::regs::BAR_MASK`]).
    pub fn memory_bar_mask(&self) -> u32 {
        self.bars.iter().fold(0, |m, b| m | 1 << b.index)
    }
}

impl Default for BarLayout {
    fn default() -> Self {
        DEFAULT_SPEC
            .parse()
            .expect("the default BAR layout is valid")
    }
}

/// What is wrong with one entry of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The spec has no entry at all.
    Empty,
    /// The entry lacks the `=` between index and size.
    MissingEquals,
    /// The index is not a number.
    BadIndex,
    /// The entry names BAR 0, which is the register BAR.
    RegisterBar,
    /// The index (or, for a 64-bit BAR, index + 1) is past slot 5.
    IndexOutOfRange,
    /// A size or offset is not a number with an optional K/M/G/T suffix.
    BadNumber(String),
    /// The size is not a power of two.
    NotPowerOfTwo(u64),
    /// The size is below [`MIN_BAR_SIZE`].
    TooSmall(u64),
    /// The size exceeds the maximum for the BAR type.
    TooLarge {
        /// The size given.
        size: u64,
        /// The largest size allowed for this BAR type.
        max: u64,
    },
    /// An unknown flag.
    UnknownFlag(String),
    /// A flag given twice.
    DuplicateFlag(String),
    /// The MSI-X offset is not 4 KiB aligned.
    MsixUnaligned(u64),
    /// The MSI-X page does not fit inside the BAR.
    MsixOutside(u64),
    /// A second BAR claims the MSI-X table.
    SecondMsix,
    /// The BAR uses a slot that an earlier entry already uses.
    Overlap(u8),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the layout has no BAR entry"),
            Self::MissingEquals => write!(f, "expected INDEX=SIZE[:FLAG]..."),
            Self::BadIndex => write!(f, "the BAR index is not a number"),
            Self::RegisterBar => write!(f, "BAR 0 is the register BAR and cannot be configured"),
            Self::IndexOutOfRange => write!(f, "the BAR does not fit in slots 1 to 5"),
            Self::BadNumber(s) => {
                write!(f, "`{s}` is not a number with an optional K/M/G/T suffix")
            }
            Self::NotPowerOfTwo(s) => write!(f, "size {s:#x} is not a power of two"),
            Self::TooSmall(s) => write!(f, "size {s:#x} is below the minimum of 4K"),
            Self::TooLarge { size, max } => {
                write!(
                    f,
                    "size {size:#x} exceeds the maximum {max:#x} for this BAR type"
                )
            }
            Self::UnknownFlag(s) => {
                write!(f, "unknown flag `{s}` (expected 32, np or msix@OFFSET)")
            }
            Self::DuplicateFlag(s) => write!(f, "flag `{s}` given twice"),
            Self::MsixUnaligned(o) => write!(f, "MSI-X offset {o:#x} is not 4K aligned"),
            Self::MsixOutside(o) => {
                write!(
                    f,
                    "the MSI-X page at offset {o:#x} does not fit inside the BAR"
                )
            }
            Self::SecondMsix => write!(f, "only one BAR may hold the MSI-X table"),
            Self::Overlap(slot) => write!(f, "BAR slot {slot} is already used by another entry"),
        }
    }
}

/// A layout that failed validation: the entry and what is wrong with it.
///
/// Implemented by hand rather than with `thiserror` so that this module stays
/// dependency-free for the guest binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError {
    /// The offending entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BAR layout entry `{}`: {}", self.entry, self.problem)
    }
}

impl std::error::Error for LayoutError {}

/// Parses a size or offset: a decimal number (or `0x` hexadecimal) with an
/// optional binary suffix K, M, G or T.
fn parse_number(text: &str) -> Result<u64, Problem> {
    let bad = || Problem::BadNumber(text.to_owned());
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() && !text.starts_with("0x") => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let value = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse::<u64>(),
    }
    .map_err(|_| bad())?;
    value.checked_mul(1 << shift).ok_or_else(bad)
}

/// Formats a size with the largest binary suffix that divides it.
fn format_number(value: u64) -> String {
    for (shift, suffix) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if value != 0 && value % (1u64 << shift) == 0 {
            return format!("{}{suffix}", value >> shift);
        }
    }
    value.to_string()
}

/// Parses one entry on its own (slot conflicts are checked by the caller).
fn parse_entry(entry: &str) -> Result<BarSpec, Problem> {
    let (index, rest) = entry.split_once('=').ok_or(Problem::MissingEquals)?;
    let index: u8 = index.trim().parse().map_err(|_| Problem::BadIndex)?;
    if index == REGISTER_BAR_INDEX {
        return Err(Problem::RegisterBar);
    }
    let mut parts = rest.split(':');
    let size = parse_number(parts.next().unwrap_or_default().trim())?;
    let mut bar = BarSpec {
        index,
        size,
        is_64bit: true,
        prefetchable: true,
        msix_offset: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for flag in parts.map(str::trim) {
        let name = flag.split_once('@').map_or(flag, |(n, _)| n);
        if seen.contains(&name) {
            return Err(Problem::DuplicateFlag(name.to_owned()));
        }
        seen.push(name);
        match flag {
            "32" => bar.is_64bit = false,
            "np" => bar.prefetchable = false,
            _ => match flag.strip_prefix("msix@") {
                Some(offset) => bar.msix_offset = Some(parse_number(offset)?),
                None => return Err(Problem::UnknownFlag(flag.to_owned())),
            },
        }
    }
    check_bar(&bar)?;
    Ok(bar)
}

/// Checks one BAR's own constraints: slot range, size and MSI-X placement.
fn check_bar(bar: &BarSpec) -> Result<(), Problem> {
    if *bar.slots().end() >= BAR_SLOTS {
        return Err(Problem::IndexOutOfRange);
    }
    if !bar.size.is_power_of_two() {
        return Err(Problem::NotPowerOfTwo(bar.size));
    }
    if bar.size < MIN_BAR_SIZE {
        return Err(Problem::TooSmall(bar.size));
    }
    let max = if bar.is_64bit {
        MAX_BAR_SIZE_64
    } else {
        MAX_BAR_SIZE_32
    };
    if bar.size > max {
        return Err(Problem::TooLarge {
            size: bar.size,
            max,
        });
    }
    if let Some(offset) = bar.msix_offset {
        if offset % MSIX_PAGE_SIZE != 0 {
            return Err(Problem::MsixUnaligned(offset));
        }
        if offset
            .checked_add(MSIX_PAGE_SIZE)
            .is_none_or(|end| end > bar.size)
        {
            return Err(Problem::MsixOutside(offset));
        }
    }
    Ok(())
}

impl FromStr for BarLayout {
    type Err = LayoutError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut bars: Vec<BarSpec> = Vec::new();
        let mut used_slots = [false; BAR_SLOTS as usize];
        used_slots[usize::from(REGISTER_BAR_INDEX)] = true;
        for entry in spec.split(',') {
            let error = |problem| LayoutError {
                entry: entry.to_owned(),
                problem,
            };
            if entry.trim().is_empty() {
                return Err(error(Problem::Empty));
            }
            let bar = parse_entry(entry).map_err(error)?;
            for slot in bar.slots() {
                if std::mem::replace(&mut used_slots[usize::from(slot)], true) {
                    return Err(error(Problem::Overlap(slot)));
                }
            }
            if bar.msix_offset.is_some() && bars.iter().any(|b| b.msix_offset.is_some()) {
                return Err(error(Problem::SecondMsix));
            }
            bars.push(bar);
        }
        bars.sort_by_key(|b| b.index);
        Ok(Self { bars })
    }
}

impl fmt::Display for BarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.index, format_number(self.size))?;
        if !self.is_64bit {
            write!(f, ":32")?;
        }
        if !self.prefetchable {
            write!(f, ":np")?;
        }
        if let Some(offset) = self.msix_offset {
            write!(f, ":msix@{}", format_number(offset))?;
        }
        Ok(())
    }
}

impl fmt::Display for BarLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, bar) in self.bars.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{bar}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    #[test]
    fn default_layout_is_the_documented_one() {
        let layout = BarLayout::default();
        let bars: Vec<_> = layout
            .bars()
            .iter()
            .map(|b| {
                (
                    b.index(),
                    b.size(),
                    b.is_64bit(),
                    b.prefetchable(),
                    b.msix_offset(),
                )
            })
            .collect();
        assert_eq!(
            bars,
            [
                (1, 64 * M, false, true, Some(2 * M)),
                (2, 16 * G, true, true, None),
                (4, G, true, true, None),
            ]
        );
        assert_eq!(layout.memory_bar_mask(), 0b10110);
        assert_eq!(layout.msix_bar().map(BarSpec::index), Some(1));
        assert_eq!(
            layout.bar(1).and_then(BarSpec::msix_pba_offset),
            Some(2 * M + 2 * K)
        );
        assert_eq!(layout.to_string(), DEFAULT_SPEC);
    }

    #[rstest]
    #[case::default(DEFAULT_SPEC, DEFAULT_SPEC)]
    #[case::bytes("1=4096", "1=4K")]
    #[case::hex("1=0x100000:msix@0x1000", "1=1M:msix@4K")]
    #[case::lower_suffix("3=2m:np", "3=2M:np")]
    #[case::sorted("4=1G,1=1M:32", "1=1M:32,4=1G")]
    #[case::half_tera("2=512G", "2=512G")]
    #[case::tera("2=1T", "2=1T")]
    #[case::max_32("5=1G:32:np", "5=1G:32:np")]
    #[case::msix_at_zero("1=8K:msix@0", "1=8K:msix@0")]
    #[case::msix_last_page("1=64M:msix@0xfff000", "1=64M:msix@16380K")]
    #[case::flag_order("1=64M:msix@2M:np:32", "1=64M:32:np:msix@2M")]
    #[case::all_32(
        "1=4K:32,2=4K:32,3=4K:32,4=4K:32,5=4K:32",
        "1=4K:32,2=4K:32,3=4K:32,4=4K:32,5=4K:32"
    )]
    fn valid_specs_parse_and_round_trip(#[case] spec: &str, #[case] canonical: &str) {
        let layout: BarLayout = spec.parse().unwrap();
        assert_eq!(layout.to_string(), canonical);
        assert_eq!(canonical.parse::<BarLayout>().unwrap(), layout);
    }

    #[rstest]
    #[case::empty("", "", Problem::Empty)]
    #[case::trailing_comma("1=1M,", "", Problem::Empty)]
    #[case::no_equals("1:1M", "1:1M", Problem::MissingEquals)]
    #[case::bad_index("x=1M", "x=1M", Problem::BadIndex)]
    #[case::register_bar("0=4K:32", "0=4K:32", Problem::RegisterBar)]
    #[case::slot_6("6=4K:32", "6=4K:32", Problem::IndexOutOfRange)]
    #[case::wide_slot_5("5=1M", "5=1M", Problem::IndexOutOfRange)]
    #[case::bad_suffix("1=1Q", "1=1Q", Problem::BadNumber("1Q".into()))]
    #[case::no_size("1=", "1=", Problem::BadNumber("".into()))]
    #[case::overflow("1=99999999999T", "1=99999999999T", Problem::BadNumber("99999999999T".into()))]
    #[case::not_pow2("1=3M", "1=3M", Problem::NotPowerOfTwo(3 * M))]
    #[case::too_small("1=2K", "1=2K", Problem::TooSmall(2 * K))]
    #[case::too_large_32("1=2G:32", "1=2G:32", Problem::TooLarge { size: 2 * G, max: G })]
    #[case::too_large_64("1=2T", "1=2T", Problem::TooLarge { size: 2 << 40, max: 1 << 40 })]
    #[case::unknown_flag("1=1M:wc", "1=1M:wc", Problem::UnknownFlag("wc".into()))]
    #[case::duplicate_flag("1=1M:np:np", "1=1M:np:np", Problem::DuplicateFlag("np".into()))]
    #[case::duplicate_msix("1=1M:msix@0:msix@4K", "1=1M:msix@0:msix@4K", Problem::DuplicateFlag("msix".into()))]
    #[case::msix_unaligned("1=1M:msix@2K", "1=1M:msix@2K", Problem::MsixUnaligned(2 * K))]
    #[case::msix_outside("1=1M:msix@1M", "1=1M:msix@1M", Problem::MsixOutside(M))]
    #[case::msix_huge(
        "1=1M:msix@0xfffffffffffff000",
        "1=1M:msix@0xfffffffffffff000",
        Problem::MsixOutside(0xffff_ffff_ffff_f000)
    )]
    #[case::second_msix("1=1M:32:msix@0,2=1M:32:msix@0", "2=1M:32:msix@0", Problem::SecondMsix)]
    #[case::same_slot("1=1M:32,1=2M:32", "1=2M:32", Problem::Overlap(1))]
    #[case::upper_half("1=1M,2=1M:32", "2=1M:32", Problem::Overlap(2))]
    #[case::into_upper_half("2=1M:32,1=1M", "1=1M", Problem::Overlap(2))]
    fn invalid_specs_name_entry_and_problem(
        #[case] spec: &str,
        #[case] entry: &str,
        #[case] problem: Problem,
    ) {
        let error = spec.parse::<BarLayout>().unwrap_err();
        assert_eq!(
            error,
            LayoutError {
                entry: entry.into(),
                problem
            }
        );
        assert!(error.to_string().contains(&format!("`{entry}`")), "{error}");
    }
}
