//! F1 ground truth on kernels built with `CONFIG_PTDUMP_DEBUGFS` (the project's
//! own builds; Debian's have it off): the kernel's dump of the test process's
//! page tables shows the size of every entry of a mapping, which must be the
//! model's plan, as the fault count already said.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::model::Order;
use guest_tests::ptdump::{self, Span};
use guest_tests::stop::{skip_if, TestResult};
use guest_tests::{ensure, skip};

use super::check::{advise_huge, bar_of, expect_plan, place, plan_of, Data};
use super::orders::EVERY_CUT;

const DEBUGFS: &str = "/sys/kernel/debug";
/// Walks the current process's page tables (the kernel copy under PTI).
const CURRENT_KERNEL: &str = "/sys/kernel/debug/page_tables/current_kernel";
/// Walks the user copy; exists only with CONFIG_MITIGATION_PAGE_TABLE_ISOLATION.
const CURRENT_USER: &str = "/sys/kernel/debug/page_tables/current_user";

/// Why there is no dump to read, if there is none.
fn no_dump() -> Option<String> {
    if Path::new(CURRENT_KERNEL).exists() {
        return None;
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(DEBUGFS));
    Some(if mounted {
        format!("no {CURRENT_KERNEL}: kernel built without CONFIG_PTDUMP_DEBUGFS")
    } else {
        // The init script mounts it wherever the kernel has it.
        format!(
            "debugfs is not mounted at {DEBUGFS}: no page-table dump to read \
             (CONFIG_DEBUG_FS, CONFIG_PTDUMP_DEBUGFS)"
        )
    })
}

/// A dump: its path, text and spans.
struct Dump {
    path: &'static str,
    text: String,
    spans: Vec<Span>,
}

impl Dump {
    /// The dump's lines of present entries overlapping `[start, end)`, verbatim.
    fn lines_in(&self, start: u64, end: u64) -> Vec<&str> {
        // `parse` makes one span per line starting with "0x", in order.
        self.text
            .lines()
            .filter(|l| l.starts_with("0x"))
            .zip(&self.spans)
            .filter(|(_, s)| s.present && s.start < end && start < s.end)
            .map(|(l, _)| l)
            .collect()
    }
}

/// The first dump (current_kernel, then current_user) that shows user-space
/// entries; `None` if neither does.
fn user_dump() -> Result<Option<Dump>> {
    for path in [CURRENT_KERNEL, CURRENT_USER] {
        if !Path::new(path).exists() {
            continue;
        }
        let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let spans = ptdump::parse(&text).with_context(|| format!("parsing {path}"))?;
        diag(&format!(
            "{path}: {} lines, user entries: {}",
            spans.len(),
            ptdump::has_user_entries(&spans)
        ));
        if ptdump::has_user_entries(&spans) {
            return Ok(Some(Dump { path, text, spans }));
        }
    }
    Ok(None)
}

/// f1.ptdump_orders: the dumped entry sizes of a PTE + PMD + PUD + PMD + PTE
/// mapping equal the model's plan.
pub fn ptdump_orders(fx: &Fixture) -> TestResult {
    skip_if(no_dump())?;
    let r = EVERY_CUT;
    let bar = bar_of(fx, r.offset + r.len)?;
    let mut data = Data::new(fx, bar, r.offset, r.len)?;
    let map = place(fx, bar, r.offset, r.len, r.modulus, r.shift)?;
    let behaviour = advise_huge(fx, &map)?;
    let plan = plan_of(bar, r.offset, &map, behaviour)?;
    expect_plan(&map, &plan, &format!("BAR {} mapping", bar.index))?;
    let Some(dump) = user_dump()? else {
        skip!("the page-table dumps show no user-space entry (page-table isolation?)");
    };
    let (start, end) = (map.start(), map.start() + map.len());
    for line in dump.lines_in(start, end) {
        diag(&format!("dump: {line}"));
    }
    let seen = ptdump::tally(&dump.spans, start, end);
    diag(&format!(
        "{}, VA [{start:#x}, {end:#x}): {seen}; model: {plan}",
        dump.path
    ));
    let wrong: Vec<String> = [Order::Pud, Order::Pmd, Order::Pte]
        .into_iter()
        .filter(|&o| seen.count(o) != plan.count(o))
        .map(|o| format!("{o}: {} dumped, model {}", seen.count(o), plan.count(o)))
        .collect();
    ensure!(
        wrong.is_empty(),
        "page-table dump disagrees with the model: {}",
        wrong.join("; ")
    );
    ensure!(
        seen.mapped == map.len(),
        "the dump maps {:#x} of the mapping's {:#x} bytes",
        seen.mapped,
        map.len()
    );
    data.check(&map, r.offset)?;
    Ok(())
}
