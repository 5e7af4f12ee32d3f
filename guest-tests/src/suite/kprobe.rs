//! F1 cross-check: a kprobe on the huge fault handler records the order of every
//! call and its return value; the entries installed per order must equal the
//! model's plan, as the fault count already said.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use guest_tests::ensure;
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::model::{Order, PUD};
use guest_tests::stop::{Stop, TestResult};

use super::check::{
    advise_huge, expect_plan, mixed_bar, mixed_range, need_huge, place, plan_of, Data,
};

const TRACEFS: &str = "/sys/kernel/tracing";
/// VM_FAULT_NOPAGE: the handler installed an entry.
const NOPAGE: u64 = 0x100;
/// VM_FAULT_FALLBACK: the handler declined this order.
const FALLBACK: u64 = 0x800;

/// Probe definitions, removed (with their events disabled) on drop.
struct Probes {
    dir: PathBuf,
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

impl Probes {
    /// Defines both probes, first removing any a killed earlier run left behind
    /// (a stale definition would make the new one fail with EEXIST).
    /// `symbol` is the handler's name in kallsyms (maybe a compiler clone,
    /// `.isra.0`, which must be probed by that name).
    fn add(dir: &Path, symbol: &str) -> std::result::Result<Self, String> {
        let events = dir.join("kprobe_events");
        Self::remove(dir);
        let probes = Probes {
            dir: dir.to_owned(),
        };
        for def in [
            format!("p:bigbar/hf {symbol} order=%si:u32\n"),
            format!("r:bigbar/hfr {symbol} ret=$retval\n"),
        ] {
            append(&events, &def)
                .map_err(|e| format!("cannot define kprobe {:?}: {e}", def.trim()))?;
        }
        Ok(probes)
    }

    fn enable(&self, on: bool) -> std::io::Result<()> {
        if on {
            // Tracing may have been switched off globally; the trace would be empty.
            fs::write(self.dir.join("tracing_on"), "1")?;
        }
        fs::write(
            self.dir.join("events/bigbar/enable"),
            if on { "1" } else { "0" },
        )
    }

    /// Disables and removes bigbar's probes in `dir`, if there are any.
    fn remove(dir: &Path) {
        let _ = fs::write(dir.join("events/bigbar/enable"), "0");
        let events = dir.join("kprobe_events");
        for undef in ["-:bigbar/hf\n", "-:bigbar/hfr\n"] {
            let _ = append(&events, undef);
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        Self::remove(&self.dir);
    }
}

/// The tracefs directory, mounting it if the kernel has it but nobody mounted it.
fn tracefs() -> std::result::Result<PathBuf, String> {
    let dir = PathBuf::from(TRACEFS);
    if dir.join("kprobe_events").exists() {
        return Ok(dir);
    }
    nix::mount::mount(
        Some("tracefs"),
        &dir,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        // /sys/kernel/tracing exists only in a kernel with tracefs.
        let why = if e == nix::errno::Errno::ENOENT || e == nix::errno::Errno::ENODEV {
            "tracefs is not available (CONFIG_FTRACE, CONFIG_KPROBE_EVENTS)".to_string()
        } else {
            format!("mounting it failed: {e}")
        };
        format!("tracefs is not mounted at {TRACEFS}: {why}")
    })?;
    if dir.join("kprobe_events").exists() {
        Ok(dir)
    } else {
        Err("tracefs has no kprobe_events (CONFIG_KPROBE_EVENTS off)".into())
    }
}

/// Calls per (order, return value) from the trace: entries and returns alternate.
fn tally(trace: &str) -> Result<Vec<(u32, u64)>> {
    let mut calls = Vec::new();
    let mut pending: Option<u32> = None;
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        if let Some(v) = field(line, "order=") {
            pending = Some(v.parse().with_context(|| format!("order in {line:?}"))?);
        } else if let Some(v) = field(line, "ret=") {
            // `$retval` prints in hex or decimal depending on the kernel's default type.
            let ret = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            }
            .with_context(|| format!("ret in {line:?}"))?;
            if let Some(order) = pending.take() {
                calls.push((order, ret));
            }
        }
    }
    Ok(calls)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// f1.kprobe_orders: the kprobe's view of a PUD + PMD + PTE mapping.
pub fn kprobe_orders(fx: &Fixture) -> TestResult {
    need_huge(fx)?;
    let bar = mixed_bar(fx)?;
    let dir = tracefs().map_err(|why| Stop::Skip(format!("cross-check impossible: {why}")))?;
    // tracefs has kprobe_events and kallsyms the handler: a probe that cannot be
    // defined now is a failure to look at, not a missing feature.
    let symbol = fx
        .caps
        .huge_fault_symbol
        .as_deref()
        .context("no huge fault handler in kallsyms")?;
    let probes = Probes::add(&dir, symbol).map_err(anyhow::Error::msg)?;
    let (offset, len) = mixed_range(bar);
    let mut data = Data::new(fx, bar, offset, len)?;
    let map = place(fx, bar, offset, len, PUD, 0)?;
    let behaviour = advise_huge(fx, &map)?;
    let plan = plan_of(bar, offset, &map, behaviour)?;
    fs::write(dir.join("trace"), "").context("clearing the trace")?;
    probes.enable(true).context("enabling the kprobe events")?;
    let counted = expect_plan(&map, &plan, "probed mapping");
    probes
        .enable(false)
        .context("disabling the kprobe events")?;
    counted?;
    let trace = fs::read_to_string(dir.join("trace")).context("reading the trace")?;
    let calls = tally(&trace)?;
    let mut problems = Vec::new();
    for order in [Order::Pud, Order::Pmd, Order::Pte] {
        let k = order.kernel_order();
        let mapped = calls.iter().filter(|c| c.0 == k && c.1 == NOPAGE).count() as u64;
        let fallback = calls.iter().filter(|c| c.0 == k && c.1 == FALLBACK).count();
        let other: Vec<String> = calls
            .iter()
            .filter(|c| c.0 == k && c.1 != NOPAGE && c.1 != FALLBACK)
            .map(|c| format!("{:#x}", c.1))
            .collect();
        diag(&format!(
            "kprobe: {order} (order {k}): {mapped} mapped, {fallback} fallback, other {other:?}; model {}",
            plan.count(order)
        ));
        if mapped != plan.count(order) || !other.is_empty() {
            problems.push(format!(
                "{order}: {mapped} mapped (model {}), other returns {other:?}",
                plan.count(order)
            ));
        }
    }
    ensure!(!calls.is_empty(), "the kprobe saw no call of {symbol}");
    ensure!(
        problems.is_empty(),
        "kprobe disagrees with the model: {}",
        problems.join("; ")
    );
    data.check(&map, offset)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_pair_up() {
        let trace = "# tracer: nop\n\
            guest-tests-77 [000] d..1. 9.1: hf: (vfio_pci_mmap_huge_fault+0x0/0x1b0 [vfio_pci_core]) order=18\n\
            guest-tests-77 [000] ..... 9.2: hfr: (__handle_mm_fault+0x5a0/0xe00 <- vfio_pci_mmap_huge_fault) ret=0x800\n\
            guest-tests-77 [000] d..1. 9.3: hf: (vfio_pci_mmap_huge_fault+0x0/0x1b0 [vfio_pci_core]) order=9\n\
            guest-tests-77 [000] ..... 9.4: hfr: (__handle_mm_fault+0x5a0/0xe00 <- vfio_pci_mmap_huge_fault) ret=0x100\n\
            guest-tests-77 [000] d..1. 9.5: hf: (vfio_pci_mmap_huge_fault+0x0/0x1b0 [vfio_pci_core]) order=0\n\
            guest-tests-77 [000] ..... 9.6: hfr: (__handle_mm_fault+0x5a0/0xe00 <- vfio_pci_mmap_huge_fault) ret=256\n";
        assert_eq!(
            tally(trace).unwrap(),
            [(18, FALLBACK), (9, NOPAGE), (0, NOPAGE)]
        );
    }
}
