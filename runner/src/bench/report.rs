//! The benchmark's results: the JSON document and its Markdown rendering.

use super::stats::Summary;
use serde::{Deserialize, Serialize};

/// Everything one `runner bench` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// UTC date of the measurement, `YYYY-MM-DD`.
    pub date: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// Whether this was the quick mode (few repetitions, test subsets).
    pub quick: bool,
    /// Wall-time figures of whole runs, one entry per kernel and cache state.
    pub runs: Vec<RunFigures>,
    /// In-guest fault and register measurements.
    pub guest: Option<GuestFigures>,
    /// device-emu measured on the host.
    pub device: Option<DeviceFigures>,
    /// Runs outside their tests against bare boots of the same kernels.
    #[serde(default)]
    pub bare: Vec<BareComparison>,
    /// The targets and how far the measurements are from them.
    pub targets: Vec<Target>,
    /// Measurements that could not be taken, and why.
    pub problems: Vec<String>,
}

/// The machine and virtualisation of the measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// Physical memory in GiB.
    pub memory_gib: f64,
    /// CPU model name.
    pub cpu: String,
    /// `tcg` or `kvm`, as the runs reported.
    pub accel: String,
    /// QEMU version the runs used.
    pub qemu: String,
}

/// One named figure with its unit and summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured (`total`, `boot_to_init`, ...).
    pub name: String,
    /// Unit of the summary's values.
    pub unit: String,
    /// Median and spread over the repetitions.
    pub summary: Summary,
}

/// Repeated runs of one kernel in one cache state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// `--kernel` value.
    pub kernel: String,
    /// The kernel release that ran, if known.
    pub release: Option<String>,
    /// `warm`, `cold`, `guest-bench`, `bars-512G`, ...
    pub mode: String,
    /// What the runs ran (test selection).
    pub selection: String,
    /// Exit status of every repetition.
    pub exit_codes: Vec<Option<i32>>,
    /// Stage and memory figures, in display order.
    pub figures: Vec<Figure>,
}

impl RunFigures {
    /// The figure called `name`.
    pub fn figure(&self, name: &str) -> Option<&Summary> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.summary)
    }
}

/// Touching a BAR at one mapping order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFigures {
    /// `PUD`, `PMD` or `PTE`.
    pub order: String,
    /// Bytes mapped and touched.
    pub len: u64,
    /// Words touched (one per entry).
    pub touches: u64,
    /// Minor faults counted on the first pass (median).
    pub faults: f64,
    /// First pass (faults included), milliseconds.
    pub first_ms: Summary,
    /// Second pass over the mapped range, milliseconds.
    pub second_ms: Summary,
    /// First pass extrapolated to one GiB, milliseconds.
    pub per_gib_ms: Summary,
    /// Faults per GiB at this order.
    pub faults_per_gib: f64,
    /// First-pass time per fault, microseconds; `None` when no sample faulted.
    pub per_fault_us: Option<Summary>,
}

/// The in-guest measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestFigures {
    /// The kernel they ran on.
    pub kernel: String,
    /// One entry per order, PUD first.
    pub orders: Vec<OrderFigures>,
    /// Time per GiB of one order over another's (`PTE/PMD`, ...), from medians.
    pub ratios: Vec<(String, f64)>,
    /// Guest-side register reads through vfio-pci and QEMU, µs per access.
    pub reg_read_us: Option<Summary>,
    /// Guest-side register writes, µs per access.
    pub reg_write_us: Option<Summary>,
}

impl GuestFigures {
    /// The orders none of whose samples faulted: a huge mapping that stopped
    /// faulting at its order, or a test that stopped touching it.
    pub fn orders_without_faults(&self) -> Vec<&str> {
        self.orders
            .iter()
            .filter(|o| o.per_fault_us.is_none())
            .map(|o| o.order.as_str())
            .collect()
    }
}

/// device-emu measured on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceFigures {
    /// The BAR layout measured.
    pub layout: String,
    /// Resident memory right after it started listening, MiB.
    pub idle_rss_mib: Option<Summary>,
    /// Resident memory at the end of a full catalogue run with that layout, MiB.
    pub after_catalogue_rss_mib: Option<Summary>,
    /// Highest resident memory during that run, MiB.
    pub catalogue_hwm_mib: Option<Summary>,
    /// Round trip of a 4-byte register read over the vfio-user socket, µs.
    pub reg_read_us: Option<Summary>,
    /// Round trip of an 8-byte register write, µs.
    pub reg_write_us: Option<Summary>,
    /// Register reads per second with one request in flight.
    pub reg_reads_per_s: Option<Summary>,
}

/// A kernel's warm runs outside their tests against its bare boots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BareComparison {
    /// `--kernel` value.
    pub kernel: String,
    /// What the warm runs ran.
    pub selection: String,
    /// Wall time of a warm run, seconds.
    pub run_total: Option<Summary>,
    /// What its tests took by their own clocks in the guest, seconds.
    pub tests_in_guest: Option<Summary>,
    /// The wall time less the tests, seconds.
    pub outside_tests: Option<Summary>,
    /// QEMU's start to its exit with an init that only powers off, seconds.
    pub bare_boot: Option<Summary>,
    /// Median outside the tests over median bare boot.
    pub ratio: Option<f64>,
}

/// One of the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The goal, in words.
    pub goal: String,
    /// The measured median, in words (`None`: not measured in this run).
    pub measured: Option<String>,
    /// Whether the goal is met.
    pub met: Option<bool>,
}

/// `12.3 (11.9–13.0)`: median with the range, or the median alone for one sample.
pub fn cell(s: Option<&Summary>, digits: usize) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n == 1 || s.spread() == 0.0 => format!("{:.*}", digits, s.median),
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        ),
    }
}

/// The stage columns of the run table: figure name and header.
const STAGE_COLUMNS: [(&str, &str); 11] = [
    ("total", "total"),
    ("build", "build"),
    ("fetch", "fetch"),
    ("initramfs", "initramfs"),
    ("device", "device start"),
    ("boot_to_init", "boot to init"),
    ("tests", "tests"),
    ("shutdown", "shutdown"),
    ("guest_init", "guest clock at /init"),
    ("host_peak_mib", "host peak MiB"),
    ("qemu_hwm_mib", "QEMU peak MiB"),
];

/// The report as Markdown: machine, run stages, guest faults, device, targets.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    s.push_str(&format!(
        "Measured {} on {} cores ({}), {:.0} GiB, accelerator **{}**, QEMU {}{}. \
         Cells: median (min–max) over the repetitions; seconds unless stated.\n\n",
        r.date,
        m.cores,
        m.cpu,
        m.memory_gib,
        m.accel.to_uppercase(),
        m.qemu,
        if r.quick { " (quick mode)" } else { "" }
    ));
    s.push_str("| kernel | run | n |");
    for (_, h) in STAGE_COLUMNS {
        s.push_str(&format!(" {h} |"));
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---:|".repeat(STAGE_COLUMNS.len()));
    s.push('\n');
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {} ({}) | {} |",
            run.kernel,
            run.mode,
            run.selection,
            run.exit_codes.len()
        ));
        for (name, _) in STAGE_COLUMNS {
            let digits = if name.ends_with("_mib") { 0 } else { 1 };
            s.push_str(&format!(" {} |", cell(run.figure(name), digits)));
        }
        s.push('\n');
    }
    if let Some(g) = &r.guest {
        s.push_str(&format!(
            "\nTouching a BAR in the guest ({}), one word per entry; each order measured \
             over the range shown and extrapolated per GiB:\n\n\
             | order | range | faults | first pass ms | second pass ms | ms per GiB | faults per GiB | µs per fault |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
            g.kernel
        ));
        for o in &g.orders {
            s.push_str(&format!(
                "| {} | {} MiB | {:.0} | {} | {} | {} | {:.0} | {} |\n",
                o.order,
                o.len >> 20,
                o.faults,
                cell(Some(&o.first_ms), 1),
                cell(Some(&o.second_ms), 1),
                cell(Some(&o.per_gib_ms), 1),
                o.faults_per_gib,
                cell(o.per_fault_us.as_ref(), 2)
            ));
        }
        if !g.ratios.is_empty() {
            let ratios: Vec<String> = g
                .ratios
                .iter()
                .map(|(name, v)| format!("{name} = {v:.0}×"))
                .collect();
            s.push_str(&format!("\nTime per GiB: {}.\n", ratios.join(", ")));
        }
        s.push_str(&format!(
            "Register BAR from the guest (vfio-pci → QEMU → vfio-user): read {} µs, write {} µs per access.\n",
            cell(g.reg_read_us.as_ref(), 1),
            cell(g.reg_write_us.as_ref(), 1)
        ));
    }
    if let Some(d) = &r.device {
        s.push_str(&format!(
            "\ndevice-emu with `--bars {}`:\n\n| figure | value |\n|---|---:|\n\
             | resident when idle, MiB | {} |\n\
             | resident after the full catalogue, MiB | {} |\n\
             | peak resident during the catalogue, MiB | {} |\n\
             | register read round trip on the socket, µs | {} |\n\
             | register write round trip on the socket, µs | {} |\n\
             | register reads per second (one in flight) | {} |\n",
            d.layout,
            cell(d.idle_rss_mib.as_ref(), 1),
            cell(d.after_catalogue_rss_mib.as_ref(), 1),
            cell(d.catalogue_hwm_mib.as_ref(), 1),
            cell(d.reg_read_us.as_ref(), 1),
            cell(d.reg_write_us.as_ref(), 1),
            cell(d.reg_reads_per_s.as_ref(), 0),
        ));
    }
    if !r.bare.is_empty() {
        s.push_str(bare_table(&r.bare).as_str());
    }
    if !r.targets.is_empty() {
        s.push_str("\n| target | goal | measured | met |\n|---|---|---|---|\n");
        for t in &r.targets {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t.what,
                t.goal,
                t.measured.as_deref().unwrap_or("not measured"),
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                }
            ));
        }
    }
    if !r.problems.is_empty() {
        s.push_str("\nNot measured:\n\n");
        for p in &r.problems {
            s.push_str(&format!("- {p}\n"));
        }
    }
    s
}

/// The table of runs outside their tests against bare boots.
fn bare_table(bare: &[BareComparison]) -> String {
    let mut s = String::from(
        "\nA warm run outside its tests (wall time less the tests' own times in the guest) \
         against a bare boot of the same kernel (same machine and device, QEMU's start to \
         its exit with an init that only powers off), measured in this bench run:\n\n\
         | kernel | run | run wall | tests in guest | outside tests | bare boot | ratio |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for c in bare {
        s.push_str(&format!(
            "| {} | warm ({}) | {} | {} | {} | {} | {} |\n",
            c.kernel,
            c.selection,
            cell(c.run_total.as_ref(), 1),
            cell(c.tests_in_guest.as_ref(), 1),
            cell(c.outside_tests.as_ref(), 1),
            cell(c.bare_boot.as_ref(), 2),
            c.ratio.map_or("–".into(), |r| format!("{r:.2}×"))
        ));
    }
    s
}

/// Marks the generated part of a README.
pub const README_START: &str =
    "<!-- bench:start (generated by `cargo run -p runner -- bench --readme README.md`) -->";
/// Ends the generated part of a README.
pub const README_END: &str = "<!-- bench:end -->";

/// `readme` with the text between the markers replaced by `table`; `None` when
/// the markers are missing or out of order.
pub fn splice_readme(readme: &str, table: &str) -> Option<String> {
    let start = readme.find(README_START)?;
    let after_start = start + README_START.len();
    let end = after_start + readme[after_start..].find(README_END)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &readme[..after_start],
        table.trim_end(),
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(v: &[f64]) -> Summary {
        Summary::of(v).unwrap()
    }

    fn sample() -> Report {
        Report {
            date: "2026-11-21".into(),
            machine: Machine {
                cores: 2,
                memory_gib: 23.5,
                cpu: "Xeon".into(),
                accel: "tcg".into(),
                qemu: "11.1.3".into(),
            },
            quick: false,
            runs: vec![RunFigures {
                kernel: "debian:sid".into(),
                release: Some("7.2.13".into()),
                mode: "warm".into(),
                selection: "catalogue".into(),
                exit_codes: vec![Some(3), Some(3)],
                figures: vec![
                    Figure {
                        name: "total".into(),
                        unit: "s".into(),
                        summary: summary(&[20.0, 22.0]),
                    },
                    Figure {
                        name: "host_peak_mib".into(),
                        unit: "MiB".into(),
                        summary: summary(&[400.4]),
                    },
                ],
            }],
            guest: Some(GuestFigures {
                kernel: "debian:sid".into(),
                orders: vec![OrderFigures {
                    order: "PUD".into(),
                    len: 16 << 30,
                    touches: 16,
                    faults: 16.0,
                    first_ms: summary(&[1.0, 1.2]),
                    second_ms: summary(&[0.1]),
                    per_gib_ms: summary(&[0.0625]),
                    faults_per_gib: 1.0,
                    per_fault_us: Some(summary(&[62.5])),
                }],
                ratios: vec![("PTE/PUD".into(), 5000.4)],
                reg_read_us: Some(summary(&[50.0])),
                reg_write_us: None,
            }),
            device: Some(DeviceFigures {
                layout: "2=512G".into(),
                idle_rss_mib: Some(summary(&[3.0, 3.5, 4.0])),
                ..Default::default()
            }),
            bare: vec![BareComparison {
                kernel: "stock".into(),
                selection: "catalogue".into(),
                run_total: Some(summary(&[14.0])),
                tests_in_guest: Some(summary(&[7.0])),
                outside_tests: Some(summary(&[7.0])),
                bare_boot: Some(summary(&[1.4])),
                ratio: Some(5.0),
            }],
            targets: vec![Target {
                what: "warm catalogue".into(),
                goal: "≤ 30 s".into(),
                measured: Some("21.0 s".into()),
                met: Some(true),
            }],
            problems: vec!["stock: not in the cache".into()],
        }
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["runs"][0]["figures"][0]["summary"]["median"], 21.0);
        assert_eq!(v["guest"]["ratios"][0][0], "PTE/PUD");
    }

    #[test]
    fn cells_show_median_and_range() {
        assert_eq!(cell(Some(&summary(&[1.0, 2.0, 4.0])), 1), "2.0 (1.0–4.0)");
        assert_eq!(cell(Some(&summary(&[1.23456])), 2), "1.23");
        assert_eq!(cell(Some(&summary(&[2.0, 2.0])), 0), "2");
        assert_eq!(cell(None, 1), "–");
    }

    #[test]
    fn markdown_has_every_section() {
        let md = markdown(&sample());
        assert!(
            md.starts_with("Measured 2026-11-21 on 2 cores (Xeon), 24 GiB, accelerator **TCG**"),
            "{md}"
        );
        assert!(
            md.contains("| debian:sid | warm (catalogue) | 2 | 21.0 (20.0–22.0) | – |"),
            "{md}"
        );
        // MiB columns without decimals; the QEMU column has no figure.
        assert!(md.contains("| 400 | – |\n"), "{md}");
        assert!(
            md.contains("| PUD | 16384 MiB | 16 | 1.1 (1.0–1.2) | 0.1 | 0.1 | 1 | 62.50 |"),
            "{md}"
        );
        assert!(md.contains("Time per GiB: PTE/PUD = 5000×."), "{md}");
        assert!(md.contains("read 50.0 µs, write – µs"), "{md}");
        assert!(
            md.contains("| resident when idle, MiB | 3.5 (3.0–4.0) |"),
            "{md}"
        );
        assert!(
            md.contains("| warm catalogue | ≤ 30 s | 21.0 s | yes |"),
            "{md}"
        );
        assert!(md.contains("- stock: not in the cache"), "{md}");
        assert!(
            md.contains("| stock | warm (catalogue) | 14.0 | 7.0 | 7.0 | 1.40 | 5.00× |"),
            "{md}"
        );
        // Every table row has as many cells as its header.
        let header = md.lines().find(|l| l.starts_with("| kernel |")).unwrap();
        let row = md
            .lines()
            .find(|l| l.starts_with("| debian:sid |"))
            .unwrap();
        assert_eq!(header.matches('|').count(), row.matches('|').count());
    }

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let readme =
            format!("# x\n\n## Benchmarks\n\n{README_START}\nold\n{README_END}\n\n## Next\n");
        let new = splice_readme(&readme, "| new |\n").unwrap();
        assert_eq!(
            new,
            format!("# x\n\n## Benchmarks\n\n{README_START}\n\n| new |\n{README_END}\n\n## Next\n")
        );
        // Idempotent.
        assert_eq!(splice_readme(&new, "| new |\n").unwrap(), new);
        assert_eq!(splice_readme("# no markers", "t"), None);
        assert_eq!(
            splice_readme(&format!("{README_END}{README_START}"), "t"),
            None
        );
    }
}
