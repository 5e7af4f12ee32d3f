//! The pure rule model of how vfio-pci maps a BAR into user space (docs/RULES.md F1, F2).
//!
//! Given where a BAR sits in physical memory, which part of it a VMA maps and where
//! the VMA starts, [`plan`] predicts which page-table entries the kernel installs
//! when every 4 KiB page is touched once, and how many minor faults that costs.
//! No I/O: the guest tests compare these predictions with what they observe.

use std::fmt;

/// Size of a PTE-mapped page (order 0).
pub const PAGE: u64 = 1 << 12;
/// Size of a PMD block (order 9).
pub const PMD: u64 = 1 << 21;
/// Size of a PUD block (order 18).
pub const PUD: u64 = 1 << 30;

/// A page-table level at which the kernel can map a BAR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// A 4 KiB page table entry.
    Pte,
    /// A 2 MiB page middle directory entry.
    Pmd,
    /// A 1 GiB page upper directory entry.
    Pud,
}

impl Order {
    /// All orders, largest first (the order in which the fault path tries them).
    pub const LARGEST_FIRST: [Order; 3] = [Order::Pud, Order::Pmd, Order::Pte];

    /// Bytes mapped by one entry of this order.
    pub const fn size(self) -> u64 {
        match self {
            Order::Pte => PAGE,
            Order::Pmd => PMD,
            Order::Pud => PUD,
        }
    }

    /// The kernel's order number (log2 of the size in pages).
    pub const fn kernel_order(self) -> u32 {
        match self {
            Order::Pte => 0,
            Order::Pmd => 9,
            Order::Pud => 18,
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Pte => "PTE",
            Order::Pmd => "PMD",
            Order::Pud => "PUD",
        })
    }
}

/// The huge orders the kernel may use for a mapping (PTE is always possible).
///
/// Architecture support, kernel configuration and THP policy (F3) each remove
/// orders; expressing them as a set lets one model cover all of those variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Orders {
    /// 1 GiB entries are allowed.
    pub pud: bool,
    /// 2 MiB entries are allowed.
    pub pmd: bool,
}

impl Orders {
    /// PUD and PMD, as on x86-64 kernels with huge pfnmap (6.12 and later).
    pub const ALL_HUGE: Orders = Orders {
        pud: true,
        pmd: true,
    };
    /// PMD only (for example an architecture without PUD pfnmap).
    pub const PMD_ONLY: Orders = Orders {
        pud: false,
        pmd: true,
    };
    /// No huge entries: 4 KiB only (THP disabled, F3).
    pub const NONE: Orders = Orders {
        pud: false,
        pmd: false,
    };

    /// Whether `order` is allowed.
    pub const fn allows(self, order: Order) -> bool {
        match order {
            Order::Pte => true,
            Order::Pmd => self.pmd,
            Order::Pud => self.pud,
        }
    }
}

/// How the kernel's vfio-pci fault handler fills the page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// 6.12 and later (`vfio_pci_mmap_huge_fault`): one entry per fault, at the
    /// largest allowed order F1 permits (F1, F2).
    HugeFault(Orders),
    /// 6.1 (`vfio_pci_mmap_fault`): the first fault remaps the whole VMA with
    /// 4 KiB entries, so a VMA costs one fault however much of it is touched.
    RemapWholeVma,
}

/// One mapping of part of a BAR: the inputs of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Physical base address of the BAR (`Bp`).
    pub bar_base: u64,
    /// Size of the BAR in bytes (`S`).
    pub bar_size: u64,
    /// Byte offset of the mapping inside the BAR (`off`).
    pub offset: u64,
    /// Virtual start address of the VMA (`s`).
    pub start: u64,
    /// Length of the VMA in bytes.
    pub len: u64,
}

/// Why a [`Placement`] cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A field that must be a multiple of 4 KiB is not.
    #[error("{field} {value:#x} is not 4 KiB aligned")]
    Unaligned {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The BAR size is zero.
    #[error("BAR size is zero")]
    EmptyBar,
    /// The mapping length is zero.
    #[error("mapping length is zero")]
    EmptyMapping,
    /// `offset + len` lies beyond the page-aligned end of the BAR (F9).
    #[error("mapping [{offset:#x}, +{len:#x}) extends beyond the BAR of size {bar_size:#x}")]
    OutOfBar {
        /// Offset of the mapping inside the BAR.
        offset: u64,
        /// Length of the mapping.
        len: u64,
        /// Size of the BAR.
        bar_size: u64,
    },
    /// A block the model would map fresh is partly covered by entries still
    /// installed, so its fault order is not predictable (F6/F8 inputs).
    #[error("the entry at {at:#x} is partly covered by surviving entries")]
    PartlyMapped {
        /// Virtual address of the fresh entry.
        at: u64,
    },
    /// An address computation overflows 64 bits.
    #[error("{what} overflows 64 bits")]
    Overflow {
        /// Which sum overflowed.
        what: &'static str,
    },
}

/// Where a test touches a huge entry first: the fault address inside the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstTouch {
    /// The entry's first page (the fault address is the block address).
    Start,
    /// A page inside the entry, on no 2 MiB boundary: the middle plus 5 pages.
    Interior,
    /// The entry's last page.
    Last,
}

impl FirstTouch {
    /// The page of the entry `[start, start + size)` touched first.
    pub fn page(self, start: u64, size: u64) -> u64 {
        match self {
            Self::Start => start,
            Self::Interior => start + size / 2 + 5 * PAGE,
            Self::Last => start + size - PAGE,
        }
    }
}

/// A run of consecutive entries of one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRun {
    /// Virtual address of the first entry.
    pub start: u64,
    /// Order of every entry in the run.
    pub order: Order,
    /// Number of entries.
    pub count: u64,
}

impl FaultRun {
    /// Virtual address just past the run.
    pub fn end(&self) -> u64 {
        self.start + self.count * self.order.size()
    }
}

/// What touching every page of a fresh mapping installs and costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The entries installed, in address order, with equal neighbours merged.
    pub runs: Vec<FaultRun>,
    /// Minor faults taken when every 4 KiB page is touched once.
    pub faults: u64,
    /// The placement it predicts for (what the layout diagnostics report).
    pub placement: Placement,
}

impl FaultPlan {
    /// Number of entries of `order`.
    pub fn count(&self, order: Order) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.order == order)
            .map(|r| r.count)
            .sum()
    }

    /// The entry (start address and order) that maps virtual address `va`.
    pub fn entry_at(&self, va: u64) -> Option<(u64, Order)> {
        let run = self.runs.iter().find(|r| r.start <= va && va < r.end())?;
        let size = run.order.size();
        Some((run.start + (va - run.start) / size * size, run.order))
    }

    /// Minor faults taken when the addresses `touches` of a fresh mapping are
    /// touched in order (F2): one per distinct entry hit with the huge fault
    /// handler, one in all with 6.1's whole-VMA remap. Addresses outside the
    /// VMA are ignored.
    pub fn touch_faults(&self, behaviour: Behaviour, touches: &[u64]) -> u64 {
        let mut hit: Vec<(u64, Order)> =
            touches.iter().filter_map(|&va| self.entry_at(va)).collect();
        match behaviour {
            Behaviour::RemapWholeVma => u64::from(!hit.is_empty()),
            Behaviour::HugeFault(_) => {
                hit.sort();
                hit.dedup();
                hit.len() as u64
            }
        }
    }

    /// Addresses to touch to observe this plan cheaply (huge blocks cost TCG a
    /// TLB refill per 4 KiB page touched): every page of PTE runs, and the first
    /// and last page of every 2 MiB of huge runs. Any other installation than
    /// the planned one changes the fault count for this pattern: smaller entries
    /// fault twice per 2 MiB (or per entry) where the plan faults once, larger
    /// ones fault less often than the plan.
    ///
    /// A plan whose single fault maps the whole VMA (6.1's remap, fewer faults
    /// than entries) is observed with the first and last page of every 2 MiB:
    /// any page the first fault did not map would fault again.
    pub fn touch_pattern(&self) -> Vec<u64> {
        let entries: u64 = self.runs.iter().map(|r| r.count).sum();
        let whole_vma = self.faults < entries;
        let mut out = Vec::new();
        for r in &self.runs {
            if r.order == Order::Pte && whole_vma {
                let end = r.end();
                let mut at = r.start;
                while at < end {
                    let next = ((at / PMD) + 1) * PMD;
                    let last = next.min(end) - PAGE;
                    out.push(at);
                    if last > at {
                        out.push(last);
                    }
                    at = next.min(end);
                }
            } else if r.order == Order::Pte {
                out.extend((0..r.count).map(|i| r.start + i * PAGE));
            } else {
                let blocks = r.count * (r.order.size() / PMD);
                for b in 0..blocks {
                    let at = r.start + b * PMD;
                    out.push(at);
                    out.push(at + PMD - PAGE);
                }
            }
        }
        out
    }

    /// [`FaultPlan::touch_pattern`] with every huge entry touched first at the
    /// page `first` names (its start, an interior page, its last page), then
    /// at the rest of the pattern's pages in it. The fault address inside a
    /// block must not change what the fault installs (F1), nor that one fault
    /// installs it (F2): the count is the plan's whatever `first` is.
    pub fn touch_pattern_first(&self, first: FirstTouch) -> Vec<u64> {
        let base = self.touch_pattern();
        if first == FirstTouch::Start {
            return base;
        }
        let mut out = Vec::with_capacity(base.len() + self.runs.len());
        let mut current: Option<u64> = None;
        for &va in &base {
            match self.entry_at(va) {
                Some((start, order)) if order != Order::Pte => {
                    let page = first.page(start, order.size());
                    if current != Some(start) {
                        current = Some(start);
                        out.push(page);
                    }
                    if va != page {
                        out.push(va);
                    }
                }
                _ => {
                    current = None;
                    out.push(va);
                }
            }
        }
        out
    }

    /// The order of the entry that maps virtual address `va`, if it is mapped.
    pub fn order_at(&self, va: u64) -> Option<Order> {
        self.runs
            .iter()
            .find(|r| r.start <= va && va < r.end())
            .map(|r| r.order)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults ({} PUD, {} PMD, {} PTE)",
            self.faults,
            self.count(Order::Pud),
            self.count(Order::Pmd),
            self.count(Order::Pte)
        )
    }
}

impl Placement {
    /// Checks the inputs: page alignment, non-empty, inside the BAR, no overflow.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value) in [
            ("BAR base", self.bar_base),
            ("offset", self.offset),
            ("VMA start", self.start),
            ("length", self.len),
        ] {
            if value % PAGE != 0 {
                return Err(ModelError::Unaligned { field, value });
            }
        }
        if self.bar_size == 0 {
            return Err(ModelError::EmptyBar);
        }
        if self.len == 0 {
            return Err(ModelError::EmptyMapping);
        }
        let mappable = self
            .bar_size
            .checked_next_multiple_of(PAGE)
            .ok_or(ModelError::Overflow { what: "BAR size" })?;
        let end = self.offset.checked_add(self.len);
        if end.is_none_or(|end| end > mappable) {
            return Err(ModelError::OutOfBar {
                offset: self.offset,
                len: self.len,
                bar_size: self.bar_size,
            });
        }
        checked(self.bar_base, self.bar_size, "BAR end")?;
        checked(self.start, self.len, "VMA end")?;
        Ok(())
    }

    /// End of the VMA (exclusive).
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Physical address that virtual address `va` of the VMA maps.
    pub fn phys(&self, va: u64) -> u64 {
        self.bar_base + self.offset + (va - self.start)
    }

    /// The largest allowed order F1 gives for a first touch of `va`.
    fn order_for(&self, va: u64, orders: Orders) -> Order {
        for order in [Order::Pud, Order::Pmd] {
            if !orders.allows(order) {
                continue;
            }
            let size = order.size();
            let block = va & !(size - 1);
            let inside = block >= self.start && self.end() - block >= size;
            if inside && self.phys(block) % size == 0 {
                return order;
            }
        }
        Order::Pte
    }
}

fn checked(a: u64, b: u64, what: &'static str) -> Result<u64, ModelError> {
    a.checked_add(b).ok_or(ModelError::Overflow { what })
}

/// Predicts the entries and faults for touching every 4 KiB page of `p` once.
pub fn plan(p: &Placement, behaviour: Behaviour) -> Result<FaultPlan, ModelError> {
    p.validate()?;
    match behaviour {
        Behaviour::RemapWholeVma => Ok(FaultPlan {
            runs: vec![FaultRun {
                start: p.start,
                order: Order::Pte,
                count: p.len / PAGE,
            }],
            faults: 1,
            placement: *p,
        }),
        Behaviour::HugeFault(orders) => Ok(huge_fault_plan(p, orders)),
    }
}

/// F1/F2: walk the VMA upwards; each touched address that is not yet mapped
/// faults once and installs one entry. Walking in address order finds every
/// block at its start, because a block F1 accepts is accepted for all its pages.
fn huge_fault_plan(p: &Placement, orders: Orders) -> FaultPlan {
    let mut runs: Vec<FaultRun> = Vec::new();
    let mut va = p.start;
    while va < p.end() {
        let order = p.order_for(va, orders);
        match runs.last_mut() {
            Some(run) if run.order == order && run.end() == va => run.count += 1,
            _ => runs.push(FaultRun {
                start: va,
                order,
                count: 1,
            }),
        }
        va += order.size();
    }
    let faults = runs.iter().map(|r| r.count).sum();
    FaultPlan {
        runs,
        faults,
        placement: *p,
    }
}

/// Why an mmap of a BAR must fail with EINVAL (F9), or `None` when it must work.
///
/// vfio-pci refuses private mappings and ranges past the page-aligned end of the
/// BAR (`vfio_pci_core_mmap`); the core refuses an empty length.
pub fn mmap_refusal(shared: bool, bar_size: u64, offset: u64, len: u64) -> Option<&'static str> {
    let mappable = bar_size.div_ceil(PAGE).saturating_mul(PAGE);
    if len == 0 {
        Some("empty length")
    } else if !shared {
        Some("MAP_PRIVATE")
    } else if offset.checked_add(len).is_none_or(|end| end > mappable) {
        Some("beyond the page-aligned BAR end")
    } else {
        None
    }
}

/// The residue `s mod block` that lets blocks of size `block` map huge:
/// `s ≡ phys(s) = bar_base + offset (mod block)` (F1, A1/A2).
pub fn huge_residue(bar_base: u64, offset: u64, block: u64) -> u64 {
    debug_assert!(block.is_power_of_two());
    bar_base.wrapping_add(offset) & (block - 1)
}

/// The smallest address `>= from` that is congruent to `residue` modulo
/// `modulus` (a power of two), or `None` on overflow.
pub fn align_up_congruent(from: u64, modulus: u64, residue: u64) -> Option<u64> {
    debug_assert!(modulus.is_power_of_two());
    let residue = residue & (modulus - 1);
    let base = from & !(modulus - 1);
    let candidate = base.checked_add(residue)?;
    if candidate >= from {
        Some(candidate)
    } else {
        candidate.checked_add(modulus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// A 16 GiB BAR where the guest puts it (ENVIRONMENT.md).
    const BIG_BASE: u64 = 0xf8_0000_0000;
    /// A 64 MiB BAR, naturally aligned.
    const MSIX_BASE: u64 = 0xfc00_0000;
    /// Some user-space address far from 0, 1 GiB aligned.
    const VA: u64 = 0x7f00_0000_0000;

    fn place(bar_base: u64, bar_size: u64, offset: u64, start: u64, len: u64) -> Placement {
        Placement {
            bar_base,
            bar_size,
            offset,
            start,
            len,
        }
    }

    #[rstest]
    // The aligned 1 GiB case: a whole 1 GiB-aligned GiB is one PUD entry.
    #[case::pud_one_gib(BIG_BASE, 16 * GIB, 0, VA, GIB, (1, 0, 0))]
    #[case::pud_two_gib_at_offset(BIG_BASE, 16 * GIB, 3 * GIB, VA, 2 * GIB, (2, 0, 0))]
    // PMD aligned only: s ≡ off (mod 2 MiB) but s ≡ off + 2 MiB (mod 1 GiB).
    #[case::pmd_only(BIG_BASE, 16 * GIB, 0, VA + 2 * MIB, GIB, (0, 512, 0))]
    #[case::pmd_only_two_gib(BIG_BASE, 16 * GIB, 0, VA + 2 * MIB, 2 * GIB, (0, 1024, 0))]
    // Unaligned: s ≡ off + 4 KiB (mod 2 MiB) maps 4 KiB everywhere (F5).
    #[case::unaligned(BIG_BASE, 16 * GIB, 0, VA + 4 * KIB, 64 * MIB, (0, 0, 16384))]
    #[case::unaligned_gib(BIG_BASE, 16 * GIB, GIB, VA + 4 * KIB, GIB, (0, 0, 262_144))]
    // Partial VMAs: the ends cut blocks. [1G-4M-8K, +2G+4M+8K+2M+12K) with s ≡ off (mod 1G):
    // 2 PTE, 2 PMD up to 1 GiB, 2 PUD, then 1 PMD and 3 PTE.
    #[case::partial_both_ends(
        BIG_BASE, 16 * GIB, GIB - 4 * MIB - 8 * KIB, VA + GIB - 4 * MIB - 8 * KIB,
        2 * GIB + 4 * MIB + 8 * KIB + 2 * MIB + 12 * KIB, (2, 3, 5)
    )]
    // A 1 GiB VMA starting 2 MiB into a GiB: no PUD block fits, 511 + 1 PMD entries.
    #[case::pud_cut_by_end(BIG_BASE, 16 * GIB, 2 * MIB, VA + 2 * MIB, GIB, (0, 512, 0))]
    // A VMA shorter than a block: nothing huge.
    #[case::shorter_than_pmd(BIG_BASE, 16 * GIB, 0, VA, 2 * MIB - 4 * KIB, (0, 0, 511))]
    // A3: the MSI-X hole. [0, 2 MiB) maps one PMD entry.
    #[case::a3_head(MSIX_BASE, 64 * MIB, 0, VA, 2 * MIB, (0, 1, 0))]
    // A3: [2 MiB + 4 KiB, 64 MiB) placed with s ≡ 2 MiB + 4 KiB (mod 2 MiB):
    // [2M+4K, 4M) is 511 pages, [4M, 64M) is 30 PMD blocks: 541 faults.
    #[case::a3_offset_aware(MSIX_BASE, 64 * MIB, 2 * MIB + 4 * KIB, VA + 4 * KIB, 62 * MIB - 4 * KIB, (0, 30, 511))]
    // A3: the size-only placement s ≡ 0 (mod 2 MiB) maps all 15 871 pages at 4 KiB.
    #[case::a3_size_only(MSIX_BASE, 64 * MIB, 2 * MIB + 4 * KIB, VA, 62 * MIB - 4 * KIB, (0, 0, 15_871))]
    fn huge_fault_counts(
        #[case] bar_base: u64,
        #[case] bar_size: u64,
        #[case] offset: u64,
        #[case] start: u64,
        #[case] len: u64,
        #[case] (pud, pmd, pte): (u64, u64, u64),
    ) {
        let p = place(bar_base, bar_size, offset, start, len);
        let plan = plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE)).unwrap();
        assert_eq!(
            (
                plan.count(Order::Pud),
                plan.count(Order::Pmd),
                plan.count(Order::Pte)
            ),
            (pud, pmd, pte),
            "{plan}"
        );
        assert_eq!(plan.faults, pud + pmd + pte);
        // The runs tile the VMA exactly.
        let covered: u64 = plan.runs.iter().map(|r| r.count * r.order.size()).sum();
        assert_eq!(covered, len);
        assert_eq!(plan.runs.first().unwrap().start, start);
        assert_eq!(plan.runs.last().unwrap().end(), start + len);
    }

    #[test]
    fn a3_totals_match_rules() {
        let tail = place(
            MSIX_BASE,
            64 * MIB,
            2 * MIB + 4 * KIB,
            VA + 4 * KIB,
            62 * MIB - 4 * KIB,
        );
        let plan = plan(&tail, Behaviour::HugeFault(Orders::ALL_HUGE)).unwrap();
        assert_eq!(plan.faults, 541);
        assert_eq!(plan.order_at(VA + 4 * KIB), Some(Order::Pte));
        assert_eq!(plan.order_at(VA + 2 * MIB), Some(Order::Pmd));
        assert_eq!(plan.order_at(VA), None);
    }

    #[test]
    fn pud_aligned_layout_in_address_order() {
        let off = GIB - 4 * MIB - 8 * KIB;
        let p = place(
            BIG_BASE,
            16 * GIB,
            off,
            VA + off,
            2 * GIB + 4 * MIB + 8 * KIB + 2 * MIB + 12 * KIB,
        );
        let plan = plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE)).unwrap();
        let shape: Vec<(Order, u64)> = plan.runs.iter().map(|r| (r.order, r.count)).collect();
        assert_eq!(
            shape,
            [
                (Order::Pte, 2),
                (Order::Pmd, 2),
                (Order::Pud, 2),
                (Order::Pmd, 1),
                (Order::Pte, 3)
            ]
        );
        assert_eq!(plan.runs[2].start, VA + GIB);
    }

    #[rstest]
    #[case::pmd_only_orders(Orders::PMD_ONLY, (0, 512, 0))]
    #[case::no_huge(Orders::NONE, (0, 0, 262_144))]
    #[case::all(Orders::ALL_HUGE, (1, 0, 0))]
    fn orders_restrict_the_plan(#[case] orders: Orders, #[case] (pud, pmd, pte): (u64, u64, u64)) {
        let p = place(BIG_BASE, 16 * GIB, 0, VA, GIB);
        let plan = plan(&p, Behaviour::HugeFault(orders)).unwrap();
        assert_eq!(
            (
                plan.count(Order::Pud),
                plan.count(Order::Pmd),
                plan.count(Order::Pte)
            ),
            (pud, pmd, pte)
        );
    }

    #[rstest]
    // Middle of the first PMD, then every other page of it: one fault.
    #[case::one_pmd(&[MIB, 0, 2 * MIB - 4 * KIB], 1)]
    // One page in each of two PMD blocks.
    #[case::two_pmds(&[4 * KIB, 2 * MIB + 8 * KIB], 2)]
    // Neighbouring 4 KiB pages of the PTE tail: one fault each (no fault-around).
    #[case::pte_neighbours(&[4 * MIB, 4 * MIB + 4 * KIB, 4 * MIB], 2)]
    // Outside the VMA: nothing.
    #[case::outside(&[8 * MIB], 0)]
    fn touch_faults_count_distinct_entries(#[case] rel: &[u64], #[case] want: u64) {
        // [0, 4M) PMD-mapped, [4M, 4M + 64K) PTE-mapped.
        let p = place(BIG_BASE, 16 * GIB, 0, VA, 4 * MIB + 64 * KIB);
        let pl = plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE)).unwrap();
        let touches: Vec<u64> = rel.iter().map(|r| VA + r).collect();
        assert_eq!(
            pl.touch_faults(Behaviour::HugeFault(Orders::ALL_HUGE), &touches),
            want
        );
        let legacy = plan(&p, Behaviour::RemapWholeVma).unwrap();
        assert_eq!(
            legacy.touch_faults(Behaviour::RemapWholeVma, &touches),
            u64::from(want > 0)
        );
    }

    #[rstest]
    #[case::pud(0, VA, GIB)]
    #[case::pmd_only(0, VA + 2 * MIB, GIB)]
    #[case::mixed(GIB - 4 * MIB - 8 * KIB, VA + GIB - 4 * MIB - 8 * KIB, 2 * GIB + 6 * MIB + 20 * KIB)]
    #[case::pte(0, VA + 4 * KIB, 4 * MIB)]
    fn touch_pattern_tells_the_orders_apart(
        #[case] off: u64,
        #[case] start: u64,
        #[case] len: u64,
    ) {
        let p = place(BIG_BASE, 16 * GIB, off, start, len);
        let all = Behaviour::HugeFault(Orders::ALL_HUGE);
        let want = plan(&p, all).unwrap();
        let pattern = want.touch_pattern();
        // The pattern costs exactly the plan's faults under the plan itself.
        assert_eq!(want.touch_faults(all, &pattern), want.faults);
        // Under any other set of orders, the same pattern costs a different count
        // whenever that set installs different entries.
        for orders in [Orders::PMD_ONLY, Orders::NONE] {
            let other = plan(&p, Behaviour::HugeFault(orders)).unwrap();
            if other.runs != want.runs {
                assert_ne!(other.touch_faults(all, &pattern), want.faults, "{orders:?}");
            }
        }
        assert!(pattern.windows(2).all(|w| w[0] < w[1]));
    }

    /// F1, F2: a huge entry first touched inside or at its end installs what a
    /// touch at its start does, with one fault; the pattern still tells the
    /// orders apart.
    #[rstest]
    #[case::pud(0, VA, GIB)]
    #[case::pmd_only(0, VA + 2 * MIB, GIB)]
    #[case::mixed(GIB - 4 * MIB - 8 * KIB, VA + GIB - 4 * MIB - 8 * KIB, 2 * GIB + 6 * MIB + 20 * KIB)]
    fn first_touch_anywhere_costs_the_plan(
        #[case] off: u64,
        #[case] start: u64,
        #[case] len: u64,
        #[values(FirstTouch::Interior, FirstTouch::Last)] first: FirstTouch,
    ) {
        let p = place(BIG_BASE, 16 * GIB, off, start, len);
        let all = Behaviour::HugeFault(Orders::ALL_HUGE);
        let want = plan(&p, all).unwrap();
        let pattern = want.touch_pattern_first(first);
        assert_eq!(want.touch_faults(all, &pattern), want.faults);
        for orders in [Orders::PMD_ONLY, Orders::NONE] {
            let other = plan(&p, Behaviour::HugeFault(orders)).unwrap();
            if other.runs != want.runs {
                assert_ne!(other.touch_faults(all, &pattern), want.faults, "{orders:?}");
            }
        }
        // Each huge entry is touched first where `first` says, never at a
        // block boundary but for the last page's own.
        let mut seen = Vec::new();
        for &va in &pattern {
            let (entry, order) = want.entry_at(va).unwrap();
            if order != Order::Pte && !seen.contains(&entry) {
                seen.push(entry);
                assert_eq!(va, first.page(entry, order.size()), "{entry:#x}");
                assert_ne!(va % PMD, 0, "{va:#x} is a 2 MiB boundary");
            }
        }
        let huge = want.count(Order::Pud) + want.count(Order::Pmd);
        assert_eq!(seen.len() as u64, huge);
        // The same pages as the plain pattern, plus at most one per entry.
        let mut base = want.touch_pattern();
        let mut got = pattern.clone();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), pattern.len(), "a page touched twice");
        base.retain(|va| !got.contains(va));
        assert!(base.is_empty(), "pages left out: {base:x?}");
        assert!(pattern.len() as u64 <= want.touch_pattern().len() as u64 + huge);
    }

    #[test]
    fn whole_vma_pattern_is_sparse_and_costs_one_fault() {
        let p = place(BIG_BASE, 16 * GIB, 4 * KIB, VA + 4 * KIB, GIB);
        let legacy = plan(&p, Behaviour::RemapWholeVma).unwrap();
        let pattern = legacy.touch_pattern();
        // First and last page of each 2 MiB window: 512 windows of two pages,
        // and the one-page window [1 GiB, 1 GiB + 4 KiB) at the end.
        assert_eq!(pattern.len(), 2 * 512 + 1);
        assert_eq!(pattern[0], VA + 4 * KIB);
        assert_eq!(*pattern.last().unwrap(), VA + 4 * KIB + GIB - 4 * KIB);
        assert!(pattern.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(legacy.touch_faults(Behaviour::RemapWholeVma, &pattern), 1);
    }

    #[test]
    fn remap_whole_vma_costs_one_fault() {
        let p = place(BIG_BASE, 16 * GIB, 0, VA, 2 * GIB);
        let plan = plan(&p, Behaviour::RemapWholeVma).unwrap();
        assert_eq!(plan.faults, 1);
        assert_eq!(plan.count(Order::Pte), 2 * GIB / PAGE);
    }

    #[test]
    fn unnaturally_aligned_bar_uses_physical_address() {
        // A 16 GiB BAR that is only 2 MiB aligned: s ≡ off (mod 1 GiB) is not enough,
        // the PFN decides (F1 stated for any base).
        let p = place(BIG_BASE + 2 * MIB, 16 * GIB, 0, VA, GIB);
        let plan = plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE)).unwrap();
        assert_eq!((plan.count(Order::Pud), plan.count(Order::Pmd)), (0, 512));
    }

    #[rstest]
    #[case::offset(place(0, GIB, 1, VA, PAGE), ModelError::Unaligned { field: "offset", value: 1 })]
    #[case::start(place(0, GIB, 0, VA + 8, PAGE), ModelError::Unaligned { field: "VMA start", value: VA + 8 })]
    #[case::len(place(0, GIB, 0, VA, 100), ModelError::Unaligned { field: "length", value: 100 })]
    #[case::base(place(512, GIB, 0, VA, PAGE), ModelError::Unaligned { field: "BAR base", value: 512 })]
    #[case::empty_bar(place(0, 0, 0, VA, PAGE), ModelError::EmptyBar)]
    #[case::empty_map(place(0, GIB, 0, VA, 0), ModelError::EmptyMapping)]
    #[case::beyond(place(0, GIB, GIB - PAGE, VA, 2 * PAGE), ModelError::OutOfBar { offset: GIB - PAGE, len: 2 * PAGE, bar_size: GIB })]
    #[case::offset_overflow(place(0, GIB, u64::MAX - PAGE + 1, VA, PAGE), ModelError::OutOfBar { offset: u64::MAX - PAGE + 1, len: PAGE, bar_size: GIB })]
    #[case::vma_overflow(place(0, GIB, 0, u64::MAX - PAGE + 1, 2 * PAGE), ModelError::Overflow { what: "VMA end" })]
    #[case::bar_overflow(place(u64::MAX - PAGE + 1, GIB, 0, VA, PAGE), ModelError::Overflow { what: "BAR end" })]
    fn invalid_inputs_are_rejected(#[case] p: Placement, #[case] want: ModelError) {
        assert_eq!(plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE)), Err(want));
    }

    #[test]
    fn small_bar_rounds_up_to_a_page() {
        // A 256-byte BAR can still be mapped as one page (F9 uses the page-aligned size).
        let p = place(0xfe00_0000, 256, 0, VA, PAGE);
        assert_eq!(
            plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE))
                .unwrap()
                .faults,
            1
        );
    }

    #[rstest]
    #[case::whole(true, GIB, 0, GIB, None)]
    #[case::last_page(true, GIB, GIB - PAGE, PAGE, None)]
    #[case::private(false, GIB, 0, PAGE, Some("MAP_PRIVATE"))]
    #[case::one_page_past(true, GIB, GIB - PAGE, 2 * PAGE, Some("beyond the page-aligned BAR end"))]
    #[case::at_end(true, GIB, GIB, PAGE, Some("beyond the page-aligned BAR end"))]
    #[case::small_bar_page(true, 256, 0, PAGE, None)]
    #[case::small_bar_two(true, 256, 0, 2 * PAGE, Some("beyond the page-aligned BAR end"))]
    #[case::empty(true, GIB, 0, 0, Some("empty length"))]
    #[case::overflow(true, GIB, u64::MAX - PAGE + 1, PAGE, Some("beyond the page-aligned BAR end"))]
    fn f9_mmap_validity(
        #[case] shared: bool,
        #[case] bar_size: u64,
        #[case] offset: u64,
        #[case] len: u64,
        #[case] want: Option<&str>,
    ) {
        assert_eq!(mmap_refusal(shared, bar_size, offset, len), want);
        // For shared mappings, the F1 model accepts exactly the ranges vfio-pci maps.
        if len > 0 && shared {
            let p = place(0, bar_size, offset, VA, len);
            assert_eq!(p.validate().is_ok(), want.is_none());
        }
    }

    #[rstest]
    #[case(0x1000, PMD, 0, 0x20_0000)]
    #[case(0x20_0000, PMD, 0, 0x20_0000)]
    #[case(0x20_0000, PMD, 0x1000, 0x20_1000)]
    #[case(0x20_2000, PMD, 0x1000, 0x40_1000)]
    #[case(0x7f00_1234_5000, PUD, 0x20_0000, 0x7f00_4020_0000)]
    #[case(0, PUD, PUD + 0x1000, 0x1000)]
    fn congruent_alignment(
        #[case] from: u64,
        #[case] modulus: u64,
        #[case] residue: u64,
        #[case] want: u64,
    ) {
        let got = align_up_congruent(from, modulus, residue).unwrap();
        assert_eq!(got, want);
        assert_eq!(got % modulus, residue % modulus);
    }

    #[test]
    fn congruent_alignment_overflow_is_none() {
        assert_eq!(align_up_congruent(u64::MAX - PAGE, PUD, 0), None);
    }

    #[test]
    fn huge_residue_is_phys_mod_block() {
        assert_eq!(huge_residue(BIG_BASE, 2 * MIB + 4 * KIB, PMD), 4 * KIB);
        assert_eq!(huge_residue(BIG_BASE, 3 * GIB + 2 * MIB, PUD), 2 * MIB);
        assert_eq!(huge_residue(BIG_BASE + MIB, 0, PMD), MIB);
    }
}
