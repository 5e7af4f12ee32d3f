//! The guest benchmarks' KTAP diagnostics (`# bench fault ...`, `# bench regs
//! ...`, printed by guest-tests' `bench.*` tests) and their summary.

use super::report::{GuestFigures, OrderFigures};
use super::stats::Summary;
use std::collections::HashMap;

const GIB: f64 = (1u64 << 30) as f64;

/// One `bench fault` line: a pass over a mapping at one order.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSample {
    /// `PUD`, `PMD` or `PTE`.
    pub order: String,
    /// Bytes mapped.
    pub len: u64,
    /// Words touched.
    pub touches: u64,
    /// Faults counted on the first pass.
    pub faults: u64,
    /// First pass, nanoseconds.
    pub first_ns: u64,
    /// Second pass, nanoseconds.
    pub second_ns: u64,
}

/// One `bench regs` line: `count` accesses of kind `op`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegSample {
    /// `read32` or `write32`.
    pub op: String,
    /// Accesses made.
    pub count: u64,
    /// Their total time, nanoseconds.
    pub ns: u64,
}

/// The `key=value` words of a line.
fn fields(rest: &str) -> HashMap<&str, &str> {
    rest.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// Parses the benchmark diagnostics out of a KTAP document.
pub fn parse(ktap: &str) -> (Vec<FaultSample>, Vec<RegSample>) {
    let mut faults = Vec::new();
    let mut regs = Vec::new();
    for line in ktap.lines() {
        let Some(diag) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let diag = diag.trim_start();
        if let Some(rest) = diag.strip_prefix("bench fault ") {
            let f = fields(rest);
            let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
            if let (Some(order), Some(len), Some(touches), Some(n), Some(a), Some(b)) = (
                f.get("order"),
                num("len"),
                num("touches"),
                num("faults"),
                num("first_ns"),
                num("second_ns"),
            ) {
                faults.push(FaultSample {
                    order: order.to_string(),
                    len,
                    touches,
                    faults: n,
                    first_ns: a,
                    second_ns: b,
                });
            }
        } else if let Some(rest) = diag.strip_prefix("bench regs ") {
            let f = fields(rest);
            let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
            if let (Some(op), Some(count), Some(ns)) = (f.get("op"), num("count"), num("ns")) {
                if count > 0 {
                    regs.push(RegSample {
                        op: op.to_string(),
                        count,
                        ns,
                    });
                }
            }
        }
    }
    (faults, regs)
}

/// Summarises the samples of every order (PUD, PMD, PTE, in that order) and the
/// time-per-GiB ratios between them.
pub fn summarise(kernel: &str, faults: &[FaultSample], regs: &[RegSample]) -> GuestFigures {
    let mut orders = Vec::new();
    for order in ["PUD", "PMD", "PTE"] {
        let s: Vec<&FaultSample> = faults.iter().filter(|f| f.order == order).collect();
        let Some(first) = s.first() else { continue };
        let ms = |ns: u64| ns as f64 / 1e6;
        let per_gib = GIB / first.len as f64;
        let (Some(first_ms), Some(second_ms), Some(fault_med)) = (
            Summary::over(&s, |f| Some(ms(f.first_ns))),
            Summary::over(&s, |f| Some(ms(f.second_ns))),
            Summary::over(&s, |f| Some(f.faults as f64)),
        ) else {
            continue;
        };
        // No sample faulted (the regression this figure exists for): no figure.
        let per_fault_us = Summary::over(&s, |f| {
            (f.faults > 0).then(|| f.first_ns as f64 / 1e3 / f.faults as f64)
        });
        orders.push(OrderFigures {
            order: order.to_string(),
            len: first.len,
            touches: first.touches,
            faults: fault_med.median,
            per_gib_ms: first_ms.scaled(per_gib),
            first_ms,
            second_ms,
            faults_per_gib: fault_med.median * per_gib,
            per_fault_us,
        });
    }
    let per_gib = |o: &str| {
        orders
            .iter()
            .find(|f| f.order == o)
            .map(|f| f.per_gib_ms.median)
    };
    let mut ratios = Vec::new();
    for (a, b) in [("PTE", "PMD"), ("PMD", "PUD"), ("PTE", "PUD")] {
        if let (Some(x), Some(y)) = (per_gib(a), per_gib(b)) {
            if y > 0.0 {
                ratios.push((format!("{a}/{b}"), x / y));
            }
        }
    }
    let reg = |op: &str| {
        Summary::over(regs, |r| {
            (r.op == op).then(|| r.ns as f64 / 1e3 / r.count as f64)
        })
    };
    GuestFigures {
        kernel: kernel.to_string(),
        orders,
        ratios,
        reg_read_us: reg("read32"),
        reg_write_us: reg("write32"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KTAP: &str = "TAP version 13\n1..3\n\
        #  RUN           bench.fault_pud ...\n\
        # BAR 2 phys 0xf800000000 len 0x400000000 at VA 0x7f0000000000 (HugeFault): the plan is 16 faults\n\
        # bench fault order=PUD len=17179869184 touches=16 faults=16 expected=16 first_ns=2000000 second_ns=100000\n\
        # bench fault order=PUD len=17179869184 touches=16 faults=16 expected=16 first_ns=4000000 second_ns=100000\n\
        # bench fault order=PUD len=17179869184 touches=16 faults=16 expected=16 first_ns=3000000 second_ns=100000\n\
        ok 1 bench.fault_pud\n\
        # bench fault order=PMD len=17179869184 touches=8192 faults=8192 expected=8192 first_ns=160000000 second_ns=8000000\n\
        # bench fault order=PTE len=268435456 touches=65536 faults=65536 expected=65536 first_ns=400000000 second_ns=40000000\n\
        # bench fault order=PTE len=oops\n\
        # bench regs op=read32 count=2000 ns=100000000\n\
        # bench regs op=write32 count=2000 ns=80000000\n\
        # bench regs op=read32 count=0 ns=5\n";

    #[test]
    fn parses_the_diagnostics() {
        let (faults, regs) = parse(KTAP);
        assert_eq!(faults.len(), 5);
        assert_eq!(
            faults[4],
            FaultSample {
                order: "PTE".into(),
                len: 256 << 20,
                touches: 65536,
                faults: 65536,
                first_ns: 400_000_000,
                second_ns: 40_000_000
            }
        );
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[1].op, "write32");
    }

    #[test]
    fn an_order_that_never_faulted_has_no_figure_per_fault() {
        let text = KTAP.replace("faults=16 expected", "faults=0 expected");
        let (faults, regs) = parse(&text);
        let g = summarise("debian:sid", &faults, &regs);
        assert_eq!(g.orders[0].per_fault_us, None);
        assert_eq!(g.orders_without_faults(), ["PUD"]);
    }

    #[test]
    fn summarises_per_gib_and_ratios() {
        let (faults, regs) = parse(KTAP);
        let g = summarise("debian:sid", &faults, &regs);
        assert_eq!(g.orders.len(), 3);
        let pud = &g.orders[0];
        assert_eq!((pud.faults, pud.faults_per_gib), (16.0, 1.0));
        assert_eq!(pud.first_ms.median, 3.0);
        assert_eq!(pud.per_gib_ms.median, 3.0 / 16.0);
        assert_eq!(pud.per_fault_us.unwrap().median, 3000.0 / 16.0);
        let pte = &g.orders[2];
        // 256 MiB extrapolated to 1 GiB: four times the time and the faults.
        assert_eq!(
            (pte.per_gib_ms.median, pte.faults_per_gib),
            (1600.0, 262144.0)
        );
        let ratio = |n: &str| g.ratios.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(ratio("PTE/PMD"), 1600.0 / 10.0);
        assert_eq!(ratio("PMD/PUD"), 10.0 / (3.0 / 16.0));
        assert_eq!(g.reg_read_us.unwrap().median, 50.0);
        assert_eq!(g.reg_write_us.unwrap().median, 40.0);
    }

    #[test]
    fn nothing_measured_gives_empty_figures() {
        let g = summarise("k", &[], &[]);
        assert!(g.orders.is_empty() && g.ratios.is_empty() && g.reg_read_us.is_none());
    }
}
