//! What happens to installed entries when a mapping is split or moved
//! (docs/RULES.md F6, F8), and how many faults touching the result then costs.
//!
//! The kernel (7.2 `mm/huge_memory.c`, `mm/memory.c`, `mm/mremap.c`):
//! - a VMA boundary strictly inside a huge entry clears that entry (PMD split at
//!   the boundary, PUD split when the zap or protection change covers part of it);
//!   PTE entries are never cleared by a boundary at a page address;
//! - a moving mremap keeps an entry of block size `B` only if the move distance
//!   is a multiple of `B`; otherwise the entry is split (cleared) and the moved
//!   range refaults at the orders F1 gives for the new VMA.

use crate::model::{FaultPlan, ModelError, Order};

/// One installed page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Virtual address of the entry.
    pub start: u64,
    /// Its order.
    pub order: Order,
}

impl Entry {
    /// Virtual address just past the entry.
    pub fn end(&self) -> u64 {
        self.start + self.order.size()
    }
}

/// Every entry of `plan`, in address order.
pub fn entries(plan: &FaultPlan) -> Vec<Entry> {
    plan.runs
        .iter()
        .flat_map(|r| {
            (0..r.count).map(move |i| Entry {
                start: r.start + i * r.order.size(),
                order: r.order,
            })
        })
        .collect()
}

/// The entries that survive new VMA boundaries at `cuts` (F6): huge entries with a
/// cut strictly inside are cleared.
pub fn after_split(installed: &[Entry], cuts: &[u64]) -> Vec<Entry> {
    installed
        .iter()
        .copied()
        .filter(|e| e.order == Order::Pte || !cuts.iter().any(|&c| e.start < c && c < e.end()))
        .collect()
}

/// The entries of `installed` (all inside the moved range) after a move by
/// `delta` bytes (F8): those whose block size divides the distance, translated.
pub fn after_move(installed: &[Entry], delta: i64) -> Vec<Entry> {
    installed
        .iter()
        .filter(|e| delta.unsigned_abs() % e.order.size() == 0)
        .map(|e| Entry {
            start: e.start.wrapping_add_signed(delta),
            order: e.order,
        })
        .collect()
}

/// Whether a move by `delta` would hit a PUD entry it cannot move whole: the
/// kernel then walks the leaf PUD as if it were a PMD table (docs/RULES.md F6/F8,
/// "possibly a kernel bug"), so such a case belongs to the risky tests.
pub fn move_splits_pud(installed: &[Entry], delta: i64) -> bool {
    installed
        .iter()
        .any(|e| e.order == Order::Pud && delta.unsigned_abs() % e.order.size() != 0)
}

/// Faults taken when every page of the VMAs planned by `fresh` is touched while
/// the entries `present` are still installed.
///
/// Each entry of a fresh plan either lies inside a present entry (no fault) or
/// in a range where nothing is installed (one fault). A fresh entry partly
/// covered by present entries would fault at an order the model does not
/// predict; that input is rejected.
pub fn refaults(present: &[Entry], fresh: &[FaultPlan]) -> Result<u64, ModelError> {
    let mut faults = 0;
    for e in fresh.iter().flat_map(entries) {
        let covered: u64 = present
            .iter()
            .map(|p| overlap(p.start, p.end(), e.start, e.end()))
            .sum();
        if covered == 0 {
            faults += 1;
        } else if covered < e.order.size() {
            return Err(ModelError::PartlyMapped { at: e.start });
        }
    }
    Ok(faults)
}

fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{plan, Behaviour, Orders, Placement, PAGE, PMD, PUD};
    use rstest::rstest;

    const MIB: u64 = 1 << 20;
    const BASE: u64 = 0xfc_0000_0000;
    const VA: u64 = 0x7f00_0000_0000;

    fn planned(offset: u64, start: u64, len: u64) -> FaultPlan {
        plan(
            &Placement {
                bar_base: BASE,
                bar_size: PUD,
                offset,
                start,
                len,
            },
            Behaviour::HugeFault(Orders::ALL_HUGE),
        )
        .unwrap()
    }

    /// Faults after cutting `[VA, VA + len)` (offset 0, congruent) so that only
    /// the VMAs `keep` (VA-relative ranges) remain.
    fn split_faults(len: u64, cuts: &[u64], keep: &[(u64, u64)]) -> u64 {
        let before = entries(&planned(0, VA, len));
        let cuts: Vec<u64> = cuts.iter().map(|c| VA + c).collect();
        let alive = after_split(&before, &cuts);
        let fresh: Vec<FaultPlan> = keep
            .iter()
            .map(|&(a, b)| planned(a, VA + a, b - a))
            .collect();
        refaults(&alive, &fresh).unwrap()
    }

    #[rstest]
    // munmap [5M, 8M) of 8 MiB of PMDs: the PMD [4M, 6M) is cleared, [4M, 5M) refaults at 4 KiB.
    #[case::munmap_pmd_cut(8 * MIB, &[5 * MIB], &[(0, 5 * MIB)], 256)]
    // mprotect [3M, 5M): three VMAs, PMDs [2M,4M) and [4M,6M) cleared: 256 + 512 + 256.
    #[case::mprotect_pmd_cut(8 * MIB, &[3 * MIB, 5 * MIB], &[(0, 3 * MIB), (3 * MIB, 5 * MIB), (5 * MIB, 8 * MIB)], 1024)]
    // A cut at a 2 MiB boundary clears no PMD.
    #[case::pmd_boundary_cut(8 * MIB, &[6 * MIB], &[(0, 6 * MIB)], 0)]
    // munmap the last 2 MiB of a PUD: the PUD is cleared, 511 PMDs refault.
    #[case::pud_cut_at_pmd_boundary(PUD, &[PUD - PMD], &[(0, PUD - PMD)], 511)]
    // mprotect [2M, 4M) of a PUD: 1 + 1 + 510 PMDs.
    #[case::pud_mprotect(PUD, &[2 * MIB, 4 * MIB], &[(0, 2 * MIB), (2 * MIB, 4 * MIB), (4 * MIB, PUD)], 512)]
    // The risky cut at 1 GiB - 1 MiB: 511 PMDs and 256 PTEs if the kernel survives.
    #[case::pud_cut_unaligned(PUD, &[PUD - MIB], &[(0, PUD - MIB)], 767)]
    fn splits(
        #[case] len: u64,
        #[case] cuts: &[u64],
        #[case] keep: &[(u64, u64)],
        #[case] want: u64,
    ) {
        assert_eq!(split_faults(len, cuts, keep), want);
    }

    #[rstest]
    // 8 MiB of PMDs moved by whole PMDs: nothing refaults.
    #[case::pmd_congruent(8 * MIB, VA, 2 * MIB, 0, false)]
    #[case::gib_congruent(PUD, VA, PUD, 0, false)]
    // Moved by 4 KiB modulo 2 MiB: every PMD cleared, 2048 pages refault.
    #[case::pmd_incongruent(8 * MIB, VA, 2 * MIB + PAGE, 2048, false)]
    // A PUD moved by 2 MiB: risky, and 512 PMDs if it survives.
    #[case::pud_by_pmd(PUD, VA, 2 * MIB, 512, true)]
    fn moves(
        #[case] len: u64,
        #[case] start: u64,
        #[case] delta: u64,
        #[case] want: u64,
        #[case] risky: bool,
    ) {
        let before = entries(&planned(0, start, len));
        let delta = delta as i64;
        assert_eq!(move_splits_pud(&before, delta), risky);
        let alive = after_move(&before, delta);
        let fresh = planned(0, start + delta as u64, len);
        assert_eq!(refaults(&alive, &[fresh]).unwrap(), want);
    }

    #[test]
    fn fresh_entry_partly_covered_is_rejected() {
        // A fresh PMD over two surviving PTEs only: not predictable.
        let present = [Entry {
            start: VA,
            order: Order::Pte,
        }];
        let fresh = planned(0, VA, 2 * MIB);
        assert!(refaults(&present, &[fresh]).is_err());
    }

    #[test]
    fn entries_expand_runs() {
        let p = planned(PMD - PAGE, VA + PMD - PAGE, PMD + 2 * PAGE);
        let e = entries(&p);
        assert_eq!(e.len() as u64, p.faults);
        assert_eq!(e[0].order, Order::Pte);
        assert_eq!(e[1].start, VA + PMD);
        assert_eq!(e[1].order, Order::Pmd);
        assert_eq!(e[2].start % PAGE, 0);
    }
}
