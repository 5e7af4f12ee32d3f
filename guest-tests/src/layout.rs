//! A measured mapping as the `# layout:` diagnostic carries it
//! ([`protocol::ktap::layout`]): the model's plan cut into its runs, the faults
//! each run cost when touched, and the entry size those faults prove.
//!
//! The fault counter sees one fault per installed entry (F2), whatever its
//! size, so a count taken over the whole mapping only says "as predicted" or
//! "not". Counted run by run, it says which size each run got: touching the
//! run's pages costs one fault per distinct block of the size installed. No
//! I/O here; `suite::check` touches and writes.

use protocol::ktap::layout::{EntrySize, Layout, LayoutRun};

use crate::model::{FaultPlan, FaultRun, Order, Placement, PUD};
use crate::vfio::VFIO_PCI_OFFSET_SHIFT;

/// Where a rule-keeping placement is drawn: any address congruent to the
/// physical one modulo 1 GiB gives every block its largest entry.
const RULE_BASE: u64 = 1 << 46;

/// The protocol's name for `order`.
pub fn entry_size(order: Order) -> EntrySize {
    match order {
        Order::Pte => EntrySize::Pte,
        Order::Pmd => EntrySize::Pmd,
        Order::Pud => EntrySize::Pud,
    }
}

/// Faults the model expects for touching each run of `plan`: one per entry,
/// or, for a plan whose first fault maps the whole VMA (6.1's remap: fewer
/// faults than entries), all of its faults on the first run.
pub fn expected_per_run(plan: &FaultPlan) -> Vec<u64> {
    let entries: u64 = plan.runs.iter().map(|r| r.count).sum();
    if plan.faults < entries {
        let mut out = vec![0; plan.runs.len()];
        if let Some(first) = out.first_mut() {
            *first = plan.faults;
        }
        return out;
    }
    plan.runs.iter().map(|r| r.count).collect()
}

/// The addresses of `touches` (in address order) that fall inside `run`.
pub fn touches_in(touches: &[u64], run: &FaultRun) -> Vec<u64> {
    touches
        .iter()
        .copied()
        .filter(|&va| run.start <= va && va < run.end())
        .collect()
}

/// Distinct `size`-aligned blocks the addresses `touches` hit:
/// the faults touching them costs where entries of `size` map them.
fn blocks_hit(touches: &[u64], size: u64) -> u64 {
    let mut blocks: Vec<u64> = touches.iter().map(|va| va / size).collect();
    // Sorted first: a pattern that touches an entry's interior before its
    // start is not in address order.
    blocks.sort_unstable();
    blocks.dedup();
    blocks.len() as u64
}

/// The one entry size that explains `counted` faults for touching `touches` of
/// `run`, which the model expects to cost `expected`: the run's own size when
/// the count matches, else the only other size that the run's alignment
/// allows and that costs exactly `counted`; `None` when none or several do.
pub fn measured(run: &FaultRun, touches: &[u64], expected: u64, counted: u64) -> Option<Order> {
    if counted == expected {
        return Some(run.order);
    }
    let bytes = run.count * run.order.size();
    let mut fits = Order::LARGEST_FIRST.into_iter().filter(|&o| {
        o != run.order
            && run.start % o.size() == 0
            && bytes % o.size() == 0
            && blocks_hit(touches, o.size()) == counted
    });
    match (fits.next(), fits.next()) {
        (Some(o), None) => Some(o),
        _ => None,
    }
}

/// The runs a placement keeping A1–A3 would get for the same BAR range.
pub fn rule_runs(plan: &FaultPlan) -> Vec<(EntrySize, u64)> {
    let p = plan.placement;
    let ideal = Placement {
        start: RULE_BASE + p.phys(p.start) % PUD,
        ..p
    };
    let behaviour = crate::model::Behaviour::HugeFault(crate::model::Orders::ALL_HUGE);
    match crate::model::plan(&ideal, behaviour) {
        Ok(ideal) => ideal
            .runs
            .iter()
            .map(|r| (entry_size(r.order), r.count))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The layout of `plan` (made for a mapping of file offset `file_offset`)
/// whose runs were touched at `touches[i]` and cost `counted[i]` faults.
pub fn layout(
    what: &str,
    file_offset: u64,
    plan: &FaultPlan,
    touches: &[Vec<u64>],
    counted: &[u64],
) -> Layout {
    let p = plan.placement;
    let runs = plan
        .runs
        .iter()
        .zip(expected_per_run(plan))
        .zip(touches.iter().zip(counted))
        .map(|((run, expected), (t, &got))| LayoutRun {
            size: entry_size(run.order),
            count: run.count,
            expected_faults: expected,
            faults: got,
            measured: measured(run, t, expected, got).map(entry_size),
        })
        .collect();
    Layout {
        what: what.to_string(),
        bar: u32::try_from(file_offset >> VFIO_PCI_OFFSET_SHIFT).unwrap_or(u32::MAX),
        start: p.start,
        len: p.len,
        offset: p.offset,
        phys: p.phys(p.start),
        runs,
        rule: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{plan, Behaviour, Orders, PAGE, PMD};

    const HUGE: Behaviour = Behaviour::HugeFault(Orders::ALL_HUGE);

    fn run(order: Order, count: u64) -> FaultRun {
        FaultRun {
            start: 1 << 40,
            order,
            count,
        }
    }

    /// Every page of `r`.
    fn every_page(r: &FaultRun) -> Vec<u64> {
        (0..r.count * r.order.size() / PAGE)
            .map(|i| r.start + i * PAGE)
            .collect()
    }

    #[rstest::rstest]
    // As predicted.
    #[case(run(Order::Pmd, 4), 4, Some(Order::Pmd))]
    // Every page faulted: 4 KiB entries.
    #[case(run(Order::Pmd, 4), 4 * 512, Some(Order::Pte))]
    // One fault for 512 PMDs' worth: a PUD.
    #[case(run(Order::Pmd, 512), 1, Some(Order::Pud))]
    // 512 faults over a PUD: PMDs.
    #[case(run(Order::Pud, 1), 512, Some(Order::Pmd))]
    // A mix fits no single size.
    #[case(run(Order::Pmd, 4), 7, None)]
    fn counts_prove_a_size(#[case] r: FaultRun, #[case] counted: u64, #[case] want: Option<Order>) {
        assert_eq!(measured(&r, &every_page(&r), r.count, counted), want);
    }

    #[test]
    fn an_unaligned_run_cannot_be_huge() {
        let r = FaultRun {
            start: (1 << 40) + PAGE,
            order: Order::Pte,
            count: 1024,
        };
        assert_eq!(measured(&r, &every_page(&r), 1024, 2), None);
    }

    fn msix_tail(start: u64) -> Placement {
        Placement {
            bar_base: 0xe000_0000,
            bar_size: 64 << 20,
            offset: PMD + PAGE,
            start,
            len: (64 << 20) - PMD - PAGE,
        }
    }

    #[rstest::rstest]
    // Size-aligned, as stock kernels place it: every page 4 KiB.
    #[case(msix_tail(0x7f00_0000_0000), vec![(Order::Pte, 15871)])]
    // Offset-aware: 511 pages then 30 PMDs (A3).
    #[case(msix_tail(0x7f00_0020_1000), vec![(Order::Pte, 511), (Order::Pmd, 30)])]
    fn layout_of_the_msix_tail(#[case] p: Placement, #[case] runs: Vec<(Order, u64)>) {
        let pl = plan(&p, HUGE).unwrap();
        let touches: Vec<Vec<u64>> = pl.runs.iter().map(every_page).collect();
        let counted = expected_per_run(&pl);
        let l = layout("tail", 1 << 40, &pl, &touches, &counted);
        let got: Vec<(EntrySize, u64, Option<EntrySize>)> = l
            .runs
            .iter()
            .map(|r| (r.size, r.count, r.measured))
            .collect();
        let want: Vec<(EntrySize, u64, Option<EntrySize>)> = runs
            .iter()
            .map(|&(o, n)| (entry_size(o), n, Some(entry_size(o))))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            (l.bar, l.offset, l.phys),
            (1, p.offset, 0xe000_0000 + p.offset)
        );
        assert_eq!(
            rule_runs(&pl),
            vec![(EntrySize::Pte, 511), (EntrySize::Pmd, 30)]
        );
    }

    #[test]
    fn a_whole_vma_remap_expects_its_fault_on_the_first_run() {
        let p = msix_tail(0x7f00_0000_0000);
        let pl = plan(&p, Behaviour::RemapWholeVma).unwrap();
        assert_eq!(expected_per_run(&pl), vec![1]);
    }
}
