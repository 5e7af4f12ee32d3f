//! `runner bench`: how fast a run is, what huge mappings save, and what the
//! device costs in memory.
//!
//! Whole runs are measured from the outside: the runner binary runs itself as a
//! child (`-v`, stderr piped), so a benchmark run is exactly a user's run; its
//! progress lines give the stages ([`timeline`]) and `/proc` gives the memory of
//! its QEMU and device-emu ([`memory`]). In-guest figures come from guest-tests'
//! `bench.*` tests ([`guest`]); the device's own figures from a device-emu
//! started here ([`devbench`]). Warm runs of debian:sid and stock are set
//! against bare boots of the same kernels ([`bare`]). Every figure is repeated and summarised as
//! median and range ([`stats`]), then written as JSON and Markdown ([`report`]).

mod bare;
mod child;
mod cold;
mod devbench;
mod guest;
mod memory;
pub mod report;
pub mod stats;
mod targets;
mod timeline;

use anyhow::{Context, Result};
use clap::Args;
use report::{DeviceFigures, Figure, Machine, Report, RunFigures};
use stats::Summary;
use std::path::{Path, PathBuf};
use vm_images::kernel::build::Recipe;
use vm_images::kernel::KernelSpec;
use vm_images::{Cache, Fetcher};

/// Options of `runner bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Few repetitions and small test selections, no cold run (what `cargo test`
    /// runs to keep the benchmark working).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every figure [default: 3; quick: 1].
    #[arg(long, value_name = "N")]
    pub repeat: Option<usize>,
    /// Kernels whose runs are timed (repeatable) [default: debian:sid,
    /// debian:trixie, debian:bookworm, and stock/reference when already built;
    /// quick: debian:sid].
    #[arg(long)]
    pub kernel: Vec<String>,
    /// Cold first runs: `cargo run -p runner` on debian:sid in a fresh clone of
    /// this workspace with an empty target directory and cache (each compiles
    /// everything and downloads about 60 MB) [default: 2; quick: 0].
    #[arg(long, value_name = "N")]
    pub cold: Option<usize>,
    /// Output directory for bench.json, bench.md and every run's files
    /// (default: a new directory under target/bigbar-bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Cache of the warm runs (default as for a run).
    #[arg(long, env = vm_images::cache::CACHE_ENV)]
    pub cache: Option<PathBuf>,
    /// Replace the generated benchmark section of this README (between its
    /// `<!-- bench:start ... -->` and `<!-- bench:end -->` markers).
    #[arg(long, value_name = "FILE")]
    pub readme: Option<PathBuf>,
}

/// The mode of single-kernel runs with a warm cache.
const WARM: &str = "warm";
/// The mode of warm runs with one vCPU instead of the default two.
const ONE_VCPU: &str = "warm, 1 vCPU";
/// The mode of whole-matrix runs.
const MATRIX: &str = "matrix";
/// The mode of cold first runs.
const COLD: &str = "cold clone";
/// The mode of a second clone's first run on the warm store.
const SECOND_CLONE: &str = "second clone";
/// The kernel a second clone runs: a project kernel, which a store that lost
/// it (or a key that changed between clones) would build for minutes.
const SECOND_CLONE_KERNEL: &str = "stock";
/// The kernel the in-guest and device figures are taken on.
const GUEST_KERNEL: &str = "debian:sid";
/// 512 GiB of BARs: the default device with its 16 GiB BAR grown.
const BIG_BARS: &str = "1=64M:32:msix@2M,2=512G,4=1G";
/// The default kernels; stock, reference and fixed only when already built.
const DEFAULT_KERNELS: [&str; 3] = ["debian:sid", "debian:trixie", "debian:bookworm"];
const BUILT_KERNELS: [&str; 3] = ["stock", "reference", "fixed"];
const KIB_PER_MIB: f64 = 1024.0;

/// What the runs of one mode select.
struct Selection {
    label: &'static str,
    args: Vec<String>,
}

impl Selection {
    fn new(label: &'static str, args: &[&str]) -> Self {
        Self {
            label,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The benchmark's settings after defaults.
struct Settings {
    quick: bool,
    repeat: usize,
    cold: usize,
    kernels: Vec<String>,
    cache: PathBuf,
    out: PathBuf,
    tests: Selection,
    guest_tests: Selection,
    big_bar_tests: Selection,
    reg_accesses: u32,
}

/// Runs the benchmark; exit status 0 when every figure was measured.
pub fn run(args: &BenchArgs) -> Result<u8> {
    let (settings, mut problems) = settings(args)?;
    let s = &settings;
    eprintln!(
        "bigbar bench: {} repetitions, kernels {}, {} cold runs; files in {}",
        s.repeat,
        s.kernels.join(" "),
        s.cold,
        s.out.display()
    );
    let built = crate::artefacts::unpack(&vm_images::Cache::new(s.cache.clone()))?;
    let mut report = Report {
        date: now().format("%Y-%m-%d").to_string(),
        machine: machine(),
        quick: s.quick,
        ..Report::default()
    };
    for kernel in &s.kernels {
        let figs = warm_runs(s, kernel, &mut problems)?;
        report.runs.push(figs);
        // One vCPU against the default two, right after, on the same load:
        // what the race tests' second vCPU costs or saves the whole catalogue.
        if kernel == GUEST_KERNEL {
            let figs = timed_runs(
                s,
                kernel,
                ONE_VCPU,
                &s.tests,
                &["--smp", "1"],
                &mut problems,
            )?;
            report.runs.push(figs);
        }
        // Right after the warm runs, so that both see the same load.
        if bare::KERNELS.contains(&kernel.as_str()) {
            let sel = Selection::new(bare::SELECTION, &[]);
            let figs = timed_runs(s, kernel, bare::MODE, &sel, &["--bare-boot"], &mut problems)?;
            report.runs.push(figs);
        }
    }
    if s.kernels.len() > 1 {
        let figs = matrix_runs(s, &mut problems)?;
        report.runs.push(figs);
    }
    if s.cold > 0 {
        report.runs.extend(cold_runs(s, &mut problems)?);
    }
    let mut guest_ktap = Vec::new();
    let guest_runs = timed_runs_with(
        s,
        &[GUEST_KERNEL.to_string()],
        "guest-bench",
        &s.guest_tests,
        &[],
        &mut problems,
        |dir, _| guest_ktap.push(read_ktap(dir)),
    )?;
    report.runs.push(guest_runs);
    let (faults, regs): (Vec<_>, Vec<_>) = guest_ktap.iter().map(|k| guest::parse(k)).unzip();
    let guest = guest::summarise(GUEST_KERNEL, &faults.concat(), &regs.concat());
    if guest.orders.is_empty() {
        problems.push("the guest benchmark printed no fault figures".into());
    }
    for order in guest.orders_without_faults() {
        problems.push(format!(
            "no sample of the guest benchmark faulted at {order}: no time per fault"
        ));
    }
    report.guest = Some(guest);
    let big = timed_runs(
        s,
        GUEST_KERNEL,
        "bars 512G",
        &s.big_bar_tests,
        &["--bars", BIG_BARS],
        &mut problems,
    )?;
    report.device = Some(device_figures(s, &built.device_emu, &big, &mut problems));
    report.runs.push(big);
    fill_machine(&mut report.machine, &s.out);
    report.bare = bare::compare(&report.runs);
    report.targets = targets::all(&report, GUEST_KERNEL);
    report.targets.extend(bare::targets(&report.bare));
    report.problems = problems;
    write(&report, s, args.readme.as_deref())?;
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}

/// Applies the defaults of full and quick mode.
fn settings(args: &BenchArgs) -> Result<(Settings, Vec<String>)> {
    let quick = args.quick;
    let cache = crate::places::cache(args.cache.as_deref())?;
    let mut problems = Vec::new();
    let kernels = if !args.kernel.is_empty() {
        args.kernel.clone()
    } else if quick {
        vec![GUEST_KERNEL.to_string()]
    } else {
        let mut k: Vec<String> = DEFAULT_KERNELS.iter().map(|s| s.to_string()).collect();
        for name in BUILT_KERNELS {
            match already_built(&cache, name) {
                Ok(true) => k.push(name.to_string()),
                Ok(false) => problems.push(format!(
                    "{name}: not built in {} (building takes minutes; run it once to include it)",
                    cache.display()
                )),
                Err(e) => problems.push(format!("{name}: cannot tell whether it is built: {e:#}")),
            }
        }
        k
    };
    let out = match &args.out {
        Some(d) => d.clone(),
        None => crate::places::defaults()?.bench.join(format!(
            "{}-{}",
            now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let settings = Settings {
        quick,
        repeat: args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1),
        cold: args.cold.unwrap_or(if quick { 0 } else { 2 }),
        kernels,
        cache,
        out,
        tests: if quick {
            Selection::new(
                "setup, fault_order",
                &["--filter", "setup.*", "--filter", "fault_order.*"],
            )
        } else {
            Selection::new("catalogue", &[])
        },
        guest_tests: if quick {
            Selection::new(
                "bench PUD, PMD, registers",
                &[
                    "--guest-arg=--bench",
                    "--filter",
                    "bench.fault_pud",
                    "--filter",
                    "bench.fault_pmd",
                    "--filter",
                    "bench.regs_read",
                ],
            )
        } else {
            Selection::new("bench.*", &["--guest-arg=--bench", "--filter", "bench.*"])
        },
        big_bar_tests: if quick {
            Selection::new("setup", &["--filter", "setup.*"])
        } else {
            Selection::new("catalogue", &[])
        },
        reg_accesses: if quick { 200 } else { 5000 },
    };
    Ok((settings, problems))
}

/// Whether the `stock`/`reference` kernel of the current recipe is in `cache`
/// (without building it, which takes minutes).
fn already_built(cache: &Path, name: &str) -> Result<bool> {
    let cache = Cache::new(cache.to_path_buf());
    let fetcher = Fetcher::new(&cache);
    let spec: KernelSpec = name.parse().context("kernel spec")?;
    let Some(recipe) = Recipe::for_spec(&spec)? else {
        return Ok(true);
    };
    let (key, _) = vm_images::kernel::build::current_key(&fetcher, &recipe)?;
    Ok(cache.existing(&["kernel", "built"], &key)?.is_some())
}

/// `repeat` timed runs of `kernel`.
fn timed_runs(
    s: &Settings,
    kernel: &str,
    mode: &str,
    sel: &Selection,
    extra: &[&str],
    problems: &mut Vec<String>,
) -> Result<RunFigures> {
    let kernels = [kernel.to_string()];
    timed_runs_with(s, &kernels, mode, sel, extra, problems, |_, _| {})
}

/// `repeat` warm runs of `kernel`, with what they spent outside their tests.
fn warm_runs(s: &Settings, kernel: &str, problems: &mut Vec<String>) -> Result<RunFigures> {
    let mut reps = Vec::new();
    let kernels = [kernel.to_string()];
    let mut figs = timed_runs_with(s, &kernels, WARM, &s.tests, &[], problems, |dir, f| {
        reps.push((f.seconds, bare::tests_seconds(&read_ktap(dir))))
    })?;
    bare::add_outside(&mut figs, &reps);
    Ok(figs)
}

/// `repeat` runs of the whole matrix of benchmarked kernels in one runner, with
/// its default number of kernels at once.
fn matrix_runs(s: &Settings, problems: &mut Vec<String>) -> Result<RunFigures> {
    timed_runs_with(s, &s.kernels, MATRIX, &s.tests, &[], problems, |_, _| {})
}

/// `repeat` timed runs of one runner given all of `kernels` (a matrix when
/// there are several); `each` sees every run's output directory and how it
/// ended.
fn timed_runs_with(
    s: &Settings,
    kernels: &[String],
    mode: &str,
    sel: &Selection,
    extra: &[&str],
    problems: &mut Vec<String>,
    mut each: impl FnMut(&Path, &child::Finished),
) -> Result<RunFigures> {
    let label = match kernels {
        [one] => one.clone(),
        many => format!("{} kernels", many.len()),
    };
    let mut samples = Vec::new();
    for rep in 1..=s.repeat {
        let dir = s.out.join("runs").join(format!(
            "{}-{}-{rep}",
            mode.replace(' ', "-"),
            label.replace([':', '/', ' '], "_")
        ));
        let mut args: Vec<String> = Vec::new();
        for kernel in kernels {
            args.extend(["--kernel".into(), kernel.clone()]);
        }
        args.extend(["--cache".into(), s.cache.display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(sel.args.iter().cloned());
        eprintln!("bigbar bench: {mode} run {rep}/{} of {label}", s.repeat);
        let finished = child::run_runner(&args, &dir)?;
        check_exit(&label, mode, &finished, &dir, problems);
        each(&dir, &finished);
        // A matrix's results.json names several kernels: no one release.
        let release = (kernels.len() == 1).then(|| release_of(&dir)).flatten();
        samples.push((finished, release));
    }
    Ok(run_figures(&label, mode, sel.label, &samples))
}

/// `cold` first runs of the guest kernel, each `cargo run -p runner` in a fresh
/// clone with an empty store, then the last clone's [`second_clone_run`];
/// nothing (and a problem) when this runner was not built from a git checkout
/// it can clone.
fn cold_runs(s: &Settings, problems: &mut Vec<String>) -> Result<Vec<RunFigures>> {
    let workspace = match cold::workspace() {
        Ok(w) => w,
        Err(e) => {
            problems.push(format!("cold first runs not measured: {e:#}"));
            return Ok(Vec::new());
        }
    };
    let mut samples = Vec::new();
    let mut last_clone = None;
    for rep in 1..=s.cold {
        let clone = cold::FreshClone::new(&workspace)?;
        let dir = s.out.join("runs").join(format!("cold-{rep}"));
        let mut args: Vec<String> = vec!["--kernel".into(), GUEST_KERNEL.into()];
        args.extend(s.tests.args.iter().cloned());
        eprintln!(
            "bigbar bench: cold run {rep}/{}: cargo run -p runner in a fresh clone of {} at {}",
            s.cold,
            workspace.display(),
            clone.commit
        );
        let finished = child::run(clone.cargo_run(), &args, &dir)?;
        check_exit(GUEST_KERNEL, COLD, &finished, &dir, problems);
        samples.push((finished, release_of(&dir)));
        last_clone = Some(clone);
    }
    let mut runs = vec![run_figures(GUEST_KERNEL, COLD, s.tests.label, &samples)];
    if let Some(clone) = &last_clone {
        runs.extend(second_clone_run(s, clone)?);
    }
    Ok(runs)
}

/// `cargo run -p runner -- --kernel stock` in `clone` (compiled by its cold
/// run) on the benchmark's warm store: what a developer's second clone does,
/// which must find the kernel another clone built. `None` when stock is not
/// built in the store (said on stderr: there is nothing to find).
fn second_clone_run(s: &Settings, clone: &cold::FreshClone) -> Result<Option<RunFigures>> {
    if !already_built(&s.cache, SECOND_CLONE_KERNEL)? {
        eprintln!(
            "bigbar bench: no second-clone run: {SECOND_CLONE_KERNEL} is not built in {}",
            s.cache.display()
        );
        return Ok(None);
    }
    let dir = s.out.join("runs").join("second-clone");
    let mut args: Vec<String> = vec!["--kernel".into(), SECOND_CLONE_KERNEL.into()];
    args.extend(s.tests.args.iter().cloned());
    eprintln!(
        "bigbar bench: second clone: --kernel {SECOND_CLONE_KERNEL} in the cold clone at {} \
         on the store {}",
        clone.commit,
        s.cache.display()
    );
    let finished = child::run(clone.cargo_run_on(&s.cache), &args, &dir)?;
    let release = release_of(&dir);
    Ok(Some(run_figures(
        SECOND_CLONE_KERNEL,
        SECOND_CLONE,
        s.tests.label,
        &[(finished, release)],
    )))
}

/// Notes a run that could not test (exit 4 or 125); 0, 1 and 3 are results.
fn check_exit(
    kernel: &str,
    mode: &str,
    f: &child::Finished,
    dir: &Path,
    problems: &mut Vec<String>,
) {
    if !matches!(f.code, Some(0 | 1 | 3)) {
        problems.push(format!(
            "{mode} run of {kernel} ended with status {:?} (see {})",
            f.code,
            dir.display()
        ));
    }
}

/// The kernel release a run's results.json names.
fn release_of(dir: &Path) -> Option<String> {
    let v = results_json(dir)?;
    v["runs"][0]["kernel"]["release"]
        .as_str()
        .map(str::to_string)
}

fn results_json(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("results.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The KTAP of every boot of a run (empty when none was written).
fn read_ktap(dir: &Path) -> String {
    let mut out = String::new();
    for boot in 1..=8 {
        let name = crate::session::boot_file("results", "ktap", boot);
        match std::fs::read_to_string(dir.join(name)) {
            Ok(t) => out.push_str(&t),
            Err(_) => break,
        }
    }
    out
}

/// Summarises repeated runs into the stage and memory figures.
fn run_figures(
    kernel: &str,
    mode: &str,
    selection: &str,
    samples: &[(child::Finished, Option<String>)],
) -> RunFigures {
    let stages: Vec<(timeline::Stages, memory::Peak)> = samples
        .iter()
        .map(|(f, _)| (timeline::stages(&f.lines, f.seconds), f.peak))
        .collect();
    let mut figures = Vec::new();
    let mut push =
        |name: &str, unit: &str, f: &dyn Fn(&(timeline::Stages, memory::Peak)) -> Option<f64>| {
            if let Some(summary) = Summary::over(&stages, f) {
                figures.push(Figure {
                    name: name.into(),
                    unit: unit.into(),
                    summary,
                });
            }
        };
    let mib = |kib: u64| (kib > 0).then(|| kib as f64 / KIB_PER_MIB);
    push("total", "s", &|(s, _)| s.total);
    push("build", "s", &|(s, _)| s.build_total());
    push("fetch", "s", &|(s, _)| s.fetch());
    push("kernel", "s", &|(s, _)| s.kernel);
    push("initramfs", "s", &|(s, _)| s.initramfs);
    push("device", "s", &|(s, _)| s.device);
    push("boot_to_init", "s", &|(s, _)| s.boot_to_init);
    push("tests", "s", &|(s, _)| s.tests);
    push("shutdown", "s", &|(s, _)| s.shutdown);
    push("guest_init", "s", &|(s, _)| s.guest_init_timestamp);
    push("bare_boot", "s", &|(s, _)| s.bare_boot);
    push("host_peak_mib", "MiB", &|(_, p)| mib(p.sum_rss_kib));
    push("qemu_hwm_mib", "MiB", &|(_, p)| mib(p.qemu_hwm_kib));
    push("device_hwm_mib", "MiB", &|(_, p)| mib(p.device_hwm_kib));
    push("device_last_rss_mib", "MiB", &|(_, p)| {
        mib(p.device_last_rss_kib)
    });
    RunFigures {
        kernel: kernel.to_string(),
        release: samples.iter().find_map(|(_, r)| r.clone()),
        mode: mode.to_string(),
        selection: selection.to_string(),
        exit_codes: samples.iter().map(|(f, _)| f.code).collect(),
        figures,
    }
}

/// device-emu's figures: idle and register round trips measured here, memory
/// after the catalogue from the 512 GiB runs.
fn device_figures(
    s: &Settings,
    binary: &Path,
    big: &RunFigures,
    problems: &mut Vec<String>,
) -> DeviceFigures {
    let mut samples = Vec::new();
    for rep in 1..=s.repeat {
        eprintln!("bigbar bench: device-emu alone, {rep}/{}", s.repeat);
        match devbench::measure(binary, BIG_BARS, s.reg_accesses) {
            Ok(d) => samples.push(d),
            Err(e) => problems.push(format!("device-emu with {BIG_BARS}: {e:#}")),
        }
    }
    DeviceFigures {
        layout: BIG_BARS.to_string(),
        idle_rss_mib: Summary::over(&samples, |d| Some(d.idle_rss_kib as f64 / KIB_PER_MIB)),
        after_catalogue_rss_mib: big.figure("device_last_rss_mib").copied(),
        catalogue_hwm_mib: big.figure("device_hwm_mib").copied(),
        reg_read_us: Summary::over(&samples, |d| Some(d.read_us)),
        reg_write_us: Summary::over(&samples, |d| Some(d.write_us)),
        reg_reads_per_s: Summary::over(&samples, |d| (d.read_us > 0.0).then(|| 1e6 / d.read_us)),
    }
}

/// The current UTC time (chrono's `clock` feature would add a time-zone crate
/// for nothing: only UTC is printed).
fn now() -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now().into()
}

/// Cores, memory and CPU of this machine.
fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: mem_kib / KIB_PER_MIB / KIB_PER_MIB,
        cpu,
        accel: String::new(),
        qemu: String::new(),
    }
}

/// Accelerator and QEMU version from the first run that recorded them.
fn fill_machine(m: &mut Machine, out: &Path) {
    let Ok(dirs) = std::fs::read_dir(out.join("runs")) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
    dirs.sort();
    for dir in dirs {
        if let Some(v) = results_json(&dir) {
            let run = &v["runs"][0];
            if let (Some(a), Some(q)) = (run["accel"].as_str(), run["qemu"]["version"].as_str()) {
                m.accel = a.to_string();
                m.qemu = q.to_string();
                return;
            }
        }
    }
}

/// Writes bench.json and bench.md, prints the Markdown, updates the README.
fn write(report: &Report, s: &Settings, readme: Option<&Path>) -> Result<()> {
    let json = s.out.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = report::markdown(report);
    let md_path = s.out.join("bench.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    print!("{md}");
    if let Some(path) = readme {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let new = report::splice_readme(&text, &md).with_context(|| {
            format!(
                "{} has no benchmark section: add the lines {} and {}",
                path.display(),
                report::README_START,
                report::README_END
            )
        })?;
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bigbar bench: updated {}", path.display());
    }
    eprintln!(
        "bigbar bench: results in {} and {}",
        json.display(),
        md_path.display()
    );
    Ok(())
}
