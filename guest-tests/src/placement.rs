//! The address-placement rules A1–A3 (docs/RULES.md) as pure predicates, and the
//! measurement the A tests report: how the addresses the kernel picked relate to
//! the physical addresses they map.
//!
//! A placement is judged by what it enables, not by one particular kernel patch:
//! a request needs `s ≡ phys(s) (mod B)` for the largest block size `B` that the
//! driver can map (an allowed order no larger than the BAR) and that fits wholly
//! inside the requested range once the range is placed congruently. A kernel
//! aligning to more (for instance `min(S, 1 GiB)` for a whole 64 MiB BAR, as the
//! series in the seed mails does) satisfies the predicate too.

use std::fmt;

use crate::model::{Order, Orders, PAGE};

/// One `mmap(NULL, len, …, file offset of BAR + offset)` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// Physical base address of the BAR (`Bp`).
    pub bar_base: u64,
    /// Size of the BAR (`S`).
    pub bar_size: u64,
    /// Byte offset of the request inside the BAR.
    pub offset: u64,
    /// Length of the request.
    pub len: u64,
}

impl Request {
    /// Physical address of the first byte requested.
    pub fn phys(&self) -> u64 {
        self.bar_base + self.offset
    }

    /// The block size the placement must make usable (A1/A2), or `None` when no
    /// huge block can fit the request however it is placed (then any page-aligned
    /// address is right).
    pub fn required_block(&self, orders: Orders) -> Option<u64> {
        [Order::Pud, Order::Pmd]
            .into_iter()
            .filter(|&o| orders.allows(o))
            .map(Order::size)
            .find(|&b| b <= self.bar_size && self.block_fits(b))
    }

    /// Whether a `block`-aligned physical block lies inside the requested range.
    fn block_fits(&self, block: u64) -> bool {
        let first = self.phys().next_multiple_of(block);
        first
            .checked_add(block)
            .is_some_and(|end| end <= self.phys() + self.len)
    }

    /// Whether a VMA starting at `start` follows A1/A2 for this request.
    pub fn placement_ok(&self, orders: Orders, start: u64) -> bool {
        match self.required_block(orders) {
            Some(b) => start % b == self.phys() % b,
            None => start % PAGE == 0,
        }
    }

    /// The largest block size modulo which `start` is congruent to the physical
    /// address it maps (what the diagnostics report).
    pub fn congruence(&self, start: u64) -> Congruence {
        let same = |b: u64| start % b == self.phys() % b;
        if same(Order::Pud.size()) {
            Congruence::Pud
        } else if same(Order::Pmd.size()) {
            Congruence::Pmd
        } else {
            Congruence::Page
        }
    }
}

/// How well an address lines up with the physical address it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Congruence {
    /// Only page aligned relative to the physical address.
    Page,
    /// `s ≡ phys (mod 2 MiB)` but not modulo 1 GiB.
    Pmd,
    /// `s ≡ phys (mod 1 GiB)`.
    Pud,
}

/// Counts of placements by [`Congruence`]: the "measured alignment distribution".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Page-aligned only.
    pub page: u64,
    /// 2 MiB congruent, not 1 GiB.
    pub pmd: u64,
    /// 1 GiB congruent.
    pub pud: u64,
}

impl Histogram {
    /// Records one placement.
    pub fn add(&mut self, c: Congruence) {
        match c {
            Congruence::Page => self.page += 1,
            Congruence::Pmd => self.pmd += 1,
            Congruence::Pud => self.pud += 1,
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        self.page += other.page;
        self.pmd += other.pmd;
        self.pud += other.pud;
    }

    /// Number of placements recorded.
    pub fn total(&self) -> u64 {
        self.page + self.pmd + self.pud
    }
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} placements: {} 1 GiB-congruent, {} 2 MiB-congruent only, {} 4 KiB only",
            self.total(),
            self.pud,
            self.pmd,
            self.page
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{plan, Behaviour, Placement, PMD, PUD};
    use rstest::rstest;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const MSIX_BASE: u64 = 0xf800_0000;
    const BIG_BASE: u64 = 0xf8_0000_0000;
    const VA: u64 = 0x7f00_0000_0000;

    fn req(bar_base: u64, bar_size: u64, offset: u64, len: u64) -> Request {
        Request {
            bar_base,
            bar_size,
            offset,
            len,
        }
    }

    #[rstest]
    // A1: whole BARs. A 64 MiB BAR can use 2 MiB entries, a 1 GiB or larger one 1 GiB.
    #[case::whole_64m(req(MSIX_BASE, 64 * MIB, 0, 64 * MIB), Some(PMD))]
    #[case::whole_1g(req(0xfc_0000_0000, GIB, 0, GIB), Some(PUD))]
    #[case::whole_16g(req(BIG_BASE, 16 * GIB, 0, 16 * GIB), Some(PUD))]
    // A3: the tail after the MSI-X page still holds 2 MiB blocks.
    #[case::a3_tail(req(MSIX_BASE, 64 * MIB, 2 * MIB + 4 * KIB, 62 * MIB - 4 * KIB), Some(PMD))]
    #[case::a3_head(req(MSIX_BASE, 64 * MIB, 0, 2 * MIB), Some(PMD))]
    // A2: an offset range with one whole GiB inside it.
    #[case::pud_inside(req(BIG_BASE, 16 * GIB, GIB - 4 * KIB, GIB + 8 * KIB), Some(PUD))]
    // Long enough for a GiB, but no aligned GiB inside: PMD.
    #[case::gib_len_unaligned(req(BIG_BASE, 16 * GIB, 4 * KIB, GIB), Some(PMD))]
    // 2 MiB long at an unaligned offset: no block fits, anything goes.
    #[case::no_block(req(BIG_BASE, 16 * GIB, 4 * KIB, 2 * MIB), None)]
    #[case::short(req(BIG_BASE, 16 * GIB, 0, 2 * MIB - 4 * KIB), None)]
    // A BAR smaller than a block cannot use it.
    #[case::small_bar(req(0xfe00_0000, MIB, 0, MIB), None)]
    fn required_blocks(#[case] r: Request, #[case] want: Option<u64>) {
        assert_eq!(r.required_block(Orders::ALL_HUGE), want);
    }

    #[test]
    fn pmd_only_orders_never_require_a_gib() {
        let r = req(BIG_BASE, 16 * GIB, 0, 16 * GIB);
        assert_eq!(r.required_block(Orders::PMD_ONLY), Some(PMD));
        assert_eq!(r.required_block(Orders::NONE), None);
    }

    #[rstest]
    #[case::offset_aware(VA + 4 * KIB, true, 541)]
    #[case::size_only(VA, false, 15_871)]
    #[case::pud_congruent_also_fine(VA + GIB + 4 * KIB, true, 541)]
    #[case::random_page(VA + 0x1a_3000, false, 15_871)]
    fn a3_placements_and_their_fault_counts(
        #[case] start: u64,
        #[case] ok: bool,
        #[case] faults: u64,
    ) {
        // The predicate and the fault model agree: the placements A3 accepts are
        // the ones that give 541 faults for the tail (docs/RULES.md).
        let tail = req(MSIX_BASE, 64 * MIB, 2 * MIB + 4 * KIB, 62 * MIB - 4 * KIB);
        assert_eq!(tail.placement_ok(Orders::ALL_HUGE, start), ok);
        let p = Placement {
            bar_base: tail.bar_base,
            bar_size: tail.bar_size,
            offset: tail.offset,
            start,
            len: tail.len,
        };
        let faults_got = plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE))
            .unwrap()
            .faults;
        assert_eq!(faults_got, faults);
    }

    #[rstest]
    #[case(VA, Congruence::Pud)]
    #[case(VA + 2 * MIB, Congruence::Pmd)]
    #[case(VA + 4 * KIB, Congruence::Page)]
    fn congruence_of_whole_bar(#[case] start: u64, #[case] want: Congruence) {
        assert_eq!(req(BIG_BASE, 16 * GIB, 0, GIB).congruence(start), want);
    }

    #[test]
    fn congruence_is_relative_to_the_offset() {
        let r = req(BIG_BASE, 16 * GIB, 2 * MIB + 4 * KIB, 4 * MIB);
        assert_eq!(r.congruence(VA + 2 * MIB + 4 * KIB), Congruence::Pud);
        assert_eq!(r.congruence(VA + 4 * KIB), Congruence::Pmd);
        assert_eq!(r.congruence(VA), Congruence::Page);
    }

    #[test]
    fn whole_bar_placement_predicate() {
        let r = req(BIG_BASE, 16 * GIB, 0, 16 * GIB);
        assert!(r.placement_ok(Orders::ALL_HUGE, VA));
        assert!(!r.placement_ok(Orders::ALL_HUGE, VA + 2 * MIB));
        // A kernel with only the 6.12 accident (2 MiB) fails A1 for a 1 GiB block.
        assert!(r.placement_ok(Orders::PMD_ONLY, VA + 2 * MIB));
    }

    #[test]
    fn histogram_counts_and_prints() {
        let mut h = Histogram::default();
        for c in [
            Congruence::Page,
            Congruence::Page,
            Congruence::Pmd,
            Congruence::Pud,
        ] {
            h.add(c);
        }
        let mut g = Histogram::default();
        g.merge(&h);
        assert_eq!((g.page, g.pmd, g.pud, g.total()), (2, 1, 1, 4));
        assert_eq!(
            g.to_string(),
            "4 placements: 1 1 GiB-congruent, 1 2 MiB-congruent only, 2 4 KiB only"
        );
    }
}
